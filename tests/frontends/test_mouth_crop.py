"""Mouth cropping (frontends/mouth_crop.py) on real photographs shipped with scikit-image: the
astronaut (a frontal face) moved and zoomed over the frames of a GRID-like 360 × 288 video, and
a cat (no human face) as the negative."""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from speechkit.data.errors import DataError
from speechkit.frontends import mouth_crop as mc
from speechkit.frontends.video import read_video
from speechkit.registry import build

skimage_data = pytest.importorskip("skimage.data")
Image = pytest.importorskip("PIL.Image")

H, W = 288, 360  # pixels, GRID's frame size (height × width)
FPS = 25
T = 16  # frames of the test videos
SHIFT = np.array([2.0, 0.7])  # px per frame (x, y) the face moves
ZOOM = 0.004  # relative growth of the face per frame
FACE = np.array([222.0, 118.0])  # x, y in the astronaut photo: between the eyes and the mouth
MOUTH = {  # x, y in the photo, read off the picture
    "left corner": (204.0, 142.0),
    "right corner": (244.0, 142.0),
    "upper lip": (224.0, 139.0),
    "lower lip": (224.0, 153.0),
}
MOUTH_CENTRE = np.array([224.0, 146.0])


def place(photo: np.ndarray, t: int, start=(120.0, 110.0)) -> tuple[np.ndarray, np.ndarray, float]:
    """Frame ``t``: the photo zoomed by ``1 + ZOOM·t`` with its ``FACE`` point at ``start + SHIFT·t``
    → ``(H, W, 3)`` uint8, the offset ``(x, y)`` and the zoom (photo point p is at ``p·zoom + offset``)."""
    z = 1.0 + ZOOM * t
    offset = np.array(start) + SHIFT * t - FACE * z
    inverse = (1 / z, 0, -offset[0] / z, 0, 1 / z, -offset[1] / z)  # output pixel → photo pixel
    img = Image.fromarray(photo).transform((W, H), Image.AFFINE, inverse, resample=Image.BILINEAR)
    return np.asarray(img), offset, z


def write_mpg(path: Path, frames: np.ndarray, fps: int = FPS) -> Path:
    """MPEG-1 in an MPEG program stream, as GRID ships its videos."""
    import av

    with av.open(str(path), "w", format="mpeg") as out:
        stream = out.add_stream("mpeg1video", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"qscale": "2"}
        for image in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def moving_face():
    """The astronaut over ``T`` frames: frames ``(T, H, W, 3)``, offsets ``(T, 2)``, zooms ``(T,)``."""
    frames, offsets, zooms = zip(*(place(skimage_data.astronaut(), t) for t in range(T)))
    return np.stack(frames), np.stack(offsets), np.array(zooms)


@pytest.fixture(scope="module")
def faces(moving_face) -> np.ndarray:
    torch.set_num_threads(1)
    return mc.detect_faces(moving_face[0])


@pytest.fixture(scope="module")
def videos(tmp_path_factory, moving_face) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("faces")
    cat = skimage_data.chelsea()  # 300 × 451: a cat's face, no human one
    cat_frames = np.stack([np.asarray(Image.fromarray(cat).resize((W, H)))] * 8)
    (d / "broken.mpg").write_bytes(b"\x00\x00\x01\xba" + bytes(range(256)) * 8)
    return {
        "face": write_mpg(d / "face.mpg", moving_face[0]),
        "cat": write_mpg(d / "cat.mpg", cat_frames),
        "broken": d / "broken.mpg",
    }


def in_frame(point, offset, zoom) -> np.ndarray:
    return np.asarray(point) * zoom + offset


# ----------------------------------------------------------------------------- detection


def test_the_face_is_found_on_every_frame_where_it_is(moving_face, faces):
    _, offsets, zooms = moving_face
    assert faces.shape == (T, 4) and not np.isnan(faces).any()
    top, left, h, w = faces.T
    for t in range(T):
        x, y = in_frame(FACE, offsets[t], zooms[t])
        assert left[t] < x < left[t] + w[t] and top[t] < y < top[t] + h[t], t
    assert np.all((70 < w) & (w < 150)), w  # her face is ~100 px wide at zoom 1


def test_face_boxes_move_with_the_photo(moving_face, faces):
    _, offsets, zooms = moving_face
    centres = faces[:, [1, 0]] + faces[:, [3, 2]] / 2  # (x, y)
    face_in_frame = FACE * zooms[:, None] + offsets
    residual = centres - face_in_frame  # what the motion does not explain: constant up to noise
    assert np.abs(residual - np.median(residual, axis=0)).max() < 6
    slope = np.polyfit(np.arange(T), centres, 1)[0]  # px per frame, (x, y)
    assert slope == pytest.approx(SHIFT, abs=0.3)


def test_a_cat_is_not_a_face(videos):
    cat, _ = read_video(videos["cat"], grayscale=True)
    pixels = (cat[:3, 0] * 255).round().to(torch.uint8).numpy()
    assert np.isnan(mc.detect_faces(pixels)).all()


# ----------------------------------------------------------------------------- the mouth box


def test_mouth_box_holds_the_mouth_in_the_lower_half_of_the_face_inside_the_frame(moving_face, faces):
    _, offsets, zooms = moving_face
    boxes = mc.mouth_boxes(faces, (H, W), aspect=0.5)
    top, left, h, w = boxes.T
    assert np.allclose(h, 0.5 * w)
    assert np.all((top >= 0) & (left >= 0) & (top + h <= H) & (left + w <= W))
    f_top, f_left, f_h, f_w = faces.T
    assert np.all(top >= f_top + f_h / 2) and np.all(top + h <= f_top + f_h + 2)  # lower half of the face
    assert np.all(left >= f_left - 2) and np.all(left + w <= f_left + f_w + 2)
    for t in range(T):
        for name, point in MOUTH.items():
            x, y = in_frame(point, offsets[t], zooms[t])
            assert left[t] + 2 < x < left[t] + w[t] - 2 and top[t] + 2 < y < top[t] + h[t] - 2, (t, name)
    centres = boxes[:, [1, 0]] + boxes[:, [3, 2]] / 2
    truth = MOUTH_CENTRE * zooms[:, None] + offsets
    assert np.abs(centres - truth).max() < 5  # px, on a face ~100 px wide


def test_smoothing_keeps_frame_to_frame_jitter_small(moving_face, faces):
    _, offsets, zooms = moving_face
    truth = MOUTH_CENTRE * zooms[:, None] + offsets
    raw = np.stack([faces[:, 1] + faces[:, 3] / 2, faces[:, 0] + mc.MOUTH_Y * faces[:, 2]], axis=1)
    boxes = mc.mouth_boxes(faces, (H, W))
    smooth = boxes[:, [1, 0]] + boxes[:, [3, 2]] / 2
    jitter_raw = np.abs(np.diff(raw - truth, axis=0)).max()
    jitter = np.abs(np.diff(smooth - truth, axis=0)).max()
    assert jitter < 1.5 and jitter < jitter_raw, (jitter, jitter_raw)  # px per frame, motion removed
    assert np.abs(np.diff(boxes[:, 3])).max() < 1.5  # the crop's scale does not pump


def test_gaps_are_filled_an_outlier_ignored_and_a_line_kept():
    t = np.arange(40.0)
    faces = np.stack([50 + 0.5 * t, 100 + 2 * t, np.full(40, 100.0), np.full(40, 100.0)], axis=1)
    expected = mc.mouth_boxes(faces, (H, W))
    damaged = faces.copy()
    damaged[10:16] = np.nan  # six frames without a face
    damaged[25] = [5, 5, 60, 60]  # a false detection in the corner
    boxes = mc.mouth_boxes(damaged, (H, W))
    assert not np.isnan(boxes).any()
    assert np.abs(boxes - expected).max() < 1e-6  # a straight-line track is restored exactly
    centre_x = 100 + 2 * t + 50  # face centre: the mouth is centred under it
    assert np.abs(boxes[:, 1] + boxes[:, 3] / 2 - centre_x).max() < 1e-6


def test_a_mouth_box_near_the_edge_is_moved_inside_the_frame():
    faces = np.array([[200.0, 300.0, 120.0, 120.0]] * 5)  # face running off the bottom right
    top, left, h, w = mc.mouth_boxes(faces, (H, W)).T
    assert np.allclose(top + h, H) and np.allclose(left + w, W) and np.allclose(w, 0.65 * 120)


def test_no_face_at_all_is_a_data_error_naming_the_video(videos, tmp_path):
    with pytest.raises(DataError, match="no face found") as e:
        mc.crop_video_file(videos["cat"], tmp_path / "cat.mp4")
    assert e.value.where == str(videos["cat"]) and not (tmp_path / "cat.mp4").exists()
    with pytest.raises(DataError, match=r"clip\.mpg: no face found: .* 0 of the 4 frames"):
        mc.mouth_boxes(np.full((7, 4), np.nan), (H, W), options=mc.CropOptions(every=2), where="clip.mpg")


# ----------------------------------------------------------------------------- cropping


def test_crop_of_a_whole_pixel_box_of_the_output_size_is_the_slice():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 40, 60, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, 10, 20], [5, 7, 10, 20], [30, 40, 10, 20]], dtype=float)
    crops = mc.crop_mouths(frames, boxes, size=(10, 20))
    for t, (top, left, h, w) in enumerate(boxes.astype(int)):
        assert np.array_equal(crops[t], frames[t, top : top + h, left : left + w])


def test_crop_of_a_box_twice_the_output_size_averages_pixel_blocks():
    frames = torch.rand(2, 1, 40, 60)
    crops = mc.crop_frames(frames, np.array([[10, 20, 20, 30], [0, 0, 20, 30.0]]), (10, 15))
    window = frames[0, 0, 10:30, 20:50].reshape(10, 2, 15, 2).mean(dim=(1, 3))
    assert torch.allclose(crops[0, 0], window, atol=1e-5)


def test_crop_video_file_writes_the_requested_size_rate_and_frames(videos, tmp_path):
    boxes = mc.crop_video_file(videos["face"], tmp_path / "face.mp4", size=(50, 100))
    frames, fps = read_video(tmp_path / "face.mp4", grayscale=False)
    assert frames.shape == (T, 3, 50, 100) and fps == FPS and boxes.shape == (T, 4)
    mc.crop_video_file(videos["face"], tmp_path / "half.npy", size=(44, 88), fps=FPS / 2)
    stack = np.load(tmp_path / "half.npy")
    assert stack.shape == (T // 2, 44, 88, 3) and stack.dtype == np.uint8


def test_lips_frontend_crops_the_mouth_on_load_and_defaults_to_no_cropping(videos, tmp_path):
    assert build("frontend", "lips").cfg.mouth_crop == "none"
    frontend = build("frontend", "lips", mouth_crop="lbp")
    clip = frontend.load(videos["face"])
    assert clip.shape == (T, 3, 50, 100) and 0 <= clip.min() and clip.max() <= 1
    mc.crop_video_file(videos["face"], tmp_path / "face.npy")
    same = torch.from_numpy(np.load(tmp_path / "face.npy")).permute(0, 3, 1, 2).float() / 255
    assert (clip - same).abs().mean() < 0.01  # the command and the frontend cut the same region
    with pytest.raises(ValueError, match="mouth_crop.*none, lbp"):
        build("frontend", "lips", mouth_crop="dlib")


def test_a_missing_detector_says_what_to_install(monkeypatch):
    mc._cascade.cache_clear()
    monkeypatch.setitem(sys.modules, "skimage.feature", None)
    with pytest.raises(ImportError, match=r"pip install speechkit\[faces\]"):
        mc.check_detector()
    mc._cascade.cache_clear()


# ----------------------------------------------------------------------------- the command


def test_command_crops_a_folder_and_skips_and_reports_bad_files(videos, tmp_path, capsys):
    src = videos["face"].parent
    with pytest.raises(SystemExit) as e:
        mc.main([f"src={src}", f"out={tmp_path}", "size=50x100"])
    assert e.value.code == 1
    out = capsys.readouterr().out
    assert "wrote 1 mouth-region videos" in out and "skipped 2 file(s)" in out
    assert f"{videos['cat']}: no face found" in out and f"{videos['broken']}: " in out
    frames, fps = read_video(tmp_path / "face.mp4", grayscale=False)
    assert frames.shape == (T, 3, 50, 100) and fps == FPS
    with pytest.raises(SystemExit) as e:
        mc.main([f"src={videos['face']}", f"out={tmp_path}", "size=50"])
    assert e.value.code == 2 and "size='50': give HEIGHTxWIDTH" in capsys.readouterr().err

"""Video loading (MP4, MPG, AVI, .npy; bad input) and the ``lips`` frontend (shapes, lengths, padding)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from speechkit.data.errors import DataError
from speechkit.frontends.video import Lips, LipsConfig, load_video, read_video
from speechkit.registry import build

FPS = 25
H, W = 48, 96  # pixels of the test clips


def pattern(n: int = 20, h: int = H, w: int = W) -> np.ndarray:
    """``(n, h, w, 3)`` uint8 frames: a bright square that moves right one step per frame."""
    rng = np.random.default_rng(0)
    frames = rng.integers(30, 60, (n, h, w, 3), dtype=np.uint8)  # noise: files of realistic size
    for t in range(n):
        x = 4 + 3 * t % (w - 16)
        frames[t, h // 4 : h // 4 + 16, x : x + 16] = (220, 200, 180)
    return frames


def write_video(
    path: Path, frames: np.ndarray, codec: str = "libx264", fps: int = FPS, **options: str
) -> Path:
    import av

    with av.open(str(path), "w", **({"format": "mpeg"} if path.suffix == ".mpg" else {})) as out:
        stream = out.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.options = options
        for img in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    frames = pattern()
    out = {
        "h264": write_video(d / "h264.mp4", frames, "libx264", crf="10"),
        "h264_faststart": write_video(d / "fast.mp4", pattern(60), "libx264", movflags="+faststart"),
        "mpeg4": write_video(d / "mpeg4.mp4", frames, "mpeg4", qscale="2"),
        "mpg": write_video(d / "grid.mpg", pattern(60), "mpeg1video", qscale="2"),
        "avi": write_video(d / "mjpeg.avi", frames, "mjpeg"),
        "fps30": write_video(d / "fps30.mp4", pattern(30), "libx264", fps=30),
    }
    np.save(d / "stack.npy", frames)
    out["npy"] = d / "stack.npy"
    return out


# ----------------------------------------------------------------------------- loading


@pytest.mark.parametrize("kind", ["h264", "mpeg4", "mpg", "avi"])
def test_read_video_decodes_every_frame_at_its_rate_close_to_what_was_written(clips, kind):
    frames, fps = read_video(clips[kind], grayscale=False)
    n = 60 if kind == "mpg" else 20
    assert frames.shape == (n, 3, H, W) and frames.dtype == torch.float32 and fps == FPS
    expected = torch.from_numpy(pattern(n)).permute(0, 3, 1, 2).float() / 255
    assert (frames - expected).abs().mean() < 0.05  # lossy codecs, but the same pictures


def test_grayscale_is_one_luma_channel_and_npy_stacks_read_the_same(clips):
    gray, fps = read_video(clips["h264"], grayscale=True)
    assert gray.shape == (20, 1, H, W)
    npy, npy_fps = read_video(clips["npy"], grayscale=True, default_fps=25)
    assert npy_fps == 25 and npy.shape == gray.shape
    assert (npy - gray).abs().mean() < 0.05  # luma of the exact frames vs of the encoded ones


def test_npy_without_a_frame_rate_is_an_fps_missing_error(clips):
    with pytest.raises(DataError, match="fps missing.*default_fps"):
        read_video(clips["npy"])


def test_other_frame_rate_is_an_error_or_resampled_as_configured(clips):
    with pytest.raises(DataError, match="30 fps, but the model works at 25 fps"):
        load_video(clips["fps30"], fps=25)
    frames = load_video(clips["fps30"], fps=25, fps_mismatch="resample")
    assert frames.shape[0] == 25  # 30 frames at 30 fps = 1 s = 25 frames at 25 fps


def test_frame_size_mismatch_resizes_crops_or_errors_as_configured(clips):
    assert load_video(clips["h264"], 25, size=(32, 64)).shape == (20, 1, 32, 64)
    assert load_video(clips["h264"], 25, size=(40, 40), size_mismatch="crop").shape == (20, 1, 40, 40)
    with pytest.raises(DataError, match=r"frames are 48×96 .* expects 50×100"):
        load_video(clips["h264"], 25, size=(50, 100), size_mismatch="error")
    with pytest.raises(DataError, match="too small to crop"):
        load_video(clips["h264"], 25, size=(50, 100), size_mismatch="crop")
    box = load_video(clips["h264"], 25, crop_box=[8, 16, 24, 48])
    assert box.shape == (20, 1, 24, 48)


def test_corrupt_file_is_a_data_error_naming_it(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(DataError, match="bad.mp4: not a readable video"):
        read_video(bad)


@pytest.mark.parametrize("kind", ["h264", "h264_faststart", "mpg"])
def test_truncated_video_is_an_error_not_fewer_frames(clips, tmp_path, kind):
    data = clips[kind].read_bytes()
    cut = tmp_path / f"cut{clips[kind].suffix}"
    cut.write_bytes(data[: len(data) * 3 // 5])
    with pytest.raises(DataError, match="cut.*(corrupt or truncated|not a readable video|cut short)"):
        read_video(cut)


def test_zero_frame_video_and_empty_stack_are_errors(tmp_path):
    import av

    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        out.start_encoding()  # header and index written, no frame
    with pytest.raises(DataError, match="empty.mp4: has zero frames"):
        read_video(empty)
    np.save(tmp_path / "empty.npy", np.zeros((0, 32, 64), np.uint8))
    with pytest.raises(DataError, match="has zero frames"):
        read_video(tmp_path / "empty.npy", default_fps=25)


def test_missing_file_says_so(tmp_path):
    with pytest.raises(DataError, match="video file not found"):
        read_video(tmp_path / "nope.mp4")


# ----------------------------------------------------------------------------- the frontend


def small_lips(**kw) -> Lips:
    params = dict(height=32, width=64, grayscale=True, channels=[4, 8, 8], dropout=0.0)
    params.update(kw)
    return build("frontend", "lips", **params)


def test_lips_is_registered_with_the_video_protocol_attributes():
    fe = small_lips()
    assert fe.modality == "video" and ".mpg" in fe.extensions and ".npy" in fe.extensions
    assert fe.frame_shift_s == pytest.approx(0.04)
    assert fe.output_dim == 8 * 2 * 4  # 32×64 → stride 2 → 16×32 → pools → 8×16, 4×8, 2×4


def test_lipnet_defaults_give_1728_features_for_50x100_rgb():
    fe = Lips(LipsConfig())
    y, lengths = fe.eval()(torch.rand(1, 5, 3, 50, 100), torch.tensor([5]))
    assert y.shape == (1, 5, 1728) == (1, 5, fe.output_dim) and lengths.tolist() == [5]


def test_load_fits_clips_to_the_configured_size(clips):
    fe = small_lips()
    assert fe.load(clips["mpg"]).shape == (60, 1, 32, 64)
    with pytest.raises(DataError, match="expects 32×64"):
        small_lips(size_mismatch="error").load(clips["mpg"])


def test_lengths_are_exact_and_padding_is_zero_and_does_not_leak():
    torch.manual_seed(0)
    fe = small_lips().eval()
    a, b = torch.rand(12, 1, 32, 64), torch.rand(7, 1, 32, 64)
    batch = torch.zeros(2, 15, 1, 32, 64)  # padded beyond the longest clip too
    batch[0, :12], batch[1, :7] = a, b
    lengths = torch.tensor([12, 7])
    y, out_lengths = fe(batch, lengths)
    assert y.shape == (2, 15, fe.output_dim) and out_lengths.tolist() == [12, 7]
    assert y[0, 12:].abs().sum() == 0 and y[1, 7:].abs().sum() == 0
    alone, _ = fe(b[None], torch.tensor([7]))
    torch.testing.assert_close(y[1, :7], alone[0], atol=1e-5, rtol=1e-4)


def test_training_batch_norm_statistics_ignore_padding():
    torch.manual_seed(0)
    clips = torch.rand(2, 9, 1, 32, 64)
    lengths = torch.tensor([9, 5])
    clips[1, 5:] = 0
    outs = []
    for extra in (0, 6):  # the same clips with 6 more padding frames
        torch.manual_seed(1)
        fe = small_lips().train()
        x = torch.cat([clips, torch.zeros(2, extra, 1, 32, 64)], dim=1)
        y, _ = fe(x, lengths)
        outs.append((y[:, :9], fe.blocks[0].bn.running_mean.clone()))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(outs[0][1], outs[1][1])


def test_forward_refuses_clips_of_another_size():
    with pytest.raises(ValueError, match=r"expects clips \(batch, frames, 1, 32, 64\)"):
        small_lips()(torch.rand(1, 4, 1, 50, 100), torch.tensor([4]))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"temporal_kernels": [2, 3, 3]}, "odd sizes"),
        ({"strides": [2, 1]}, "3 positive integers"),
        ({"height": 4, "width": 8}, "shrink to nothing"),
        ({"size_mismatch": "stretch"}, "resize, crop, error"),
    ],
)
def test_bad_settings_are_errors_naming_the_key(params, message):
    with pytest.raises(ValueError, match=message):
        small_lips(**params)

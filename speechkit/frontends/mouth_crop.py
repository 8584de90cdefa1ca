"""Mouth cropping for whole-face video (the GRID corpus ships 360 × 288 faces, not mouths): find
the face on every frame, place the mouth region in its lower third, smooth that box over time and
cut it out.

Detector (``lbp``): OpenCV's LBP frontal-face cascade (``lbpcascade_frontalface``) run by
scikit-image's :class:`skimage.feature.Cascade`; the model file ships inside the scikit-image
wheel, so it installs offline. opencv-python-headless 5.x has no face model in its wheel (no
``CascadeClassifier``, an empty ``cv2.data``, no ``cv2.face`` landmarks; ``FaceDetectorYN`` needs
an ONNX file from elsewhere). No landmark model ships either, so the mouth is placed by the face
box's geometry: centred, ``MOUTH_Y`` of the way down, ``MOUTH_WIDTH`` of its width.

Boxes are ``(top, left, height, width)`` in pixels, like ``frontend.crop_box``; a frame without
a face is a row of NaN. Over time (:func:`mouth_boxes`) detections far from their neighbours'
running median are dropped, gaps are filled by linear interpolation (the ends held), and the
track is smoothed by a running median then a running mean, both centred (no lag), so the crop
neither jumps nor jitters. A video where no face is found is a :class:`DataError` naming it.

``speechkit-mouth-crop src=DIR|FILE out=DIR`` crops a folder of videos (:func:`main`); the
``lips`` frontend crops on load with ``frontend.mouth_crop=lbp``.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from speechkit.data.errors import DataError
from speechkit.frontends.video_io import conform_rate, read_video

log = logging.getLogger(__name__)

MOUTH_CROPS = ("none", "lbp")  # frontend.mouth_crop choices: no cropping | the LBP face cascade
MOUTH_Y = 0.80  # mouth centre, as a fraction of the face box's height below its top
MOUTH_WIDTH = 0.65  # mouth region's width, as a fraction of the face box's (the mouth is ~0.4, plus margin)
CASCADE_WINDOW = 24  # pixels, the LBP cascade's smallest face (its training window)
DETECT_SIDE = 320  # pixels: frames whose shorter side is longer are shrunk to it for detection only
OUTLIER = 0.25  # a detection this far (fraction of the face size) from the running median is dropped
LUMA = (0.299, 0.587, 0.114)  # BT.601 weights, as video_io's grayscale
CHUNK = 64  # frames resampled at once by crop_frames (bounds memory on long videos)
CRF = 18  # H.264 constant rate factor of written crops (lower = better; 18 is visually lossless)
INSTALL = "pip install speechkit[faces]"


@dataclass(frozen=True)
class CropOptions:
    """How faces are found and the mouth box is smoothed (the defaults suit GRID)."""

    every: int = 1  # run the detector on every n-th frame; the others are interpolated
    min_face: float = 0.2  # smallest face looked for, as a fraction of the frame's shorter side
    scale_factor: float = 1.1  # detector window growth per scale (smaller: slower, finer sizes)
    window: int = 7  # frames, running median and mean over the track (7 = 280 ms at 25 fps)
    min_found: float = 0.2  # fraction of the examined frames that must show a face


# ----------------------------------------------------------------------------- detection


@functools.lru_cache(maxsize=1)
def _cascade():
    """scikit-image's copy of OpenCV's LBP frontal-face cascade, loaded once per process."""
    try:
        from skimage.data import lbp_frontal_face_cascade_filename
        from skimage.feature import Cascade
    except ImportError as e:
        raise ImportError(
            f"mouth cropping needs scikit-image's face detector ({e}): {INSTALL} (or pip install scikit-image)"
        ) from None
    return Cascade(lbp_frontal_face_cascade_filename())


def check_detector(name: str = "lbp") -> None:
    """Raise ImportError (saying what to install) unless the detector ``name`` can run here."""
    if name == "lbp":
        _cascade()


def to_gray(frames: np.ndarray) -> np.ndarray:
    """Frames ``(T, H, W)`` or ``(T, H, W, 1 | 3)`` uint8 → ``(T, H, W)`` uint8 luma."""
    if frames.ndim == 4 and frames.shape[-1] == 3:
        return (frames.astype(np.float32) @ np.array(LUMA, np.float32)).round().astype(np.uint8)
    return frames[..., 0] if frames.ndim == 4 else frames


def detect_faces(frames: np.ndarray, options: CropOptions = CropOptions()) -> np.ndarray:
    """The largest frontal face of every ``options.every``-th frame: uint8 frames ``(T, H, W, 3)``
    (or gray ``(T, H, W)``) → boxes ``(T, 4)`` float ``(top, left, height, width)`` in pixels, NaN
    where no face was found or the frame was not examined."""
    cascade = _cascade()
    gray = to_gray(frames)
    T, H, W = gray.shape
    shrink = max(1.0, min(H, W) / DETECT_SIDE)  # detection runs on frames at most DETECT_SIDE px
    picked = gray[:: options.every]
    if shrink > 1:
        small = F.interpolate(
            torch.from_numpy(picked)[:, None].float(),
            size=(round(H / shrink), round(W / shrink)),
            mode="bilinear",
            antialias=True,
        )
        picked = small[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()
    side = min(picked.shape[1:])
    smallest = max(CASCADE_WINDOW, round(options.min_face * side))
    boxes = np.full((T, 4), np.nan)
    if side < smallest:  # frames smaller than the cascade's window hold no face it can find
        return boxes
    for t, image in zip(range(0, T, options.every), picked):
        found = cascade.detect_multi_scale(
            image, options.scale_factor, 1.0, (smallest, smallest), (side, side)
        )
        if found:
            best = max(found, key=lambda d: d["width"] * d["height"])
            boxes[t] = np.array([best["r"], best["c"], best["height"], best["width"]]) * shrink
    return boxes


# ----------------------------------------------------------------------------- the box over time


def _pad_linear(x: np.ndarray, k: int) -> np.ndarray:
    """``(T, D)`` → ``(T + 2k, D)``, extended by point reflection at both ends, so a running median
    or mean of a straight-line track is that line (edge padding would bend its ends)."""
    k = min(k, len(x) - 1)
    head, tail = 2 * x[:1] - x[1 : k + 1][::-1], 2 * x[-1:] - x[-k - 1 : -1][::-1]
    return np.concatenate([head, x, tail]) if k > 0 else x


def _running(x: np.ndarray, window: int, reduce) -> np.ndarray:
    """Centred running ``reduce`` (np.median, np.mean) of ``(T, D)`` over ``window`` frames."""
    k = min(window // 2, len(x) - 1)
    if k <= 0:
        return x
    padded = _pad_linear(x, k)
    return reduce(np.lib.stride_tricks.sliding_window_view(padded, 2 * k + 1, axis=0), axis=-1)


def _fill(track: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(T, D)`` with rows ``valid`` known → every row, interpolated linearly, the ends held."""
    t, known = np.arange(len(track)), np.flatnonzero(valid)
    return np.stack([np.interp(t, known, track[known, d]) for d in range(track.shape[1])], axis=1)


def mouth_boxes(
    face_boxes: np.ndarray,
    frame_size: tuple[int, int],
    aspect: float = 0.5,
    options: CropOptions = CropOptions(),
    where: str | Path = "<frames>",
) -> np.ndarray:
    """Face boxes ``(T, 4)`` (NaN rows: none) in ``frame_size`` ``(H, W)`` frames → mouth boxes
    ``(T, 4)`` ``(top, left, height, width)``, smoothed over time, ``height = aspect · width``,
    inside the frame. Too few faces (``options.min_found``) is a :class:`DataError` naming ``where``."""
    T = len(face_boxes)
    found = ~np.isnan(face_boxes).any(axis=1)
    examined = math.ceil(T / options.every)
    if found.sum() < max(1, options.min_found * examined):
        raise DataError(
            where,
            f"no face found: the face detector found one on {found.sum()} of the {examined} frames it examined",
            "mouth cropping needs a frontal face; leave this video out, or crop it by hand (frontend.crop_box)",
        )
    top, left, h, w = face_boxes.T
    track = np.stack([left + w / 2, top + MOUTH_Y * h, w], axis=1)  # mouth centre x, y; face width (px)
    median = _running(_fill(track, found), options.window, np.median)
    off = np.abs(track - median).max(axis=1) > OUTLIER * median[:, 2]
    keep = found & ~off
    if not keep.any():  # detections that all disagree: none is more credible than the others
        keep = found
    track = _running(_running(_fill(track, keep), options.window, np.median), options.window, np.mean)
    H, W = frame_size
    bw = MOUTH_WIDTH * track[:, 2]
    bw = np.minimum(bw, np.minimum(W, H / aspect))  # a region larger than the frame shrinks, aspect kept
    bh = aspect * bw
    x0 = np.clip(track[:, 0] - bw / 2, 0, W - bw)
    y0 = np.clip(track[:, 1] - bh / 2, 0, H - bh)
    return np.stack([y0, x0, bh, bw], axis=1)


# ----------------------------------------------------------------------------- cropping


def crop_frames(frames: Tensor, boxes: np.ndarray | Tensor, size: tuple[int, int]) -> Tensor:
    """Cut box ``t`` out of frame ``t`` and scale it to ``size`` ``(h, w)``: frames ``(T, C, H, W)``
    float, boxes ``(T, 4)`` ``(top, left, height, width)`` px → ``(T, C, h, w)`` (bilinear; frames
    whose boxes are all at least twice the output's size are first averaged down by that whole factor)."""
    boxes = torch.as_tensor(boxes, dtype=torch.float64)
    h, w = size
    factor = int(min((boxes[:, 2] / h).min(), (boxes[:, 3] / w).min()))  # whole-pixel shrink
    if factor >= 2:  # average first, so a large box is not aliased
        frames, boxes = F.avg_pool2d(frames, factor), boxes / factor
    H, W = frames.shape[-2:]
    top, left, bh, bw = boxes.unbind(1)
    # output pixel j samples the box at left + (j + ½)·bw / w px; in grid_sample's [-1, 1] units
    # (align_corners=False: -1 and 1 are the frame's outer edges) that is an affine map per frame
    theta = torch.zeros(len(boxes), 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2] = bw / W, (2 * left + bw) / W - 1
    theta[:, 1, 1], theta[:, 1, 2] = bh / H, (2 * top + bh) / H - 1
    theta = theta.to(frames.dtype)
    out = []
    for i in range(0, len(frames), CHUNK):
        x, th = frames[i : i + CHUNK], theta[i : i + CHUNK]
        grid = F.affine_grid(th, [len(x), x.shape[1], h, w], align_corners=False)
        out.append(F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False))
    return torch.cat(out)


def crop_mouths(frames: np.ndarray, boxes: np.ndarray, size: tuple[int, int] = (50, 100)) -> np.ndarray:
    """uint8 frames ``(T, H, W, C)`` and boxes ``(T, 4)`` → uint8 crops ``(T, h, w, C)``, ``size = (h, w)``."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    out = crop_frames(x, boxes, size)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def mouth_crop_frames(
    frames: Tensor,
    size: tuple[int, int],
    where: str | Path = "<frames>",
    options: CropOptions = CropOptions(),
) -> Tensor:
    """Whole-face frames ``(T, C, H, W)`` float in [0, 1] (C = 1 or 3) → mouth crops ``(T, C, *size)``
    (the ``lips`` frontend's ``mouth_crop=lbp``)."""
    pixels = (frames * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    faces = detect_faces(pixels, options)
    boxes = mouth_boxes(faces, tuple(frames.shape[-2:]), size[0] / size[1], options, where)
    return crop_frames(frames, boxes, size).clamp(0, 1)


# ----------------------------------------------------------------------------- files


def write_video(path: Path, frames: np.ndarray, fps: float, crf: int = CRF) -> None:
    """uint8 RGB frames ``(T, h, w, 3)`` → ``path``: ``.npy`` (the stack as is) or, for any other
    suffix, H.264 (yuv420p) in the container FFmpeg picks for it (MP4 for ``.mp4``); written to a
    temporary name then renamed, so an interrupted run never leaves a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.part{path.suffix}")
    if path.suffix.lower() == ".npy":
        np.save(tmp, frames)
    else:
        import av

        if frames.shape[1] % 2 or frames.shape[2] % 2:
            raise ValueError(f"H.264 (yuv420p) needs an even height and width, got {frames.shape[1:3]}")
        with av.open(str(tmp), "w") as out:
            stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            stream.options = {"crf": str(crf), "preset": "fast"}
            stream.codec_context.thread_count = 1
            for image in frames:
                out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            out.mux(stream.encode(None))
    tmp.replace(path)


def crop_video_file(
    src: str | Path,
    dst: str | Path,
    size: tuple[int, int] = (50, 100),
    fps: float | None = None,
    options: CropOptions = CropOptions(),
    default_fps: float = 0.0,
) -> np.ndarray:
    """Read the whole-face video ``src``, write its mouth region to ``dst`` (``size`` ``(h, w)`` px,
    RGB, at ``fps``, or at the file's own rate when None; see :func:`write_video`), and return the
    mouth boxes ``(T, 4)`` used. Unreadable input and faceless video are :class:`DataError` naming ``src``."""
    src, dst = Path(src), Path(dst)
    frames, file_fps = read_video(src, grayscale=False, default_fps=default_fps)
    if fps is not None:
        frames = conform_rate(frames, file_fps, fps, "resample", src)
    pixels = (frames * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (T, H, W, 3)
    boxes = mouth_boxes(detect_faces(pixels, options), pixels.shape[1:3], size[0] / size[1], options, src)
    write_video(dst, crop_mouths(pixels, boxes, size), fps or file_fps)
    return boxes


# ----------------------------------------------------------------------------- command

USAGE = "speechkit-mouth-crop src=DIR|FILE out=DIR [size=50x100] [fps=25] [ext=mp4] [every=1] [jobs=1] [overwrite=false]"
HELP = f"""usage: {USAGE}

Find the face in whole-face videos (GRID's 360 × 288 .mpg) and write the mouth region of each,
smoothed over time, to out/<the same relative path>.<ext> (H.264 MP4, or .npy frame stacks).
  src        a video file, or a folder searched recursively for .mp4 .mpg .mpeg .avi .mov .mkv
  size       HEIGHTxWIDTH pixels of the crops (LipNet: 50x100)
  fps        frame rate to write (nearest-frame conversion); default: each file's own
  every      run the face detector on every n-th frame only (faster; the rest are interpolated)
  jobs       files cropped in parallel processes
  overwrite  false: files whose output exists are skipped (an interrupted run resumes)
Files that cannot be read or show no face are skipped and listed at the end (exit status 1)."""

SOURCE_SUFFIXES = (".mp4", ".mpg", ".mpeg", ".avi", ".mov", ".mkv")


def _parse_size(text: str) -> tuple[int, int]:
    from speechkit.cli import UsageError

    h, x, w = text.lower().partition("x")
    if not (x and h.isdigit() and w.isdigit() and int(h) > 0 and int(w) > 0):
        raise UsageError(f"size={text!r}: give HEIGHTxWIDTH in pixels, e.g. size=50x100")
    return int(h), int(w)


def _crop_one(job: tuple[Path, Path, tuple[int, int], float | None, CropOptions]) -> tuple[Path, str]:
    """One file for the command: ``(src, "")`` when written, ``(src, reason)`` when skipped."""
    src, dst, size, fps, options = job
    torch.set_num_threads(1)
    try:
        crop_video_file(src, dst, size, fps, options)
    except DataError as e:
        return src, f"{e.problem}" + (f" — {e.fix}" if e.fix else "")
    except (OSError, ValueError, RuntimeError) as e:
        return src, f"{type(e).__name__}: {e}"
    return src, ""


def _work(argv: list[str]) -> None:
    import multiprocessing

    from tqdm import tqdm

    from speechkit.cli import UsageError, parse_key_values

    keys = {"src": None, "out": None, "size": "50x100", "fps": "", "ext": "mp4", "every": "1", "jobs": "1"}
    opts = parse_key_values(argv, {**keys, "overwrite": "false"}, "speechkit-mouth-crop")
    src, out, size = Path(opts["src"]), Path(opts["out"]), _parse_size(opts["size"])
    if opts["ext"] not in ("mp4", "npy"):
        raise UsageError(f"ext={opts['ext']!r}: use mp4 or npy")
    try:
        fps = float(opts["fps"]) if opts["fps"] else None
        options, jobs = CropOptions(every=int(opts["every"])), int(opts["jobs"])
    except ValueError as e:
        raise UsageError(f"fps, every and jobs take numbers ({e})") from None
    if (fps is not None and fps <= 0) or options.every < 1 or jobs < 1:
        raise UsageError("fps, every and jobs must be positive")
    if opts["overwrite"] not in ("true", "false"):
        raise UsageError(f"overwrite={opts['overwrite']!r}: use true or false")
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.suffix.lower() in SOURCE_SUFFIXES and p.is_file())
        pairs = [(p, out / p.relative_to(src).with_suffix("." + opts["ext"])) for p in files]
    elif src.is_file():
        pairs = [(src, out / f"{src.stem}.{opts['ext']}")]
    else:
        raise UsageError(f"src={src}: no such file or folder")
    if not pairs:
        raise UsageError(f"src={src}: no video files ({' '.join(SOURCE_SUFFIXES)}) in it")
    todo = [(s, d, size, fps, options) for s, d in pairs if opts["overwrite"] == "true" or not d.exists()]
    if len(todo) < len(pairs):
        print(
            f"{len(pairs) - len(todo)} of {len(pairs)} outputs exist already: skipped (overwrite=true redoes them)"
        )
    try:
        check_detector()  # a missing detector is one error now, not one per file
    except ImportError as e:
        raise UsageError(str(e)) from None
    failed = []
    with multiprocessing.Pool(jobs) if jobs > 1 else _Serial() as pool:
        for path, reason in tqdm(pool.imap_unordered(_crop_one, todo), total=len(todo), unit="video"):
            if reason:
                failed.append((path, reason))
    print(f"wrote {len(todo) - len(failed)} mouth-region videos to {out}")
    if failed:
        print(f"skipped {len(failed)} file(s):")
        for path, reason in sorted(failed):
            print(f"  {path}: {reason}")
        raise SystemExit(1)


class _Serial:
    """``multiprocessing.Pool``'s ``imap_unordered`` in this process (jobs=1)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    @staticmethod
    def imap_unordered(fn, items):
        return map(fn, items)


def main(argv: list[str] | None = None) -> None:
    """``speechkit-mouth-crop``: crop the mouth region out of whole-face videos."""
    from speechkit.cli import run

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run(_work, USAGE, HELP, argv)


if __name__ == "__main__":
    main()

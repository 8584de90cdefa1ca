"""Reading video for the ``lips`` frontend (video.py): ``read_video`` decodes a clip as stored
(PyAV/FFmpeg, or a ``.npy`` stack) and refuses a damaged or truncated file naming it;
``load_video`` conforms it to the frontend's frame rate and size (resample, resize, crop, or
refuse, as configured)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from speechkit.data.errors import DataError
from speechkit.data.files import check_media_file
from speechkit.frontends.base import log_once
from speechkit.frontends.ffmpeg import damage, watched

log = logging.getLogger("speechkit.frontends.video")  # the messages users know, under the same name

SIZE_MISMATCH = ("resize", "crop", "error")
FPS_MISMATCH = ("resample", "error")
FPS_TOLERANCE = 1e-3  # relative: 25 and 25.0000001 fps are the same rate, 29.97 and 30 are not

# Event kinds log_once has logged in this process. At DEBUG, not INFO: resizing and rate conversion
# are what the configuration asked for, and Hydra's console log shares stdout with
# ``speechkit-transcribe``'s text.
_logged: set[tuple] = set()


# ----------------------------------------------------------------------------- reading


def _corrupt(path: Path, what: str) -> DataError:
    return DataError(
        path,
        f"corrupt or truncated video: {what}",
        "re-copy or re-encode the file (ffprobe shows what FFmpeg makes of it), or leave it out of the manifest",
    )


def _decode_av(path: Path, grayscale: bool) -> tuple[np.ndarray, float | None]:
    """Decode every frame of the first video stream → ``(T, H, W, C)`` uint8, frames per second.

    FFmpeg's error messages during decoding (which it otherwise only logs, returning whatever
    frames it could rebuild) make the file count as corrupt (frontends/ffmpeg.py), as does a frame
    count short of the one the container declares.
    """
    import av

    fmt = "gray" if grayscale else "rgb24"
    frames: list[np.ndarray] = []
    with watched(path, lambda what: _corrupt(path, what)) as messages:
        try:
            container = av.open(str(path))
        except av.FFmpegError as e:
            raise DataError(
                path,
                f"not a readable video ({type(e).__name__}: {e.strerror or e})",
                "check that it is a video file FFmpeg can open (ffprobe FILE), or re-encode it to MP4",
            ) from None
        with container:
            if not container.streams.video:
                if problems := damage(messages):  # e.g. an MP4 cut before its index ("moov atom not found")
                    raise _corrupt(path, f"FFmpeg reported {problems[0]!r} and found no video stream")
                if not container.streams:
                    raise DataError(
                        path,
                        "has zero frames: the container holds no streams at all "
                        "(an empty recording, or an MP4 cut short inside its index)",
                        "re-create or re-copy the clip, or leave it out of the manifest",
                    )
                raise DataError(path, "has no video stream", "point the manifest at a video file")
            stream = container.streams.video[0]
            if stream.codec_context is None:  # a damaged header can name no codec FFmpeg knows
                raise _corrupt(path, "its video stream has no decodable codec")
            # one decoding thread (see frontends/ffmpeg.py; the loader's workers decode clips in parallel)
            stream.codec_context.thread_count = 1
            rate = stream.average_rate or stream.guessed_rate
            declared = stream.frames  # 0 where the container does not say (MPEG program streams)
            try:
                for frame in container.decode(stream):
                    frames.append(frame.to_ndarray(format=fmt))
            except av.FFmpegError as e:
                raise _corrupt(
                    path, f"decoding stopped after {len(frames)} frame(s) ({e.strerror or e})"
                ) from None
    if errors := damage(messages):
        raise _corrupt(path, f"FFmpeg reported {errors[0]!r} after {len(frames)} decoded frame(s)")
    if not frames:
        raise DataError(path, "has zero frames", "re-create the clip or leave it out of the manifest")
    if declared and len(frames) < declared:
        raise _corrupt(path, f"the container declares {declared} frames but only {len(frames)} decode")
    video = np.stack(frames)
    if video.ndim == 3:
        video = video[..., None]  # gray: (T, H, W) → (T, H, W, 1)
    return video, float(rate) if rate else None


def _read_npy(path: Path, grayscale: bool) -> np.ndarray:
    """A ``.npy`` frame stack ``(T, H, W)`` or ``(T, H, W, C)`` (C = 1 or 3), uint8 0–255 or
    float 0–1 → ``(T, H, W, C)`` float32 in [0, 1], with C = 1 when ``grayscale``."""
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(
            path, f"cannot read the .npy frame stack ({e})", "re-create it with numpy.save"
        ) from None
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4 or data.shape[-1] not in (1, 3):
        raise DataError(
            path,
            f"a .npy frame stack must be (frames, height, width) or (frames, height, width, 1 or 3), got {data.shape}",
            "save frames time-first with channels last",
        )
    if data.shape[0] == 0:
        raise DataError(path, "has zero frames", "re-create the clip or leave it out of the manifest")
    if data.dtype == np.uint8:
        data = data.astype(np.float32) / 255
    elif np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float32)
        if not np.isfinite(data).all() or data.min() < 0 or data.max() > 1:
            raise DataError(
                path, "float frames must be finite and in [0, 1]", "scale pixels to [0, 1] or save uint8"
            )
    else:
        raise DataError(path, f"frames of dtype {data.dtype}", "save uint8 (0–255) or float (0–1) frames")
    channels = data.shape[-1]
    if grayscale and channels == 3:
        data = (data.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[
            ..., None
        ]  # BT.601 luma
    elif not grayscale and channels == 1:
        data = np.repeat(data, 3, axis=-1)
    return data


def read_video(path: str | Path, grayscale: bool = True, default_fps: float = 0.0) -> tuple[Tensor, float]:
    """One clip as it is stored → frames ``(T, C, H, W)`` float32 in ``[0, 1]`` (C = 1 for
    ``grayscale`` (BT.601 luma), else 3 (RGB)), and its frame rate in frames per second.

    ``default_fps`` is the rate assumed for input that carries none (``.npy`` stacks); 0
    makes such input a :class:`DataError` ("fps missing").
    """
    path = Path(path)
    check_media_file(path, "video")
    if path.suffix.lower() == ".npy":
        data, fps = _read_npy(path, grayscale), None
    else:
        data, fps = _decode_av(path, grayscale)
    if fps is None or fps <= 0:
        if default_fps <= 0:
            raise DataError(
                path,
                "fps missing: the file does not say its frame rate, so its frames cannot be mapped to seconds",
                "set frontend.default_fps to the rate it was recorded at (e.g. 25), or store it as a video file",
            )
        fps = default_fps
    frames = torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2)  # (T, H, W, C) → (T, C, H, W)
    frames = frames.float() / 255 if frames.dtype == torch.uint8 else frames.float()
    return frames.contiguous(), float(fps)


def resample_frames(frames: Tensor, fps_in: float, fps_out: float) -> Tensor:
    """Nearest-frame rate conversion of ``(T, ...)`` frames: ``round(T · fps_out / fps_in)``
    frames out, output frame ``i`` (centred at ``(i + ½) / fps_out`` s) is the input frame
    shown at that time."""
    n_in = frames.shape[0]
    n_out = max(1, round(n_in * fps_out / fps_in))
    centres = (torch.arange(n_out, dtype=torch.float64) + 0.5) * fps_in / fps_out
    return frames[centres.floor().long().clamp(0, n_in - 1)]


def fit_frames(frames: Tensor, height: int, width: int) -> Tensor:
    """Scale ``(T, C, H, W)`` frames, aspect ratio kept, until they cover ``height × width``,
    then centre-crop to it (bilinear, antialiased when shrinking)."""
    T, C, H, W = frames.shape
    scale = max(height / H, width / W)
    h, w = max(height, round(H * scale)), max(width, round(W * scale))
    if (h, w) != (H, W):
        frames = F.interpolate(frames, size=(h, w), mode="bilinear", align_corners=False, antialias=scale < 1)
    return centre_crop(frames, height, width).clamp(0, 1)


def centre_crop(frames: Tensor, height: int, width: int) -> Tensor:
    """The central ``height × width`` window of ``(T, C, H, W)`` frames at least that large."""
    H, W = frames.shape[-2:]
    top, left = (H - height) // 2, (W - width) // 2
    return frames[..., top : top + height, left : left + width]


def load_video(
    path: str | Path,
    fps: float,
    size: tuple[int, int] | None = None,
    grayscale: bool = True,
    size_mismatch: str = "resize",
    fps_mismatch: str = "error",
    default_fps: float = 0.0,
    crop_box: tuple[int, int, int, int] | list[int] | None = None,
) -> Tensor:
    """Read one clip into frames ``(T, C, H, W)`` float32 in ``[0, 1]`` at ``fps`` frames per second.

    - a file at another frame rate is refused (``fps_mismatch="error"``) or converted by
      nearest frames (``"resample"``); ``default_fps`` as for :func:`read_video`;
    - ``crop_box`` ``(top, left, height, width)`` in pixels: a fixed region (the mouth) cut
      out of every frame;
    - ``size`` ``(height, width)``: frames of another size are handled as :func:`fit_size` says.

    Raises :class:`DataError` naming the file for anything it cannot use as asked.
    """
    path = Path(path)
    frames, file_fps = read_video(path, grayscale, default_fps)
    frames = conform_rate(frames, file_fps, fps, fps_mismatch, path)
    if crop_box:
        frames = crop_region(frames, crop_box, path)
    if size is not None:
        frames = fit_size(frames, size, size_mismatch, path)
    return frames.contiguous()


def conform_rate(
    frames: Tensor, file_fps: float, fps: float, mode: str = "error", path: Path | str = "<frames>"
) -> Tensor:
    """Frames ``(T, ...)`` recorded at ``file_fps`` → at ``fps``: unchanged when the rates agree,
    else a :class:`DataError` (``mode="error"``) or nearest-frame conversion (``"resample"``)."""
    if mode not in FPS_MISMATCH:
        raise ValueError(f"fps_mismatch={mode!r}: use one of {', '.join(FPS_MISMATCH)}")
    if abs(file_fps - fps) <= FPS_TOLERANCE * fps:
        return frames
    if mode == "error":
        raise DataError(
            path,
            f"frame rate {file_fps:g} fps, but the model works at {fps:g} fps",
            "set frontend.fps_mismatch=resample to convert it, or re-encode it at the configured rate",
        )
    msg = "converting video from %g to %g fps (nearest frame)"
    log_once(log, _logged, ("fps", file_fps, fps), msg, file_fps, fps, level=logging.DEBUG)
    return resample_frames(frames, file_fps, fps)


def fit_size(
    frames: Tensor, size: tuple[int, int], mode: str = "resize", path: Path | str = "<frames>"
) -> Tensor:
    """Frames ``(T, C, H, W)`` → ``(T, C, *size)``: unchanged when already that size; otherwise
    scaled (aspect ratio kept) and centre-cropped (``mode="resize"``), only centre-cropped
    (``"crop"``; smaller frames are an error) or refused (``"error"``) with a :class:`DataError`."""
    if mode not in SIZE_MISMATCH:
        raise ValueError(f"size_mismatch={mode!r}: use one of {', '.join(SIZE_MISMATCH)}")
    height, width = size
    H, W = frames.shape[-2:]
    if (H, W) == (height, width):
        return frames
    problem = f"frames are {H}×{W} (height × width), the model expects {height}×{width}"
    if mode == "error":
        raise DataError(
            path,
            problem,
            "crop the clips to the mouth region at that size, or set frontend.size_mismatch=resize",
        )
    if mode == "crop":
        if H < height or W < width:
            raise DataError(path, problem + ": too small to crop", "set frontend.size_mismatch=resize")
        return centre_crop(frames, height, width)
    msg = "fitting %d×%d video frames to %d×%d"
    log_once(log, _logged, ("resize", H, W, height, width), msg, H, W, height, width, level=logging.DEBUG)
    return fit_frames(frames, height, width)


def crop_region(
    frames: Tensor, box: tuple[int, int, int, int] | list[int], path: Path | str = "<frames>"
) -> Tensor:
    """The ``(top, left, height, width)`` pixel window of ``(T, C, H, W)`` frames; a window
    reaching outside the frame is a :class:`DataError`."""
    if len(box) != 4:
        raise ValueError(f"crop_box={list(box)}: give [top, left, height, width] in pixels")
    top, left, height, width = (int(v) for v in box)
    H, W = frames.shape[-2:]
    if top < 0 or left < 0 or height <= 0 or width <= 0 or top + height > H or left + width > W:
        raise DataError(
            path, f"crop_box {list(box)} does not fit inside its {H}×{W} frames", "fix frontend.crop_box"
        )
    return frames[..., top : top + height, left : left + width]

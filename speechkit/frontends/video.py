"""Video: ``load_video`` reads mouth-region clips, and the ``lips`` plugin (LipNet's
spatiotemporal CNN stem) turns padded clips ``(B, T, C, H, W)`` into features ``(B, T, F)``.

Loading. MP4 (H.264, MPEG-4 part 2), the MPEG-1 ``.mpg`` files the GRID corpus ships, AVI and
anything else FFmpeg demuxes are decoded with PyAV (FFmpeg's libraries, bundled in its wheels);
``.npy`` frame stacks ``(T, H, W)`` or ``(T, H, W, C)`` are read with numpy. The frame rate
is kept — frame ``t`` covers seconds ``[t / fps, (t + 1) / fps)`` — and checked against the
configured one, so output frames map to seconds. Bad input is a :class:`DataError` naming the
file: unreadable, corrupt or truncated streams (FFmpeg's own error reports are captured and
a container's declared frame count is checked), zero frames, an unknown frame rate, a rate or a
frame size other than the configured one where the configuration says ``error``.

Mouth cropping. The ``lips`` frontend expects mouth-region clips (GRID-style 50 × 100 crops).
Whole-face video needs a mouth crop first: :meth:`Lips.crop_mouth` is the plugin point (the
default applies the fixed ``crop_box``, if any); a landmark-based cropper subclasses
:class:`Lips`, overrides it, and registers itself as another frontend.

Features. Three blocks of 3-D convolution → batch norm → ReLU → (spatial dropout) → spatial
max-pooling (LipNet, Assael et al. 2016). Time is never strided or pooled, so ``T`` frames in
give ``T`` frames out, and frames past each clip's length are zeroed after every block (batch
norm statistics count valid frames only), so a clip's features do not depend on its batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from speechkit.data.errors import DataError
from speechkit.data.files import check_media_file
from speechkit.frontends.base import Frontend, invalid_input, invalid_setting, log_once
from speechkit.functional import mask_padding, masked_batch_norm_of, masked_standardize
from speechkit.registry import register

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mpg", ".mpeg", ".avi", ".npy")
SIZE_MISMATCH = ("resize", "crop", "error")
FPS_MISMATCH = ("resample", "error")
NORMALIZE_MODES = ("none", "utterance")
FPS_TOLERANCE = 1e-3  # relative: 25 and 25.0000001 fps are the same rate, 29.97 and 30 are not
NORM_EPS = 1e-3  # smallest pixel standard deviation divided by, in [0, 1] pixel units

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


def _errors(messages: list[tuple[int, str, str]]) -> list[str]:
    """FFmpeg's captured messages that mean damaged data: errors, and warnings of corrupt packets."""
    import av.logging

    return [m.strip() for level, _, m in messages if level <= av.logging.ERROR or "corrupt" in m.lower()]


ISO_BMFF_SUFFIXES = (".mp4", ".m4v", ".mov", ".3gp")  # containers made of size-prefixed boxes


def _box_truncation(path: Path) -> tuple[str, int, int] | None:
    """``(box type, declared bytes, present bytes)`` of the first top-level box of an MP4/MOV file
    that runs past the end of the file, else None.

    FFmpeg decodes an MP4 cut inside its ``mdat`` box (the frame data) without an error when its
    index (``moov``) comes first, concealing the lost bytes; the box sizes still tell.
    """
    size = path.stat().st_size
    pos = 0
    with path.open("rb") as f:
        while pos + 8 <= size:
            f.seek(pos)
            box_size, box_type = int.from_bytes(f.read(4), "big"), f.read(4).decode("latin-1")
            if box_size == 1 and pos + 16 <= size:  # a 64-bit size follows the type
                box_size = int.from_bytes(f.read(8), "big")
            elif box_size == 0:  # the box runs to the end of the file
                return None
            if box_size < 8 or not (box_type.isascii() and box_type.isprintable()):
                return None  # not a box header: leave the verdict to FFmpeg
            if pos + box_size > size:
                return box_type, box_size, size - pos
            pos += box_size
    return None


def _decode_av(path: Path, grayscale: bool) -> tuple[np.ndarray, float | None]:
    """Decode every frame of the first video stream → ``(T, H, W, C)`` uint8, frames per second.

    FFmpeg's error messages during decoding (which it otherwise only logs, returning whatever
    frames it could rebuild) make the file count as corrupt, as does a frame count short of
    the one the container declares.
    """
    import av
    import av.logging

    if path.suffix.lower() in ISO_BMFF_SUFFIXES and (cut := _box_truncation(path)) is not None:
        box, declared, present = cut
        raise _corrupt(path, f"its {box!r} box declares {declared} bytes but only {present} are present")
    fmt = "gray" if grayscale else "rgb24"
    frames: list[np.ndarray] = []
    previous_level = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture() as messages:
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
                    problems = _errors(messages)
                    if problems:  # e.g. an MP4 cut before its index ("moov atom not found")
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
                # one decoding thread: FFmpeg's messages from other threads would escape the capture
                # (and the data loader's workers already decode clips in parallel)
                if stream.codec_context is None:  # a damaged header can name no codec FFmpeg knows
                    raise _corrupt(path, "its video stream has no decodable codec")
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
    except DataError:
        raise
    except (UnicodeDecodeError, ValueError, OverflowError, IndexError, RuntimeError) as e:
        # damaged headers can make PyAV fail outside FFmpeg (e.g. undecodable metadata strings)
        raise _corrupt(path, f"{type(e).__name__} while reading it: {e}") from None
    finally:
        av.logging.set_level(previous_level)
    errors = _errors(messages)
    if errors:
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


# ----------------------------------------------------------------------------- the CNN


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Pixels along one side after a convolution: ``floor((size + 2p − k) / s) + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


class MaskedBatchNorm3d(nn.BatchNorm3d):
    """Batch norm over ``(B, C, T, H, W)`` whose training statistics count the frames
    ``t < lengths[b]`` only (:func:`~speechkit.functional.masked_batch_norm`); in evaluation the
    running statistics are used, as in :class:`torch.nn.BatchNorm3d`."""

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if not self.training or lengths is None:
            return super().forward(x)
        return masked_batch_norm_of(self, x, lengths, 2)  # (B, C, T, H, W)


class STCNNBlock(nn.Module):
    """3-D convolution (time kept, space strided) → masked batch norm → ReLU → channel dropout
    → spatial max-pool; ``(B, C, T, H, W)`` → ``(B, C', T, H', W')``, padded frames zeroed."""

    def __init__(
        self, c_in: int, c_out: int, k_t: int, k_s: int, stride: int, pool: int, dropout: float
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            c_in,
            c_out,
            (k_t, k_s, k_s),
            stride=(1, stride, stride),
            padding=(k_t // 2, k_s // 2, k_s // 2),
            bias=False,
        )
        self.bn = MaskedBatchNorm3d(c_out)
        self.drop = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.pool = nn.MaxPool3d((1, pool, pool)) if pool > 1 else nn.Identity()

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        x = self.pool(self.drop(F.relu(self.bn(self.conv(x), lengths))))
        return mask_padding(x, lengths, time_dim=2)


@dataclass
class LipsConfig:
    # -- input: what load() delivers ----------------------------------------------------
    fps: float = 25.0  # frames per second the model works at (GRID: 25, i.e. 40 ms a frame)
    height: int = 50  # pixels, mouth-region frame height (LipNet: 50)
    width: int = 100  # pixels, mouth-region frame width (LipNet: 100)
    grayscale: bool = False  # true: 1 channel (BT.601 luma); false: 3 (RGB)
    crop_box: list[int] = field(
        default_factory=list
    )  # [top, left, height, width] px cut first; [] = whole frame
    size_mismatch: str = (
        "resize"  # frames not height × width: resize (aspect kept, centre crop) | crop | error
    )
    fps_mismatch: str = "error"  # files at another rate: error | resample (nearest frame)
    default_fps: float = 0.0  # rate assumed for input without one (.npy stacks); 0 = such input is an error
    normalize: str = "utterance"  # pixels: utterance (mean/std per clip and channel, valid frames) | none
    # -- the spatiotemporal CNN (one entry per block) -------------------------------------
    channels: list[int] = field(default_factory=lambda: [32, 64, 96])  # output channels
    temporal_kernels: list[int] = field(default_factory=lambda: [3, 3, 3])  # frames, odd (time is kept)
    spatial_kernels: list[int] = field(default_factory=lambda: [5, 5, 3])  # pixels, odd
    strides: list[int] = field(default_factory=lambda: [2, 1, 1])  # spatial stride of each convolution
    pools: list[int] = field(default_factory=lambda: [2, 2, 2])  # spatial max-pool of each block (1 = none)
    dropout: float = 0.5  # channel (spatial) dropout after each block in training (LipNet: 0.5)


def _check_config(name: str, cfg: LipsConfig) -> None:
    """Raise ValueError naming the field and what it may be for any bad parameter."""

    def bad(key: str, value: object, allowed: str) -> ValueError:
        return invalid_setting(name, key, value, allowed)

    if cfg.fps <= 0:
        raise bad("fps", cfg.fps, "a positive number of frames per second")
    if cfg.height <= 0 or cfg.width <= 0:
        raise bad("height/width", (cfg.height, cfg.width), "positive numbers of pixels")
    if cfg.size_mismatch not in SIZE_MISMATCH:
        raise bad("size_mismatch", cfg.size_mismatch, ", ".join(SIZE_MISMATCH))
    if cfg.fps_mismatch not in FPS_MISMATCH:
        raise bad("fps_mismatch", cfg.fps_mismatch, ", ".join(FPS_MISMATCH))
    if cfg.normalize not in NORMALIZE_MODES:
        raise bad("normalize", cfg.normalize, ", ".join(NORMALIZE_MODES))
    if cfg.crop_box and len(cfg.crop_box) != 4:
        raise bad("crop_box", list(cfg.crop_box), "[] or [top, left, height, width]")
    n = len(cfg.channels)
    if n == 0:
        raise bad("channels", list(cfg.channels), "at least one block")
    for key in ("temporal_kernels", "spatial_kernels", "strides", "pools"):
        value = list(getattr(cfg, key))
        if len(value) != n or any(v < 1 for v in value):
            raise bad(key, value, f"{n} positive integers, one per block (channels has {n})")
    for key in ("temporal_kernels", "spatial_kernels"):
        if any(k % 2 == 0 for k in getattr(cfg, key)):
            raise bad(key, list(getattr(cfg, key)), "odd sizes (same padding keeps every frame)")
    if not 0 <= cfg.dropout < 1:
        raise bad("dropout", cfg.dropout, "a probability in [0, 1)")


@register("frontend", "lips", LipsConfig)
class Lips(Frontend):
    """LipNet's spatiotemporal CNN: mouth clips ``(B, T, C, H, W)`` → ``(B, T, channels[-1] · H' · W')``
    (96 · 3 · 6 = 1728 for 50 × 100 RGB at the defaults); ``T`` and the lengths are unchanged."""

    modality = "video"
    extensions = VIDEO_EXTENSIONS

    def __init__(self, cfg: LipsConfig) -> None:
        super().__init__()
        name = getattr(self, "plugin_name", type(self).__name__)
        _check_config(name, cfg)
        self.cfg = cfg
        self.in_channels = 1 if cfg.grayscale else 3
        self.frame_shift_s = 1.0 / cfg.fps  # seconds per output frame (0.04 at 25 fps)
        blocks = []
        c_in, h, w = self.in_channels, cfg.height, cfg.width
        for i, (c_out, k_t, k_s, stride, pool) in enumerate(
            zip(cfg.channels, cfg.temporal_kernels, cfg.spatial_kernels, cfg.strides, cfg.pools)
        ):
            blocks.append(STCNNBlock(c_in, c_out, k_t, k_s, stride, pool, cfg.dropout))
            h = conv_output_size(h, k_s, stride, k_s // 2) // pool
            w = conv_output_size(w, k_s, stride, k_s // 2) // pool
            if h < 1 or w < 1:
                raise ValueError(
                    f"frontend {name!r}: {cfg.height}×{cfg.width} frames shrink to nothing after block {i + 1}; "
                    "use larger frames, or smaller strides/pools"
                )
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.out_height, self.out_width = h, w  # pixels left after the last block
        self.output_dim = c_in * h * w

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"input={self.in_channels}×{c.height}×{c.width} at {c.fps:g} fps, "
            f"output_dim={self.output_dim} ({c.channels[-1]}×{self.out_height}×{self.out_width})"
        )

    def crop_mouth(self, frames: Tensor, path: Path) -> Tensor:
        """The plugin point for mouth cropping: whole frames ``(T, C, H, W)`` → the mouth region.

        Here: the fixed ``crop_box``, or the frames unchanged. A landmark-based cropper
        (face detector + mouth landmarks, smoothed over time) overrides this method in a
        subclass registered as its own frontend; resizing to ``height × width`` follows.
        """
        return crop_region(frames, self.cfg.crop_box, path) if self.cfg.crop_box else frames

    def load(self, path: Path) -> Tensor:
        """One clip → frames ``(T, C, height, width)`` float32 in ``[0, 1]`` at ``cfg.fps``."""
        c, path = self.cfg, Path(path)
        frames, file_fps = read_video(path, c.grayscale, c.default_fps)
        frames = conform_rate(frames, file_fps, c.fps, c.fps_mismatch, path)
        frames = self.crop_mouth(frames, path)
        return fit_size(frames, (c.height, c.width), c.size_mismatch, path).contiguous()

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames out = frames in: time is neither strided nor pooled."""
        return lengths

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Clips ``(B, T, C, H, W)`` (float in [0, 1], or uint8), ``lengths`` ``(B,)`` frames →
        features ``(B, T, F)`` zero past each length, the same lengths."""
        c = self.cfg
        if x.dim() != 5 or tuple(x.shape[2:]) != (self.in_channels, c.height, c.width):
            raise invalid_input(
                "lips",
                f"clips (batch, frames, {self.in_channels}, {c.height}, {c.width})",
                x,
                "load them with its load() (it resizes) or fix frontend.height/width/grayscale",
            )
        lengths = lengths.to(device=x.device, dtype=torch.long)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        if c.normalize == "utterance":  # each clip per channel over its valid frames' pixels
            x = masked_standardize(x, lengths, dim=(1, 3, 4), eps=NORM_EPS)
        else:
            x = mask_padding(x, lengths)
        y = x.permute(0, 2, 1, 3, 4)  # (B, C, T, H, W) for Conv3d
        for block in self.blocks:
            y = block(y, lengths)
        B, C, T, H, W = y.shape
        return y.permute(0, 2, 1, 3, 4).reshape(B, T, C * H * W), lengths

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
Whole-face video needs a mouth crop first: ``mouth_crop=lbp`` finds the face on every frame and
cuts the mouth region, smoothed over time (mouth_crop.py; slow for training: crop a corpus once
with ``speechkit-mouth-crop``). :meth:`Lips.crop_mouth` is the plugin point (after the fixed
``crop_box``, if any); another cropper subclasses :class:`Lips`, overrides it, and registers
itself as another frontend.

Features. Three blocks of 3-D convolution → batch norm → ReLU → (spatial dropout) → spatial
max-pooling (LipNet, Assael et al. 2016). Time is never strided or pooled, so ``T`` frames in
give ``T`` frames out, and frames past each clip's length are zeroed after every block (batch
norm statistics count valid frames only), so a clip's features do not depend on its batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from speechkit.frontends.base import Frontend, invalid_input, invalid_setting
from speechkit.frontends.mouth_crop import MOUTH_CROPS, check_detector, mouth_crop_frames
from speechkit.frontends.video_io import (  # noqa: F401 (re-exported)
    FPS_MISMATCH,
    SIZE_MISMATCH,
    conform_rate,
    crop_region,
    fit_size,
    load_video,
    read_video,
)
from speechkit.functional import mask_padding, masked_batch_norm_of, masked_standardize
from speechkit.registry import register

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mpg", ".mpeg", ".avi", ".npy")
NORMALIZE_MODES = ("none", "utterance")
NORM_EPS = 1e-3  # smallest pixel standard deviation divided by, in [0, 1] pixel units

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
    mouth_crop: str = "none"  # whole-face video: none | lbp (find the face, cut the mouth; speechkit[faces])
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
    if cfg.mouth_crop not in MOUTH_CROPS:
        raise bad("mouth_crop", cfg.mouth_crop, ", ".join(MOUTH_CROPS))
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
        if cfg.mouth_crop != "none":
            check_detector(cfg.mouth_crop)  # not installed: one error now, not one per clip
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

        Here: the fixed ``crop_box``, if any, then with ``mouth_crop=lbp`` the face detector's
        mouth region at ``height × width``; otherwise the frames unchanged. Another cropper
        overrides this method in a subclass registered as its own frontend; resizing to
        ``height × width`` follows.
        """
        c = self.cfg
        frames = crop_region(frames, c.crop_box, path) if c.crop_box else frames
        return mouth_crop_frames(frames, (c.height, c.width), path) if c.mouth_crop != "none" else frames

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

"""Image frontend: ``load_image`` reads a text-line image, and the plugin ``ocr_line`` turns a padded
batch of lines ``(B, W, H)`` into column features ``(B, T, F)`` with a CRNN-style convolutional stem.

Conventions:

- raw tensors are time-first, ``(width, height)`` float32, the height fixed (``height``, 32 px by
  default) and the width following the aspect ratio; values are *ink*, ``1 - luminance`` in
  ``[0, 1]`` (1 = black, 0 = white paper), so the zero padding of a batch reads as blank paper;
- the stem is ``len(channels)`` blocks of 3×3 convolution → max pooling (height by 2 while more
  than one row is left, width by ``pool_width[i]``) → batch norm → ReLU; what is left of the
  height is then collapsed (max, mean, or flattened into the features);
- lengths are exact: ``T = W // prod(pool_width)`` (pools floor), and padded columns never change
  valid outputs — each block's output is zeroed past its row's length, and batch norm computes
  its training statistics over valid columns only (:class:`MaskedBatchNorm2d`,
  :func:`speechkit.functional.masked_batch_norm`), so a line's features in a padded batch equal
  its features computed alone.
"""

from __future__ import annotations

import math
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor, nn
from torch.nn import functional as F

from speechkit.data.errors import DataError
from speechkit.data.files import check_media_file
from speechkit.frontends.base import Frontend, invalid_input, invalid_setting
from speechkit.functional import mask_padding, masked_batch_norm_of, masked_standardize
from speechkit.registry import register

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
DEFAULT_HEIGHT = 32  # px every line is scaled to
DEFAULT_MAX_WIDTH = 4096  # px after scaling: about 200 characters of a line at height 32
DEFAULT_MAX_PIXELS = 50_000_000  # pixels of the file before scaling (decompression-bomb guard)
NORM_EPS = 1e-3  # smallest standard deviation divided by, in ink units
COLLAPSE_MODES = ("max", "mean", "flatten")
NORMALIZE_MODES = ("none", "line")

# ----------------------------------------------------------------------------- loading


def _png_declared_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None when the file is not a PNG."""
    with path.open("rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def _gray(img: Image.Image) -> np.ndarray:
    """Luminance ``(h, w)`` float32 in ``[0, 1]`` (1 = white) of any Pillow mode.

    Transparent pixels are composited over white paper; 16-bit grayscale keeps its depth.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0.0, 1.0)
    if img.mode == "F":
        return np.clip(np.asarray(img, dtype=np.float32) / 255.0, 0.0, 1.0)
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def scaled_width(width: int, height: int, target_height: int) -> int:
    """Columns of a ``width`` × ``height`` image scaled to ``target_height`` rows, aspect kept."""
    return int(round(width * target_height / height))


def load_image(
    path: str | Path,
    height: int = DEFAULT_HEIGHT,
    max_width: int = DEFAULT_MAX_WIDTH,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_width: int = 1,
) -> Tensor:
    """Read a text-line image into ink ``(width, height)`` float32 in ``[0, 1]``, time-first.

    PNG, JPEG and anything else Pillow reads, colour or grayscale (8 or 16 bit, with or without
    alpha, EXIF orientation applied), any size: converted to luminance, scaled to ``height`` rows
    keeping the aspect ratio (Pillow's antialiased bilinear), then inverted so ink is 1.

    Raises :class:`DataError` naming the file for a missing, empty, corrupt or truncated file, a
    zero-size image, more than ``max_pixels`` pixels before scaling, more than ``max_width`` or
    fewer than ``min_width`` columns after scaling (the frontend's ``max_width``, ``max_pixels``
    and its time subsampling set these).
    """
    path = Path(path)
    check_media_file(path, "image")
    if path.stat().st_size == 0:
        raise DataError(path, "is empty (0 bytes)", "re-create the image or remove it from the manifest")
    raise_limit = "raise frontend.max_pixels (e.g. frontend.max_pixels=200000000) if it is genuine"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as e:
        raise DataError(
            path, f"far too many pixels ({e})", f"crop the text line out first, or {raise_limit}"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error) as e:
        declared = _png_declared_size(path)
        if declared is not None and 0 in declared:
            raise DataError(
                path, f"zero-size image ({declared[0]}×{declared[1]} pixels)", "re-create it or drop it"
            ) from None
        raise DataError(
            path,
            f"cannot read the image ({type(e).__name__}: {e})",
            "the file is corrupt, truncated or not an image Pillow reads; re-create it or convert it to PNG",
        ) from None
    with img:
        w, h = img.size
        if w == 0 or h == 0:
            raise DataError(path, f"zero-size image ({w}×{h} pixels)", "re-create it or drop it")
        if w * h > max_pixels:
            raise DataError(
                path,
                f"far too large: {w}×{h} = {w * h} pixels, more than frontend.max_pixels={max_pixels}",
                f"crop the text line out of the page first, or {raise_limit}",
            )
        try:  # a PNG's EXIF may follow its pixels, so this can read (and find truncated) data
            rotated = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF: turned by 90°, width is height
        except (OSError, SyntaxError, ValueError, struct.error):
            rotated = False  # the decode below reports the damage
        if rotated:
            w, h = h, w
        cols = scaled_width(w, h, height)
        if cols > max_width:
            raise DataError(
                path,
                f"far too wide for one text line: {w}×{h} pixels scaled to height {height} is {cols} px wide, "
                f"more than frontend.max_width={max_width}",
                "split it into shorter lines, or raise frontend.max_width (e.g. frontend.max_width=8192)",
            )
        if cols < min_width:
            raise DataError(
                path,
                f"far too tall for a text line: {w}×{h} pixels scaled to height {height} is {cols} px wide, "
                f"fewer than the {min_width} column(s) one output frame needs",
                "crop single text lines out of the page (a line is wider than tall), "
                "or lower the frontend's pool_width",
            )
        try:
            if img.format == "PNG":  # a PNG cut inside its first IDAT chunk decodes as black, no error:
                with Image.open(path) as whole:  # verify() reads every chunk and checks its CRC
                    whole.verify()
            img.load()
            gray = _gray(ImageOps.exif_transpose(img))
        except (OSError, SyntaxError, ValueError, struct.error) as e:
            raise DataError(
                path,
                f"cannot decode the image ({type(e).__name__}: {e})",
                "the file is corrupt or truncated; re-create or re-copy it",
            ) from None
    scaled = Image.fromarray(gray).resize((cols, height), Image.Resampling.BILINEAR)
    ink = 1.0 - np.clip(np.asarray(scaled, dtype=np.float32), 0.0, 1.0)  # (height, cols)
    return torch.from_numpy(np.ascontiguousarray(ink.T))  # (cols, height): time-first


# ----------------------------------------------------------------------------- the stem


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """Batch norm of ``(B, C, H, W)`` whose training statistics count the columns ``w < lengths[b]``
    only (:func:`~speechkit.functional.masked_batch_norm`). Eval uses the running estimates, which
    act per position and so never see padding."""

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if not self.training or lengths is None:
            return super().forward(x)
        return masked_batch_norm_of(self, x, lengths, 3)  # (B, C, H, W): the columns are time


class ConvBlock(nn.Module):
    """3×3 convolution → max pooling ``(pool_h, pool_w)`` → masked batch norm → ReLU, zero past lengths.

    Pooling before the norm (a common CRNN variant) normalises ``pool_h × pool_w`` times fewer
    values, which matters on a CPU, where the masked statistics cost as much as the convolution.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, pool_h: int, pool_w: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = MaskedBatchNorm2d(out_ch)
        self.pool_h, self.pool_w = pool_h, pool_w

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, H, W)`` zero past ``lengths`` → ``(B, C', H // pool_h, W // pool_w)``, new lengths."""
        x = self.conv(x)
        if self.pool_h > 1 or self.pool_w > 1:
            x = F.max_pool2d(x, (self.pool_h, self.pool_w))
        lengths = torch.div(lengths, self.pool_w, rounding_mode="floor")
        return mask_padding(F.relu(self.bn(x, lengths)), lengths, time_dim=3), lengths


@dataclass
class OcrLineConfig:
    """CRNN-style stem: ``len(channels)`` conv blocks, then the height collapsed into features."""

    height: int = DEFAULT_HEIGHT  # px: every line is scaled to this height, aspect ratio kept
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 96])  # output channels per block
    pool_width: list[int] = field(default_factory=lambda: [2, 2, 1, 1])  # width (time) pooling per block
    kernel_size: int = 3  # odd conv kernel, px
    collapse: str = "max"  # max | mean over the rows left, or flatten (F = channels × rows left)
    normalize: str = "line"  # none | line (mean/std of each line's valid pixels)
    max_width: int = DEFAULT_MAX_WIDTH  # px after scaling; wider lines are refused
    max_pixels: int = DEFAULT_MAX_PIXELS  # pixels of the file before scaling; larger files are refused


def _check_config(cfg: OcrLineConfig) -> None:
    def bad(key: str, value: object, allowed: str) -> ValueError:
        return invalid_setting("ocr_line", key, value, allowed)

    if cfg.height < 1:
        raise bad("height", cfg.height, "a positive number of pixels")
    if not cfg.channels or any(c < 1 for c in cfg.channels):
        raise bad("channels", cfg.channels, "a non-empty list of positive channel counts")
    if len(cfg.pool_width) != len(cfg.channels) or any(p < 1 for p in cfg.pool_width):
        raise bad("pool_width", cfg.pool_width, f"{len(cfg.channels)} positive factors, one per block")
    if cfg.kernel_size < 1 or cfg.kernel_size % 2 == 0:
        raise bad("kernel_size", cfg.kernel_size, "an odd positive number")
    if cfg.collapse not in COLLAPSE_MODES:
        raise bad("collapse", cfg.collapse, ", ".join(COLLAPSE_MODES))
    if cfg.normalize not in NORMALIZE_MODES:
        raise bad("normalize", cfg.normalize, ", ".join(NORMALIZE_MODES))
    if cfg.max_width < 1 or cfg.max_pixels < 1:
        raise bad("max_width/max_pixels", (cfg.max_width, cfg.max_pixels), "positive limits")


@register("frontend", "ocr_line", OcrLineConfig)
class OcrLine(Frontend):
    """Text-line images ``(B, W, H)`` → column features ``(B, W // prod(pool_width), F)`` by a conv stem."""

    modality = "image"
    extensions = IMAGE_EXTENSIONS
    frame_shift_s = None  # columns, not seconds

    def __init__(self, cfg: OcrLineConfig) -> None:
        super().__init__()
        _check_config(cfg)
        self.cfg = cfg
        blocks, in_ch, rows = [], 1, cfg.height
        for out_ch, pool_w in zip(cfg.channels, cfg.pool_width):
            pool_h = 2 if rows >= 2 else 1
            blocks.append(ConvBlock(in_ch, out_ch, cfg.kernel_size, pool_h, pool_w))
            in_ch, rows = out_ch, rows // pool_h
        self.blocks = nn.ModuleList(blocks)
        self.rows_left = rows  # rows the height collapse works over
        self.subsampling = math.prod(cfg.pool_width)  # input columns per output frame
        self.output_dim = in_ch * (rows if cfg.collapse == "flatten" else 1)

    def extra_repr(self) -> str:
        return (
            f"height={self.cfg.height}, output_dim={self.output_dim}, subsampling={self.subsampling}, "
            f"rows_left={self.rows_left}, collapse={self.cfg.collapse!r}"
        )

    def load(self, path: Path) -> Tensor:
        """One image file → ink ``(width, height)``; at least one output frame's worth of columns."""
        c = self.cfg
        return load_image(path, c.height, c.max_width, c.max_pixels, min_width=self.subsampling)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames for ``lengths`` ``(B,)`` columns: floor division by each block's width pooling."""
        for pool_w in self.cfg.pool_width:
            lengths = torch.div(lengths, pool_w, rounding_mode="floor")
        return lengths

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Ink ``(B, W, H)`` zero-padded along W, ``lengths`` ``(B,)`` columns → ``(B, T, F)``
        (zero past each length), frames ``(B,)``."""
        if x.dim() != 3 or x.shape[2] != self.cfg.height:
            raise invalid_input(
                "ocr_line",
                f"lines (B, width, {self.cfg.height})",
                x,
                "load images with its load() (frontend.height sets the height)",
            )
        lengths = lengths.to(device=x.device, dtype=torch.long)
        x = mask_padding(x.float().transpose(1, 2), lengths, time_dim=2)  # (B, H, W): the conv layout
        if self.cfg.normalize == "line":  # (x - mean) / max(std, eps) over each line's valid pixels
            x = masked_standardize(x, lengths, dim=(1, 2), time_dim=2, eps=NORM_EPS)
        x = x[:, None]  # (B, 1, H, W)
        for block in self.blocks:
            x, lengths = block(x, lengths)
        if self.cfg.collapse == "max":
            x = x.amax(dim=2)  # (B, C, T)
        elif self.cfg.collapse == "mean":
            x = x.mean(dim=2)
        else:
            x = x.flatten(1, 2)  # (B, C × rows, T)
        return x.transpose(1, 2).contiguous(), lengths

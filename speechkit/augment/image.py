"""Text-line image augmentation on the raw batch (``raw = True``): runs before the frontend, in training.

Input and output are ink ``(B, W, H)`` zero-padded along W (see :mod:`speechkit.frontends.image`:
1 = black ink, 0 = white paper) with ``lengths`` ``(B,)`` columns. Each operation is applied to
each line independently with probability ``prob``, with its strength drawn uniformly per line:

- geometry, one affine warp per line (bilinear ``grid_sample``): horizontal shear (slant), a small
  rotation, a scale below 1 inside the fixed height (top/bottom margins, shifted up or down), and
  random blank margins left and right. The output is as wide as the warped line needs, so nothing
  is cropped sideways, and the new lengths are exact;
- Gaussian blur, per-line σ, as one grouped separable convolution;
- contrast, towards each line's mean ink;
- Gaussian pixel noise, clamped to ``[0, 1]``.

Everything past a line's (new) length is zero on return.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from speechkit.functional import lengths_mask, mask_padding, masked_mean
from speechkit.registry import register

MAX_ROTATION_DRIFT = 0.1  # a rotation moves a line's ends by at most this fraction of its height


@dataclass
class ImageAugmentConfig:
    prob: float = 0.5  # chance that each operation below is applied to a line
    rotate_deg: float = 1.5  # largest rotation, degrees; capped so a line's ends move ≤ 10 % of its height
    shear: float = 0.3  # largest horizontal shear, either way: x += shear × (y − centre); 0.3 ≈ 17° of slant
    scale_min: float = 0.75  # smallest scale of the line inside its fixed height (adds top/bottom margins)
    pad_max: float = 1.0  # widest blank margin added at each end, in line heights
    blur_sigma: float = 1.0  # largest Gaussian blur σ, px
    contrast_min: float = 0.4  # lowest contrast factor (1 = unchanged)
    noise_std: float = 0.08  # largest σ of Gaussian pixel noise, in ink units (0 paper … 1 black)


def _uniform(n: int, low: float, high: float, apply: Tensor) -> Tensor:
    """``(n,)`` uniform in ``[low, high]`` where ``apply``, else ``low`` … callers pick neutral ``low``."""
    u = torch.rand(n, device=apply.device)
    return torch.where(apply, low + (high - low) * u, torch.full_like(u, low))


def affine_warp(
    x: Tensor,
    lengths: Tensor,
    angle: Tensor,
    shear: Tensor,
    scale: Tensor,
    shift_y: Tensor,
    pad_left: Tensor,
    pad_right: Tensor,
) -> tuple[Tensor, Tensor]:
    """Warp each line of ``x`` ``(B, W, H)`` by ``A = scale · R(angle) · [[1, shear], [0, 1]]`` about its centre.

    ``angle`` in radians, ``shift_y`` px (down), ``pad_left``/``pad_right`` px of blank margin;
    all ``(B,)``. Line ``b`` becomes ``ceil(2·hw + pad_left + pad_right)`` columns wide, ``hw`` the
    half-width of its warped box: ``|A₀₀|·W/2 + |A₀₁|·H/2``. Returns the warped batch and those widths.
    """
    B, W, H = x.shape
    dev, dt = x.device, x.dtype
    cos, sin = torch.cos(angle), torch.sin(angle)
    # A = s [[cos, -sin], [sin, cos]] @ [[1, k], [0, 1]]
    a00, a01 = scale * cos, scale * (cos * shear - sin)
    a10, a11 = scale * sin, scale * (sin * shear + cos)
    w_in = lengths.to(dt)
    half_w = a00.abs() * w_in / 2 + a01.abs() * H / 2
    new_lengths = torch.ceil(2 * half_w + pad_left + pad_right - 1e-4).long().clamp_min(1)
    W_out = int(new_lengths.max())
    # output pixel centres q → input point p = A⁻¹ (q − c_out) + c_in, in pixel units
    u = torch.arange(W_out, device=dev, dtype=dt) + 0.5
    v = torch.arange(H, device=dev, dtype=dt) + 0.5
    qx = u[None, None, :] - (pad_left + half_w)[:, None, None]  # (B, 1, W_out)
    qy = v[None, :, None] - (H / 2 + shift_y)[:, None, None]  # (B, H, 1)
    det = a00 * a11 - a01 * a10
    i00, i01, i10, i11 = (t[:, None, None] / det[:, None, None] for t in (a11, -a01, -a10, a00))
    px = i00 * qx + i01 * qy + w_in[:, None, None] / 2  # (B, H, W_out)
    py = i10 * qx + i11 * qy + H / 2
    grid = torch.stack((2 * px / W - 1, 2 * py / H - 1), dim=-1)  # grid_sample's [-1, 1], align_corners=False
    img = x.transpose(1, 2)[:, None]  # (B, 1, H, W)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out[:, 0].transpose(1, 2)  # (B, W_out, H)
    return mask_padding(out, new_lengths), new_lengths


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Blur each line of ``x`` ``(B, W, H)`` with its own Gaussian σ ``(B,)`` px (0 = unchanged), zero outside."""
    B = x.shape[0]
    radius = max(1, math.ceil(3 * float(sigma.max())))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.clamp_min(1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)
    k = k / k.sum(dim=1, keepdim=True)  # (B, K); σ → 0 gives a unit impulse
    img = x[None]  # (1, B, W, H): each line its own channel
    img = F.conv2d(img, k[:, None, :, None], padding=(radius, 0), groups=B)
    img = F.conv2d(img, k[:, None, None, :], padding=(0, radius), groups=B)
    return img[0]


@register("augment", "image", ImageAugmentConfig)
class ImageAugment(nn.Module):
    """Slant, rotation, scale, margins, blur, contrast and noise on raw line images, per line."""

    raw = True  # works on the raw batch (B, W, H), before the frontend

    def __init__(self, cfg: ImageAugmentConfig) -> None:
        super().__init__()
        if not 0 <= cfg.prob <= 1:
            raise ValueError(f"augment 'image': prob={cfg.prob!r} is invalid; allowed: 0 to 1")
        if not 0 < cfg.scale_min <= 1:
            raise ValueError(f"augment 'image': scale_min={cfg.scale_min!r} is invalid; allowed: (0, 1]")
        if not 0 < cfg.contrast_min <= 1:
            raise ValueError(
                f"augment 'image': contrast_min={cfg.contrast_min!r} is invalid; allowed: (0, 1]"
            )
        if min(cfg.rotate_deg, cfg.shear, cfg.pad_max, cfg.blur_sigma, cfg.noise_std) < 0:
            raise ValueError(
                "augment 'image': rotate_deg, shear, pad_max, blur_sigma and noise_std must be ≥ 0"
            )
        self.cfg = cfg

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Ink ``(B, W, H)``, ``lengths`` ``(B,)`` → ink ``(B, W', H)``, new lengths ``(B,)``."""
        c = self.cfg
        B, W, H = x.shape
        if B == 0 or c.prob == 0:
            return x, lengths
        dev = x.device
        lengths = lengths.to(dev, torch.long)
        x = mask_padding(x.float(), lengths)

        def coin() -> Tensor:
            return torch.rand(B, device=dev) < c.prob

        def signed(limit: Tensor | float, apply: Tensor) -> Tensor:
            return (2 * torch.rand(B, device=dev) - 1) * limit * apply

        # geometry: a rotation's cap keeps a line's ends within MAX_ROTATION_DRIFT × H of where they were
        cap = torch.atan(2 * MAX_ROTATION_DRIFT * H / lengths.clamp_min(1).float())
        angle = signed(torch.clamp(cap, max=math.radians(c.rotate_deg)), coin())
        shear = signed(c.shear, coin())
        scale = 1 - _uniform(B, 0.0, 1 - c.scale_min, coin())
        shift_y = signed((1 - scale) * H / 2, torch.ones(B, dtype=torch.bool, device=dev))
        pads = coin()
        pad_left = _uniform(B, 0.0, c.pad_max * H, pads)
        pad_right = _uniform(B, 0.0, c.pad_max * H, pads)
        if bool((angle != 0).any() or (shear != 0).any() or (scale != 1).any() or pads.any()):
            x, lengths = affine_warp(x, lengths, angle, shear, scale, shift_y, pad_left, pad_right)
        mask = lengths_mask(lengths, x.shape[1])[..., None].to(x.dtype)  # (B, W', 1)

        # photometry
        blur = _uniform(B, 0.0, c.blur_sigma, coin())
        if c.blur_sigma > 0 and bool((blur > 0).any()):
            x = gaussian_blur(x, blur) * mask
        contrast = 1 - _uniform(B, 0.0, 1 - c.contrast_min, coin())
        if bool((contrast != 1).any()):
            mean = masked_mean(x, lengths, dim=(1, 2), keepdim=True)  # (B, 1, 1): each line's mean ink
            x = (mean + contrast[:, None, None] * (x - mean)) * mask
        noise = _uniform(B, 0.0, c.noise_std, coin())
        if c.noise_std > 0 and bool((noise > 0).any()):
            x = (x + noise[:, None, None] * torch.randn_like(x)).clamp(0, 1) * mask
        return x, lengths

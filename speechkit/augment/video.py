"""Video augmentations on raw clip batches ``(B, T, C, H, W)`` (pixels in [0, 1]), training only.

Per clip, in one batched pass: a random crop (a window of ``crop_scale``–100 % of each side,
scaled back to the frame size) and a left–right flip (mouths are nearly symmetric), a
brightness and contrast change that drifts linearly over the clip (lighting that changes
while the mouth moves, which per-clip normalisation does not undo), time masks (runs of
frames replaced by the clip's mean frame) and frame dropping (the clip gets shorter; lengths
stay exact). Padding frames stay zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from speechkit.augment.specaugment import random_band_mask
from speechkit.functional import lengths_mask, mask_padding, masked_mean
from speechkit.registry import register


@dataclass
class VideoAugmentConfig:
    flip_prob: float = 0.5  # chance a clip is mirrored left–right
    crop_scale: float = 0.85  # smallest crop window, as a fraction of each side (1 = no cropping)
    brightness: float = 0.1  # largest brightness shift, in [0, 1] pixel units, at each end of the clip
    contrast: float = 0.2  # largest relative contrast change at each end of the clip
    time_masks: int = 1  # runs of frames replaced by the clip's mean frame
    time_width: int = 4  # frames, longest run (40 ms each at 25 fps)
    drop_prob: float = 0.05  # chance each frame is dropped (LipNet: 0.05)
    min_keep: float = 0.8  # never drop more than 1 − this fraction of a clip's frames


def affine_crop_flip(x: Tensor, scale: Tensor, shift: Tensor, flip: Tensor) -> Tensor:
    """Crop and mirror every clip of ``(B, T, C, H, W)``: clip ``b`` shows the window of side
    ``scale[b]`` (fraction of the frame) centred at ``shift[b]`` ``(x, y)`` (in [-1, 1] frame
    coordinates), mirrored where ``flip[b]``, scaled back to ``H × W`` (bilinear)."""
    B, T, C, H, W = x.shape
    sx = scale * torch.where(flip, -1.0, 1.0).to(scale)
    theta = torch.zeros(B, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2] = sx, shift[:, 0]
    theta[:, 1, 1], theta[:, 1, 2] = scale, shift[:, 1]
    theta = theta.repeat_interleave(T, dim=0)  # the same window for every frame of a clip
    frames = x.reshape(B * T, C, H, W)
    grid = F.affine_grid(theta, list(frames.shape), align_corners=False)
    out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(B, T, C, H, W)


def drop_frames(x: Tensor, lengths: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Keep the frames where ``keep`` ``(B, T)`` is true (valid frames only), in order, packed to
    the front of each row; ``(B, T, ...)`` → same shape, new lengths ``(B,)``."""
    keep = keep & lengths_mask(lengths, x.shape[1])
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices  # kept frames first, in order
    index = order.view(*order.shape, *([1] * (x.dim() - 2))).expand_as(x)
    new_lengths = keep.sum(1)
    return mask_padding(x.gather(1, index), new_lengths), new_lengths


@register("augment", "video", VideoAugmentConfig)
class VideoAugment(nn.Module):
    """Random crop, flip, brightness/contrast drift, time masks and frame dropping of raw clips."""

    raw = True  # runs on the raw batch, before the frontend

    def __init__(self, cfg: VideoAugmentConfig) -> None:
        super().__init__()
        for key in ("flip_prob", "drop_prob"):
            if not 0 <= getattr(cfg, key) <= 1:
                raise ValueError(
                    f"augment 'video': {key}={getattr(cfg, key)!r} must be a probability in [0, 1]"
                )
        if not 0 < cfg.crop_scale <= 1 or not 0 < cfg.min_keep <= 1:
            raise ValueError(
                f"augment 'video': crop_scale={cfg.crop_scale!r} and min_keep={cfg.min_keep!r} must lie in (0, 1]"
            )
        self.cfg = cfg

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Clips ``(B, T, C, H, W)`` in [0, 1], ``lengths`` ``(B,)`` → same shape, new lengths."""
        c = self.cfg
        B, T = x.shape[:2]
        dev = x.device
        lengths = lengths.to(device=dev, dtype=torch.long)
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        valid = lengths_mask(lengths, T)
        if c.crop_scale < 1 or c.flip_prob > 0:
            scale = 1 - torch.rand(B, device=dev) * (1 - c.crop_scale)
            shift = (torch.rand(B, 2, device=dev) * 2 - 1) * (1 - scale)[:, None]
            flip = torch.rand(B, device=dev) < c.flip_prob
            x = affine_crop_flip(x, scale, shift, flip)
        if c.brightness > 0 or c.contrast > 0:
            ends = (
                torch.rand(B, 2, 2, device=dev) * 2 - 1
            )  # (clip, start/end, brightness/contrast) in [-1, 1]
            ramp = (torch.arange(T, device=dev)[None] / (lengths[:, None] - 1).clamp_min(1)).clamp(
                max=1
            )  # (B, T)
            level = ends[:, None, 0] + (ends[:, None, 1] - ends[:, None, 0]) * ramp[..., None]  # (B, T, 2)
            shift_b = (level[..., 0] * c.brightness)[:, :, None, None, None]
            gain = (1 + level[..., 1] * c.contrast)[:, :, None, None, None]
            x = ((x - 0.5) * gain + 0.5 + shift_b).clamp(0, 1)
        if c.time_masks > 0 and c.time_width > 0:
            mean_frame = masked_mean(x, lengths, dim=1, keepdim=True)  # (B, 1, C, H, W)
            band = random_band_mask(B, c.time_masks, torch.full_like(lengths, c.time_width), lengths, T, dev)
            x = torch.where(band[:, :, None, None, None], mean_frame, x)
        x = mask_padding(x, lengths)
        if c.drop_prob > 0:
            keep = torch.rand(B, T, device=dev) >= c.drop_prob
            # never below min_keep of a clip: past the allowance, dropped frames are kept again
            dropped_so_far = torch.cumsum((~keep & valid).long(), dim=1)
            allowance = (lengths.float() * (1 - c.min_keep)).floor().long()[:, None]
            keep = keep | (dropped_so_far > allowance)
            x, lengths = drop_frames(x, lengths, keep)
        return x, lengths

"""SpecAugment (Park et al. 2019): random time and frequency masks on ``(B, T, F)`` features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from speechkit.registry import register


def random_band_mask(
    batch: int, n_masks: int, max_width: Tensor, size: Tensor, total: int, device: torch.device
) -> Tensor:
    """``(B, total)`` boolean mask with ``n_masks`` random bands per row.

    Band widths are uniform in ``[0, max_width[b]]`` and bands lie inside ``[0, size[b])``.
    """
    if n_masks == 0:
        return torch.zeros(batch, total, dtype=torch.bool, device=device)
    u = torch.rand(batch, n_masks, 2, device=device)
    width = (u[..., 0] * (max_width[:, None].float() + 1)).floor().long()  # (B, n)
    room = (size[:, None] - width).clamp(min=0)
    start = (u[..., 1] * (room.float() + 1)).floor().long()
    pos = torch.arange(total, device=device)[None, None, :]
    bands = (pos >= start[..., None]) & (pos < (start + width)[..., None])  # (B, n, total)
    return bands.any(dim=1)


@dataclass
class SpecAugmentConfig:
    freq_masks: int = 2  # bands of features masked per utterance
    freq_width: int = 15  # widest band, in feature bins (capped at a third of the features)
    time_masks: int = 2  # bands of frames masked per utterance
    time_width: int = 40  # widest band, in frames (10 ms each for audio at the default hop)
    time_width_ratio: float = 0.1  # … and at most this fraction of the utterance
    mask_value: float = 0.0  # value written into masked cells (0 = mean of normalised features)


@register("augment", "specaugment", SpecAugmentConfig)
class SpecAugment(nn.Module):
    """Time and frequency masks, drawn independently per utterance, in one batched pass."""

    def __init__(self, cfg: SpecAugmentConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, T, F)`` → same shape; masks only touch valid frames."""
        B, T, F = x.shape
        c = self.cfg
        dev = x.device
        lengths = lengths.to(dev)
        fw = torch.full((B,), min(c.freq_width, F // 3), device=dev)
        fmask = random_band_mask(B, c.freq_masks, fw, torch.full((B,), F, device=dev), F, dev)
        tw = torch.minimum(torch.full_like(lengths, c.time_width), (lengths.float() * c.time_width_ratio).long())
        tmask = random_band_mask(B, c.time_masks, tw, lengths, T, dev)
        mask = fmask[:, None, :] | tmask[:, :, None]
        return x.masked_fill(mask, c.mask_value), lengths


@dataclass
class NoAugmentConfig:
    pass


@register("augment", "none", NoAugmentConfig)
class NoAugment(nn.Module):
    """No augmentation."""

    def __init__(self, cfg: NoAugmentConfig) -> None:
        super().__init__()

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return x, lengths

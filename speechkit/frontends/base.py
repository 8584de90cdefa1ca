"""The frontend protocol: one file → raw tensor (``load``), raw batch → features ``(B, T, F)``.

Raw tensors are *time-first*: audio ``(samples,)``, a text-line image ``(width, height)``,
video ``(frames, C, H, W)``. Collation pads dim 0 and records each example's size along it,
so one ``collate`` serves every modality.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn


class Frontend(nn.Module):
    """Base of every frontend plugin.

    Subclasses set ``modality`` (the manifest key prefix: ``audio`` reads ``audio_filepath``),
    ``output_dim`` (F) and ``frame_shift_s`` (seconds per output frame, ``None`` where time has
    no meaning in seconds, as for images), and implement ``load`` and ``forward``.
    """

    modality: str = "audio"
    output_dim: int
    frame_shift_s: float | None = None
    extensions: tuple[str, ...] = ()  # file suffixes ``speechkit-transcribe`` picks from a folder

    def load(self, path: Path) -> Tensor:
        """Read one file into a raw, time-first tensor. Raises :class:`DataError` on bad input."""
        raise NotImplementedError

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Raw batch ``(B, N, ...)`` padded along dim 1, with ``lengths`` ``(B,)`` → ``(B, T, F)``, lengths."""
        raise NotImplementedError

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames out for raw lengths in, exactly as ``forward`` computes them."""
        raise NotImplementedError

    @torch.no_grad()
    def update_stats(self, x: Tensor, lengths: Tensor) -> None:  # noqa: B027 - optional hook
        """Accumulate dataset statistics (global normalisation) from one raw training batch."""

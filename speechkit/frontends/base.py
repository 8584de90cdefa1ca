"""The frontend protocol: one file → raw tensor (``load``), raw batch → features ``(B, T, F)``.

Raw tensors are *time-first*: audio ``(samples,)``, a text-line image ``(width, height)``,
video ``(frames, C, H, W)``. Collation pads dim 0 and records each example's size along it,
so one ``collate`` serves every modality.

Also the small things every frontend shares: :func:`log_once`, and the two errors a frontend raises
for a bad setting (:func:`invalid_setting`) and for a batch of the wrong shape (:func:`invalid_input`).
The check every loader makes before opening a file is :func:`speechkit.data.files.check_media_file`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn


def log_once(
    logger: logging.Logger, seen: set[tuple], key: tuple, msg: str, *args: object, level: int = logging.INFO
) -> None:
    """Log ``msg % args`` at ``level`` the first time ``key`` (an event kind, e.g. ``("resample", 22050,
    16000)``) is seen, adding it to ``seen``: the calling module's set, which its tests may reset."""
    if key not in seen:
        seen.add(key)
        logger.log(level, msg + " (logged once per kind)", *args)


def invalid_setting(frontend: str, key: str, value: object, allowed: str) -> ValueError:
    """The error for a bad configuration value: which frontend, which key, its value, what is allowed."""
    return ValueError(f"frontend {frontend!r}: {key}={value!r} is invalid; allowed: {allowed}")


def invalid_input(frontend: str, expected: str, x: Tensor, hint: str) -> ValueError:
    """The error for a batch ``forward`` cannot take: what it expects, the shape it got, what to do."""
    return ValueError(f"frontend {frontend!r} expects {expected}, got {tuple(x.shape)}; {hint}")


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
        """Accumulate dataset statistics (``global`` normalisation, and ``online``'s prior) from one raw training batch."""

"""Vocal tract length perturbation (Jaitly & Hinton, 2013) on log-mel or log-spectrogram features.

A longer or shorter vocal tract scales a voice's formants by a factor α; VTLP draws α per utterance
(uniform in ``[low, high]``, 0.9–1.1 as in the paper) and builds each feature bin from the energy of
the original spectrum at the warped frequency of its centre: bin ``k`` of centre ``c_k`` takes the
feature at ``w(c_k)``, with ``w`` piecewise linear (Jaitly & Hinton's equation 1)::

    w(f) = α f                                          for f ≤ f_b · min(α, 1) / α
    w(f) = N − (N − f_b · min(α, 1)) / (N − f_b · min(α, 1) / α) · (N − f)   above  (N: Nyquist)

so that ``w(N) = N`` and nothing past the band is needed. The feature at ``w(c_k)`` is linearly
interpolated between the two bins whose centres surround it, one gather for the whole batch. The paper
moves the filter centres before the filterbank; reading the existing bins at the moved centres is the
same up to the filters' widths (a filter keeps its own width instead of scaling by α), costs no second
STFT, and unlike speed perturbation leaves the tempo and the number of frames alone, so it costs
almost nothing (speed perturbation's resampling took 17 % of a step on asr_grid: benchmarks/README.md).

The stage needs the frontend's frequency axis, so it takes the frontend (``needs_frontend``) and
works on ``fbank`` and ``spectrogram`` features only (MFCCs mix every band in each coefficient).
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np
import torch
from torch import Tensor, nn

from speechkit.registry import register

WARPABLE = ("fbank", "spectrogram")  # frontends whose feature bins lie on a frequency axis
BOUNDARY_SHARE = 0.6  # boundary_hz=0: f_b = this × Nyquist (4 800 Hz at 16 kHz, as in the paper)


@dataclass
class VtlpConfig:
    low: float = 0.9  # smallest warp factor α (formants scaled by 1/α)
    high: float = 1.1  # largest warp factor α
    # f_b in Hz: below f_b·min(α,1)/α frequencies scale by α; 0 = 0.6 × Nyquist (the paper's 4 800 Hz at 16 kHz)
    boundary_hz: float = 0.0
    prob: float = 1.0  # share of utterances warped; the others keep α = 1


def bin_centres(frontend: nn.Module) -> np.ndarray:
    """Centre frequency in Hz of each feature bin of an ``fbank`` or ``spectrogram`` frontend ``(F,)``."""
    name = getattr(frontend, "plugin_name", type(frontend).__name__)
    cfg = getattr(frontend, "cfg", None)
    if name not in WARPABLE or cfg is None:
        raise ValueError(
            f"augment 'vtlp' warps the frequency axis of fbank or spectrogram features; frontend {name!r} has "
            "none (MFCCs mix every band in each coefficient). Use frontend=fbank, or drop vtlp from augment"
        )
    if name == "spectrogram":
        return np.arange(frontend.n_freqs) * cfg.sample_rate / frontend.n_fft
    f_max = cfg.f_max or cfg.sample_rate / 2
    edges = librosa.mel_frequencies(cfg.n_mels + 2, fmin=cfg.f_min, fmax=f_max, htk=cfg.mel_scale == "htk")
    return edges[1:-1]  # a triangle's peak: the middle of its three mel points


@register("augment", "vtlp", VtlpConfig)
class Vtlp(nn.Module):
    """Random vocal tract length warp per utterance of ``(B, T, F)`` features; identity in eval mode."""

    needs_frontend = True  # AugmentChain passes the built frontend

    def __init__(self, cfg: VtlpConfig, frontend: nn.Module | None = None) -> None:
        super().__init__()
        if frontend is None:
            raise ValueError(
                "augment 'vtlp' needs the frontend whose features it warps (AugmentChain passes it)"
            )
        if not 0 < cfg.low <= cfg.high:
            raise ValueError(
                f"augment 'vtlp': low={cfg.low!r}, high={cfg.high!r} are invalid; allowed: 0 < low ≤ high"
            )
        if not 0 <= cfg.prob <= 1:
            raise ValueError(f"augment 'vtlp': prob={cfg.prob!r} is invalid; allowed: 0 to 1")
        centres = bin_centres(frontend)  # first: it says what to do with a frontend that has no spectrum
        self.cfg = cfg
        self.nyquist = frontend.cfg.sample_rate / 2
        self.boundary_hz = cfg.boundary_hz or BOUNDARY_SHARE * self.nyquist
        if not 0 < self.boundary_hz < self.nyquist:
            raise ValueError(
                f"augment.vtlp.boundary_hz={cfg.boundary_hz!r} is invalid; allowed: 0 (0.6 × Nyquist) or between "
                f"0 and the Nyquist frequency, {self.nyquist:g} Hz"
            )
        self.register_buffer("centres", torch.tensor(centres, dtype=torch.float32), persistent=False)

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"alpha=[{c.low}, {c.high}], boundary_hz={self.boundary_hz:g}, prob={c.prob}, bins={len(self.centres)}"
        )

    def source_hz(self, alpha: Tensor) -> Tensor:
        """``w(c_k)`` for warp factors ``alpha`` ``(B,)``: the frequency each bin reads, ``(B, F)`` Hz."""
        f, a = self.centres[None, :], alpha[:, None]
        bound = self.boundary_hz * a.clamp(max=1.0)
        knee = bound / a
        upper = self.nyquist - (self.nyquist - bound) / (self.nyquist - knee) * (self.nyquist - f)
        return torch.where(f <= knee, a * f, upper)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Features ``(B, T, F)`` → warped features of the same shape (padding frames stay as they were)."""
        B, T, F = x.shape
        if F != len(self.centres):
            raise ValueError(f"augment 'vtlp': features have {F} bins, the frontend {len(self.centres)}")
        c = self.cfg
        if not self.training or B == 0 or c.prob == 0 or c.low == c.high == 1:
            return x, lengths
        alpha = c.low + (c.high - c.low) * torch.rand(B, device=x.device)
        if c.prob < 1:
            alpha = torch.where(torch.rand(B, device=x.device) < c.prob, alpha, torch.ones_like(alpha))
        centres = self.centres.to(x.device)
        src = self.source_hz(alpha).clamp(centres[0], centres[-1])  # (B, F)
        upper = torch.searchsorted(centres, src).clamp(1, F - 1)  # first centre ≥ src
        lo_hz, hi_hz = centres[upper - 1], centres[upper]
        weight = ((src - lo_hz) / (hi_hz - lo_hz)).clamp(0, 1).to(x.dtype)[:, None, :]  # (B, 1, F)
        index = (upper - 1)[:, None, :].expand(B, T, F)
        below, above = x.gather(2, index), x.gather(2, index + 1)
        return torch.lerp(below, above, weight), lengths

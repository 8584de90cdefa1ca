"""Pure feature functions on batched tensors: framing, spectra, deltas, normalisation.

Stateless, and computed on the device of the input, like ``torchaudio.functional``; the
plugins in :mod:`speechkit.frontends.audio` hold the configuration and buffers and call
these. Features are ``(B, T, F)`` with time on dim 1, and ``lengths`` ``(B,)`` counts the
valid frames (or samples) of each row; frames past a row's length are zero.

Framing follows Kaldi's ``snip_edges=true``: frame ``t`` covers samples
``[t * hop, t * hop + win)``, so ``N`` samples give ``T = 1 + (N - win) // hop`` frames
(0 when ``N < win``). No frame reads past the end of its utterance, so an utterance's
features inside a padded batch equal its features computed alone.

The masks and masked statistics every stage shares (``lengths_mask``, ``mask_padding``,
``masked_mean_std``) live in :mod:`speechkit.functional`; they are importable from here too.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from speechkit.functional import lengths_mask, mask_padding, masked_mean_std

__all__ = [
    "DELTA_WIDTH",
    "Moments",
    "causal_normalize",
    "deltas",
    "dft_matrix",
    "frame_energy_db",
    "frame_signal",
    "lengths_mask",
    "log_floored",
    "mask_padding",
    "masked_mean_std",
    "normalize",
    "num_frames",
    "no_moments",
    "power_spectrogram",
    "speech_frames",
]

DELTA_WIDTH = 2  # frames on each side of the delta regression window (5 frames in all)
ENERGY_FLOOR_DB = -100.0  # dB re full scale: the level of a frame of digital silence


def num_frames(lengths: Tensor, win_length: int, hop_length: int) -> Tensor:
    """Frames of ``lengths`` ``(B,)`` samples: ``1 + (N - win) // hop``, 0 when ``N < win``."""
    frames = torch.div(lengths - win_length, hop_length, rounding_mode="floor") + 1
    return frames.clamp_min(0)


def frame_signal(x: Tensor, win_length: int, hop_length: int) -> Tensor:
    """Snip-edges frames of waveforms ``(B, N)`` → ``(B, T, win)``, frame ``t`` = samples
    ``[t * hop, t * hop + win)``; a view, no copy. A batch shorter than one window is
    zero-padded to one frame (its lengths give it 0 valid frames)."""
    if x.shape[-1] < win_length:
        x = F.pad(x, (0, win_length - x.shape[-1]))
    return x.unfold(-1, win_length, hop_length)


def dft_matrix(window: Tensor, n_fft: int) -> Tensor:
    """The windowed real DFT as one matrix ``(win, 2 * (n_fft // 2 + 1))``: cosines, then sines.

    ``frames @ dft_matrix(window, n_fft)`` gives the real and imaginary parts of the ``n_fft``-point
    DFT of each windowed, zero-padded frame (up to a sign of the imaginary part, which ``|·|``
    drops). A plain matrix product exports anywhere (ONNX has no real-FFT op the TorchScript-based
    exporter emits); it costs ``win × n_fft`` multiply-adds a frame against the FFT's
    ``O(n_fft log n_fft)``, so :func:`power_spectrogram` uses it only when asked.
    """
    win = window.numel()
    n = torch.arange(win, dtype=torch.float64)[:, None]
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[None, :]
    angle = 2 * torch.pi * n * k / n_fft
    w = window.double()[:, None]
    return torch.cat([w * torch.cos(angle), w * torch.sin(angle)], dim=1).to(window.dtype)


def power_spectrogram(
    x: Tensor, window: Tensor, n_fft: int, hop_length: int, power: float = 2.0, dft: Tensor | None = None
) -> Tensor:
    """``|STFT|^power`` of waveforms ``(B, N)`` → ``(B, T, n_fft // 2 + 1)``, snip-edges framing.

    Each frame is ``win = len(window)`` samples times ``window``, zero-padded to ``n_fft``
    points. ``power`` 2 gives power (amplitude² per bin, unnormalised DFT), 1 magnitude.
    Where the window sits inside the ``n_fft`` points changes only the phase, not ``|·|``.
    ``dft``: :func:`dft_matrix` of the same window, to compute the DFT as a matrix product
    (for export) instead of a real FFT; the two agree to float32 rounding.
    """
    win = window.numel()
    if dft is None:
        # frames of n_fft samples times the window zero-padded to n_fft: the FFT's zero padding for
        # free (the samples past the window are multiplied by 0), with no (B, T, n_fft) pad copy
        x = F.pad(x, (0, n_fft - win))
        frames = frame_signal(x, n_fft, hop_length) * F.pad(window, (0, n_fft - win))
        spec = torch.fft.rfft(frames)  # (B, T, n_freqs) complex
        energy = (spec.real * spec.real).addcmul_(spec.imag, spec.imag)  # re² + im², no hypot per bin
    else:
        # framing by gathering sample indices: unlike unfold, this exports to ONNX with a dynamic length
        if x.shape[-1] < win:
            x = F.pad(x, (0, win - x.shape[-1]))
        frames_t = torch.div(x.shape[-1] - win, hop_length, rounding_mode="floor") + 1
        starts = torch.arange(frames_t, device=x.device)[:, None] * hop_length  # (T, 1)
        index = starts + torch.arange(win, device=x.device)  # (T, win) sample indices
        n_freqs = dft.shape[1] // 2
        spec = x[:, index] @ dft  # (B, T, win) @ (win, 2 * n_freqs)
        energy = spec[..., :n_freqs].square() + spec[..., n_freqs:].square()
    return energy if power == 2.0 else energy.pow(power / 2)


def log_floored(x: Tensor, floor: float) -> Tensor:
    """``log(max(x, floor))``, elementwise: natural log of energies with a floor."""
    return x.clamp_min(floor).log()


def deltas(x: Tensor, lengths: Tensor, width: int = DELTA_WIDTH) -> Tensor:
    """Regression deltas of features ``(B, T, F)`` along time, exact per utterance.

    ``d_t = Σ_{n=1..W} n (c_{t+n} − c_{t−n}) / (2 Σ_{n=1..W} n²)`` (HTK, Kaldi), with ``c``
    clamped to each utterance's first and last *valid* frame, so the result does not depend
    on padding. Same as ``librosa.feature.delta(width=2W+1, order=1, mode="nearest")``.
    """
    B, T, Fdim = x.shape
    t = torch.arange(T, device=x.device)
    last = (lengths.to(x.device) - 1).clamp_min(0)[:, None]  # (B, 1) index of the last valid frame
    out = torch.zeros_like(x)
    for n in range(1, width + 1):
        ahead = torch.minimum((t + n).expand(B, T), last)
        behind = torch.minimum((t - n).clamp_min(0).expand(B, T), last)
        ahead_x = x.gather(1, ahead[..., None].expand(B, T, Fdim))
        behind_x = x.gather(1, behind[..., None].expand(B, T, Fdim))
        out = out + n * (ahead_x - behind_x)
    out = out / (2 * sum(n * n for n in range(1, width + 1)))
    return mask_padding(out, lengths)


def normalize(x: Tensor, lengths: Tensor, mean: Tensor, std: Tensor, eps: float = 1e-5) -> Tensor:
    """``(x - mean) / max(std, eps)`` for ``x`` ``(B, T, F)``, ``mean``/``std`` ``(B, F)`` or ``(F,)``;
    padding stays zero."""
    if mean.dim() == 1:
        mean, std = mean[None], std[None]
    y = (x - mean[:, None]) / std.clamp_min(eps)[:, None]
    return mask_padding(y, lengths)


class Moments(NamedTuple):
    """Running sums of an utterance's frames about a fixed centre ``c`` ``(F,)``: ``count`` ``(B, 1)``
    frames, ``sum`` ``(B, F)`` of ``x − c`` and ``sq_sum`` ``(B, F)`` of ``(x − c)²`` (float64)."""

    count: Tensor
    sum: Tensor
    sq_sum: Tensor


def no_moments(batch: int, like: Tensor) -> Moments:
    """The moments of no frames yet, for ``batch`` rows of ``like``'s ``F`` features, dtype and device."""
    zeros = like.new_zeros(batch, like.shape[-1])
    return Moments(like.new_zeros(batch, 1), zeros, zeros)


def causal_normalize(
    x: Tensor,
    lengths: Tensor,
    prior_mean: Tensor,
    prior_std: Tensor,
    prior_frames: float,
    start: Moments | None = None,
    eps: float = 1e-5,
) -> tuple[Tensor, Moments]:
    """Each frame of ``x`` ``(B, T, F)`` standardised by the mean and variance of the frames up to and
    including it, pooled with a prior (``prior_mean``, ``prior_std`` ``(F,)``) worth ``prior_frames``
    frames. With ``τ`` the prior's weight, ``n_t`` the frames so far (``start``'s and ``t + 1``),
    ``S_t = Σ_{s≤t} (x_s − μ₀)`` and ``Q_t = Σ_{s≤t} (x_s − μ₀)²``:

    ``m_t = μ₀ + S_t / (τ + n_t)``, ``v_t = (τ σ₀² + Σ_{s≤t} (x_s − m_t)²) / (τ + n_t)`` — the spread
    of the frames about their own running mean, ``Q_t − 2 e S_t + n_t e²`` with ``e = m_t − μ₀``, plus
    the prior's — and ``y_t = (x_t − m_t) / max(√v_t, eps)``. ``τ = 0``: the frames' own cumulative
    mean and variance.

    Cumulative sums over time, so frame ``t`` depends on no later frame, and the pieces of an utterance
    given one after the other (each with the moments the previous one returned as ``start``; ``None``:
    the utterance's start) give the whole utterance's result. Returns the normalised features (padding
    zero) and the moments after each row's last valid frame.
    """
    # sums in float64 (MPS has none): the spread is a difference of sums, and float32 lost 5e-4 of a
    # normalised feature on a band whose mean lies 100 of its standard deviations from the prior's
    acc = torch.float32 if x.device.type == "mps" else torch.float64
    start = no_moments(x.shape[0], x.to(acc)) if start is None else start
    if x.shape[1] == 0:
        return x, start
    valid = lengths_mask(lengths.to(x.device), x.shape[1])[..., None].to(acc)  # (B, T, 1)
    d = (x.to(acc) - prior_mean.to(acc)) * valid  # padding adds nothing to the sums
    n = start.count[:, None] + valid.cumsum(1)  # (B, T, 1)
    s1 = start.sum[:, None] + d.cumsum(1)
    s2 = start.sq_sum[:, None] + (d * d).cumsum(1)
    weight = (prior_frames + n).clamp_min(1e-6)  # no 0/0 with no prior
    e = s1 / weight  # m_t − μ₀
    scatter = (s2 - 2 * e * s1 + n * e * e).clamp_min(0)
    std = ((prior_frames * prior_std.to(acc).square() + scatter) / weight).sqrt()
    y = (d - e) / std.clamp_min(eps) * valid
    return y.to(x.dtype), Moments(n[:, -1], s1[:, -1], s2[:, -1])


def frame_energy_db(x: Tensor, win_length: int, hop_length: int) -> Tensor:
    """Level of each snip-edges frame of waveforms ``(B, N)`` (full scale 1) → ``(B, T)`` dB re full
    scale: ``10 log10(mean x²)`` over the frame's ``win`` samples (unwindowed), at least
    ``ENERGY_FLOOR_DB``. A full-scale square wave is 0 dB, a full-scale sine −3 dB. Frames past a row's
    length read its zero padding (the floor); mask them with the lengths. An average pool rather than
    :func:`frame_signal`, so that it exports to ONNX with a dynamic length."""
    if x.shape[-1] < win_length:
        x = F.pad(x, (0, win_length - x.shape[-1]))
    mean_square = F.avg_pool1d(x.square()[:, None], win_length, hop_length)[:, 0]
    return 10 * mean_square.clamp_min(10 ** (ENERGY_FLOOR_DB / 10)).log10()


def speech_frames(
    level_db: Tensor, lengths: Tensor, margin_db: float, ref_rank: int, min_frames: int
) -> Tensor:
    """Which frames carry speech, by level alone: ``(B, T)`` bool from frame levels ``level_db``
    ``(B, T)`` (dB, :func:`frame_energy_db`) and valid frames ``lengths`` ``(B,)``.

    A valid frame is speech when its level is at least ``reference − margin_db``, the reference being
    the level of the row's ``ref_rank``-th loudest valid frame (its loudest when shorter): a fixed rank,
    not a quantile, so silence or a quieter floor added anywhere leaves it (and the choice) unchanged,
    and fewer than ``ref_rank`` frames of clicks cannot move it. A row with fewer than ``min_frames``
    such frames falls back to all its valid frames. Padding is never speech.
    """
    valid = lengths_mask(lengths.to(level_db.device), level_db.shape[1])
    ranked = level_db.masked_fill(~valid, float("-inf")).sort(dim=1, descending=True).values
    rank = lengths.to(level_db.device).clamp(min=1, max=ref_rank) - 1  # (B,) index into ranked
    reference = ranked.gather(1, rank[:, None])  # (B, 1) dB
    speech = valid & (level_db >= reference - margin_db)
    too_few = speech.sum(dim=1, keepdim=True) < min_frames
    return speech | (valid & too_few)  # not torch.where: onnxruntime has no Where on bool

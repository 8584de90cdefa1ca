"""Waveform augmentations on the raw batch (``raw = True``): run before the frontend, in training only.

Input and output are waveforms ``(B, N)`` at the frontend's sample rate (full scale 1), zero-padded
past ``lengths`` ``(B,)`` samples. Every draw comes from torch's global RNG, so a seeded run draws the
same and a resumed one carries on where it stopped (speechkit/rng.py). Each plugin applies itself to
each utterance with probability ``prob`` (``speed`` to every one: a factor of 1.0 is among its
choices), in one batched pass over the utterances it applies to:

- ``speed``: Kaldi's speed perturbation — resampled by a factor drawn per utterance (0.9, 1.0, 1.1),
  so duration ×1/factor and pitch ×factor; lengths updated;
- ``telephone``: an 8 kHz telephone channel — resampled to 8 kHz, band-limited to 300–3400 Hz,
  8-bit μ-law, and back;
- ``gain``: a random gain in dB, lowered where it would push a peak past full scale (optional);
- ``noise``: white, pink or brown noise (or noise read from a folder of recordings) at a random SNR;
- ``silence``: random silence of random length before and after each utterance, over a low noise
  floor (real recordings start and end with some; measured: 0.3 s of digital silence at each end
  took a model trained without it from 9 % to 71 % WER); lengths updated.

``reverb`` (simulated rooms) is in reverb.py. The frontend's own ``dither`` adds Gaussian noise of a
fixed level to every utterance; ``noise`` is the augmentation, at a signal-to-noise ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchaudio.functional as AF
from torch import Tensor, nn

from speechkit.functional import mask_padding, masked_mean
from speechkit.registry import register

TELEPHONE_FIR_TAPS = 255  # band-pass taps at 8 kHz: 32 ms, transitions ~170 Hz wide (Blackman window)
NOISE_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ∝ 1/f^exponent


class WaveformAugment(nn.Module):
    """Shared by the waveform augmentations: checks, the per-utterance coin, eval-mode identity.

    A subclass implements ``apply(x, lengths)`` on the utterances chosen (``(b, N)``, ``(b,)``),
    returning waveforms (any width, zero past the new lengths) and their lengths.
    """

    raw = True  # works on the raw batch, before the frontend
    needs_sample_rate = True  # AugmentChain passes the frontend's sample rate

    def __init__(self, cfg, sample_rate: int = 16000) -> None:
        super().__init__()
        name = getattr(self, "plugin_name", type(self).__name__)
        if not sample_rate > 0:
            raise ValueError(
                f"augment {name!r}: sample_rate={sample_rate!r} is invalid; allowed: a positive number of Hz"
            )
        prob = getattr(cfg, "prob", 1.0)
        if not 0 <= prob <= 1:
            raise ValueError(f"augment {name!r}: prob={prob!r} is invalid; allowed: 0 to 1")
        self.cfg, self.sample_rate = cfg, int(sample_rate)

    def apply(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Waveforms ``(B, N)``, ``lengths`` ``(B,)`` → waveforms ``(B, N')``, lengths ``(B,)``; zero past
        each length. Unchanged in eval mode."""
        B = x.shape[0]
        prob = getattr(self.cfg, "prob", 1.0)
        if not self.training or B == 0 or prob == 0:
            return x, lengths
        lengths = lengths.to(device=x.device, dtype=torch.long)
        x = mask_padding(x.float(), lengths)
        if prob == 1:
            return self.apply(x, lengths)
        chosen = torch.rand(B, device=x.device) < prob
        if not bool(chosen.any()):
            return x, lengths
        return join_rows(
            [(~chosen, x[~chosen], lengths[~chosen]), (chosen, *self.apply(x[chosen], lengths[chosen]))]
        )


def join_rows(parts: list[tuple[Tensor, Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """One batch from ``(rows, waveforms, lengths)`` parts whose ``rows`` (a mask or indices) cover the batch
    once: waveforms ``(B, N')`` zero-padded to the longest, lengths ``(B,)``."""
    B = sum(int(y.shape[0]) for _, y, _ in parts)
    y0, l0 = parts[0][1], parts[0][2]
    lengths = torch.empty(B, dtype=l0.dtype, device=l0.device)
    for rows, _, part_lengths in parts:
        lengths[rows] = part_lengths
    out = y0.new_zeros(B, max(int(lengths.max()), 1) if B else 1)
    for rows, y, _ in parts:
        width = min(y.shape[1], out.shape[1])
        out[rows, :width] = y[:, :width]
    return out, lengths


def _uniform(n: int, low: float, high: float, device: torch.device) -> Tensor:
    """``(n,)`` uniform in ``[low, high]`` from torch's global RNG."""
    return low + (high - low) * torch.rand(n, device=device)


def _resample(x: Tensor, orig_hz: int, new_hz: int) -> Tensor:
    """``(B, N)`` at ``orig_hz`` → ``(B, ⌈N·new/orig⌉)`` at ``new_hz`` (torchaudio's windowed sinc)."""
    return x if orig_hz == new_hz else AF.resample(x, orig_hz, new_hz)


def _resampled_lengths(lengths: Tensor, orig_hz: int, new_hz: int) -> Tensor:
    """Samples of ``lengths`` after :func:`_resample`: ``⌈L·new/orig⌉`` (the ratio reduced, as torchaudio does)."""
    g = math.gcd(orig_hz, new_hz)
    orig, new = orig_hz // g, new_hz // g
    return (lengths * new + orig - 1) // orig


def mean_power(x: Tensor, lengths: Tensor) -> Tensor:
    """``(B,)`` mean square of each waveform over its valid samples."""
    return masked_mean(x.square(), lengths, dim=1)


# ----------------------------------------------------------------------------- speed


@dataclass
class SpeedConfig:
    factors: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])  # one drawn per utterance
    # (uniformly); > 1 is faster: shorter and higher. Kaldi's speed perturbation: 0.9, 1.0, 1.1


def speed_perturb(x: Tensor, lengths: Tensor, factor: float, sample_rate: int) -> tuple[Tensor, Tensor]:
    """Play ``x`` ``(B, N)`` ``factor`` times as fast (duration ×1/factor, pitch ×factor) by resampling
    it from ``factor · sample_rate`` to ``sample_rate``; → ``(B, N')``, lengths ``⌈L/factor⌉``."""
    orig = round(sample_rate * factor)  # the rate x is read at
    if orig == sample_rate:
        return x, lengths
    new_lengths = _resampled_lengths(lengths, orig, sample_rate)
    return mask_padding(_resample(x, orig, sample_rate), new_lengths), new_lengths


@register("augment", "speed", SpeedConfig)
class Speed(WaveformAugment):
    """Speed perturbation (Kaldi): each utterance resampled by a factor drawn from ``factors``."""

    def __init__(self, cfg: SpeedConfig, sample_rate: int = 16000) -> None:
        super().__init__(cfg, sample_rate)
        if not cfg.factors or min(cfg.factors) <= 0:
            raise ValueError(
                f"augment 'speed': factors={list(cfg.factors)!r} is invalid; allowed: positive numbers"
            )

    def apply(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        factors = list(self.cfg.factors)
        pick = torch.randint(len(factors), (x.shape[0],), device=x.device)
        parts = []  # one batched resampling per factor drawn (at most len(factors))
        for k in torch.unique(pick).tolist():
            rows = pick == k
            parts.append((rows, *speed_perturb(x[rows], lengths[rows], factors[k], self.sample_rate)))
        return join_rows(parts)


# ----------------------------------------------------------------------------- telephone


@dataclass
class TelephoneConfig:
    prob: float = 0.3  # chance that an utterance goes through the telephone channel
    low_hz: float = 300.0  # pass band of the channel, Hz (ITU-T G.712: 300–3400)
    high_hz: float = 3400.0
    codec_rate: int = 8000  # Hz, the channel's sample rate (narrow-band telephony)
    mu_law: bool = True  # 8-bit μ-law (G.711) quantisation at codec_rate


def bandpass_fir(low_hz: float, high_hz: float, sample_rate: int, taps: int = TELEPHONE_FIR_TAPS) -> Tensor:
    """``(taps,)`` linear-phase band-pass filter: windowed-sinc difference of two low-passes, Blackman
    window, unit gain at the centre of the band. ``taps`` odd; delay ``taps // 2`` samples."""
    n = torch.arange(taps, dtype=torch.float64) - taps // 2
    lo, hi = low_hz / sample_rate, high_hz / sample_rate  # cycles per sample
    h = 2 * hi * torch.sinc(2 * hi * n) - 2 * lo * torch.sinc(2 * lo * n)  # ideal band-pass, truncated
    h = h * torch.blackman_window(taps, periodic=False, dtype=torch.float64)
    centre = (lo + hi) / 2
    gain = (h * torch.cos(2 * math.pi * centre * n)).sum()  # |H| at the band's centre
    return (h / gain).float()


def telephone_channel(
    x: Tensor, lengths: Tensor, sample_rate: int, fir: Tensor, codec_rate: int = 8000, mu_law: bool = True
) -> Tensor:
    """``(B, N)`` → ``(B, N)`` as heard through a telephone: resampled to ``codec_rate``, filtered by
    ``fir`` (taps at ``codec_rate``, centred so timing is kept), 8-bit μ-law, resampled back."""
    N = x.shape[1]
    y = _resample(x, sample_rate, codec_rate)
    half = fir.shape[0] // 2
    y = AF.fftconvolve(y, fir.to(y)[None])[:, half : half + y.shape[1]]  # "same": the filter's delay removed
    if mu_law:
        y = AF.mu_law_decoding(AF.mu_law_encoding(y.clamp(-1, 1), 256), 256)  # 256 levels: 8 bits
    y = _resample(y, codec_rate, sample_rate)[:, :N]
    y = torch.nn.functional.pad(y, (0, N - y.shape[1]))
    return mask_padding(y, lengths)


@register("augment", "telephone", TelephoneConfig)
class Telephone(WaveformAugment):
    """Narrow-band telephone channel: 8 kHz, 300–3400 Hz, 8-bit μ-law, and back to the model's rate."""

    def __init__(self, cfg: TelephoneConfig, sample_rate: int = 16000) -> None:
        super().__init__(cfg, sample_rate)
        if not 0 <= cfg.low_hz < cfg.high_hz <= cfg.codec_rate / 2 or cfg.codec_rate > sample_rate:
            raise ValueError(
                f"augment 'telephone': low_hz={cfg.low_hz}, high_hz={cfg.high_hz}, codec_rate={cfg.codec_rate} "
                f"are invalid at {sample_rate} Hz; allowed: 0 ≤ low_hz < high_hz ≤ codec_rate / 2, "
                "codec_rate ≤ the frontend's sample rate"
            )
        self.register_buffer("fir", bandpass_fir(cfg.low_hz, cfg.high_hz, cfg.codec_rate), persistent=False)

    def apply(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        c = self.cfg
        return telephone_channel(x, lengths, self.sample_rate, self.fir, c.codec_rate, c.mu_law), lengths


# ----------------------------------------------------------------------------- gain


@dataclass
class GainConfig:
    prob: float = 0.5  # chance that an utterance's level is changed
    min_db: float = -20.0  # gain range, dB, drawn uniformly per utterance
    max_db: float = 20.0
    protect_clipping: bool = True  # lower a gain that would push the utterance's peak past full scale (1)


@register("augment", "gain", GainConfig)
class Gain(WaveformAugment):
    """A random gain in dB per utterance, optionally limited so the peak stays within full scale."""

    def __init__(self, cfg: GainConfig, sample_rate: int = 16000) -> None:
        super().__init__(cfg, sample_rate)
        if cfg.min_db > cfg.max_db:
            raise ValueError(f"augment 'gain': min_db={cfg.min_db} > max_db={cfg.max_db}")

    def apply(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        gain = 10 ** (_uniform(x.shape[0], self.cfg.min_db, self.cfg.max_db, x.device) / 20)
        if self.cfg.protect_clipping:  # at most the gain that puts the peak at full scale (no boost past it)
            peak = x.abs().amax(dim=1)  # padding is zero
            gain = torch.minimum(gain, (1 / peak.clamp_min(1e-8)).clamp_min(1))
        return x * gain[:, None], lengths


# ----------------------------------------------------------------------------- noise


@dataclass
class NoiseConfig:
    prob: float = 0.5  # chance that noise is added to an utterance
    snr_min_db: float = 5.0  # signal-to-noise ratio range, dB, drawn uniformly per utterance
    snr_max_db: float = 30.0
    colors: list[str] = field(default_factory=lambda: ["white", "pink", "brown"])  # generated noise:
    # one drawn per utterance; white (flat), pink (power ∝ 1/f), brown (∝ 1/f²)
    folder: str = ""  # audio files of real noise to mix instead (read once, resampled); "" = generated noise


def colored_noise(batch: int, n: int, exponents: Tensor) -> Tensor:
    """``(batch, n)`` Gaussian noise whose power spectrum falls as ``1/f^exponent`` (``exponents``
    ``(batch,)``: 0 white, 1 pink, 2 brown), from torch's global RNG; no DC."""
    spectrum = torch.fft.rfft(torch.randn(batch, n, device=exponents.device))
    f = torch.fft.rfftfreq(n, device=exponents.device)  # cycles per sample
    shape = f.clamp_min(f[1] if n > 1 else 1.0)[None].pow(-exponents[:, None] / 2)
    shape[:, 0] = 0
    return torch.fft.irfft(spectrum * shape, n=n)


def add_noise(x: Tensor, lengths: Tensor, noise: Tensor, snr_db: Tensor) -> Tensor:
    """``x + g·noise`` with ``g`` per utterance such that the power ratio over the valid samples is
    ``snr_db`` ``(B,)`` dB; a silent utterance gets no noise. All ``(B, N)``."""
    noise = mask_padding(noise, lengths)
    scale = (
        mean_power(x, lengths) / (mean_power(noise, lengths).clamp_min(1e-20) * 10 ** (snr_db / 10))
    ).sqrt()
    return x + scale[:, None] * noise


@register("augment", "noise", NoiseConfig)
class Noise(WaveformAugment):
    """Additive noise at a random SNR: generated white, pink or brown noise, or recordings from a folder."""

    def __init__(self, cfg: NoiseConfig, sample_rate: int = 16000) -> None:
        super().__init__(cfg, sample_rate)
        if cfg.snr_min_db > cfg.snr_max_db:
            raise ValueError(f"augment 'noise': snr_min_db={cfg.snr_min_db} > snr_max_db={cfg.snr_max_db}")
        bad = [c for c in cfg.colors if c not in NOISE_EXPONENTS]
        if bad or not (cfg.colors or cfg.folder):
            raise ValueError(
                f"augment 'noise': colors={list(cfg.colors)!r} is invalid; allowed: some of "
                f"{', '.join(NOISE_EXPONENTS)} (or a folder of noise recordings)"
            )
        self.register_buffer(
            "exponents",
            torch.tensor([NOISE_EXPONENTS[c] for c in cfg.colors], dtype=torch.float32),
            persistent=False,
        )
        self.recordings: Tensor | None = None  # the folder's noise, one waveform, read at first use

    def _read_folder(self) -> Tensor:
        from speechkit.frontends.audio_io import load_audio

        folder = Path(self.cfg.folder)
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3"))
        if not files:
            raise ValueError(
                f"augment 'noise': no audio files (.wav, .flac, .ogg, .mp3) in folder={str(folder)!r}"
            )
        return torch.cat([load_audio(p, self.sample_rate) for p in files])

    def noise(self, batch: int, n: int, device: torch.device) -> Tensor:
        """``(batch, n)`` noise: windows at random offsets of the folder's recordings (wrapping round),
        or a generated color per row."""
        if not self.cfg.folder:
            pick = torch.randint(len(self.exponents), (batch,), device=device)
            return colored_noise(batch, n, self.exponents[pick])
        if self.recordings is None:
            self.recordings = self._read_folder()
        rec = self.recordings = self.recordings.to(device)
        start = torch.randint(rec.shape[0], (batch, 1), device=device)
        return rec[(start + torch.arange(n, device=device)) % rec.shape[0]]

    def apply(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        B, N = x.shape
        snr = _uniform(B, self.cfg.snr_min_db, self.cfg.snr_max_db, x.device)
        return add_noise(x, lengths, self.noise(B, N, x.device), snr), lengths


# ----------------------------------------------------------------------------- silence


@dataclass
class SilenceConfig:
    prob: float = 0.5  # chance that an utterance gets silence added
    max_s: float = 1.0  # longest silence added at each end, seconds (drawn uniformly from 0, per end)
    floor_min_db: float = -70.0  # noise floor under the whole utterance, dB RMS re full scale 1,
    floor_max_db: float = -45.0  # drawn uniformly per utterance (a quiet room through a real microphone)


def pad_with_silence(
    x: Tensor, lengths: Tensor, lead: Tensor, trail: Tensor, floor_rms: Tensor
) -> tuple[Tensor, Tensor]:
    """``lead`` and ``trail`` ``(B,)`` samples of silence around each waveform of ``x`` ``(B, N)``, and
    white noise of RMS ``floor_rms`` ``(B,)`` over the whole new utterance; → ``(B, N')``, new lengths."""
    new_lengths = lengths + lead + trail
    width = max(int(new_lengths.max()), 1)
    src = torch.arange(width, device=x.device)[None] - lead[:, None]  # (B, N'): sample of x shown there
    inside = (src >= 0) & (src < lengths[:, None])
    y = x.gather(1, src.clamp(0, x.shape[1] - 1)) * inside
    floor = floor_rms[:, None] * torch.randn(x.shape[0], width, device=x.device)
    return mask_padding(y + floor, new_lengths), new_lengths


@register("augment", "silence", SilenceConfig)
class Silence(WaveformAugment):
    """Random silence (0 to ``max_s``) before and after each utterance, over a low noise floor."""

    def __init__(self, cfg: SilenceConfig, sample_rate: int = 16000) -> None:
        super().__init__(cfg, sample_rate)
        if cfg.max_s < 0 or cfg.floor_min_db > cfg.floor_max_db:
            raise ValueError(
                f"augment 'silence': max_s={cfg.max_s} must be ≥ 0 and floor_min_db={cfg.floor_min_db} ≤ "
                f"floor_max_db={cfg.floor_max_db}"
            )

    def apply(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        B, dev = x.shape[0], x.device
        most = self.cfg.max_s * self.sample_rate  # samples
        lead = (_uniform(B, 0.0, most, dev)).round().long()
        trail = (_uniform(B, 0.0, most, dev)).round().long()
        floor = 10 ** (_uniform(B, self.cfg.floor_min_db, self.cfg.floor_max_db, dev) / 20)
        return pad_with_silence(x, lengths, lead, trail, floor)

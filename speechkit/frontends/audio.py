"""Audio frontends: ``load_audio`` (audio_io.py) reads a file, and the plugins ``spectrogram``, ``fbank`` and
``mfcc`` turn padded waveforms ``(B, N)`` into log features ``(B, T, F)``.

Conventions shared by every plugin here (and by both backends):

- framing: Kaldi's ``snip_edges=true`` — frame ``t`` covers samples ``[t * hop, t * hop + win)``,
  ``T = 1 + (N - win) // hop`` frames for ``N >= win`` samples, else 0 (see
  :mod:`speechkit.frontends.functional`); an utterance's features do not depend on the
  padding of its batch, and frames past its length are zero;
- periodic Hann window of ``win`` samples, zero-padded to ``n_fft`` points;
- ``|STFT|^power`` (power 2 by default), HTK (or Slaney) mel scale, unnormalised triangles;
- natural log with a floor, ``log(max(x, log_floor))``;
- MFCC: orthonormal DCT-II of the log-mel energies; deltas by 5-frame regression;
- normalisation after deltas, over valid frames only.

``backend="torchaudio"`` computes the whole batch on the input's device with torch (a real FFT of
the framed batch, mel and DCT as matrix products; on the CPU a few utterances at a time, see
``_static_features``);
``backend="librosa"`` computes each utterance with librosa on the CPU as a reference. The two
agree within 1e-3 (max absolute difference, in natural-log units, or normalised units) on the
same settings — measured ≤ 3e-4 for ``spectrogram`` and ≤ 1e-4 for ``fbank`` and ``mfcc`` on
tones in noise, up to 1.2e-3 for the magnitude (``power=1``) spectrogram on another CPU.
tests/frontends/test_audio.py checks fbank and mfcc against 1e-3, and the spectrogram against
1e-3 plus each bin's bound on FFT rounding (Higham: relative to the frame's energy), which is
what a log of a small bin can honestly promise on any machine. On real speech with near-silent stretches
the log spectrogram differs by up to 2.5e-3 where energies sit just above ``log_floor`` (float32
rounding of a tiny energy moves its log most); fbank ≤ 9e-4, MFCC ≤ 2e-4 (benchmarks/features_bench.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor

from speechkit.frontends import functional as FF
from speechkit.frontends.audio_io import load_audio
from speechkit.frontends.base import Frontend, invalid_setting
from speechkit.functional import masked_standardize, mean_std_where
from speechkit.registry import register

log = logging.getLogger(__name__)

NORMALIZE_MODES = ("none", "utterance", "global", "speech", "online")
DATASET_STATS_MODES = ("global", "online")  # modes that read the training set's statistics
BACKENDS = ("torchaudio", "librosa")
MEL_SCALES = ("htk", "slaney")
NORM_EPS = 1e-5  # smallest standard deviation divided by, in feature units
# normalize=speech (_AudioFrontend.speech_normalize); margin and bound chosen on dev (benchmarks/README.md)
SPEECH_REF_MS = 100.0  # ms: reference level = the utterance's loudest 100 ms (10th loudest frame at 10 ms)
SPEECH_MARGIN_DB = 30.0  # dB: a frame within this of the reference level is speech
SPEECH_MIN_MS = 250.0  # ms: with less speech than this, the statistics are all valid frames'
SILENCE_BOUND = 4.0  # speech standard deviations: no normalised feature goes below -SILENCE_BOUND
# ----------------------------------------------------------------------------- configs


@dataclass
class AudioFrontendConfig:
    """Parameters shared by ``spectrogram``, ``fbank`` and ``mfcc``."""

    sample_rate: int = 16000  # Hz; files at other rates are resampled on load
    win_length_ms: float = 25.0  # ms per analysis window (400 samples at 16 kHz)
    hop_length_ms: float = 10.0  # ms between frames: the frame shift (160 samples at 16 kHz)
    n_fft: int = 0  # FFT points; 0 = the next power of two ≥ the window (512 at 16 kHz)
    power: float = 2.0  # exponent of |STFT|: 2 = power, 1 = magnitude
    log_floor: float = 1e-6  # floor of the energies before the log, in |STFT|^power units
    # none | utterance (mean/var per utterance) | global (dataset stats) | speech (mean/var of speech frames)
    # | online (mean/var of the frames so far, with the dataset stats as a prior: causal, for streaming)
    normalize: str = "utterance"
    online_prior_s: float = 0.3  # s: normalize=online counts the dataset stats as this much audio (30 frames)
    backend: str = "torchaudio"  # torchaudio (batched, on the input's device) | librosa (reference)
    dither: float = 0.0  # std of Gaussian noise added to the waveform in training (full scale = 1)


@dataclass
class SpectrogramConfig(AudioFrontendConfig):
    """Log |STFT|^power: ``n_fft // 2 + 1`` features (257 at 16 kHz)."""


@dataclass
class FbankConfig(AudioFrontendConfig):
    """Log-mel filterbank energies: ``n_mels`` features."""

    n_mels: int = 80  # mel bands
    f_min: float = 20.0  # Hz, lower edge of the lowest band
    f_max: float = 0.0  # Hz, upper edge of the highest band; 0 = Nyquist (sample_rate / 2)
    mel_scale: str = "htk"  # htk | slaney


@dataclass
class MfccConfig(FbankConfig):
    """MFCC (DCT-II of the log-mel energies) plus deltas: ``n_mfcc * (1 + deltas + delta_deltas)``
    features (13 + Δ + ΔΔ = 39 by default)."""

    n_mels: int = 40  # mel bands before the DCT
    n_mfcc: int = 13  # cepstral coefficients kept, c0 included
    deltas: bool = True  # append Δ (5-frame regression)
    delta_deltas: bool = True  # append ΔΔ (the Δ of Δ); needs deltas


def _check_config(name: str, cfg: AudioFrontendConfig) -> None:
    """Raise ValueError naming the field and its allowed values for any bad parameter."""
    if cfg.sample_rate <= 0:
        raise invalid_setting(name, "sample_rate", cfg.sample_rate, "a positive number of Hz")
    if cfg.win_length_ms <= 0 or round(cfg.sample_rate * cfg.win_length_ms / 1000) < 2:
        raise invalid_setting(name, "win_length_ms", cfg.win_length_ms, "at least 2 samples' worth of ms")
    if cfg.hop_length_ms <= 0 or round(cfg.sample_rate * cfg.hop_length_ms / 1000) < 1:
        raise invalid_setting(name, "hop_length_ms", cfg.hop_length_ms, "at least 1 sample's worth of ms")
    if cfg.n_fft and cfg.n_fft < round(cfg.sample_rate * cfg.win_length_ms / 1000):
        raise invalid_setting(
            name, "n_fft", cfg.n_fft, "0 (derived) or at least the window length in samples"
        )
    if cfg.power <= 0:
        raise invalid_setting(name, "power", cfg.power, "a positive exponent (2 = power, 1 = magnitude)")
    if cfg.log_floor <= 0:
        raise invalid_setting(name, "log_floor", cfg.log_floor, "a positive number")
    if cfg.normalize not in NORMALIZE_MODES:
        raise invalid_setting(name, "normalize", cfg.normalize, ", ".join(NORMALIZE_MODES))
    if cfg.online_prior_s < 0:
        raise invalid_setting(name, "online_prior_s", cfg.online_prior_s, "0 or a positive number of seconds")
    if cfg.backend not in BACKENDS:
        raise invalid_setting(name, "backend", cfg.backend, ", ".join(BACKENDS))
    if cfg.dither < 0:
        raise invalid_setting(name, "dither", cfg.dither, "0 or a positive standard deviation")
    if isinstance(cfg, FbankConfig):
        nyquist = cfg.sample_rate / 2
        if cfg.n_mels < 1:
            raise invalid_setting(name, "n_mels", cfg.n_mels, "a positive number of bands")
        if cfg.mel_scale not in MEL_SCALES:
            raise invalid_setting(name, "mel_scale", cfg.mel_scale, ", ".join(MEL_SCALES))
        if not 0 <= cfg.f_min < (cfg.f_max or nyquist) <= nyquist:
            raise invalid_setting(
                name, "f_min/f_max", (cfg.f_min, cfg.f_max), f"0 <= f_min < f_max <= {nyquist} Hz"
            )
    if isinstance(cfg, MfccConfig):
        if not 1 <= cfg.n_mfcc <= cfg.n_mels:
            raise invalid_setting(name, "n_mfcc", cfg.n_mfcc, f"1 to n_mels ({cfg.n_mels})")
        if cfg.delta_deltas and not cfg.deltas:
            raise invalid_setting(name, "delta_deltas", True, "false unless deltas=true")


# ----------------------------------------------------------------------------- plugins


class _AudioFrontend(Frontend):
    """Shared machinery: framing, backends, deltas, normalisation, statistics.

    Subclasses set ``output_dim`` and implement ``_from_power`` (``(B, T, n_fft//2+1)`` power
    → ``(B, T, F0)`` log features, torch) and ``_from_power_librosa`` (``(n_fft//2+1, T)`` →
    ``(F0, T)``, numpy), F0 being the features before deltas.
    """

    modality = "audio"
    extensions = (".wav", ".flac", ".ogg", ".mp3")  # what libsndfile reads, for folder inputs
    delta_order = 0  # 0 none, 1 Δ, 2 Δ and ΔΔ
    cpu_chunk_frames = 1024  # frames whose spectra are computed at once on the CPU (cache-sized pieces)

    def __init__(self, cfg: AudioFrontendConfig) -> None:
        super().__init__()
        _check_config(getattr(self, "plugin_name", type(self).__name__), cfg)
        self.cfg = cfg
        self.win_length = round(cfg.sample_rate * cfg.win_length_ms / 1000)  # samples
        self.hop_length = round(cfg.sample_rate * cfg.hop_length_ms / 1000)  # samples
        self.n_fft = cfg.n_fft or 2 ** math.ceil(math.log2(self.win_length))  # FFT points
        self.n_freqs = self.n_fft // 2 + 1  # frequency bins, 0 Hz to Nyquist
        self.frame_shift_s = self.hop_length / cfg.sample_rate  # seconds per output frame
        self.speech_ref_frames = max(1, round(SPEECH_REF_MS / 1000 / self.frame_shift_s))  # frames (10)
        self.speech_min_frames = max(1, round(SPEECH_MIN_MS / 1000 / self.frame_shift_s))  # frames (25)
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        self.dft: Tensor | None = None  # set by use_dft_matrix(): the DFT as a matrix product (export)

    def use_dft_matrix(self, on: bool = True) -> None:
        """Compute the spectrum as one matrix product (:func:`~speechkit.frontends.functional.dft_matrix`)
        instead of a real FFT: slower, but it exports to ONNX, which the FFT does not."""
        self.dft = FF.dft_matrix(self.window, self.n_fft) if on else None

    @property
    def uses_dataset_stats(self) -> bool:
        """Whether normalisation reads training-set statistics (``global``, ``online``): the trainer
        then accumulates them (:meth:`update_stats`) before the first step."""
        return self.cfg.normalize in DATASET_STATS_MODES

    def _init_stats(self) -> None:
        """Global and online normalisation: dataset sums in buffers, so they travel in the state_dict."""
        if self.uses_dataset_stats:
            self.register_buffer("stats_count", torch.zeros((), dtype=torch.float64))  # frames seen
            self.register_buffer("stats_sum", torch.zeros(self.output_dim, dtype=torch.float64))
            self.register_buffer("stats_sq_sum", torch.zeros(self.output_dim, dtype=torch.float64))

    def extra_repr(self) -> str:
        return (
            f"output_dim={self.output_dim}, win={self.win_length}, hop={self.hop_length}, "
            f"n_fft={self.n_fft}, normalize={self.cfg.normalize!r}, backend={self.cfg.backend!r}"
        )

    def load(self, path: Path) -> Tensor:
        """One audio file → mono float32 waveform ``(samples,)`` at ``cfg.sample_rate``."""
        return load_audio(path, self.cfg.sample_rate)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames for ``lengths`` ``(B,)`` samples: ``1 + (N - win) // hop``, 0 when ``N < win``."""
        return FF.num_frames(lengths, self.win_length, self.hop_length)

    def features(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Unnormalised features: waveforms ``(B, N)`` → ``(B, T, F)``, frames ``(B,)``."""
        lengths = lengths.to(device=x.device, dtype=torch.long)
        out_lengths = self.output_lengths(lengths)
        with torch.autocast(x.device.type, enabled=False):  # log energies need float32
            x = FF.mask_padding(x.float(), lengths)
            if self.training and self.cfg.dither > 0:
                x = FF.mask_padding(x + self.cfg.dither * torch.randn_like(x), lengths)
            dft = None if self.dft is None else self.dft.to(x.device)
            if self.cfg.backend == "librosa":
                feats = self._librosa_features(x, out_lengths)
            else:
                parts = [self._static_features(x, dft)]
                for _ in range(self.delta_order):  # Δ, then ΔΔ = Δ of Δ
                    parts.append(FF.deltas(parts[-1], out_lengths))
                feats = torch.cat(parts, dim=-1)
            return FF.mask_padding(feats, out_lengths), out_lengths

    def frame_features(self, x: Tensor) -> Tensor:
        """Features before deltas and normalisation of unpadded waveforms ``(B, N)``, ``N >= win`` →
        ``(B, T, F0)``, ``T = 1 + (N - win) // hop`` (float32, no dither). Each frame is computed from its
        own ``win`` samples alone (snip-edges framing), so a stream cut at frame starts gives the frames
        of the whole utterance (speechkit/streaming.py)."""
        with torch.autocast(x.device.type, enabled=False):
            return self._static_features(x.float(), None if self.dft is None else self.dft.to(x.device))

    def _static_features(self, x: Tensor, dft: Tensor | None) -> Tensor:
        """Waveforms ``(B, N)`` → features before deltas ``(B, T, F0)``, on the CPU a few utterances at a
        time: the ``(B, T, n_fft)`` frames and spectra of a whole batch do not fit in the CPU's caches,
        and streaming them through memory made a 32-utterance batch 2-3× slower than small chunks."""
        rows = max(1, self.cpu_chunk_frames // max(1, (x.shape[1] - self.win_length) // self.hop_length + 1))
        if x.device.type != "cpu" or rows >= x.shape[0] or torch.jit.is_tracing():  # export: one graph
            return self._from_power(
                FF.power_spectrogram(x, self.window, self.n_fft, self.hop_length, self.cfg.power, dft)
            )
        return torch.cat([self._static_features(chunk, dft) for chunk in x.split(rows)], dim=0)

    def _librosa_features(self, x: Tensor, out_lengths: Tensor) -> Tensor:
        """The reference: each utterance with librosa in float64 on the CPU → ``(B, T, F)`` float32."""
        import librosa

        out_lengths = out_lengths.cpu()
        lengths = (out_lengths - 1) * self.hop_length + self.win_length  # samples the frames cover
        T = max(1, int(FF.num_frames(torch.tensor(x.shape[1]), self.win_length, self.hop_length)))
        out = torch.zeros(x.shape[0], T, self.output_dim)  # as many frames as the torchaudio path
        left = (self.n_fft - self.win_length) // 2  # as in functional.power_spectrogram
        right = self.n_fft - self.win_length - left
        for i, (n, t) in enumerate(zip(lengths.tolist(), out_lengths.tolist())):
            if t == 0:
                continue
            y = np.pad(x[i, :n].double().cpu().numpy(), (left, right))
            stft = librosa.stft(
                y,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                win_length=self.win_length,
                window="hann",
                center=False,
            )
            feats = self._from_power_librosa(np.abs(stft) ** self.cfg.power)
            parts = [feats]
            for _ in range(self.delta_order):
                parts.append(
                    librosa.feature.delta(parts[-1], width=2 * FF.DELTA_WIDTH + 1, order=1, mode="nearest")
                )
            out[i, :t] = torch.from_numpy(np.concatenate(parts, axis=0).T.astype(np.float32))
        return out.to(x.device)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Padded waveforms ``(B, N)`` (full scale 1), ``lengths`` ``(B,)`` samples →
        normalised features ``(B, T, F)`` (zero past each length), frames ``(B,)``."""
        feats, out_lengths = self.features(x, lengths)
        mode = self.cfg.normalize
        if mode == "utterance":
            feats = masked_standardize(feats, out_lengths, eps=NORM_EPS)
        elif mode == "global":
            mean, std = self.global_mean_std()
            feats = FF.normalize(feats, out_lengths, mean.to(feats), std.to(feats), NORM_EPS)
        elif mode == "speech":
            feats = self.speech_normalize(x, feats, out_lengths)
        elif mode == "online":
            feats, _ = self.online_normalize(feats, out_lengths)
        return feats, out_lengths

    def online_normalize(
        self, feats: Tensor, frames: Tensor, start: FF.Moments | None = None
    ) -> tuple[Tensor, FF.Moments]:
        """``normalize=online``: features ``(B, T, F)``, ``frames`` ``(B,)`` valid → each frame standardised
        by the mean and variance of the utterance's frames up to and including it, pooled with the
        training set's as a prior worth ``online_prior_s`` seconds of frames
        (:func:`~speechkit.frontends.functional.causal_normalize`); and the running moments after each
        row's last frame, from which a stream goes on (``start``: those of the previous chunk).

        The causal form of ``utterance`` normalisation (cf. Kaldi's online CMVN): it takes away most of a
        voice's and a channel's spectral tilt, yet no frame waits for later audio, so training,
        whole-utterance inference and streaming agree. The training set's mean and variance count as
        ``online_prior_s`` seconds of frames (the posterior mean of a normal prior): the first frames are
        normalised almost as by ``global``, and the utterance's own statistics take over smoothly (half
        and half after ``online_prior_s``); without a prior (``online_prior_s=0``) the first frames would
        be divided by the spread of one or two frames. On data/demo 0.1 and 0.3 s did equally well, 1 and
        3 s worse (benchmarks/README.md, "Streaming"). The variance is the frames' spread about their own
        running mean plus the prior's. Not gain-invariant, unlike ``utterance``: the prior holds a
        frame's mean back by ``τ / (τ + n)`` of a level change; leading silence enters the sums.
        """
        mean, std = self.global_mean_std()
        prior_frames = self.cfg.online_prior_s / self.frame_shift_s  # 100 frames a second at a 10 ms hop
        return FF.causal_normalize(
            feats, frames, mean.to(feats), std.to(feats), prior_frames, start, NORM_EPS
        )

    def speech_normalize(self, x: Tensor, feats: Tensor, frames: Tensor) -> Tensor:
        """``normalize=speech``: features ``(B, T, F)`` of waveforms ``x`` ``(B, N)``, ``frames`` ``(B,)``
        valid → each utterance standardised with the mean and std of its speech frames, bounded below.

        Speech frames (:func:`~speechkit.frontends.functional.speech_frames`): those whose energy is within
        ``SPEECH_MARGIN_DB`` of the utterance's loudest ``SPEECH_REF_MS`` (all frames when fewer than
        ``SPEECH_MIN_MS`` qualify). The energy is the waveform's (dB re full scale), not the features':
        the mean log-mel of a −55 dBFS white floor (−7.0 nats; white noise fills the high bands that
        speech leaves nearly empty) is as high as the median frame of some asr_grid dev utterances
        (−6.8), whereas its energy lies 16-44 dB under their loudest 100 ms (−39 to −11 dBFS). A gain
        moves every level alike, and silence neither moves the reference (a rank, not a quantile) nor
        joins the speech, so a padded or rescaled utterance keeps the statistics of the original.

        Silence then lands far below the speech: digital silence (every log energy at
        ``log(log_floor)``) has a median of −4.3 speech standard deviations and a tail to −27 in the
        bands that speech keeps steady, and where it lands moves with the gain (the floor does not).
        Values under ``-SILENCE_BOUND`` are raised to it: about half of a digital silence's values on
        asr_grid dev sit exactly there, and 1 in 1 000 of its speech frames' values. The bound keeps a
        model's inputs within a few units whatever the recording's silence; on dev, with models trained
        with ``utterance``, bounds of 2 to 5 or none moved the WER by up to a point, in no consistent
        direction.
        """
        with torch.autocast(x.device.type, enabled=False):
            level = FF.frame_energy_db(x.float(), self.win_length, self.hop_length)  # (B, T) dB
        margin, ref_frames, min_frames = SPEECH_MARGIN_DB, self.speech_ref_frames, self.speech_min_frames
        speech = FF.speech_frames(level, frames, margin, ref_frames, min_frames)
        mean, std = mean_std_where(feats, speech)
        return FF.normalize(feats, frames, mean, std, NORM_EPS).clamp_min(-SILENCE_BOUND)  # padding stays 0

    @torch.no_grad()
    def update_stats(self, x: Tensor, lengths: Tensor) -> None:
        """Add one raw training batch (as for ``forward``) to the global mean/variance sums."""
        if not self.uses_dataset_stats:
            return
        feats, out_lengths = self.features(x, lengths)
        feats = feats.double()  # padding is zero, so plain sums cover valid frames only
        self.stats_count += out_lengths.sum().to(self.stats_count)
        self.stats_sum += feats.sum((0, 1)).to(self.stats_sum)
        self.stats_sq_sum += (feats**2).sum((0, 1)).to(self.stats_sq_sum)

    def global_mean_std(self) -> tuple[Tensor, Tensor]:
        """Dataset mean and standard deviation ``(F,)`` from the accumulated sums (float64)."""
        if not self.uses_dataset_stats or self.stats_count.item() == 0:
            raise RuntimeError(
                f"frontend {self.plugin_name!r} with normalize={self.cfg.normalize!r} has no statistics yet: call "  # type: ignore[attr-defined]
                "update_stats(x, lengths) on training batches first (or load a checkpoint that has them)"
            )
        mean = self.stats_sum / self.stats_count
        var = (self.stats_sq_sum / self.stats_count - mean**2).clamp_min(0)
        return mean, var.sqrt()

    def _from_power(self, power: Tensor) -> Tensor:
        raise NotImplementedError

    def _from_power_librosa(self, power: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _mel_filterbank(cfg: FbankConfig, n_freqs: int) -> Tensor:
    """Triangular mel filters ``(n_freqs, n_mels)``, unnormalised, from ``f_min`` to ``f_max`` Hz."""
    f_max = cfg.f_max or cfg.sample_rate / 2
    return AF.melscale_fbanks(n_freqs, cfg.f_min, f_max, cfg.n_mels, cfg.sample_rate, None, cfg.mel_scale)


def _mel_filterbank_librosa(cfg: FbankConfig, n_fft: int) -> np.ndarray:
    """The same filters from librosa, ``(n_mels, n_freqs)`` float64."""
    import librosa

    f_max = cfg.f_max or cfg.sample_rate / 2
    return librosa.filters.mel(
        sr=cfg.sample_rate,
        n_fft=n_fft,
        n_mels=cfg.n_mels,
        fmin=cfg.f_min,
        fmax=f_max,
        htk=cfg.mel_scale == "htk",
        norm=None,
        dtype=np.float64,
    )


@register("frontend", "spectrogram", SpectrogramConfig)
class Spectrogram(_AudioFrontend):
    """Log |STFT|^power: waveforms ``(B, N)`` → ``(B, T, n_fft // 2 + 1)`` (257 at 16 kHz)."""

    def __init__(self, cfg: SpectrogramConfig) -> None:
        super().__init__(cfg)
        self.output_dim = self.n_freqs
        self._init_stats()

    def _from_power(self, power: Tensor) -> Tensor:
        return FF.log_floored(power, self.cfg.log_floor)

    def _from_power_librosa(self, power: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(power, self.cfg.log_floor))


@register("frontend", "fbank", FbankConfig)
class Fbank(_AudioFrontend):
    """Log-mel filterbank energies: waveforms ``(B, N)`` → ``(B, T, n_mels)`` (80 by default)."""

    def __init__(self, cfg: FbankConfig) -> None:
        super().__init__(cfg)
        self.output_dim = cfg.n_mels
        self.register_buffer("mel_fb", _mel_filterbank(cfg, self.n_freqs), persistent=False)
        self.mel_fb_librosa = _mel_filterbank_librosa(cfg, self.n_fft) if cfg.backend == "librosa" else None
        self._init_stats()

    def _from_power(self, power: Tensor) -> Tensor:
        return FF.log_floored(power @ self.mel_fb, self.cfg.log_floor)

    def _from_power_librosa(self, power: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(self.mel_fb_librosa @ power, self.cfg.log_floor))


@register("frontend", "mfcc", MfccConfig)
class Mfcc(_AudioFrontend):
    """MFCC with optional Δ and ΔΔ: waveforms ``(B, N)`` → ``(B, T, n_mfcc * (1 + Δ + ΔΔ))``
    (39 by default). Coefficients are the orthonormal DCT-II of the log-mel energies."""

    def __init__(self, cfg: MfccConfig) -> None:
        super().__init__(cfg)
        self.delta_order = int(cfg.deltas) + int(cfg.delta_deltas)
        self.output_dim = cfg.n_mfcc * (1 + self.delta_order)
        self.register_buffer("mel_fb", _mel_filterbank(cfg, self.n_freqs), persistent=False)
        self.mel_fb_librosa = _mel_filterbank_librosa(cfg, self.n_fft) if cfg.backend == "librosa" else None
        self.register_buffer("dct", AF.create_dct(cfg.n_mfcc, cfg.n_mels, "ortho"), persistent=False)
        self._init_stats()

    def _from_power(self, power: Tensor) -> Tensor:
        return FF.log_floored(power @ self.mel_fb, self.cfg.log_floor) @ self.dct  # (B, T, n_mfcc)

    def _from_power_librosa(self, power: np.ndarray) -> np.ndarray:
        import librosa

        mel = self.mel_fb_librosa @ power
        log_mel = np.log(np.maximum(mel, self.cfg.log_floor))
        return librosa.feature.mfcc(S=log_mel, n_mfcc=self.cfg.n_mfcc, dct_type=2, norm="ortho")

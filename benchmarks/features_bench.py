"""Feature-extraction throughput, × real time (seconds of audio per second of compute), side by side:

- speechkit, batched (``backend=torchaudio``: the whole padded batch at once);
- speechkit's reference ``backend=librosa`` (librosa per utterance, float64);
- librosa per file (float32, the same settings: snip-edges framing, periodic Hann, HTK mel);
- fbank only: ``torchaudio.compliance.kaldi.fbank`` per file (Kaldi's pipeline, options matched
  where Kaldi has them);
- MFCC only: ``torchaudio.transforms.MFCC`` batched (+ ``compute_deltas`` twice, for 39 features).

Every row also reports the max |difference| from speechkit's librosa backend on valid frames, for
the features both compute (natural-log units; un-normalised; MFCC peers compare their 13
static coefficients). Audio: the first ``--files`` utterances of a manifest (16 kHz), loaded
once; only the feature computation is timed, best of ``--repeats``.

    python benchmarks/features_bench.py --threads 1
    python benchmarks/features_bench.py --threads 2
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from speechkit.data.manifest import read_manifest
from speechkit.frontends.audio import load_audio
from speechkit.registry import build, load_plugins

SR = 16000  # Hz
WIN, HOP, N_FFT = 400, 160, 512  # samples: 25 ms window, 10 ms hop, FFT points
N_MELS = {"fbank": 80, "mfcc": 40}  # speechkit's defaults
N_MFCC = 13
LOG_FLOOR = 1e-6


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Minimum wall-clock seconds of ``fn()`` over ``repeats`` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def batches(waves: list[torch.Tensor], size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Padded batches of ``size`` utterances, sorted by length (as bucketing does)."""
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    out = []
    for k in range(0, len(order), size):
        chunk = [waves[i] for i in order[k : k + size]]
        lengths = torch.tensor([len(w) for w in chunk])
        x = torch.zeros(len(chunk), int(lengths.max()))
        for j, w in enumerate(chunk):
            x[j, : len(w)] = w
        out.append((x, lengths))
    return out


# ----------------------------------------------------------------------------- peers


def librosa_features(kind: str, y: np.ndarray) -> np.ndarray:
    """``(T, F)`` float32 with librosa: the same definitions as speechkit (static MFCC + Δ + ΔΔ)."""
    import librosa

    y = np.pad(y, (0, N_FFT - WIN))  # frames of N_FFT samples whose window covers the first WIN
    window = np.pad(np.hanning(WIN + 1)[:-1], (0, N_FFT - WIN)).astype(np.float32)  # periodic Hann
    spec = librosa.stft(y, n_fft=N_FFT, hop_length=HOP, window=window, center=False)
    power = spec.real**2 + spec.imag**2
    if kind == "spectrogram":
        return np.log(np.maximum(power, LOG_FLOOR)).T
    mel_fb = _librosa_mel(N_MELS[kind])
    log_mel = np.log(np.maximum(mel_fb @ power, LOG_FLOOR))
    if kind == "fbank":
        return log_mel.T
    c = librosa.feature.mfcc(S=log_mel, n_mfcc=N_MFCC, dct_type=2, norm="ortho")
    d = librosa.feature.delta(c, width=5, mode="nearest")
    dd = librosa.feature.delta(d, width=5, mode="nearest")
    return np.concatenate([c, d, dd]).T


_MEL: dict[int, np.ndarray] = {}


def _librosa_mel(n_mels: int) -> np.ndarray:
    import librosa

    if n_mels not in _MEL:
        _MEL[n_mels] = librosa.filters.mel(
            sr=SR, n_fft=N_FFT, n_mels=n_mels, fmin=20.0, fmax=SR / 2, htk=True, norm=None, dtype=np.float32
        )
    return _MEL[n_mels]


def kaldi_fbank(wave: torch.Tensor) -> torch.Tensor:
    """``(T, 80)`` Kaldi log-mel fbank, options matched to speechkit where Kaldi has them
    (no dither, pre-emphasis or DC removal; Hann window; power spectrum; 20 Hz to Nyquist).
    Kaldi's Hann window is symmetric and its mel triangles are linear in mel, not Hz, so its
    values differ from speechkit's somewhat; the cost is what this row measures."""
    from torchaudio.compliance import kaldi

    return kaldi.fbank(
        wave[None],
        num_mel_bins=N_MELS["fbank"],
        frame_length=WIN * 1000 / SR,
        frame_shift=HOP * 1000 / SR,
        dither=0.0,
        preemphasis_coefficient=0.0,
        remove_dc_offset=False,
        window_type="hanning",
        low_freq=20.0,
        high_freq=0.0,
        energy_floor=0.0,
        snip_edges=True,
        sample_frequency=SR,
    )


class TorchaudioMFCC:
    """``torchaudio.transforms.MFCC`` batched (log-mel, snip-edges framing) plus Δ and ΔΔ."""

    def __init__(self) -> None:
        import torchaudio

        self.mfcc = torchaudio.transforms.MFCC(
            sample_rate=SR,
            n_mfcc=N_MFCC,
            log_mels=True,  # log(mel + 1e-6), as speechkit's log(max(mel, 1e-6)) where mel ≫ 1e-6
            melkwargs=dict(
                n_fft=N_FFT,
                win_length=WIN,
                hop_length=HOP,
                n_mels=N_MELS["mfcc"],
                f_min=20.0,
                center=False,
                mel_scale="htk",
                norm=None,
            ),
        )
        self.deltas = torchaudio.functional.compute_deltas

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # torch.stft frames are n_fft samples with the window centred: pad so that frame t's window
        # covers samples [t * hop, t * hop + win), as in speechkit (else every frame is 3.5 ms late)
        left = (N_FFT - WIN) // 2
        c = self.mfcc(torch.nn.functional.pad(x, (left, N_FFT - WIN - left)))  # (B, 13, T)
        d = self.deltas(c, win_length=5)
        return torch.cat([c, d, self.deltas(d, win_length=5)], dim=1)


def previous_path(fe, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """speechkit's batched features as computed before the FFT rewrite, for the record:
    ``torchaudio.functional.spectrogram`` (complex STFT, then ``abs() ** 2``) over the whole padded
    batch at once, then the same mel / DCT / deltas."""
    import torchaudio.functional as AF

    from speechkit.frontends import functional as FF

    out_lengths = fe.output_lengths(lengths)
    x = FF.mask_padding(x, lengths)
    left = (fe.n_fft - fe.win_length) // 2
    x = torch.nn.functional.pad(x, (left, fe.n_fft - fe.win_length - left))
    power = AF.spectrogram(x, 0, fe.window, fe.n_fft, fe.hop_length, fe.win_length, 2.0, False, center=False)
    parts = [fe._from_power(power.transpose(1, 2))]
    for _ in range(fe.delta_order):
        parts.append(FF.deltas(parts[-1], out_lengths))
    return FF.mask_padding(torch.cat(parts, dim=-1), out_lengths)


# ----------------------------------------------------------------------------- the run


def max_diff(a: np.ndarray, b: np.ndarray, dims: int | None = None) -> float:
    T = min(len(a), len(b))
    dims = dims or a.shape[1]
    return float(np.abs(a[:T, :dims] - b[:T, :dims]).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", default="data/asr_grid/test.jsonl")
    ap.add_argument("--files", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--peer-files", type=int, default=32, help="files the slow per-file peers are timed on")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_plugins()

    examples = read_manifest(Path(args.manifest), "audio")[: args.files]
    waves = [load_audio(ex.path, SR) for ex in examples]
    seconds = sum(len(w) for w in waves) / SR
    peer_waves = waves[: args.peer_files]
    peer_seconds = sum(len(w) for w in peer_waves) / SR
    data = batches(waves, args.batch_size)
    print(
        f"{len(waves)} files, {seconds / 60:.1f} min of audio (per-file peers: {len(peer_waves)} files, "
        f"{peer_seconds:.0f} s); {args.threads} thread(s); best of {args.repeats}"
    )
    print(f"{'features':12s} {'implementation':50s} {'× real time':>12s} {'max |Δ| vs librosa backend':>28s}")

    with torch.inference_mode():
        for kind in ("spectrogram", "fbank", "mfcc"):
            fast = build("frontend", kind, normalize="none").eval()
            ref = build("frontend", kind, normalize="none", backend="librosa").eval()
            # reference features of every peer file, one utterance at a time
            ref_feats = []
            for w in peer_waves:
                f, n = ref(w[None], torch.tensor([len(w)]))
                ref_feats.append(f[0, : int(n[0])].numpy())

            def run_fast(fe=fast):
                for x, lengths in data:
                    fe(x, lengths)

            fast_diff = 0.0
            for w, r in zip(peer_waves, ref_feats):
                x = torch.stack([w, torch.zeros_like(w)])  # in a padded batch, as in training
                f, n = fast(x, torch.tensor([len(w), len(w) // 2]))
                fast_diff = max(fast_diff, max_diff(f[0, : int(n[0])].numpy(), r))
            rows = [("speechkit batched (torch, FFT)", seconds / best_of(run_fast, args.repeats), fast_diff)]

            def run_previous(fe=fast):
                for x, lengths in data:
                    previous_path(fe, x, lengths)

            diff = 0.0
            for w, r in zip(peer_waves, ref_feats):
                f = previous_path(fast, w[None], torch.tensor([len(w)]))
                diff = max(diff, max_diff(f[0].numpy(), r))
            rows.append(
                (
                    "speechkit batched before (torch.stft, whole batch)",
                    seconds / best_of(run_previous, args.repeats),
                    diff,
                )
            )

            def run_ref(fe=ref):
                for w in peer_waves:
                    fe(w[None], torch.tensor([len(w)]))

            rows.append(
                (
                    "speechkit backend=librosa (per file, float64)",
                    peer_seconds / best_of(run_ref, max(1, args.repeats // 3)),
                    0.0,
                )
            )

            def run_librosa(kind=kind):
                for w in peer_waves:
                    librosa_features(kind, w.numpy())

            diff = max(max_diff(librosa_features(kind, w.numpy()), r) for w, r in zip(peer_waves, ref_feats))
            rows.append(
                (
                    "librosa per file (float32)",
                    peer_seconds / best_of(run_librosa, max(1, args.repeats // 3)),
                    diff,
                )
            )
            if kind == "fbank":

                def run_kaldi():
                    for w in peer_waves:
                        kaldi_fbank(w)

                diff = max(max_diff(kaldi_fbank(w).numpy(), r) for w, r in zip(peer_waves, ref_feats))
                rows.append(
                    (
                        "torchaudio kaldi.fbank per file",
                        peer_seconds / best_of(run_kaldi, max(1, args.repeats // 3)),
                        diff,
                    )
                )
            if kind == "mfcc":
                ta = TorchaudioMFCC()

                def run_ta(ta=ta):
                    for x, _ in data:
                        ta(x)

                diff = 0.0
                for w, r in zip(peer_waves, ref_feats):
                    diff = max(diff, max_diff(ta(w[None])[0].T.numpy(), r, dims=N_MFCC))
                rows.append(
                    (
                        "torchaudio.transforms.MFCC batched (+Δ, ΔΔ)",
                        seconds / best_of(run_ta, args.repeats),
                        diff,
                    )
                )
            for name, speed, diff in rows:
                print(f"{kind:12s} {name:50s} {speed:12,.0f} {diff:28.2e}")


if __name__ == "__main__":
    main()

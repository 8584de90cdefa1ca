"""Audio frontends: load_audio on real files, and the spectrogram / fbank / mfcc plugins."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from speechkit.data.errors import DataError
from speechkit.frontends import audio, audio_io
from speechkit.frontends import functional as FF
from speechkit.frontends.audio import Fbank, FbankConfig, Mfcc, MfccConfig, Spectrogram, load_audio
from speechkit.registry import build

SR = 16000  # Hz
BACKEND_TOLERANCE = 1e-3  # max |torchaudio − librosa| in log (or normalised) units, beyond FFT rounding
FLOAT32_U = 2.0**-24  # unit roundoff of float32
PAD_TOLERANCE = 1e-5  # max |padded batch − alone|: only float reordering may differ


def tone(n: int, freq: float, sr: int = SR, seed: int = 0) -> torch.Tensor:
    """``n`` samples of a 0.5-amplitude sine at ``freq`` Hz plus a little white noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / sr
    return 0.5 * torch.sin(2 * math.pi * freq * t) + 0.05 * torch.randn(n, generator=g)


def padded_batch(lengths: list[int], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tones of the given lengths, zero-padded into ``(B, width)``."""
    width = width or max(lengths)
    x = torch.zeros(len(lengths), width)
    for i, n in enumerate(lengths):
        x[i, :n] = tone(n, 300.0 + 150.0 * i, seed=i)
    return x, torch.tensor(lengths)


def fft_rounding_bound(ref, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """How far float32 rounding in the torchaudio backend's FFT can move each log-spectrum feature
    ``(B, T, F)`` (in the features' units, normalised or not) from ``ref``, the librosa (float64)
    ``spectrogram`` frontend with the same settings; 0 past each utterance's frames.

    The rounding error of an FFT is bounded relative to the norm of the whole transform, not to each
    bin: ``|ΔX_k| ≤ δ = κ·‖X‖₂`` with ``κ = (7·log2(n_fft) + 2)·u`` (Higham, Accuracy and Stability of
    Numerical Algorithms, 2nd ed., Thm 24.2: ``log2(N)·η``, ``η = μ + γ₄(√2 + μ) ≈ 6.7u`` a stage for
    twiddles correct to ``μ ≈ u``; ``+ 2u`` for the float32 window and its product with the frame).
    So a bin far below its frame's energy keeps no relative accuracy, and its log moves by up to
    ``p·|log(1 − δ/|X_k|)|`` (``p`` the power); the log floor only shrinks that (``log max(·, floor)``
    is a contraction). Utterance normalisation ``(ℓ − m)/s`` then moves by at most
    ``(e_t + mean e + |z_t|·rms e)/(s − rms e)`` for log errors ``|e_t|`` bounded as above.
    """
    raw, frames = ref.features(x, lengths)  # log max(|X_k|^p, floor), unnormalised
    valid = FF.lengths_mask(frames, raw.shape[1])[..., None]
    p = ref.cfg.power
    mag = (raw.double() / p).exp()  # |X_k|, at least floor^(1/p)
    norm = (2 * mag.square().sum(-1, keepdim=True)).sqrt()  # ≥ ‖X‖₂ over all n_fft bins (Parseval)
    ratio = ((7 * math.log2(ref.n_fft) + 2) * FLOAT32_U * norm / mag).clamp(max=1)  # δ / |X_k|
    e = torch.where(valid, -p * torch.log1p(-ratio), 0)  # inf where rounding could reach the bin's own size
    if ref.cfg.normalize == "none":
        return e
    count = frames.clamp_min(1)[:, None, None]
    mean_e, rms_e = e.sum(1, keepdim=True) / count, (e.square().sum(1, keepdim=True) / count).sqrt()
    m, s = FF.masked_mean_std(raw.double(), frames)
    z = (raw.double() - m[:, None]) / s[:, None]  # the normalised features
    return torch.where(valid, (e + mean_e + z.abs() * rms_e) / (s[:, None] - rms_e).clamp_min(0), 0)


def peak_hz(wave: torch.Tensor, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave.numpy()))
    return float(np.argmax(spectrum) * sr / len(wave))


# ----------------------------------------------------------------------------- plugins


@pytest.mark.parametrize(
    "name, params, dim",
    [
        ("spectrogram", {}, 257),  # n_fft 512 at 16 kHz → 257 bins
        ("spectrogram", {"n_fft": 1024}, 513),
        ("spectrogram", {"sample_rate": 8000}, 129),  # 200-sample window → n_fft 256
        ("fbank", {}, 80),
        ("fbank", {"n_mels": 40}, 40),
        ("mfcc", {}, 39),  # 13 + Δ + ΔΔ
        ("mfcc", {"n_mfcc": 40, "deltas": False, "delta_deltas": False}, 40),
        ("mfcc", {"n_mfcc": 20, "deltas": True, "delta_deltas": False}, 40),
    ],
)
def test_output_dim_and_shape_match_the_config(name, params, dim):
    frontend = build("frontend", name, **params)
    sr = params.get("sample_rate", SR)
    x = torch.randn(3, sr) * 0.1  # 1 s each
    feats, lengths = frontend(x, torch.tensor([sr, sr // 2, sr // 4]))
    assert frontend.output_dim == dim
    assert feats.shape == (3, 98, dim)  # 1 + (1 s − 25 ms) // 10 ms
    assert lengths.tolist() == [98, 48, 23]
    assert frontend.frame_shift_s == pytest.approx(0.010)
    assert frontend.modality == "audio"
    assert {".wav", ".flac"} <= set(frontend.extensions)


def test_output_lengths_follow_the_snip_edges_formula():
    frontend = build("frontend", "fbank")  # 400-sample window, 160-sample hop
    lengths = torch.tensor([0, 399, 400, 559, 560, 16000, 32000])
    expected = [0, 0, 1, 1, 2, 98, 198]  # 1 + (N - 400) // 160, 0 below one window
    assert frontend.output_lengths(lengths).tolist() == expected
    x = torch.randn(len(lengths), 32000) * 0.1
    _, out_lengths = frontend(x, lengths)
    assert out_lengths.tolist() == expected


@pytest.mark.parametrize("name", ["spectrogram", "fbank", "mfcc"])
@pytest.mark.parametrize("normalize", ["none", "utterance"])
def test_padded_batch_features_equal_each_utterance_alone(name, normalize):
    frontend = build("frontend", name, normalize=normalize)
    x, lengths = padded_batch([16000, 12345, 5000, 401], width=17000)  # extra padding on all
    feats, out_lengths = frontend(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone, alone_len = frontend(x[i : i + 1, :n], lengths[i : i + 1])
        t = int(out_lengths[i])
        assert int(alone_len) == t == alone.shape[1]
        assert (feats[i, :t] - alone[0]).abs().max() < PAD_TOLERANCE
        assert (feats[i, t:] == 0).all()  # frames past the length are zero


def test_garbage_in_the_padding_does_not_change_the_features():
    frontend = build("frontend", "mfcc")
    x, lengths = padded_batch([8000, 6000])
    clean, _ = frontend(x, lengths)
    x[1, 6000:] = 1.0  # collate pads with zeros, but nothing should rely on it
    dirty, _ = frontend(x, lengths)
    assert torch.equal(clean, dirty)


@pytest.mark.parametrize(
    "name, params",
    [
        ("spectrogram", {}),
        ("spectrogram", {"power": 1.0}),
        ("fbank", {}),
        ("fbank", {"mel_scale": "slaney", "f_min": 0.0, "f_max": 7600.0}),
        ("mfcc", {}),
        ("mfcc", {"n_mfcc": 40, "deltas": False, "delta_deltas": False}),
    ],
)
@pytest.mark.parametrize("normalize", ["none", "utterance"])
def test_torchaudio_and_librosa_backends_agree_within_tolerance(name, params, normalize):
    x, lengths = padded_batch([16000, 9000, 3000])
    fast = build("frontend", name, normalize=normalize, backend="torchaudio", **params)
    ref = build("frontend", name, normalize=normalize, backend="librosa", **params)
    a, a_len = fast(x, lengths)
    b, b_len = ref(x, lengths)
    assert a.shape == b.shape
    assert torch.equal(a_len, b_len)
    err = (a - b).abs().double()
    if name != "spectrogram":
        # a mel band sums many bins, so its energy stays far above the FFT's rounding (which is relative to
        # the frame's energy, see fft_rounding_bound): measured 6e-5 (fbank) and 8e-6 (mfcc), 10× inside
        # the tolerance, where a single spectrogram bin reaches 1.2e-3
        assert err.max() < BACKEND_TOLERANCE
        return
    # A log spectrum bin far below its frame's energy (a near-zero of the noise's spectrum, 1e-10 of the
    # energy in this batch) has no relative accuracy in float32, whatever the CPU: its log differs by
    # 1.2e-3 here (power 1) and by more on other FFT kernels. So each element gets BACKEND_TOLERANCE plus
    # what float32 FFT rounding can explain there (measured errors stay under 1/100 of that). It is still
    # a real check: a window rounded to float16, or one sample off (symmetric instead of periodic Hann),
    # fails it, by up to 5× and 100× the tolerance.
    tol = BACKEND_TOLERANCE + fft_rounding_bound(ref, x, lengths)
    worst = int((err / tol).argmax())
    assert (err <= tol).all(), f"|torchaudio − librosa| {err.view(-1)[worst]:.2e} > {tol.view(-1)[worst]:.2e}"
    valid = FF.lengths_mask(b_len, b.shape[1])[..., None].expand_as(b)
    assert tol[valid].median() < 10 * BACKEND_TOLERANCE  # the bound leaves most elements tightly checked


def test_utterance_normalization_gives_zero_mean_unit_std_over_valid_frames():
    frontend = build("frontend", "fbank", normalize="utterance")
    x, lengths = padded_batch([16000, 7000])
    feats, out_lengths = frontend(x, lengths)
    for i, t in enumerate(out_lengths.tolist()):
        valid = feats[i, :t].double()
        assert valid.mean(0).abs().max() < 1e-4
        assert (valid.std(0, unbiased=False) - 1).abs().max() < 1e-3
        assert (feats[i, t:] == 0).all()


def test_global_normalization_uses_the_accumulated_dataset_stats():
    frontend = build("frontend", "mfcc", normalize="global")
    x1, l1 = padded_batch([16000, 8000])
    x2, l2 = padded_batch([12000, 4000, 10000])
    frontend.update_stats(x1, l1)
    frontend.update_stats(x2, l2)
    raw1, n1 = frontend.features(x1, l1)
    raw2, n2 = frontend.features(x2, l2)
    frames = torch.cat([raw1[i, :t] for i, t in enumerate(n1)] + [raw2[i, :t] for i, t in enumerate(n2)])
    assert frontend.stats_count.item() == len(frames)
    mean, std = frontend.global_mean_std()
    assert torch.allclose(mean.float(), frames.mean(0), atol=1e-4)
    assert torch.allclose(std.float(), frames.std(0, unbiased=False), atol=1e-4)
    normed, _ = frontend(x1, l1)
    expected = (raw1 - mean.float()) / std.float()
    assert torch.allclose(normed[0, : n1[0]], expected[0, : n1[0]], atol=1e-4)
    # the stats are buffers: they travel in the state_dict and restore a fresh frontend
    fresh = build("frontend", "mfcc", normalize="global")
    fresh.load_state_dict(frontend.state_dict())
    assert torch.equal(fresh(x1, l1)[0], normed)


def test_global_normalization_without_stats_raises_and_says_what_to_do():
    frontend = build("frontend", "fbank", normalize="global")
    x, lengths = padded_batch([4000])
    with pytest.raises(RuntimeError, match="update_stats"):
        frontend(x, lengths)


def test_stats_buffers_exist_only_for_global_and_online_normalization():
    assert "stats_sum" in build("frontend", "fbank", normalize="global").state_dict()
    assert "stats_sum" in build("frontend", "fbank", normalize="online").state_dict()
    assert build("frontend", "fbank", normalize="utterance").state_dict() == {}


def online_fbank(prior_s: float = 1.0):
    """An fbank frontend with ``normalize=online`` and dataset statistics from two tones."""
    frontend = build("frontend", "fbank", n_mels=16, normalize="online", online_prior_s=prior_s)
    frontend.update_stats(*padded_batch([16000, 8000]))
    return frontend


def test_online_normalization_equals_the_closed_form_prior_plus_frames_so_far():
    frontend = online_fbank(prior_s=0.05)  # 5 frames of prior at a 10 ms hop
    x, lengths = padded_batch([6000, 4000])
    raw, frames = frontend.features(x, lengths)
    normed, _ = frontend(x, lengths)
    mean, std = (t.double() for t in frontend.global_mean_std())
    tau = 5.0
    for b, n in enumerate(frames.tolist()):
        for t in (0, 1, 7, n - 1):
            seen = raw[b, : t + 1].double()
            count = tau + t + 1  # the prior: tau frames of mean `mean` and variance std²
            m = (tau * mean + seen.sum(0)) / count
            var = (tau * std**2 + ((seen - m) ** 2).sum(0)) / count  # spread about the running mean
            expected = (raw[b, t].double() - m) / var.sqrt()
            torch.testing.assert_close(normed[b, t].double(), expected, atol=1e-4, rtol=0)


def test_online_normalization_is_causal_and_masks_padding():
    frontend = online_fbank()
    x, lengths = padded_batch([12000, 7000], width=14000)
    normed, frames = frontend(x, lengths)
    changed = x.clone()
    changed[0, 6000:12000] = torch.randn(6000)  # a different future for row 0, garbage in the padding
    changed[1, 7000:] = 1.0
    again, _ = frontend(changed, lengths)
    past = 1 + (6000 - frontend.win_length) // frontend.hop_length  # frames that end before sample 6000
    assert torch.equal(again[0, :past], normed[0, :past])
    assert (again[0, past : frames[0]] - normed[0, past : frames[0]]).abs().max() > 0.1
    assert torch.equal(again[1], normed[1])  # the padding changes nothing
    assert (normed[1, frames[1] :] == 0).all()
    alone, _ = frontend(x[1:, :7000], lengths[1:])  # nor does the batch
    torch.testing.assert_close(normed[1, : frames[1]], alone[0], atol=PAD_TOLERANCE, rtol=0)


def test_online_normalization_continues_from_the_moments_of_the_previous_piece():
    frontend = online_fbank()
    raw, frames = frontend.features(*padded_batch([16000]))
    whole, end = frontend.online_normalize(raw, frames)
    first, moments = frontend.online_normalize(raw[:, :30], torch.tensor([30]))
    rest, end_rest = frontend.online_normalize(raw[:, 30:], frames - 30, moments)
    torch.testing.assert_close(torch.cat([first, rest], 1), whole, atol=PAD_TOLERANCE, rtol=0)
    for a, b in zip(end, end_rest):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-3)
    assert end.count.item() == frames.item()


def test_online_normalization_without_prior_ends_on_the_utterances_own_statistics():
    """With ``online_prior_s=0`` the statistics at the last frame are the whole utterance's, so the
    last frame is normalised exactly as ``utterance`` normalises it; earlier frames are not."""
    online = online_fbank(prior_s=0.0)
    utterance = build("frontend", "fbank", n_mels=16, normalize="utterance")
    x, lengths = padded_batch([16000, 7000])
    a, frames = online(x, lengths)
    b, _ = utterance(x, lengths)
    for row, n in enumerate(frames.tolist()):
        torch.testing.assert_close(a[row, n - 1], b[row, n - 1], atol=1e-4, rtol=0)
        assert (a[row, : n // 2] - b[row, : n // 2]).abs().mean() > 0.05


def test_dither_applies_in_training_only():
    frontend = build("frontend", "fbank", dither=1e-3, normalize="none")
    x, lengths = padded_batch([8000])
    frontend.eval()
    assert torch.equal(frontend(x, lengths)[0], frontend(x, lengths)[0])
    frontend.train()
    assert not torch.equal(frontend(x, lengths)[0], frontend(x, lengths)[0])


def test_deltas_of_a_ramp_are_its_slope_and_clamp_at_the_utterance_edges():
    x = torch.arange(10.0).view(1, 10, 1).repeat(2, 1, 1)  # c_t = t
    d = FF.deltas(x, torch.tensor([10, 6]))
    assert d[0, 2:8, 0].tolist() == pytest.approx([1.0] * 6)  # interior: the slope
    assert d[0, 0, 0].item() == pytest.approx((1 * 1 + 2 * 2) / 10)  # c_{-1} = c_{-2} = c_0
    assert d[1, 5, 0].item() == pytest.approx((1 * 1 + 2 * 2) / 10)  # last valid frame is 5
    assert (d[1, 6:] == 0).all()


@pytest.mark.parametrize(
    "params, field",
    [
        ({"normalize": "batch"}, "normalize"),
        ({"backend": "kaldi"}, "backend"),
        ({"n_fft": 256}, "n_fft"),
        ({"hop_length_ms": 0.0}, "hop_length_ms"),
        ({"dither": -1.0}, "dither"),
        ({"n_mfcc": 50}, "n_mfcc"),
        ({"deltas": False, "delta_deltas": True}, "delta_deltas"),
        ({"mel_scale": "bark"}, "mel_scale"),
        ({"f_max": 9000.0}, "f_max"),
    ],
)
def test_invalid_config_raises_value_error_naming_the_field(params, field):
    with pytest.raises(ValueError, match=field):
        build("frontend", "mfcc", **params)


def test_invalid_normalize_lists_the_allowed_values():
    with pytest.raises(ValueError, match="none, utterance, global"):
        Spectrogram(audio.SpectrogramConfig(normalize="cmvn"))


def test_plugin_classes_build_from_their_config_dataclasses():
    assert Fbank(FbankConfig(n_mels=64)).output_dim == 64
    assert Mfcc(MfccConfig(n_mfcc=40, deltas=False, delta_deltas=False)).output_dim == 40
    assert build("frontend", "mfcc", n_mfcc=40).output_dim == 120


# ----------------------------------------------------------------------------- load_audio


@pytest.mark.parametrize("suffix", ["wav", "flac"])
def test_load_audio_reads_wav_and_flac_at_the_configured_rate(tmp_path, suffix):
    wave = tone(8000, 440.0).numpy() * 0.5
    path = tmp_path / f"a.{suffix}"
    sf.write(path, wave, SR)  # 16-bit PCM
    loaded = load_audio(path, SR)
    assert loaded.dtype == torch.float32 and loaded.shape == (8000,)
    assert np.abs(loaded.numpy() - wave).max() < 1e-4  # 16-bit quantisation only


@pytest.mark.parametrize("file_rate", [8000, 44100])
def test_load_audio_resamples_keeping_length_and_frequency(tmp_path, file_rate):
    path = tmp_path / f"tone_{file_rate}.wav"
    sf.write(path, tone(file_rate, 1000.0, sr=file_rate).numpy(), file_rate)  # 1 s at 1 kHz
    loaded = load_audio(path, SR)
    assert loaded.shape == (SR,)  # still 1 s
    assert peak_hz(loaded, SR) == pytest.approx(1000.0, abs=1.0)


def test_load_audio_downmixes_stereo_by_averaging(tmp_path):
    left, right = tone(4000, 300.0, seed=1).numpy(), tone(4000, 700.0, seed=2).numpy()
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1) * 0.5, SR, subtype="FLOAT")
    loaded = load_audio(path, SR)
    assert loaded.shape == (4000,)
    assert np.allclose(loaded.numpy(), (left + right) / 4, atol=1e-6)


def test_load_audio_logs_resampling_and_downmixing_once_per_kind(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(audio_io, "_logged", set())
    for i in range(3):
        sf.write(tmp_path / f"{i}.wav", np.zeros((2205, 2)) + 0.1, 22050)
    with caplog.at_level(logging.INFO, logger="speechkit.frontends.audio"):
        for i in range(3):
            load_audio(tmp_path / f"{i}.wav", SR)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("resampling audio from 22050 Hz to 16000 Hz" in m for m in messages) == 1
    assert sum("downmixing 2-channel" in m for m in messages) == 1


def test_frontend_load_uses_its_sample_rate(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(path, tone(16000, 500.0).numpy() * 0.5, SR)
    assert build("frontend", "fbank", sample_rate=8000).load(path).shape == (8000,)


def _bad_file(tmp_path, kind):
    path = tmp_path / f"{kind}.wav"
    good = tmp_path / "good.wav"
    sf.write(good, tone(16000, 440.0).numpy() * 0.5, SR)
    if kind == "missing":
        pass
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(3000))
    elif kind == "header_only":
        path.write_bytes(good.read_bytes()[:20])
    elif kind == "truncated_wav":
        path.write_bytes(good.read_bytes()[:16000])  # half of the declared data
    elif kind == "truncated_flac":
        path = tmp_path / "cut.flac"
        sf.write(tmp_path / "good.flac", tone(16000, 440.0).numpy() * 0.5, SR)
        path.write_bytes((tmp_path / "good.flac").read_bytes()[:5000])
    elif kind == "empty":
        sf.write(path, np.zeros(0, dtype=np.float32), SR)
    elif kind == "nan":
        wave = tone(1600, 440.0).numpy()
        wave[100] = np.nan
        sf.write(path, wave, SR, subtype="FLOAT")
    elif kind == "directory":
        path.mkdir()
    return path


@pytest.mark.parametrize(
    "kind, problem",
    [
        ("missing", "not found"),
        ("garbage", "cannot read audio"),
        ("header_only", "cannot read audio"),
        ("truncated_wav", "truncated WAV"),
        ("truncated_flac", "cannot read audio"),
        ("empty", "no audio samples"),
        ("nan", "NaN or infinite"),
        ("directory", "not a file"),
    ],
)
def test_load_audio_bad_input_raises_data_error_naming_the_file(tmp_path, kind, problem):
    path = _bad_file(tmp_path, kind)
    with pytest.raises(DataError, match=problem) as info:
        load_audio(path, SR)
    assert info.value.where == str(path)
    assert info.value.fix  # says what to do next

"""normalize=speech: each utterance standardised with the mean and std of its speech frames (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechkit.frontends import audio
from speechkit.frontends import functional as FF
from speechkit.functional import masked_standardize, mean_std_where
from speechkit.registry import build
from speechkit.streaming import refuse_normalize

SR = 16000  # Hz
HOP = 160  # samples per frame shift at 16 kHz (10 ms)
FLOAT_TOLERANCE = 1e-4  # max |Δ| in normalised units where only float summation order differs
BACKEND_TOLERANCE = 1e-3  # max |torchaudio − librosa|, as tests/frontends/test_audio.py allows


def white(n: int, dbfs: float, seed: int) -> np.ndarray:
    """``n`` samples of white noise of RMS ``dbfs`` dB re full scale, float32."""
    return (10 ** (dbfs / 20) * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def utterance(seed: int = 0, floor_dbfs: float = -70.0, floor_seed: int = 0) -> np.ndarray:
    """A speech-like float32 signal, 1.6 s at 16 kHz: four 'syllables' (a 120 Hz harmonic complex up to
    4 kHz under a raised-cosine envelope, peaks near −12 dBFS) with a 'fricative' (white noise at
    −30 dBFS) between two of them, over white noise at ``floor_dbfs`` (drawn with ``floor_seed``) that
    also fills 0.1 s of lead and tail. Its length is a whole number of hops past one window, so
    snip-edges framing drops no sample."""
    rng = np.random.default_rng(seed)
    n = 400 + 159 * HOP
    t = np.arange(n) / SR
    voiced = sum(np.sin(2 * np.pi * k * 120.0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 34))
    envelope = np.zeros(n)
    for start in (0.10, 0.42, 0.80, 1.15):  # s
        i, m = int(start * SR), int(0.25 * SR)
        envelope[i : i + m] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(m) / m)
    x = 0.12 * voiced * envelope
    fricative = slice(int(0.36 * SR), int(0.42 * SR))
    x[fricative] += 10 ** (-30 / 20) * rng.standard_normal(fricative.stop - fricative.start)
    return (x + white(n, floor_dbfs, floor_seed)).astype(np.float32)


def features(name: str, x: np.ndarray, normalize: str = "speech", **params) -> torch.Tensor:
    """The frontend's features ``(T, F)`` of one waveform."""
    frontend = build("frontend", name, normalize=normalize, **params).eval()
    feats, frames = frontend(torch.from_numpy(x)[None], torch.tensor([len(x)]))
    return feats[0, : int(frames[0])]


@pytest.mark.parametrize("name", ["fbank", "mfcc", "spectrogram"])
@pytest.mark.parametrize("before_s, after_s", [(0.3, 0.3), (1.0, 0.5)])
def test_digital_silence_around_an_utterance_leaves_its_frames_unchanged(name, before_s, after_s):
    # the statistics are those of the same speech frames (silence is never speech, and the reference
    # level is a rank, which silence does not move): only float summation order differs. MFCC's Δ and
    # ΔΔ of the edge frames (the background, not speech) read the silence beside them: left out.
    x = utterance()
    before, after = round(before_s * SR), round(after_s * SR)  # whole hops, so the frames line up
    padded = np.concatenate([np.zeros(before, np.float32), x, np.zeros(after, np.float32)])
    edge = FF.DELTA_WIDTH * build("frontend", name).delta_order  # frames
    for mode, bound in (("speech", FLOAT_TOLERANCE), ("utterance", None)):
        clean = features(name, x, mode)
        aligned = features(name, padded, mode)[before // HOP : before // HOP + len(clean)]
        change = (aligned - clean)[edge : len(clean) - edge].abs()
        if bound:
            assert change.max().item() < bound
        else:  # whereas per-utterance statistics move every frame: the silence drags the mean down
            assert change.mean().item() > 0.1


def test_a_faint_noise_floor_around_an_utterance_leaves_its_frames_unchanged():
    # 1 s before and 0.5 s after of a −55 dBFS white floor: its frames sit about 40 dB under the
    # loud frames, past the 30 dB margin, so they are not speech either
    x = utterance()
    before, after = SR, SR // 2
    noisy = np.concatenate([white(before, -55.0, 1), x, white(after, -55.0, 2)])
    clean, padded = features("fbank", x), features("fbank", noisy)
    assert (padded[before // HOP : before // HOP + len(clean)] - clean).abs().max().item() < FLOAT_TOLERANCE


def test_a_noise_floor_under_the_whole_utterance_moves_its_frames_less_than_a_redrawn_background():
    # The floor now adds to every frame's spectrum too, so the frames cannot stay equal; the yardstick is
    # the utterance with its own −40 dBFS background drawn afresh (the same recording on another take).
    # 15 dB under that background, the floor raises each band's expected energy by at most
    # log(1 + 10^-1.5) = 0.031 nats, which the speech frames' mean takes out: measured 0.11 against the
    # redraw's 0.48 (mean |Δ| over frames and bands). Per-utterance statistics also take in the 1.5 s of
    # floor around it and move the frames more than the redraw does (0.88).
    x = utterance(floor_dbfs=-40.0)
    redrawn = utterance(floor_dbfs=-40.0, floor_seed=1)
    before, after = SR, SR // 2
    noisy = np.concatenate([np.zeros(before, np.float32), x, np.zeros(after, np.float32)])
    noisy += white(len(noisy), -55.0, 3)
    frames = slice(before // HOP, before // HOP + len(features("fbank", x)))
    redraw = (features("fbank", redrawn) - features("fbank", x)).abs().mean().item()
    change = {
        mode: (features("fbank", noisy, mode)[frames] - features("fbank", x, mode)).abs().mean().item()
        for mode in ("speech", "utterance")
    }
    assert change["speech"] < 0.25 * redraw
    assert change["utterance"] > redraw


@pytest.mark.parametrize("name", ["fbank", "mfcc"])
@pytest.mark.parametrize("gain_db", [20.0, -20.0])
def test_a_gain_change_leaves_the_features_unchanged(name, gain_db):
    # a gain adds 2·ln(g) to every log energy and moves every frame's level alike: the same frames are
    # speech and their mean takes the shift out. With the default log_floor (1e-6) the −70 dBFS
    # background of −20 dB would reach the floor in the narrow lowest mel bands, which no normalisation
    # undoes (the frontend's floor is absolute): a lower floor keeps this test on the normalisation.
    x = utterance(floor_dbfs=-50.0)
    louder = features(name, x * np.float32(10 ** (gain_db / 20)), log_floor=1e-12)
    assert (louder - features(name, x, log_floor=1e-12)).abs().max().item() < 1e-3


@pytest.mark.parametrize("name", ["fbank", "mfcc"])
def test_padding_in_a_batch_does_not_change_a_row(name):
    frontend = build("frontend", name, normalize="speech").eval()
    rows = [utterance(seed=0), utterance(seed=1)[: 400 + 90 * HOP]]
    x = torch.zeros(2, len(rows[0]))
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.from_numpy(r)
    batch, frames = frontend(x, torch.tensor([len(r) for r in rows]))
    for i, r in enumerate(rows):
        alone = features(name, r)
        assert (batch[i, : len(alone)] - alone).abs().max().item() < FLOAT_TOLERANCE
        assert int(frames[i]) == len(alone) and (batch[i, len(alone) :] == 0).all()


def test_speech_frames_are_those_within_the_margin_of_the_tenth_loudest():
    level = torch.tensor([[-100.0] * 5 + [-10.0] * 30 + [-35.0] * 5 + [-45.0] * 5 + [-100.0] * 5])
    speech = FF.speech_frames(level, torch.tensor([50]), margin_db=30.0, ref_rank=10, min_frames=25)
    assert speech[0].tolist() == [False] * 5 + [True] * 35 + [False] * 10


def test_one_loud_click_does_not_set_the_reference():
    level = torch.tensor([[-100.0] * 5 + [-20.0] * 30 + [-45.0] * 5 + [-100.0] * 5])
    clicked = level.clone()
    clicked[0, 2] = 0.0  # a click 20 dB over the speech, in the silence
    lengths = torch.tensor([45])
    plain = FF.speech_frames(level, lengths, 30.0, 10, 25)
    with_click = FF.speech_frames(clicked, lengths, 30.0, 10, 25)
    assert int(plain.sum()) == 35  # the -45 dB frames are within 30 dB of -20
    assert (with_click ^ plain).nonzero().tolist() == [[0, 2]]  # only the click itself differs


def test_too_few_speech_frames_fall_back_to_all_valid_frames():
    # 12 loud frames over quiet speech 50 dB under them: fewer than min_frames, so all frames count
    level = torch.tensor([[0.0] * 12 + [-50.0] * 100, [0.0] * 30 + [-50.0] * 82])
    speech = FF.speech_frames(level, torch.tensor([112, 112]), 30.0, 10, 25)
    assert speech[0].all()
    assert speech[1].tolist() == [True] * 30 + [False] * 82
    short = FF.speech_frames(level[:1, :8], torch.tensor([8]), 30.0, 10, 25)  # shorter than 10 frames
    assert short.all()
    none = FF.speech_frames(level, torch.tensor([0, 5]), 30.0, 10, 25)  # padding is never speech
    assert not none[0].any() and none[1].tolist() == [True] * 5 + [False] * 107


def test_an_utterance_shorter_than_min_speech_is_standardised_over_all_its_frames():
    x = utterance()[: 400 + 20 * HOP]  # 21 frames < 25
    frontend = build("frontend", "fbank", normalize="speech").eval()
    assert frontend.speech_ref_frames == 10 and frontend.speech_min_frames == 25
    feats, frames = frontend.features(torch.from_numpy(x)[None], torch.tensor([len(x)]))
    want = masked_standardize(feats, frames, eps=audio.NORM_EPS).clamp_min(-audio.SILENCE_BOUND)
    got, _ = frontend(torch.from_numpy(x)[None], torch.tensor([len(x)]))
    assert (got - want).abs().max().item() < FLOAT_TOLERANCE


def test_no_feature_goes_below_the_silence_bound_and_speech_is_standardised():
    x = np.concatenate([np.zeros(SR, np.float32), utterance(), np.zeros(SR, np.float32)])
    frontend = build("frontend", "fbank", normalize="speech").eval()
    feats, _ = frontend(torch.from_numpy(x)[None], torch.tensor([len(x)]))
    assert feats.min().item() == pytest.approx(-audio.SILENCE_BOUND)
    assert (feats[0, :90] == -audio.SILENCE_BOUND).float().mean() > 0.5  # most of digital silence: 76 %
    level = FF.frame_energy_db(torch.from_numpy(x)[None], 400, HOP)
    speech = FF.speech_frames(level, torch.tensor([level.shape[1]]), audio.SPEECH_MARGIN_DB, 10, 25)
    raw, frames = frontend.features(torch.from_numpy(x)[None], torch.tensor([len(x)]))
    mean, std = mean_std_where(raw, speech)
    live = std[0] > 1e-3  # bands with energy (the lowest mel bands hold no FFT bin)
    z = (raw[0][speech[0]] - mean[0]) / std[0]
    assert (
        z.mean(0)[live].abs().max().item() < 1e-4 and (z.std(0, unbiased=False)[live] - 1).abs().max() < 1e-3
    )


def test_frame_energy_matches_the_frames_mean_square():
    x = torch.from_numpy(utterance())[None]
    level = FF.frame_energy_db(x, 400, HOP)
    frames = FF.frame_signal(x, 400, HOP)
    assert level.shape[1] == FF.num_frames(torch.tensor(x.shape[1]), 400, HOP)
    want = 10 * frames.double().square().mean(-1).clamp_min(1e-10).log10()
    assert (level - want).abs().max().item() < 1e-3
    assert torch.allclose(
        FF.frame_energy_db(torch.zeros(1, 1000), 400, HOP), torch.tensor(FF.ENERGY_FLOOR_DB)
    )
    square = torch.ones(1, 400)  # full-scale square wave: 0 dB
    assert FF.frame_energy_db(square, 400, HOP).item() == pytest.approx(0.0, abs=1e-5)


def test_librosa_backend_agrees_in_speech_mode():
    x = np.concatenate([np.zeros(SR // 2, np.float32), utterance()])
    fast = features("fbank", x, backend="torchaudio")
    ref = features("fbank", x, backend="librosa")
    assert (fast - ref).abs().max().item() < BACKEND_TOLERANCE


def test_config_rejects_an_unknown_mode_and_names_speech():
    with pytest.raises(ValueError, match="none, utterance, global, speech"):
        build("frontend", "fbank", normalize="vad")
    assert build("frontend", "mfcc", normalize="speech").state_dict() == {}  # no statistics to carry


def test_streaming_refuses_speech_normalisation():
    # its statistics are the whole utterance's, known only at its end
    with pytest.raises(ValueError, match="normalize='speech'"):
        refuse_normalize(build("frontend", "fbank", normalize="speech"))

"""Word times and confidences read off a posteriorgram (decoders/base.py word_spans with WordTiming),
moved to the pauses of the waveform (snap_to_audio), confidences (decoders/confidence.py), and the
helpers that judge them (word_matches, roc_auc)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from speechkit.decoders.confidence import (
    ConfidenceConfig,
    frame_entropy_confidence,
    roc_auc,
    token_confidences,
    word_confidences,
    word_matches,
)
from speechkit.decoders.greedy import GreedyConfig, GreedyDecoder
from speechkit.decoders.timing import (
    ENERGY_WINDOW_S,
    RAW_FRAMES,
    WordTiming,
    align_tokens,
    loudness,
    snap_to_audio,
    word_spans,
)

TOKENS = ["<blank>", " ", "a", "b", "c", "d"]
SHIFT = 0.03  # s per frame, as the asr_grid model (10 ms hop × 3 stacked)
PIPELINE_TIMING = WordTiming()  # what Pipeline reads word times with


def posteriorgram(T: int, spikes: dict[int, tuple[int, float]], blank: float = 0.97) -> np.ndarray:
    """Log-probs ``(T, V)``: blank with probability ``blank`` everywhere except ``spikes`` (frame → token, p)."""
    V = len(TOKENS)
    p = np.full((T, V), (1 - blank) / (V - 1))
    p[:, 0] = blank
    for t, (tok, prob) in spikes.items():
        p[t] = (1 - prob) / (V - 1)
        p[t, tok] = prob
    return np.log(p).astype(np.float32)


def words_of(lp: np.ndarray, duration_s: float, timing: WordTiming = PIPELINE_TIMING):
    (h,) = GreedyDecoder(GreedyConfig(), TOKENS, SHIFT)(torch.from_numpy(lp)[None], torch.tensor([len(lp)]))[
        0
    ]
    starts, ends = align_tokens(lp, h.tokens)
    return h, word_spans(h.tokens, starts, TOKENS, SHIFT, ends, " ", duration_s, timing)


# 1 s of silence, "ab" with a stray "a"-like spike on the very first frame (as a bidirectional model
# puts a sentence's first letter), "cd", and silence to the end with "d"'s last spike on the last frame
LEAD = round(1.0 / SHIFT)  # frames of leading silence
T = LEAD + 60
SPIKES = {
    0: (2, 0.9),  # stray: the first letter on the file's first frame
    LEAD: (2, 0.9),
    LEAD + 1: (2, 0.9),
    LEAD + 2: (3, 0.8),
    LEAD + 3: (3, 0.8),
    LEAD + 6: (1, 0.9),
    LEAD + 10: (4, 0.9),
    LEAD + 11: (5, 0.9),
    LEAD + 12: (5, 0.9),
    T - 1: (4, 0.9),  # stray: a letter on the file's last frame
}


def test_word_times_leave_out_stray_spikes_in_leading_and_trailing_silence():
    lp = posteriorgram(T, SPIKES)
    duration = T * SHIFT
    h, words = words_of(lp, duration)
    assert h.text == "aab cdc"  # the strays are real tokens to the decoder: "a" + "ab", "cd" + "c"
    t = WordTiming()
    (w1, s1, e1), (w2, s2, e2) = words
    assert (w1, w2) == ("aab", "cdc")
    # the speech is frames LEAD … LEAD + 12; the words lie in it (up to the end offset), not at 0 or T
    assert s1 == pytest.approx(round(LEAD * SHIFT + t.start_offset_s, 3))
    assert e1 <= s2 and e1 == pytest.approx(round((LEAD + 4) * SHIFT + t.end_offset_s, 3))
    assert s2 == pytest.approx(round((LEAD + 10) * SHIFT + t.start_offset_s, 3))
    assert e2 == pytest.approx(round((LEAD + 13) * SHIFT + t.end_offset_s, 3))
    assert e2 < (T - 10) * SHIFT < duration  # not run on to the file's end
    # the same frames read raw: the first word starts at the file's start, the last ends at its end
    _, raw = words_of(lp, duration, RAW_FRAMES)
    assert raw[0][1] == 0.0 and raw[-1][2] == pytest.approx(duration)


def test_word_times_are_monotone_within_the_audio_and_rounded_to_ms_on_random_posteriorgrams():
    rng = np.random.default_rng(0)
    for trial in range(40):
        T_ = int(rng.integers(5, 80))
        spikes = {
            int(t): (int(rng.integers(1, len(TOKENS))), float(rng.uniform(0.5, 0.99)))
            for t in rng.choice(T_, size=int(rng.integers(1, T_)), replace=False)
        }
        lp = posteriorgram(T_, spikes)
        duration = T_ * SHIFT - float(rng.uniform(0, SHIFT))  # the input ends inside the last frame
        _, words = words_of(lp, duration)
        times = [x for _, s, e in words for x in (s, e)]
        assert times == sorted(times), trial  # starts and ends interleave in order: monotone, no overlap
        assert all(0.0 <= x <= duration for x in times), trial
        assert all(x == round(x, 3) for x in times), trial


def test_without_a_frame_rate_word_times_are_the_tokens_frames():
    assert word_spans([2, 2, 1, 3], [0, 9, 10, 12], TOKENS, None, [1, 9, 10, 12], timing=WordTiming()) == [
        ("aa", 0, 10),
        ("b", 12, 13),
    ]


# ----------------------------------------------------------------------------- snapping to the audio
SR = 16000  # Hz


def bursts(spans_s: list[tuple[float, float]], duration_s: float, seed: int = 0) -> np.ndarray:
    """Samples ``(n,)``: white noise at -60 dBFS, with loud noise bursts (-10 dBFS) over ``spans_s``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1e-3, round(duration_s * SR))
    for a, b in spans_s:
        x[round(a * SR) : round(b * SR)] = rng.normal(0.0, 0.3, round(b * SR) - round(a * SR))
    return x.astype(np.float32)


def test_boundaries_50_ms_off_snap_into_the_pause_between_two_words():
    # "ab" sounds 0.30–0.80 s, "cd" 1.00–1.50 s; the frames put each boundary 50 ms off, either way
    x = bursts([(0.3, 0.8), (1.0, 1.5)], 1.8)
    words = [("ab", 0.35, 0.85), ("cd", 0.95, 1.45)]
    snapped = snap_to_audio(words, loudness(x, SR, WordTiming().silence_level), WordTiming())
    truth = [("ab", 0.3, 0.8), ("cd", 1.0, 1.5)]
    assert [w for w, _, _ in snapped] == ["ab", "cd"]
    # within a window of the edges (a 10-ms window is louder than the floor once it reaches the burst)
    assert (
        np.abs(np.array([t[1:] for t in snapped]) - np.array([t[1:] for t in truth])).max() <= ENERGY_WINDOW_S
    )
    early = [("ab", 0.25, 0.75), ("cd", 1.05, 1.55)]  # the other way: starts early, ends late … ends early
    snapped_early = snap_to_audio(early, loudness(x, SR, 0.15), WordTiming())
    assert np.abs(np.array([t[1:] for t in snapped_early]) - np.array([t[1:] for t in truth])).max() <= 0.01


def test_without_a_pause_two_words_meet_at_the_quietest_window_between_them():
    x = bursts([(0.2, 0.6), (0.6, 1.0)], 1.2)
    dip = slice(round(0.58 * SR), round(0.62 * SR))
    x[dip] *= 0.1  # 20 dB quieter for 40 ms: not silent (above the pause level), but the quietest
    snapped = snap_to_audio([("ab", 0.25, 0.66), ("cd", 0.66, 0.95)], loudness(x, SR, 0.15), WordTiming())
    assert snapped[0][2] == snapped[1][1] == pytest.approx(0.6, abs=0.02)
    assert snapped[0][1] == pytest.approx(0.2, abs=0.01) and snapped[1][2] == pytest.approx(1.0, abs=0.01)


def test_a_pause_beyond_the_middle_of_a_word_or_out_of_reach_is_not_taken():
    # one sound 0.1–0.9 s, a pause inside the second word's second half (0.9–0.95), a sound to 1.4
    x = bursts([(0.1, 0.9), (0.95, 1.4)], 1.6)
    t = WordTiming(snap_s=0.2)
    snapped = snap_to_audio([("ab", 0.1, 0.5), ("cd", 0.5, 1.25)], loudness(x, SR, t.silence_level), t)
    # "ab" | "cd": no pause between their middles 0.3 and 0.875 → the quietest window there, never the
    # pause at 0.9, past "cd"'s middle
    assert 0.3 <= snapped[0][2] == snapped[1][1] <= 0.875
    assert snapped[1][2] == pytest.approx(1.4, abs=0.01)  # "cd" ends where the sound does
    # the sound ends 0.3 s after the frames' end: out of reach, the end stays
    far = snap_to_audio([("ab", 0.1, 0.6)], loudness(bursts([(0.1, 0.9)], 1.2), SR, t.silence_level), t)
    assert far == [("ab", pytest.approx(0.1, abs=0.01), 0.6)]


def test_a_word_the_frames_put_in_a_pause_shrinks_to_its_middle_without_moving_its_neighbours_past_it():
    x = bursts([(0.2, 0.6), (1.2, 1.6)], 1.8)
    words = [("ab", 0.2, 0.6), ("x", 0.8, 0.9), ("cd", 1.2, 1.6)]
    snapped = snap_to_audio(words, loudness(x, SR, 0.15), WordTiming())
    assert snapped[1] == ("x", 0.85, 0.85)
    assert snapped[0][2] == pytest.approx(0.6, abs=0.01) and snapped[2][1] == pytest.approx(1.2, abs=0.01)


def test_snapped_times_keep_order_stay_in_reach_and_in_the_audio_on_random_sounds():
    rng = np.random.default_rng(3)
    t = WordTiming()
    for trial in range(60):
        duration = float(rng.uniform(0.5, 3.0))
        edges = np.sort(rng.uniform(0, duration, size=2 * int(rng.integers(1, 6))))
        x = bursts(list(zip(edges[::2], edges[1::2])), duration, seed=trial)
        times = np.round(np.sort(rng.uniform(-0.05, duration + 0.05, size=2 * int(rng.integers(1, 7)))), 3)
        times = times.clip(0, np.floor(duration * 1000) / 1000)
        words = [(f"w{k}", float(a), float(b)) for k, (a, b) in enumerate(zip(times[::2], times[1::2]))]
        snapped = snap_to_audio(words, loudness(x, SR, t.silence_level), t)
        flat = [v for _, s, e in snapped for v in (s, e)]
        assert flat == sorted(flat), trial  # starts and ends interleave: no overlap, order kept
        assert all(0.0 <= v <= duration and v == round(v, 3) for v in flat), trial
        middles = [(s + e) / 2 for _, s, e in words]
        for k, ((_, s0, e0), (_, s1, e1)) in enumerate(zip(words, snapped)):
            # in reach: a boundary moves at most snap_s beyond the stretch the frames put it in
            before = words[k - 1][2] if k else s0
            after = words[k + 1][1] if k + 1 < len(words) else e0
            assert before - t.snap_s - 1e-3 <= s1 <= s0 + t.snap_s + 1e-3, trial
            assert e0 - t.snap_s - 1e-3 <= e1 <= after + t.snap_s + 1e-3, trial
            assert s1 <= middles[k] + 1e-3 <= e1 + 2e-3, trial  # a word keeps its middle
            if k:
                assert s1 >= middles[k - 1] - 1e-3, trial  # never past the word before's middle
            if k + 1 < len(words):
                assert e1 <= middles[k + 1] + 1e-3, trial


def test_no_snapping_when_turned_off_or_when_the_audio_has_no_pauses_to_tell():
    words = [("ab", 0.35, 0.85), ("cd", 0.95, 1.45)]
    x = bursts([(0.3, 0.8), (1.0, 1.5)], 1.8)
    assert snap_to_audio(words, loudness(x, SR, 0.15), WordTiming(snap_s=None)) == words
    assert RAW_FRAMES.snap_s is None  # what decoders report is never snapped
    steady = np.random.default_rng(0).normal(0, 0.3, 2 * SR).astype(np.float32)  # noise, no pause
    assert snap_to_audio(words, loudness(steady, SR, 0.15), WordTiming()) == words
    assert (
        snap_to_audio(words, loudness(np.zeros(2 * SR), SR, 0.15), WordTiming()) == words
    )  # digital silence
    assert snap_to_audio(words, loudness(x[:100], SR, 0.15), WordTiming()) == words  # under one window


def test_pauses_do_not_depend_on_the_gain_or_on_padding_with_digital_silence():
    x = bursts([(0.3, 0.8), (1.0, 1.5)], 1.8)
    pad = np.zeros(SR // 2, np.float32)
    words = [("ab", 0.35, 0.85), ("cd", 0.95, 1.45)]
    base = snap_to_audio(words, loudness(x, SR, 0.15), WordTiming())
    assert snap_to_audio(words, loudness(0.01 * x, SR, 0.15), WordTiming()) == base
    padded = [(w, s + 0.5, e + 0.5) for w, s, e in words]
    moved = snap_to_audio(padded, loudness(np.concatenate([pad, x, pad]), SR, 0.15), WordTiming())
    shifted = [v - 0.5 for _, s, e in moved for v in (s, e)]
    assert shifted == pytest.approx([v for _, s, e in base for v in (s, e)], abs=1.5e-3)


# ----------------------------------------------------------------------------- confidence


def test_confidences_are_in_0_1_and_a_low_posterior_word_scores_below_a_high_one():
    spikes = {2: (2, 0.95), 3: (2, 0.95), 5: (1, 0.9), 8: (3, 0.4), 9: (4, 0.45)}  # "a" sure, "bc" not
    lp = posteriorgram(14, spikes)
    tokens = [2, 1, 3, 4]
    starts, ends = align_tokens(lp, tokens)
    for cfg in [
        ConfidenceConfig(),
        *(
            ConfidenceConfig(measure="entropy", alpha=a, entropy_norm=n)
            for a in (0.33, 1.0)
            for n in ("lin", "exp")
        ),
        ConfidenceConfig(word="min"),
        ConfidenceConfig(word="prod"),
    ]:
        tok = token_confidences(lp, tokens, starts, ends, cfg)
        sure, unsure = word_confidences(tok, [(0, 0), (2, 3)], cfg.word)
        assert all(0.0 <= c <= 1.0 for c in [*tok, sure, unsure]), cfg
        assert sure > unsure + 0.1, cfg


def test_entropy_confidence_is_one_for_a_certain_frame_and_zero_for_a_uniform_one():
    V = 6
    certain = np.r_[0.0, np.full(V - 1, -np.inf)]  # log-probs: one token sure
    uniform = np.log(np.full(V, 1 / V))
    for alpha, norm in itertools.product((0.25, 0.33, 1.0, 2.0), ("lin", "exp")):
        c = frame_entropy_confidence(np.stack([certain, uniform]), alpha, norm)
        assert c == pytest.approx([1.0, 0.0], abs=1e-6), (alpha, norm)


def test_a_confidence_choice_that_does_not_exist_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="mean, min, prod"):
        ConfidenceConfig(word="median")


# ----------------------------------------------------------------------------- judging


def test_roc_auc_on_known_inputs():
    assert roc_auc([0.9, 0.8, 0.3, 0.1], [True, True, False, False]) == 1.0
    assert roc_auc([0.1, 0.3, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5], [True, False, True]) == 0.5  # ties count half
    # pairs (right, wrong): (0.9, 0.4) (0.9, 0.7) (0.6, 0.4) (0.6, 0.7) → 3 of 4 ordered right
    assert roc_auc([0.9, 0.6, 0.4, 0.7], [True, True, False, False]) == 0.75
    assert np.isnan(roc_auc([0.2, 0.3], [True, True]))


def test_roc_auc_equals_the_count_of_ordered_pairs_on_random_scores():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 5, size=40).astype(float)  # many ties
    y = rng.random(40) < 0.6
    pos, neg = s[y], s[~y]
    pairs = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    assert roc_auc(s, y) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_word_matches_pairs_only_equal_words_of_the_edit_distance_alignment():
    ref = "bin blue at f two now".split()
    hyp = "bin blew at f f two".split()  # a substitution, an insertion, a deletion
    pairs = word_matches(ref, hyp)  # "f" may pair with either "f" of hyp: both alignments cost 3
    assert [i for i, _ in pairs] == [0, 2, 3, 4] and [j for _, j in pairs][-1] == 5
    assert all(ref[i] == hyp[j] for i, j in pairs) and pairs == sorted(pairs)
    # fewest edits first, then the most equal pairs: "a b" vs "b a" pairs one, not none
    assert len(word_matches(["a", "b"], ["b", "a"])) == 1
    assert word_matches([], ["a"]) == [] and word_matches(["a"], []) == []

"""Word times and confidences read off a posteriorgram (decoders/base.py word_spans with WordTiming,
decoders/confidence.py), and the helpers that judge them (word_matches, roc_auc)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from speechkit.decoders.base import RAW_FRAMES, WordTiming, align_tokens, word_spans
from speechkit.decoders.confidence import (
    ConfidenceConfig,
    frame_entropy_confidence,
    roc_auc,
    token_confidences,
    word_confidences,
    word_matches,
)
from speechkit.decoders.greedy import GreedyConfig, GreedyDecoder

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

"""How sure the model is of each decoded word, from its CTC posteriors.

A token's confidence is the mean, over the frames its alignment gives it, of a per-frame measure;
a word's and an utterance's are aggregates of those:

    token i (label k_i, aligned frames F_i):  c_i = (1 / |F_i|) · Σ_{t ∈ F_i} m(p_t, k_i)
    word w (tokens i ∈ w):                     c_w = (1 / |w|) · Σ_{i ∈ w} c_i     (or min, or product)
    utterance (words W):                       c   = (1 / |W|) · Σ_{w ∈ W} c_w     (or min)
    utterance with no words (T frames):        c   = (1 / T) · Σ_t p_t(blank)

The frame measure ``m`` (:class:`ConfidenceConfig`): ``posterior``, the token's own probability
``p_t(k)``; or ``entropy``, one minus the normalised Tsallis entropy of the whole distribution ``p_t``
over the ``V`` tokens (NeMo's entropy-based confidence; Gibbs/Shannon entropy at ``alpha = 1``):

    H_α(p) = (1 - Σ_v p_v^α) / (α - 1),   H_max = (V^(1-α) - 1) / (1 - α)     (H_1 = -Σ p log p, log V)
    lin:  m = 1 - H_α / H_max
    exp:  m = (exp(-H_α) - exp(-H_max)) / (1 - exp(-H_max))

Both are 1 for a one-hot frame; the entropy ones are 0 for a uniform frame. ``F_i`` comes from the
blank-aware alignment (:func:`speechkit.decoders.timing.align_tokens`), so blank frames between words
never dilute a word. The defaults (posterior, word mean, utterance mean) separate right words and
utterances from wrong ones best on the asr_grid dev set, or within 0.005 of the best word AUC
(benchmarks/confidence.py; figures in benchmarks/README.md). An empty transcript's confidence is how sure the model is that nothing was said. All values
are in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from speechkit.decoders.base import BLANK

MEASURES = ("posterior", "entropy")
WORD_AGGREGATES = ("mean", "min", "prod")
UTTERANCE_AGGREGATES = ("mean", "min")


@dataclass(frozen=True)
class ConfidenceConfig:
    """Which confidence :func:`token_confidences`, :func:`word_confidences` and
    :func:`utterance_confidence` compute (see the module's formulas)."""

    measure: str = "posterior"  # per frame: posterior | entropy
    alpha: float = 0.33  # the entropy's order α (> 0; 1: Gibbs)
    entropy_norm: str = "exp"  # lin | exp
    word: str = "mean"  # a word from its tokens: mean | min | prod
    utterance: str = "mean"  # an utterance from its words: mean | min

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("measure", self.measure, MEASURES),
            ("entropy_norm", self.entropy_norm, ("lin", "exp")),
            ("word", self.word, WORD_AGGREGATES),
            ("utterance", self.utterance, UTTERANCE_AGGREGATES),
        ):
            if value not in allowed:
                raise ValueError(f"confidence {name}={value!r}: choose one of {', '.join(allowed)}")
        if not self.alpha > 0:
            raise ValueError(f"confidence alpha={self.alpha}: must be > 0")


def frame_entropy_confidence(log_probs: np.ndarray, alpha: float = 0.33, norm: str = "exp") -> np.ndarray:
    """``1 -`` normalised Tsallis entropy of each frame of ``log_probs`` ``(T, V)`` → ``(T,)`` in ``[0, 1]``."""
    lp = np.asarray(log_probs, dtype=np.float64)
    V = lp.shape[-1]
    p = np.exp(lp)
    if alpha == 1.0:
        h = -(p * np.where(p > 0, lp, 0.0)).sum(-1)
        h_max = np.log(V)
    else:
        h = (1.0 - (p**alpha).sum(-1)) / (alpha - 1.0)
        h_max = (V ** (1.0 - alpha) - 1.0) / (1.0 - alpha)
    if norm == "lin":
        c = 1.0 - h / h_max
    else:
        floor = np.exp(-h_max)
        c = (np.exp(-h) - floor) / (1.0 - floor)
    return np.clip(c, 0.0, 1.0)


def token_confidences(
    log_probs: np.ndarray,
    tokens: Sequence[int],
    starts: Sequence[int],
    ends: Sequence[int],
    cfg: ConfidenceConfig = ConfidenceConfig(),
) -> list[float]:
    """``c_i``: the mean frame measure of token ``i`` over its frames ``starts[i] … ends[i]`` of
    ``log_probs`` ``(T, V)``."""
    if cfg.measure == "entropy":
        frame = frame_entropy_confidence(log_probs, cfg.alpha, cfg.entropy_norm)
        return [float(frame[a : b + 1].mean()) for a, b in zip(starts, ends)]
    out = []
    for tok, a, b in zip(tokens, starts, ends):
        out.append(float(np.exp(np.asarray(log_probs[a : b + 1, tok], dtype=np.float64)).mean()))
    return out


def word_confidences(
    token_conf: Sequence[float], groups: Sequence[tuple[int, int]], how: str = "mean"
) -> list[float]:
    """``c_w``: per word (``(first, last)`` token indices, as :func:`~speechkit.decoders.base.word_groups`
    gives them), the mean of its tokens' confidences (``how="mean"``), the least, or their product."""
    agg = {"min": min, "mean": lambda c: sum(c) / len(c), "prod": lambda c: float(np.prod(c))}[how]
    return [float(agg(token_conf[a : b + 1])) for a, b in groups]


def utterance_confidence(
    word_conf: Sequence[float], log_probs: np.ndarray, how: str = "mean"
) -> float | None:
    """``c``: the mean (``how="mean"``) or least (``"min"``) of the words' confidences; with no words,
    the mean blank posterior of ``log_probs`` ``(T, V)``; None for an input too short to give a frame
    (there is nothing to judge)."""
    if word_conf:
        return float(np.mean(word_conf) if how == "mean" else np.min(word_conf))
    if len(log_probs) == 0:
        return None
    return float(np.exp(np.asarray(log_probs[:, BLANK], dtype=np.float64)).mean())


# --- judging confidence: which words are right, and how well a score separates them ---------------
def word_matches(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[int, int]]:
    """``(i, j)`` for every hypothesis word ``hyp[j]`` that an edit-distance alignment pairs with an
    equal reference word ``ref[i]`` (the correct words; the others are substitutions or insertions)."""
    n, m = len(ref), len(hyp)
    # cost K·edits − matches: the fewest edits, and among those alignments the most equal pairs
    K = n + m + 1
    d = np.zeros((n + 1, m + 1), dtype=np.int64)
    d[:, 0], d[0, :] = K * np.arange(n + 1), K * np.arange(m + 1)

    def diagonal(i: int, j: int) -> int:
        return -1 if ref[i - 1] == hyp[j - 1] else K

    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(d[i - 1, j] + K, d[i, j - 1] + K, d[i - 1, j - 1] + diagonal(i, j))
    pairs, i, j = [], n, m
    while i and j:
        if d[i, j] == d[i - 1, j - 1] + diagonal(i, j):
            if ref[i - 1] == hyp[j - 1]:
                pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif d[i, j] == d[i - 1, j] + K:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` for telling ``labels`` True (right) from False (wrong):
    the chance that a random right item scores above a random wrong one, ties counting half
    (Mann–Whitney U / (n₊ n₋)). NaN when either class is empty."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average rank (1-based) within each run of ties
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + 1 + b) / 2
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))

"""How sure the model is of each decoded word, from its CTC posteriors.

One measure, the mean posterior of each token over the frames its alignment gives it:

    token i (label k_i, aligned frames F_i):  c_i = (1 / |F_i|) · Σ_{t ∈ F_i} p_t(k_i)
    word w (tokens i ∈ w):                     c_w = min_{i ∈ w} c_i
    utterance (words W):                       c   = (1 / |W|) · Σ_{w ∈ W} c_w
    utterance with no words (T frames):        c   = (1 / T) · Σ_t p_t(blank)

``p_t`` is the model's softmax at frame ``t``; ``F_i`` comes from the blank-aware alignment
(:func:`speechkit.decoders.base.align_tokens`), so blank frames between words never dilute a word.
A word is as sure as its least sure token (one wrong letter makes a wrong word); the utterance's
confidence is its words' mean, the share of its words the model stands behind; an empty
transcript's is how sure the model is that nothing was said. All values are in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from speechkit.decoders.base import BLANK


def token_confidences(
    log_probs: np.ndarray, tokens: Sequence[int], starts: Sequence[int], ends: Sequence[int]
) -> list[float]:
    """``c_i``: the mean posterior of token ``i`` over its frames ``starts[i] … ends[i]`` of ``log_probs`` ``(T, V)``."""
    out = []
    for tok, a, b in zip(tokens, starts, ends):
        out.append(float(np.exp(np.asarray(log_probs[a : b + 1, tok], dtype=np.float64)).mean()))
    return out


def word_confidences(token_conf: Sequence[float], groups: Sequence[tuple[int, int]]) -> list[float]:
    """``c_w``: per word (``(first, last)`` token indices, as :func:`~speechkit.decoders.base.word_groups`
    gives them), the least confidence among its tokens."""
    return [min(token_conf[a : b + 1]) for a, b in groups]


def utterance_confidence(word_conf: Sequence[float], log_probs: np.ndarray) -> float | None:
    """``c``: the mean of the words' confidences; with no words, the mean blank posterior of
    ``log_probs`` ``(T, V)``; None for an input too short to give a frame (there is nothing to judge)."""
    if word_conf:
        return float(np.mean(word_conf))
    if len(log_probs) == 0:
        return None
    return float(np.exp(np.asarray(log_probs[:, BLANK], dtype=np.float64)).mean())

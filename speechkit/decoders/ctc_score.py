"""Exact CTC log-probabilities of label sequences, for rescoring a beam search's n-best.

A search's CTC score of a hypothesis misses the alignments of a prefix that was pruned at some
frame and extended again later. :func:`rescore_exact` replaces it by the sum over all alignments,
log P(l | x) = log Σ_{alignments a of l} Π_t y_t[a_t], either by ``ctc_loss`` (one batched call, any
device) or by the forward algorithm compiled by numba (:func:`ctc_logprob`, CPU), whose recursion
over the states ``s`` of the blank-interleaved labels ``l'`` is::

    α_t(s) = (α_{t-1}(s) + α_{t-1}(s-1) + [l'_s ≠ blank, l'_s ≠ l'_{s-2}] α_{t-1}(s-2)) · y_t[l'_s]

The compiled code is cached on disk (``speechkit.decoders.numba_cache_dir()``) by the first call.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from speechkit.decoders import cached_njit, dispatcher_state
from speechkit.decoders.base import BLANK, SearchResult

NEG_INF = float("-inf")


@cached_njit(inline="always")
def log_add(a: float, b: float) -> float:
    """log(e^a + e^b), exact at -inf (numba; the compiled search uses it too)."""
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    d = a - b
    if d > 40.0:  # log1p(e^-40) ≈ 4e-18: the larger term alone
        return a
    if d < -40.0:
        return b
    if d > 0.0:
        return a + math.log1p(math.exp(-d))
    return b + math.log1p(math.exp(d))


@cached_njit()
def _ctc_logprob_log(lp: np.ndarray, n_frames: int, labels: np.ndarray) -> float:
    """log P(labels | lp[:n_frames]) summed over all CTC alignments: the forward algorithm in log space."""
    L = labels.shape[0]
    S = 2 * L + 1
    if n_frames == 0:
        return 0.0 if L == 0 else NEG_INF
    alpha = np.full(S, NEG_INF)
    alpha[0] = lp[0, 0]
    if L > 0:
        alpha[1] = lp[0, labels[0]]
    for t in range(1, n_frames):
        for s in range(S - 1, -1, -1):  # in place, high states first: each reads only lower ones
            a = alpha[s]
            if s > 0:
                a = log_add(a, alpha[s - 1])
            if s % 2 == 1 and s > 1 and labels[s // 2 - 1] != labels[s // 2]:
                a = log_add(a, alpha[s - 2])
            alpha[s] = a + lp[t, labels[s // 2] if s % 2 == 1 else 0]
    return log_add(alpha[S - 1], alpha[S - 2]) if L > 0 else alpha[0]


@cached_njit()
def _ctc_logprob(
    lp: np.ndarray, n_frames: int, labels: np.ndarray, alpha: np.ndarray, p: np.ndarray
) -> float:
    """log P(labels | lp[:n_frames]) summed over all CTC alignments: the forward algorithm on
    probabilities rescaled every frame; NaN where that cannot be trusted (a probability or a
    state's mass underflowed: the caller redoes it in log space with :func:`_ctc_logprob_log`).

    Only the band of states reachable from the start and still able to reach the end is updated.
    ``alpha`` (≥ 2 · n_frames + 1) and ``p`` (n_frames × (L + 1)) are scratch space.
    """
    L = labels.shape[0]
    S = 2 * L + 1
    if n_frames == 0:
        return 0.0 if L == 0 else NEG_INF
    if S > 2 * n_frames + 1:
        return NEG_INF  # more labels than the frames can hold
    for t in range(n_frames):  # the probabilities of blank and of each label, per frame
        for j in range(L + 1):
            x = lp[t, 0] if j == 0 else lp[t, labels[j - 1]]
            e = math.exp(x)
            if e < 1e-290 and x > NEG_INF:
                return math.nan  # too small for the probability domain
            p[t, j] = e
    alpha[:S] = 0.0
    alpha[0] = p[0, 0]
    if L > 0:
        alpha[1] = p[0, 1]
    log_scale = 0.0
    for t in range(1, n_frames):
        hi = min(S - 1, 2 * t + 1)
        lo = max(0, S - 2 * (n_frames - t))
        z = 0.0
        for s in range(hi, lo - 1, -1):  # in place, high states first: each reads only lower ones
            a = alpha[s]
            if s > 0:
                a += alpha[s - 1]
            if s % 2 == 1:
                if s > 1 and labels[s // 2 - 1] != labels[s // 2]:
                    a += alpha[s - 2]
                a *= p[t, s // 2 + 1]
            else:
                a *= p[t, 0]
            alpha[s] = a
            z += a
        if lo > 0:
            alpha[lo - 1] = 0.0  # fell out of the band: can no longer reach the end
        if z == 0.0 or not math.isfinite(z):
            return math.nan
        for s in range(lo, hi + 1):
            alpha[s] /= z
        log_scale += math.log(z)
    end = alpha[S - 1] + (alpha[S - 2] if L > 0 else 0.0)
    if end < 1e-290:
        return math.nan
    return math.log(end) + log_scale


@cached_njit()
def _rescore_batch(lp: np.ndarray, lengths: np.ndarray, emitted: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Exact CTC log-probability of each hypothesis' label sequence (``emitted`` (T, B, N)).

    ``lower`` is the search's CTC score of each, a lower bound (it may miss pruned alignments);
    -inf marks an empty slot, which stays -inf. A probability-domain result below that bound has
    lost mass to underflow (a path hundreds of nats behind that later dominates) and is redone in
    log space, as is one that :func:`_ctc_logprob` cannot trust.
    """
    T, B, N = emitted.shape
    out = np.full((B, N), NEG_INF)
    labels = np.empty(T, np.int64)
    alpha = np.empty(2 * T + 1)
    for b in range(B):
        n_frames = lengths[b]
        for i in range(N):
            if lower[b, i] == NEG_INF:
                continue
            L = 0
            for t in range(n_frames):
                if emitted[t, b, i] > 0:
                    labels[L] = emitted[t, b, i]
                    L += 1
            x = _ctc_logprob(lp[b], n_frames, labels[:L], alpha, np.empty((n_frames, L + 1)))
            if math.isnan(x) or x < lower[b, i] - 1e-3 * max(1.0, abs(lower[b, i])):
                x = _ctc_logprob_log(lp[b], n_frames, labels[:L])
            out[b, i] = x
    return out


def compile_state() -> str:
    """How far :func:`ctc_logprob` is from running: "ready", "cached" or "cold" (see beam_compiled's)."""
    return dispatcher_state(_rescore_batch)


def ctc_logprob(log_probs: Tensor, lengths: Tensor, emitted: Tensor, lower: Tensor) -> Tensor:
    """``(B, N)`` exact CTC log-probability of the labels each ``emitted`` ``(T, B, N)`` path spells (CPU, compiled).

    ``lower``: the search's CTC score of each path (a lower bound; -inf: an empty slot).
    """
    T = emitted.shape[0]
    out = _rescore_batch(
        np.ascontiguousarray(log_probs[:, :T].detach().to("cpu", torch.float32).numpy()),
        lengths.detach().to("cpu", torch.int64).numpy(),
        np.ascontiguousarray(emitted.cpu().numpy()),
        lower.detach().to("cpu", torch.float64).numpy(),
    )
    return torch.from_numpy(out).float()


def rescore_exact(
    log_probs: Tensor, lengths: Tensor, res: SearchResult, compiled: bool = False
) -> SearchResult:
    """Replace each hypothesis' CTC part by the exact sum over all its alignments, and re-rank.

    ``compiled``: by :func:`ctc_logprob` (CPU tensors only), else by ``ctc_loss`` (one batched forward
    pass over the n-best).
    """
    T, B, N = res.emitted.shape
    if T == 0 or B == 0:
        return res
    if compiled:
        return _rerank(res, ctc_logprob(log_probs, lengths, res.emitted, res.ctc))
    em = res.emitted.permute(1, 2, 0).reshape(B * N, T)
    target_lengths = (em > 0).sum(1)
    order = (em == 0).to(torch.uint8).argsort(dim=1, stable=True)  # emitted tokens first, in order
    targets = em.gather(1, order)[:, : max(int(target_lengths.max()), 1)]
    lp = log_probs[:, :T].float().repeat_interleave(N, 0).transpose(0, 1)  # (T, B·N, V)
    nll = torch.nn.functional.ctc_loss(
        lp, targets, lengths.to(lp.device).repeat_interleave(N), target_lengths, blank=BLANK, reduction="none"
    )
    return _rerank(res, torch.where(res.scores > NEG_INF, -nll.view(B, N), NEG_INF))


def _rerank(res: SearchResult, exact: Tensor) -> SearchResult:
    """``res`` with its CTC parts replaced by ``exact`` ``(B, N)``, re-sorted best first."""
    T, B, N = res.emitted.shape
    scores = res.scores - res.ctc.masked_fill(res.ctc == NEG_INF, 0.0) + exact
    scores, rank = scores.sort(1, descending=True)
    r = rank[None].expand(T, B, N)
    return SearchResult(scores, exact.gather(1, rank), res.emitted.gather(2, r), res.nonblank.gather(2, r))

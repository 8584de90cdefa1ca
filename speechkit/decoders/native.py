"""The CPU engine of the beam search: the same CTC prefix beam search compiled by numba.

On a GPU the batched torch search (:mod:`speechkit.decoders.beam`) does a frame in ~100 tensor
operations for the whole batch at once; on a CPU those operations cost microseconds each
whatever their size, and the per-frame overhead is the decoder's time. This engine runs the
same recurrences, hypothesis by hypothesis, as compiled loops: no per-operation overhead, and
the top-K selection visits candidates best first and stops at the first one that cannot enter
the beam (tokens sorted by probability; ``ptot + y`` bounds every extension of a hypothesis).

It returns what the torch search returns — the same hypotheses, CTC scores, emitted tokens and
"still on the token" flags per frame (``tests/decoders/test_native.py`` checks the two engines
against each other) — for the searches it covers: no LM, no lexicon, no insertion bonus. It
also computes exact CTC log-probabilities of label sequences (the forward algorithm), so the
n-best rescoring needs no ``ctc_loss`` call. numba comes with librosa; the compiled code is
cached on disk after the first call (a few seconds).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit
from torch import Tensor

from speechkit.decoders.lexicon import _HASH_MUL

NEG_INF = -np.inf


@njit(cache=True, inline="always")
def _lae(a: float, b: float) -> float:
    """log(e^a + e^b), exact at -inf."""
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


@njit(cache=True, inline="always")
def _offer(sc: np.ndarray, sp: np.ndarray, st: np.ndarray, n: int, K: int, s: float, p: int, c: int) -> int:
    """Offer candidate (score ``s``, parent ``p``, token ``c``) to the min-heap of the best ``K``; returns its size."""
    if n < K:  # not full: sift up
        i = n
        while i > 0:
            up = (i - 1) >> 1
            if sc[up] <= s:
                break
            sc[i], sp[i], st[i] = sc[up], sp[up], st[up]
            i = up
        sc[i], sp[i], st[i] = s, p, c
        return n + 1
    if s <= sc[0]:
        return n
    i = 0  # replace the worst: sift down
    while True:
        child = 2 * i + 1
        if child >= K:
            break
        if child + 1 < K and sc[child + 1] < sc[child]:
            child += 1
        if sc[child] >= s:
            break
        sc[i], sp[i], st[i] = sc[child], sp[child], st[child]
        i = child
    sc[i], sp[i], st[i] = s, p, c
    return n


@njit(cache=True)
def _search_one(
    lp: np.ndarray,  # (T, V) float32 log-probabilities of one utterance
    n_frames: int,
    K: int,
    topk: int,  # candidate tokens per frame: the `topk` most likely (0: all)
    min_logp: float,  # tokens below this are never appended (-inf: off)
    threshold: float,  # hypotheses this far below the best are dropped (inf: off)
    hist_parent: np.ndarray,  # (T, K) int64 out: the slot each hypothesis' history came from
    hist_tok: np.ndarray,  # (T, K) int64 out: the token appended on that history (0: none)
    nonblank: np.ndarray,  # (T, K) bool out: the hypothesis most likely still on its last token
    pb: np.ndarray,  # (K,) float64 out: final log P(ends in blank)
    pnb: np.ndarray,  # (K,) float64 out: final log P(ends in the last token)
) -> None:
    V = lp.shape[1]
    h = np.zeros(K, np.int64)  # prefix hash
    ph = np.zeros(K, np.int64)  # the parent prefix' hash
    last = np.zeros(K, np.int64)  # last token (0: empty prefix)
    pb[:] = NEG_INF
    pnb[:] = NEG_INF
    pb[0] = 0.0  # the empty prefix, all mass on "ended in blank"
    ptot = np.full(K, NEG_INF)
    ptot[0] = 0.0
    n_tot = np.empty(K)
    stay_pb = np.empty(K)
    stay_pnb = np.empty(K)
    switch = np.zeros(K, np.bool_)
    jj = np.zeros(K, np.int64)
    child = np.zeros((K, V), np.bool_)  # child[j, c]: prefix j + c is already a hypothesis
    merged_j = np.empty(K, np.int64)  # the flags set this frame, to clear them after
    merged_c = np.empty(K, np.int64)
    size = 4
    while size < 2 * K:
        size *= 2
    table_h = np.zeros(size, np.int64)
    table_k = np.full(size, -1, np.int64)
    sc = np.empty(K)  # the chosen candidates (a min-heap on sc): score, parent slot, token (0: stay)
    sp = np.empty(K, np.int64)
    st = np.empty(K, np.int64)
    n_pb = np.empty(K)
    n_pnb = np.empty(K)
    n_h = np.empty(K, np.int64)
    n_ph = np.empty(K, np.int64)
    n_last = np.empty(K, np.int64)
    n_tok = V - 1 if topk <= 0 else min(topk, V - 1)
    y = np.empty(V)
    order = np.empty(V, np.int64)  # the frame's tokens, most likely first, sorted lazily: only as
    taken = np.zeros(V, np.bool_)  # far as the candidates go (one or two tokens on a peaky frame)

    for t in range(n_frames):
        for v in range(V):
            y[v] = lp[t, v]
        n_sorted = 0
        # stay: l → l (blank, or a repeat of the last token)
        table_k[:] = -1
        for k in range(K):  # ptot = logaddexp(pb, pnb), the score the hypothesis was chosen with
            stay_pb[k] = ptot[k] + y[0]
            stay_pnb[k] = pnb[k] + y[last[k]]
            switch[k] = False
            if ptot[k] > NEG_INF:
                i = (h[k] ^ (h[k] >> 31)) & (size - 1)
                while table_k[i] >= 0:
                    i = (i + 1) & (size - 1)
                table_h[i], table_k[i] = h[k], k
        # merge: hypothesis k is hypothesis j + last(k), so j's extension by last(k) flows into k
        n_merged = 0
        for k in range(K):
            if ptot[k] == NEG_INF or last[k] == 0:
                continue
            i = (ph[k] ^ (ph[k] >> 31)) & (size - 1)
            j = -1
            while table_k[i] >= 0:
                if table_h[i] == ph[k]:
                    j = table_k[i]
                    break
                i = (i + 1) & (size - 1)
            if j < 0:
                continue
            from_j = (pb[j] if last[j] == last[k] else ptot[j]) + y[last[k]]
            switch[k] = from_j > _lae(stay_pb[k], stay_pnb[k])  # timestamps follow the larger share
            jj[k] = j
            stay_pnb[k] = _lae(stay_pnb[k], from_j)
            child[j, last[k]] = True
            merged_j[n_merged], merged_c[n_merged] = j, last[k]
            n_merged += 1
        # the best K candidates in a min-heap: every stay, then each hypothesis' extensions best
        # first, until one cannot beat the heap's worst
        n = 0
        for k in range(K):
            s = _lae(stay_pb[k], stay_pnb[k])
            if s > NEG_INF:
                n = _offer(sc, sp, st, n, K, s, k, 0)
        for k in range(K):
            if ptot[k] == NEG_INF:
                continue
            for m in range(n_tok):
                if m == n_sorted:  # the next most likely token
                    best = 0
                    for v in range(1, V):
                        if not taken[v] and (best == 0 or y[v] > y[best]):
                            best = v
                    order[m], taken[best] = best, True
                    n_sorted += 1
                c = order[m]
                if y[c] < min_logp:
                    break
                if n == K and ptot[k] + y[c] <= sc[0]:
                    break  # no later token can do better
                if child[k, c]:
                    continue  # merged into that hypothesis' stay above
                s = (pb[k] if c == last[k] else ptot[k]) + y[c]
                if s > NEG_INF:
                    n = _offer(sc, sp, st, n, K, s, k, c)
        # hypothesis pruning relative to the best
        if threshold < math.inf and n > 0:
            floor = sc[:n].max() - threshold
            for i in range(n):
                if sc[i] < floor:
                    sc[i] = NEG_INF
        for i in range(K):
            if i >= n or sc[i] == NEG_INF:  # an empty slot
                n_pb[i] = n_pnb[i] = n_tot[i] = NEG_INF
                n_h[i] = n_ph[i] = n_last[i] = 0
                hist_parent[t, i], hist_tok[t, i], nonblank[t, i] = i, 0, False
                continue
            p, c = sp[i], st[i]
            n_tot[i] = sc[i]
            if c > 0:  # l + c
                n_pb[i] = NEG_INF
                n_pnb[i] = sc[i]
                n_h[i] = h[p] * _HASH_MUL + (c + 1)
                n_ph[i] = h[p]
                n_last[i] = c
                hist_parent[t, i], hist_tok[t, i] = p, c
            else:
                n_pb[i], n_pnb[i] = stay_pb[p], stay_pnb[p]
                n_h[i], n_ph[i], n_last[i] = h[p], ph[p], last[p]
                if switch[p]:  # the merged-in extension carries more mass: follow its history
                    hist_parent[t, i], hist_tok[t, i] = jj[p], last[p]
                else:
                    hist_parent[t, i], hist_tok[t, i] = p, 0
            nonblank[t, i] = n_pnb[i] > n_pb[i]
        for i in range(n_merged):
            child[merged_j[i], merged_c[i]] = False
        for m in range(n_sorted):
            taken[order[m]] = False
        pb[:], pnb[:], ptot[:], h[:], ph[:], last[:] = n_pb, n_pnb, n_tot, n_h, n_ph, n_last


@njit(cache=True)
def _search_batch(
    lp: np.ndarray,  # (B, T, V) float32
    lengths: np.ndarray,  # (B,) int64
    K: int,
    nbest: int,
    topk: int,
    min_logp: float,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Search every utterance; returns ``scores`` (B, N), ``emitted`` (T, B, N), ``nonblank`` (T, B, N)."""
    B, T, _ = lp.shape
    N = min(nbest, K)
    scores = np.full((B, N), NEG_INF)
    emitted = np.zeros((T, B, N), np.int64)
    nonblank = np.zeros((T, B, N), np.bool_)
    hist_parent = np.zeros((T, K), np.int64)
    hist_tok = np.zeros((T, K), np.int64)
    nb = np.zeros((T, K), np.bool_)
    pb = np.empty(K)
    pnb = np.empty(K)
    total = np.empty(K)
    for b in range(B):
        n_frames = lengths[b]
        _search_one(lp[b], n_frames, K, topk, min_logp, threshold, hist_parent, hist_tok, nb, pb, pnb)
        for k in range(K):
            total[k] = _lae(pb[k], pnb[k])
        rank = np.argsort(-total, kind="mergesort")[:N]
        for i in range(N):
            cur = rank[i]
            scores[b, i] = total[cur]
            for t in range(n_frames - 1, -1, -1):
                emitted[t, b, i] = hist_tok[t, cur]
                nonblank[t, b, i] = nb[t, cur]
                cur = hist_parent[t, cur]
    return scores, emitted, nonblank


@njit(cache=True)
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
                a = _lae(a, alpha[s - 1])
            if s % 2 == 1 and s > 1 and labels[s // 2 - 1] != labels[s // 2]:
                a = _lae(a, alpha[s - 2])
            alpha[s] = a + lp[t, labels[s // 2] if s % 2 == 1 else 0]
    return _lae(alpha[S - 1], alpha[S - 2]) if L > 0 else alpha[0]


@njit(cache=True)
def _ctc_logprob(
    p: np.ndarray, lp: np.ndarray, n_frames: int, labels: np.ndarray, alpha: np.ndarray
) -> float:
    """log P(labels | frames) summed over all CTC alignments: the forward algorithm on probabilities
    ``p`` (= exp ``lp``), rescaled every frame; in log space (:func:`_ctc_logprob_log`) if that underflows.

    Only the band of states reachable from the start and still able to reach the end is updated.
    """
    L = labels.shape[0]
    S = 2 * L + 1
    if n_frames == 0:
        return 0.0 if L == 0 else NEG_INF
    if S > 2 * n_frames + 1:
        return NEG_INF  # more labels than the frames can hold
    alpha[:S] = 0.0
    alpha[0] = p[0, 0]
    if L > 0:
        alpha[1] = p[0, labels[0]]
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
                c = labels[s // 2]
                if s > 1 and labels[s // 2 - 1] != c:
                    a += alpha[s - 2]
                a *= p[t, c]
            else:
                a *= p[t, 0]
            alpha[s] = a
            z += a
        if lo > 0:
            alpha[lo - 1] = 0.0  # fell out of the band: can no longer reach the end
        if z == 0.0 or not math.isfinite(z):
            return _ctc_logprob_log(lp, n_frames, labels)
        for s in range(lo, hi + 1):
            alpha[s] /= z
        log_scale += math.log(z)
    end = alpha[S - 1] + (alpha[S - 2] if L > 0 else 0.0)
    if end == 0.0:
        return _ctc_logprob_log(lp, n_frames, labels)
    return math.log(end) + log_scale


@njit(cache=True)
def _rescore_batch(
    lp: np.ndarray, lengths: np.ndarray, emitted: np.ndarray, scores: np.ndarray
) -> np.ndarray:
    """Exact CTC log-probability of each hypothesis' label sequence (``emitted`` (T, B, N)); -inf stays."""
    T, B, N = emitted.shape
    V = lp.shape[2]
    out = np.full((B, N), NEG_INF)
    labels = np.empty(T, np.int64)
    alpha = np.empty(2 * T + 1)
    p = np.empty((T, V))
    for b in range(B):
        n_frames = lengths[b]
        for t in range(n_frames):
            for v in range(V):
                p[t, v] = math.exp(lp[b, t, v])
        for i in range(N):
            if scores[b, i] == NEG_INF:
                continue
            L = 0
            for t in range(n_frames):
                if emitted[t, b, i] > 0:
                    labels[L] = emitted[t, b, i]
                    L += 1
            out[b, i] = _ctc_logprob(p, lp[b], n_frames, labels[:L], alpha)
    return out


def _as_numpy(log_probs: Tensor) -> np.ndarray:
    return np.ascontiguousarray(log_probs.detach().to("cpu", torch.float32).numpy())


def search(
    log_probs: Tensor,
    lengths: Tensor,
    beam_size: int,
    nbest: int = 1,
    token_topk: int = 0,
    token_min_logp: float | None = None,
    beam_threshold: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """CTC prefix beam search of a CPU batch ``(B, T, V)``: ``scores`` (B, N), ``emitted``, ``nonblank`` (T, B, N).

    The scores are the searched CTC log-probabilities (hypotheses best first, -inf for an empty slot).
    """
    lp = _as_numpy(log_probs)
    lens = lengths.detach().to("cpu", torch.int64).numpy()
    scores, emitted, nonblank = _search_batch(
        lp,
        lens,
        beam_size,
        nbest,
        token_topk,
        NEG_INF if token_min_logp is None else float(token_min_logp),
        math.inf if beam_threshold is None else float(beam_threshold),
    )
    return torch.from_numpy(scores).float(), torch.from_numpy(emitted), torch.from_numpy(nonblank)


def ctc_logprob(log_probs: Tensor, lengths: Tensor, emitted: Tensor, scores: Tensor) -> Tensor:
    """``(B, N)`` exact CTC log-probability of the labels each ``emitted`` ``(T, B, N)`` path spells."""
    out = _rescore_batch(
        _as_numpy(log_probs),
        lengths.detach().to("cpu", torch.int64).numpy(),
        np.ascontiguousarray(emitted.numpy()),
        scores.detach().to("cpu", torch.float64).numpy(),
    )
    return torch.from_numpy(out).float()

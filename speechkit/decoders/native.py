"""The CPU engine of the beam search: the same CTC prefix beam search compiled by numba.

On a GPU the batched torch search (:mod:`speechkit.decoders.beam`) does a frame in ~100 tensor
operations for the whole batch at once; on a CPU those operations cost microseconds each
whatever their size, and the per-frame overhead is the decoder's time. This engine runs the
same recurrences, hypothesis by hypothesis, as compiled loops: no per-operation overhead, and
the top-K selection visits candidates best first and stops at the first one that cannot enter
the beam (tokens sorted by probability; ``ptot + y`` bounds every extension of a hypothesis).

It returns what the torch search returns — the same hypotheses, fused and CTC scores, emitted
tokens and "still on the token" flags per frame (``tests/decoders/test_native.py`` checks the two
engines against each other) — for every search but those with an LM other than ``ngram``
(``char_rnn``, ``kenlm``): no LM or an ``ngram`` character or word LM, insertion bonus, lexicon,
token and hypothesis pruning. It also computes exact CTC log-probabilities of label sequences
(the forward algorithm), so the n-best rescoring needs no ``ctc_loss`` call, and the tokens and
frames of the chosen paths. numba comes with librosa; the compiled code is cached on disk after
the first call (~15 s).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from numba import njit
from torch import Tensor

from speechkit.decoders.fusion import CharFusion, Fusion, WordFusion
from speechkit.decoders.lexicon import _HASH_MUL, LexiconTrie
from speechkit.lm.ngram import EOS, UNK_FLOOR, NgramLM

log = logging.getLogger(__name__)

NEG_INF = -np.inf


@njit(cache=True, inline="always")
def _lae(a: float, b: float) -> float:
    """log(e^a + e^b), exact at -inf."""
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


@njit(cache=True, inline="always")
def _offer(
    sc: np.ndarray,
    sx: np.ndarray,
    sd: np.ndarray,
    sp: np.ndarray,
    st: np.ndarray,
    n: int,
    K: int,
    s: float,
    x: float,
    d: float,
    p: int,
    c: int,
) -> int:
    """Offer a candidate to the min-heap (on ``sc``) of the best ``K``; returns the heap's size.

    A candidate: fused score ``s``, its CTC part ``x``, what the step adds to the bonus ``d``,
    parent slot ``p``, token ``c`` (0: the parent's prefix stays).
    """
    if n < K:  # not full: sift up
        i = n
        while i > 0:
            up = (i - 1) >> 1
            if sc[up] <= s:
                break
            sc[i], sx[i], sd[i], sp[i], st[i] = sc[up], sx[up], sd[up], sp[up], st[up]
            i = up
        sc[i], sx[i], sd[i], sp[i], st[i] = s, x, d, p, c
        return n + 1
    if s <= sc[0]:
        return n
    i = 0  # replace the worst: sift down
    while True:
        ch = 2 * i + 1
        if ch >= K:
            break
        if ch + 1 < K and sc[ch + 1] < sc[ch]:
            ch += 1
        if sc[ch] >= s:
            break
        sc[i], sx[i], sd[i], sp[i], st[i] = sc[ch], sx[ch], sd[ch], sp[ch], st[ch]
        i = ch
    sc[i], sx[i], sd[i], sp[i], st[i] = s, x, d, p, c
    return n


@njit(cache=True)
def _lm_step(lm, state: int, unit: int) -> tuple[float, int]:
    """An n-gram LM look-up: natural-log p(unit | state) and the state after it (``NgramLM._walk``)."""
    dense_logp, dense_next, keys, logp, child, bow, suffix, order, U = lm
    if dense_logp.shape[0] > 0:
        return float(dense_logp[state, unit]), dense_next[state, unit]
    n_keys = keys.shape[0]
    h, acc, done, nxt = state, 0.0, False, -1
    for _ in range(order):  # contexts hold at most order - 1 units
        key = h * U + unit
        pos = min(np.searchsorted(keys, key), n_keys - 1)
        found = keys[pos] == key
        if not done:  # p(w | h) = p(h w) if listed, else b(h) · p(w | h')
            acc += logp[pos] if found else bow[h]
        done = done or found
        if found and nxt < 0 and child[pos] >= 0:
            nxt = child[pos]
        h = suffix[h]
    if not done:
        acc += UNK_FLOOR
    return acc, max(nxt, 0)


@njit(cache=True, inline="always")
def _word_id(hashes: np.ndarray, ids: np.ndarray, unk: int, word_hash: int) -> int:
    """LM id of the word spelt with hash ``word_hash`` (``WordFusion.word_ids``), ``unk`` if unknown."""
    pos = min(np.searchsorted(hashes, word_hash), hashes.shape[0] - 1)
    return ids[pos] if hashes[pos] == word_hash else unk


@njit(cache=True, inline="always")
def _sort_more(y: np.ndarray, order: np.ndarray, taken: np.ndarray, n_sorted: int) -> int:
    """Extend ``order[:n_sorted]`` (tokens ``1 … V-1`` by ``y``, most likely first) lazily; returns its new length.

    One selection pass per token for the first three (a peaky frame needs one or two), then the
    rest at once: an insertion sort without allocation for small vocabularies, argsort for large.
    """
    V = y.shape[0]
    if n_sorted < 3:
        best = 0
        for v in range(1, V):
            if not taken[v] and (best == 0 or y[v] > y[best]):
                best = v
        order[n_sorted], taken[best] = best, True
        return n_sorted + 1
    first = n_sorted
    if V > 64:
        for v in np.argsort(-y[1:]) + 1:
            if not taken[v]:
                order[n_sorted], taken[v] = v, True
                n_sorted += 1
        return n_sorted
    for v in range(1, V):
        if taken[v]:
            continue
        i = n_sorted
        while i > first and y[order[i - 1]] < y[v]:
            order[i] = order[i - 1]
            i -= 1
        order[i], taken[v] = v, True
        n_sorted += 1
    return n_sorted


@njit(cache=True)
def _search_one(
    lp: np.ndarray,  # (T, V) float32 log-probabilities of one utterance
    n_frames: int,
    K: int,
    topk: int,  # candidate tokens per frame: the `topk` most likely (0: all)
    min_logp: float,  # tokens below this are never appended (-inf: off)
    threshold: float,  # hypotheses this far below the best are dropped (inf: off)
    fu,  # the fusion: see `fusion_args`
    hist_parent: np.ndarray,  # (T, K) int64 out: the slot each hypothesis' history came from
    hist_tok: np.ndarray,  # (T, K) int64 out: the token appended on that history (0: none)
    nonblank: np.ndarray,  # (T, K) bool out: the hypothesis most likely still on its last token
    ptot: np.ndarray,  # (K,) float64 out: final CTC log-probability of each hypothesis
    total: np.ndarray,  # (K,) float64 out: final fused score (CTC + bonus + what finishing adds)
) -> int:
    """One utterance; returns 1 if a lexicon was given and every hypothesis ends inside a word, else 0.

    The recurrences of beam.py, per hypothesis ``l`` and frame log-probabilities ``y``::

        pb'(l)    = logaddexp(pb, pnb)(l) + y[blank]                            # stay, blank
        pnb'(l)   = pnb(l) + y[last(l)]  (+ the extension of l⁻ if l = l⁻ + last(l) merges in)
        pnb'(l+c) = (pb(l) if c == last(l) else logaddexp(pb, pnb)(l)) + y[c]   # extend

    ranked by CTC + ``bonus`` (α · log P_lm + β · units) + what the step adds to the bonus.
    """
    kind, alpha, beta, space, lm, tok_unit, w_hashes, w_ids, w_unk, eos, bos, lex_child, lex_word = fu[:13]
    lex_ptr, lex_tok = fu[13], fu[14]  # the tokens each trie node allows (CSR): its letters, and the
    has_lex = lex_child.shape[0] > 0  # separator after a complete word
    # what fusion can add to one extension at most: the bound that lets extensions stop early
    # (an LM log-probability is ≤ 0, or fu[15], its largest, says otherwise)
    gain = max(beta, 0.0) + alpha * max(fu[15], 0.0) if alpha >= 0.0 else math.inf
    V = lp.shape[1]
    h = np.zeros(K, np.int64)  # prefix hash
    ph = np.zeros(K, np.int64)  # the parent prefix' hash
    last = np.zeros(K, np.int64)  # last token (0: empty prefix)
    pb = np.full(K, NEG_INF)  # log P(alignments so far end in blank)
    pnb = np.full(K, NEG_INF)  # ... end in the last token
    pb[0] = 0.0  # the empty prefix, all mass on "ended in blank"
    ptot[:] = NEG_INF  # logaddexp(pb, pnb)
    ptot[0] = 0.0
    bonus = np.zeros(K)  # alpha · log P_lm + beta · units so far
    lms = np.full(K, bos, np.int64)  # LM state
    inw = np.zeros(K, np.bool_)  # the current word is not empty
    wh = np.zeros(K, np.int64)  # the current word's hash
    node = np.zeros(K, np.int64)  # the current word's lexicon trie node
    wsc = np.zeros(K)  # what a separator adds: the current word's LM score + beta (set on extension)
    wid = np.zeros(K, np.int64)  # the current word's LM id
    n_wsc, n_wid = np.zeros(K), np.zeros(K, np.int64)
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
    sc = np.empty(K)  # the chosen candidates (a min-heap on sc), see _offer
    sx = np.empty(K)
    sd = np.empty(K)
    sp = np.empty(K, np.int64)
    st = np.empty(K, np.int64)
    n_pb, n_pnb, n_tot, n_bonus = np.zeros(K), np.zeros(K), np.zeros(K), np.zeros(K)
    n_h, n_ph, n_last = np.zeros(K, np.int64), np.zeros(K, np.int64), np.zeros(K, np.int64)
    n_lms, n_wh, n_node = np.zeros(K, np.int64), np.zeros(K, np.int64), np.zeros(K, np.int64)
    n_inw = np.zeros(K, np.bool_)
    n_tok = V - 1 if topk <= 0 else min(topk, V - 1)
    y = np.empty(V)
    order = np.empty(V, np.int64)  # the frame's tokens, most likely first, sorted lazily: only as
    taken = np.zeros(V, np.bool_)  # far as the candidates go (one or two tokens on a peaky frame)

    n_live = 1  # live hypotheses, in slots 0 … n_live - 1
    for t in range(n_frames):
        for v in range(V):
            y[v] = lp[t, v]
        n_sorted = 0
        # stay: l → l (blank, or a repeat of the last token)
        table_k[:] = -1
        for k in range(n_live):
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
        for k in range(n_live):
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
        for k in range(n_live):
            x = _lae(stay_pb[k], stay_pnb[k])
            if x > NEG_INF:
                n = _offer(sc, sx, sd, sp, st, n, K, x + bonus[k], x, 0.0, k, 0)
        if has_lex and topk > 0:  # a lexicon with token_topk: the frame's top tokens, marked
            n_sorted = n_tok
            for m, v in enumerate(np.argsort(-y[1:])[:n_tok] + 1):
                order[m], taken[v] = v, True
        for k in range(n_live):
            if ptot[k] == NEG_INF:
                continue
            base = ptot[k] + bonus[k]
            # candidate tokens: with a lexicon the few the trie allows here (in trie order), else the
            # frame's tokens most likely first, where the first that cannot enter ends the list
            lo, count = (lex_ptr[node[k]], lex_ptr[node[k] + 1] - lex_ptr[node[k]]) if has_lex else (0, n_tok)
            for m in range(count):
                if has_lex:
                    c = lex_tok[lo + m]
                    if (
                        y[c] < min_logp
                        or (topk > 0 and not taken[c])
                        or (n == K and base + gain + y[c] <= sc[0])
                    ):
                        continue
                else:
                    if m == n_sorted:
                        n_sorted = _sort_more(y, order, taken, n_sorted)
                    c = order[m]
                    if y[c] < min_logp or (n == K and base + gain + y[c] <= sc[0]):
                        break  # no later token can do better
                if child[k, c]:
                    continue  # merged into that hypothesis' stay above
                d = wsc[k] if c == space and inw[k] else 0.0
                if kind == 1:
                    d = alpha * _lm_step(lm, lms[k], tok_unit[c])[0] + beta
                x = (pb[k] if c == last[k] else ptot[k]) + y[c]
                if x > NEG_INF:
                    n = _offer(sc, sx, sd, sp, st, n, K, x + bonus[k] + d, x, d, k, c)
        # hypothesis pruning relative to the best
        if threshold < math.inf and n > 0:
            floor = sc[:n].max() - threshold
            for i in range(n):
                if sc[i] < floor:
                    sc[i] = NEG_INF
        # the new hypotheses, packed into slots 0 … n_live - 1 (the loops above visit only those)
        j = 0
        for i in range(n):
            if sc[i] == NEG_INF:  # pruned by the threshold
                continue
            p, c = sp[i], st[i]
            n_tot[j] = sx[i]
            n_bonus[j] = bonus[p] + sd[i]
            if c > 0:  # l + c
                n_pb[j] = NEG_INF
                n_pnb[j] = sx[i]
                n_h[j] = h[p] * _HASH_MUL + (c + 1)
                n_ph[j] = h[p]
                n_last[j] = c
                hist_parent[t, j], hist_tok[t, j] = p, c
                is_space = c == space
                if kind == 1:
                    n_lms[j] = _lm_step(lm, lms[p], tok_unit[c])[1]
                elif kind == 2 and is_space and inw[p]:
                    n_lms[j] = _lm_step(lm, lms[p], wid[p])[1]
                else:
                    n_lms[j] = lms[p]
                n_inw[j] = not is_space
                n_wh[j] = 0 if is_space else wh[p] * _HASH_MUL + (c + 1)
                n_node[j] = 0 if is_space or not has_lex else lex_child[node[p], c]
                n_wsc[j], n_wid[j] = 0.0, 0
                if not is_space and kind == 2:  # what ending this word will add
                    n_wid[j] = _word_id(w_hashes, w_ids, w_unk, n_wh[j])
                    n_wsc[j] = alpha * _lm_step(lm, n_lms[j], n_wid[j])[0] + beta
                elif not is_space and kind == 0:
                    n_wsc[j] = beta
            else:
                n_pb[j], n_pnb[j] = stay_pb[p], stay_pnb[p]
                n_h[j], n_ph[j], n_last[j] = h[p], ph[p], last[p]
                n_lms[j], n_inw[j], n_wh[j], n_node[j] = lms[p], inw[p], wh[p], node[p]
                n_wsc[j], n_wid[j] = wsc[p], wid[p]
                if switch[p]:  # the merged-in extension carries more mass: follow its history
                    hist_parent[t, j], hist_tok[t, j] = jj[p], last[p]
                else:
                    hist_parent[t, j], hist_tok[t, j] = p, 0
            nonblank[t, j] = n_pnb[j] > n_pb[j]
            j += 1
        n_live = j
        n_tot[n_live:] = NEG_INF
        for i in range(n_merged):
            child[merged_j[i], merged_c[i]] = False
        for m in range(n_sorted):
            taken[order[m]] = False
        ptot[:] = n_tot
        pb, n_pb, pnb, n_pnb, bonus, n_bonus = n_pb, pb, n_pnb, pnb, n_bonus, bonus  # swap, no copies
        h, n_h, ph, n_ph, last, n_last = n_h, h, n_ph, ph, n_last, last
        lms, n_lms, inw, n_inw, wh, n_wh = n_lms, lms, n_inw, inw, n_wh, wh
        node, n_node, wsc, n_wsc, wid, n_wid = n_node, node, n_wsc, wsc, n_wid, wid

    # finish: the last word, the end of the sentence, the lexicon's completeness
    any_complete = False
    total[n_live:] = NEG_INF
    for k in range(n_live):
        fin = 0.0
        if kind == 1:
            fin = alpha * _lm_step(lm, lms[k], eos)[0]
        elif inw[k] or kind == 2:
            state = lms[k]
            if inw[k]:
                fin = beta
                if kind == 2:
                    w = _word_id(w_hashes, w_ids, w_unk, wh[k])
                    lw, state = _lm_step(lm, state, w)
                    fin += alpha * lw
            if kind == 2:
                fin += alpha * _lm_step(lm, state, eos)[0]
        total[k] = ptot[k] + bonus[k] + fin
        if has_lex and total[k] > NEG_INF and (node[k] == 0 or lex_word[node[k]]):
            any_complete = True
    if has_lex and any_complete:
        for k in range(n_live):
            if not (node[k] == 0 or lex_word[node[k]]):
                total[k] = NEG_INF
    return 1 if has_lex and not any_complete else 0


@njit(cache=True)
def _search_batch(
    lp: np.ndarray,  # (B, T, V) float32
    lengths: np.ndarray,  # (B,) int64
    K: int,
    nbest: int,
    topk: int,
    min_logp: float,
    threshold: float,
    fu,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Search every utterance: ``scores``, ``ctc`` (B, N), ``emitted``, ``nonblank`` (T, B, N), and the
    number of utterances that end inside a word in every hypothesis (with a lexicon)."""
    B, T, _ = lp.shape
    N = min(nbest, K)
    scores = np.full((B, N), NEG_INF)
    ctc = np.full((B, N), NEG_INF)
    emitted = np.zeros((T, B, N), np.int64)
    nonblank = np.zeros((T, B, N), np.bool_)
    hist_parent = np.zeros((T, K), np.int64)
    hist_tok = np.zeros((T, K), np.int64)
    nb = np.zeros((T, K), np.bool_)
    ptot = np.empty(K)
    total = np.empty(K)
    hopeless = 0
    for b in range(B):
        n_frames = lengths[b]
        hopeless += _search_one(
            lp[b], n_frames, K, topk, min_logp, threshold, fu, hist_parent, hist_tok, nb, ptot, total
        )
        rank = np.argsort(-total, kind="mergesort")[:N]
        for i in range(N):
            cur = rank[i]
            scores[b, i], ctc[b, i] = total[cur], ptot[cur]
            if total[cur] == NEG_INF:
                continue  # an empty slot: no path
            for t in range(n_frames - 1, -1, -1):
                emitted[t, b, i] = hist_tok[t, cur]
                nonblank[t, b, i] = nb[t, cur]
                cur = hist_parent[t, cur]
    return scores, ctc, emitted, nonblank, hopeless


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


@njit(cache=True)
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


def _as_numpy(log_probs: Tensor) -> np.ndarray:
    return np.ascontiguousarray(log_probs.detach().to("cpu", torch.float32).numpy())


_EMPTY_F = np.zeros((0, 0), np.float32)
_EMPTY_I = np.zeros((0, 0), np.int64)
_EMPTY_1I = np.zeros(0, np.int64)
_EMPTY_1F = np.zeros(0, np.float32)
_NO_LM = (_EMPTY_F, _EMPTY_I, _EMPTY_1I, _EMPTY_1F, _EMPTY_1I, _EMPTY_1F, _EMPTY_1I, 0, 1)


def _lm_tables(lm: NgramLM) -> tuple:
    t = lm._cpu
    dense = "dense_logp" in t
    return (
        t["dense_logp"].numpy() if dense else _EMPTY_F,
        t["dense_next"].numpy() if dense else _EMPTY_I,
        t["keys"].numpy(),
        t["logp"].numpy(),
        t["child"].numpy(),
        t["bow"].numpy(),
        t["suffix"].numpy(),
        lm.order,
        len(lm.vocab),
    )


def fusion_args(fusion: Fusion | None, lexicon: LexiconTrie | None, space_id: int) -> tuple | None:
    """The fusion and lexicon as the compiled search takes them; None where it cannot (an LM other than ``ngram``).

    ``(kind, alpha, beta, space, lm tables, token → LM unit, word hashes, word ids, <unk> id,
    </s> id, start state, lexicon children, lexicon word ends, allowed-token offsets per trie node,
    allowed tokens, the LM's largest log-probability)``; kind 0: no LM (``beta`` per word), 1: a
    character LM, 2: a word LM.
    """
    fusion = fusion or Fusion(0.0, space_id)
    kind, lm, tok_unit, w_hashes, w_ids, w_unk, eos, bos = 0, _NO_LM, _EMPTY_1I, _EMPTY_1I, _EMPTY_1I, 0, 0, 0
    alpha = lm_max = 0.0
    if type(fusion) in (CharFusion, WordFusion):
        if type(fusion.lm) is not NgramLM:  # a subclass may score differently
            return None
        lm, alpha, lm_max = _lm_tables(fusion.lm), float(fusion.alpha), fusion.lm.max_logprob
        eos, bos = fusion.lm.stoi[EOS], int(fusion.lm.bos_state)
        if type(fusion) is CharFusion:
            kind, tok_unit = 1, fusion.lm_ids.cpu().numpy()
        else:
            kind = 2
            w_hashes, w_ids, w_unk = fusion.hashes.cpu().numpy(), fusion.ids.cpu().numpy(), int(fusion.unk_id)
    elif type(fusion) is not Fusion:
        return None
    lex_child, lex_word, lex_ptr, lex_tok = _EMPTY_I, np.zeros(0, np.bool_), _EMPTY_1I, _EMPTY_1I
    if lexicon is not None:
        lex_child, lex_word = lexicon.child.cpu().numpy(), lexicon.is_word.cpu().numpy()
        lex_ptr, lex_tok = lexicon.allowed_ptr.numpy(), lexicon.allowed_tok.numpy()
    return (
        kind,
        alpha,
        float(fusion.beta),
        int(fusion.space_id),
        lm,
        tok_unit,
        w_hashes,
        w_ids,
        w_unk,
        eos,
        bos,
        lex_child,
        lex_word,
        lex_ptr,
        lex_tok,
        lm_max,
    )


def check_search_args(
    log_probs: Tensor, lengths: Tensor, beam_size: int, nbest: int, token_topk: int
) -> None:
    """Refuse search arguments out of range, for either engine."""
    if beam_size < 1 or nbest < 1 or token_topk < 0:
        raise ValueError(
            f"beam search: beam_size and nbest ≥ 1, token_topk ≥ 0; got {beam_size}, {nbest}, {token_topk}"
        )
    B, T = log_probs.shape[:2]
    if B and (int(lengths.min()) < 0 or int(lengths.max()) > T):
        raise ValueError(f"beam search: lengths must lie in [0, {T}], the frames log_probs holds")


def search(
    log_probs: Tensor,
    lengths: Tensor,
    beam_size: int,
    nbest: int = 1,
    token_topk: int = 0,
    token_min_logp: float | None = None,
    beam_threshold: float | None = None,
    fusion: tuple | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CTC prefix beam search of a batch ``(B, T, V)`` on the CPU: ``scores``, ``ctc`` (B, N), ``emitted``,
    ``nonblank`` (T, B, N); hypotheses best first, -inf for an empty slot.

    ``fusion``: from :func:`fusion_args` (default: no LM, no lexicon, no bonus).
    """
    check_search_args(log_probs, lengths, beam_size, nbest, token_topk)  # out of range here corrupts memory
    fu = fusion if fusion is not None else fusion_args(None, None, -1)
    first = not _search_batch.signatures  # this process' first call: load from the disk cache, or compile
    t0 = time.perf_counter()
    scores, ctc, emitted, nonblank, hopeless = _search_batch(
        _as_numpy(log_probs),
        lengths.detach().to("cpu", torch.int64).numpy(),
        beam_size,
        nbest,
        token_topk,
        NEG_INF if token_min_logp is None else float(token_min_logp),
        math.inf if beam_threshold is None else float(beam_threshold),
        fu,
    )
    if first and time.perf_counter() - t0 > 2.0:
        log.info(
            "beam search: compiled the CPU engine in %.0f s (numba; cached on disk for the next run)",
            time.perf_counter() - t0,
        )
    if hopeless:
        log.warning("lexicon: %d utterance(s) end inside a word in every hypothesis", hopeless)
    return (
        torch.from_numpy(scores).float(),
        torch.from_numpy(ctc).float(),
        torch.from_numpy(emitted),
        torch.from_numpy(nonblank),
    )


def ctc_logprob(log_probs: Tensor, lengths: Tensor, emitted: Tensor, lower: Tensor) -> Tensor:
    """``(B, N)`` exact CTC log-probability of the labels each ``emitted`` ``(T, B, N)`` path spells.

    ``lower``: the search's CTC score of each path (a lower bound; -inf: an empty slot).
    """
    T = emitted.shape[0]
    out = _rescore_batch(
        _as_numpy(log_probs[:, :T]),
        lengths.detach().to("cpu", torch.int64).numpy(),
        np.ascontiguousarray(emitted.cpu().numpy()),
        lower.detach().to("cpu", torch.float64).numpy(),
    )
    return torch.from_numpy(out).float()


@njit(cache=True)
def _paths_batch(
    emitted: np.ndarray, nonblank: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tokens of per-frame paths ``emitted`` (T, B, N), flat: token, start frame, end frame, and offsets.

    A token ends at the last frame before the next token's where its path is still on it.
    """
    T, B, N = emitted.shape
    count = 0
    for t in range(T):
        for b in range(B):
            for i in range(N):
                if emitted[t, b, i] > 0:
                    count += 1
    toks = np.empty(count, np.int64)
    starts = np.empty(count, np.int64)
    ends = np.empty(count, np.int64)
    offsets = np.zeros(B * N + 1, np.int64)
    j = 0
    for b in range(B):
        for i in range(N):
            first = j
            last_on = -1
            for t in range(T):
                if emitted[t, b, i] > 0:
                    if j > first:
                        ends[j - 1] = last_on if last_on >= starts[j - 1] else starts[j - 1]
                    toks[j], starts[j] = emitted[t, b, i], t
                    j += 1
                if nonblank[t, b, i]:
                    last_on = t
            if j > first:
                ends[j - 1] = last_on if last_on >= starts[j - 1] else starts[j - 1]
            offsets[b * N + i + 1] = j
    return toks, starts, ends, offsets


def paths(emitted: Tensor, nonblank: Tensor) -> tuple[list[int], list[int], list[int], list[int]]:
    """:func:`_paths_batch` of ``(T, B, N)`` paths, as Python lists (token, start, end; offsets per ``b · N + n``)."""
    out = _paths_batch(
        np.ascontiguousarray(emitted.cpu().numpy()), np.ascontiguousarray(nonblank.cpu().numpy())
    )
    return tuple(a.tolist() for a in out)

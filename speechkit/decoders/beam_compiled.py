"""The CPU engine of the beam search: the CTC prefix beam search of beam_torch.py compiled by numba.

The torch search's ~100 tensor operations per frame cost microseconds each on a CPU whatever
their size; this engine runs the same recurrences one utterance and hypothesis at a time:
hypotheses in flat arrays, equal prefixes found through a hash table of prefix hashes, the next
beam chosen by a K-entry min-heap offered each hypothesis' extensions best first (best_first.py)
until one cannot beat the heap's worst (``ptot + bonus + max gain + y`` bounds all the rest).
It returns what the torch search returns (tests/decoders/test_beam_compiled.py checks the two
against each other) for no LM or an ``ngram`` one, a lexicon, a bonus, hotwords and any pruning, over
characters or subwords; the fusion, the tokens' spelling (which start a word), the lexicon and the
hotwords arrive as the NamedTuples their ``to_native()`` builds. Compiled code reads a
NamedTuple's array fields into locals once per function: read in a loop they halved the speed.
Hotwords arrive as ``None`` when there are none: numba then compiles a version of the search with
every ``if hot is not None`` branch removed (its dead-branch pruning on argument types), so the
search without hotwords runs the code it ran before they existed; with them, a second version is
compiled (and cached) on first use.

The first call on a machine compiles (``COMPILE_SECONDS``; ``BeamDecoder`` says so before); the
machine code is cached in ``speechkit.decoders.numba_cache_dir()`` (``~/.cache/speechkit/numba``), not
in the package. numba compiles again when this file changes, not when what it takes in from elsewhere
does (best_first.py, ``ctc_score.log_add``, ``HASH_MUL``, ``UNK_FLOOR``, ``ROOT``, the ``kind`` constants):
after editing those, delete ``decoders_*/*.nb[ic]`` in that folder.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from speechkit.decoders import cached_njit, dispatcher_state
from speechkit.decoders.base import SearchResult
from speechkit.decoders.best_first import Heap, offer, sort_more
from speechkit.decoders.ctc_score import log_add
from speechkit.decoders.fusion import CHAR_LM, NO_LM, WORD_LM, Fusion, NativeFusion, NativeNgram
from speechkit.decoders.hotwords import ROOT, NativeHotwords
from speechkit.decoders.lexicon import HASH_MUL, NO_LEXICON, NativeLexicon, NativeSpelling, Spelling
from speechkit.lm.ngram import UNK_FLOOR

log = logging.getLogger(__name__)

NEG_INF = float("-inf")
# seconds a cold compile of this search and ctc_score's rescoring takes (BeamDecoder.warm_up, empty
# cache): 17–26 s measured 2026-12-03 on 2 shared CPU cores (Python 3.11, numba 0.68); a user saw ~27 s.
# A load from the disk cache: 0.6–0.8 s.
COMPILE_SECONDS = 20


class SearchOptions(NamedTuple):
    """The search's limits (``BeamConfig``'s, with the pruning that is off as ±inf)."""

    beam_size: int  # K: hypotheses kept per utterance
    nbest: int  # hypotheses returned per utterance
    token_topk: int  # candidate tokens per frame: the `token_topk` most likely (0: all)
    token_min_logp: float  # tokens below this are never appended (-inf: off)
    beam_threshold: float  # hypotheses this far below the best are dropped (inf: off)


class Trace(NamedTuple):
    """What the search of one utterance writes: its back-pointers per frame and final scores."""

    parent: np.ndarray  # (T, K) int64: the slot each hypothesis' history came from
    token: np.ndarray  # (T, K) int64: the token appended on that history (0: none)
    nonblank: np.ndarray  # (T, K) bool: the hypothesis is most likely still on its last token
    ctc: np.ndarray  # (K,) final CTC log-probability of each hypothesis
    total: np.ndarray  # (K,) final fused score (CTC + bonus + what finishing adds)


@cached_njit()
def _lm_step(lm: NativeNgram, state: int, unit: int) -> tuple[float, int]:
    """An n-gram LM look-up: natural-log p(unit | state) and the state after it (``NgramLM._walk``)."""
    # the fields as locals, read once (see the module's docstring)
    dense_logp, dense_next, keys, logp = lm.dense_logp, lm.dense_next, lm.keys, lm.logp
    child, bow, suffix, U = lm.child, lm.bow, lm.suffix, lm.num_units
    if dense_logp.shape[0] > 0:
        return float(dense_logp[state, unit]), dense_next[state, unit]
    n_keys = keys.shape[0]
    h, acc, done, nxt = state, 0.0, False, -1
    for _ in range(lm.order):  # contexts hold at most order - 1 units
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


@cached_njit(inline="always")
def _word_id(fu: NativeFusion, word_hash: int) -> int:
    """LM id of the word spelt with hash ``word_hash`` (``WordFusion.word_ids``), ``<unk>``'s if unknown."""
    hashes, ids = fu.word_hashes, fu.word_ids
    pos = min(np.searchsorted(hashes, word_hash), hashes.shape[0] - 1)
    return ids[pos] if hashes[pos] == word_hash else fu.unk


@cached_njit(inline="always")
def _next_node(ptr: np.ndarray, cont_tok: np.ndarray, cont_next: np.ndarray, node: int, c: int) -> int:
    """The lexicon node token ``c`` leads to from ``node`` (where the search allowed it), by bisection
    in the node's continuing tokens."""
    lo, hi = ptr[node], ptr[node + 1]
    return cont_next[lo + np.searchsorted(cont_tok[lo:hi], c)]


@cached_njit()
def _search_one(
    lp: np.ndarray,  # (T, V) float32 log-probabilities of one utterance
    n_frames: int,
    opt: SearchOptions,
    fu: NativeFusion,
    sp: NativeSpelling,  # how tokens write words: which start one, what they add to its hash
    lex: NativeLexicon,  # empty arrays: no lexicon
    hot: NativeHotwords | None,  # None: no hotwords
    out: Trace,
) -> int:
    """One utterance; returns 1 if a lexicon was given and every hypothesis ends inside a word, else 0.

    The recurrences of beam_torch.py, per hypothesis ``l`` and frame log-probabilities ``y``::

        pb'(l)    = logaddexp(pb, pnb)(l) + y[blank]                            # stay, blank
        pnb'(l)   = pnb(l) + y[last(l)]  (+ the extension of l⁻ if l = l⁻ + last(l) merges in)
        pnb'(l+c) = (pb(l) if c == last(l) else logaddexp(pb, pnb)(l)) + y[c]   # extend

    ranked by CTC + ``bonus`` (α · log P_lm + β · units + hotword boosts) + what the step adds to it.
    A word is complete when a token that starts a new one is appended (``sp.starts``) or at the end.
    """
    # the NamedTuples' fields as locals, read once (see the module's docstring)
    K, topk, min_logp, threshold = opt.beam_size, opt.token_topk, opt.token_min_logp, opt.beam_threshold
    kind, alpha, beta, lm, tok_unit = fu.kind, fu.alpha, fu.beta, fu.lm, fu.tok_unit
    starts, grows, hash_mul, hash_add = sp.starts, sp.grows, sp.hash_mul, sp.hash_add
    heap = Heap(np.empty(K), np.empty(K), np.empty(K), np.empty(K, np.int64), np.empty(K, np.int64))
    cand_score, cand_ctc, cand_gain = heap.score, heap.ctc, heap.gain  # the frame's chosen candidates
    cand_parent, cand_token = heap.parent, heap.token
    # with a lexicon, the tokens trie node i allows: those continuing its word, cont_tok[ptr[i]:ptr[i + 1]]
    # (leading to cont_next[…]), then, after a complete word, those starting one (start_tok; the ones
    # writing letters, start_tok[n_empty:], at the root too), leading to first[token]
    ptr, cont_tok, cont_next, first = lex.cont_ptr, lex.cont_tok, lex.cont_next, lex.first
    is_word, start_tok, n_empty = lex.is_word, lex.start_tok, lex.n_empty
    has_lex = is_word.shape[0] > 0
    n_start = start_tok.shape[0]
    n_edges = cont_tok.shape[0]
    trie = lex.trie  # the next nodes as a dense table, where it is small
    dense_trie = trie.shape[0] > 0
    lex_tok = np.concatenate((cont_tok, start_tok))  # one list: a candidate is one load
    if hot is not None:  # (every `hot is not None` is decided at compile time: see the module's docstring)
        hot_next, hot_gain, hot_finish, hot_best = hot.next, hot.gain, hot.finish, hot.best
    hist_parent, hist_tok, nonblank, ptot, total = out.parent, out.token, out.nonblank, out.ctc, out.total
    # what fusion can add to one extension at most: the bound that lets extensions stop early
    # (an LM log-probability is ≤ 0, or lm_max, its largest, says otherwise)
    gain = max(beta, 0.0) + alpha * max(fu.lm_max, 0.0) if alpha >= 0.0 else math.inf
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
    lms = np.full(K, fu.bos, np.int64)  # LM state
    inw = np.zeros(K, np.bool_)  # the current word is not empty
    wh = np.zeros(K, np.int64)  # the current word's hash
    node = np.zeros(K, np.int64)  # the current word's lexicon trie node
    hs = np.full(K, ROOT, np.int64)  # hotword automaton state
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
    n_pb, n_pnb, n_tot, n_bonus = np.zeros(K), np.zeros(K), np.zeros(K), np.zeros(K)
    n_h, n_ph, n_last = np.zeros(K, np.int64), np.zeros(K, np.int64), np.zeros(K, np.int64)
    n_lms, n_wh, n_node = np.zeros(K, np.int64), np.zeros(K, np.int64), np.zeros(K, np.int64)
    n_inw = np.zeros(K, np.bool_)
    n_hs = np.zeros(K, np.int64)
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
            switch[k] = from_j > log_add(stay_pb[k], stay_pnb[k])  # timestamps follow the larger share
            jj[k] = j
            stay_pnb[k] = log_add(stay_pnb[k], from_j)
            child[j, last[k]] = True
            merged_j[n_merged], merged_c[n_merged] = j, last[k]
            n_merged += 1
        # the best K candidates in a min-heap: every stay, then each hypothesis' extensions best
        # first, until one cannot beat the heap's worst
        n = 0
        for k in range(n_live):
            x = log_add(stay_pb[k], stay_pnb[k])
            if x > NEG_INF:
                n = offer(heap, n, x + bonus[k], x, 0.0, k, 0)
        if has_lex and topk > 0:  # a lexicon with token_topk: the frame's top tokens, marked
            n_sorted = n_tok
            for m, v in enumerate(np.argsort(-y[1:])[:n_tok] + 1):
                order[m], taken[v] = v, True
        for k in range(n_live):
            if ptot[k] == NEG_INF:
                continue
            base = ptot[k] + bonus[k]
            gk = gain  # what this hypothesis' extensions can gain at most
            if hot is not None:
                gk += hot_best[hs[k]]
            # candidate tokens: with a lexicon the few the trie allows here (in trie order), else the
            # frame's tokens most likely first, where the first that cannot enter ends the list
            lo, n_cont, lo_start, count, n_s = 0, 0, 0, n_tok, 0
            if has_lex:
                nk = node[k]
                lo, n_cont = ptr[nk], ptr[nk + 1] - ptr[nk]
                s0 = 0 if is_word[nk] else n_empty if nk == 0 else n_start  # the starting tokens allowed
                n_s = n_start - s0  # the starting tokens first: after a word, often the likeliest
                count = n_cont + n_s
                lo_start, lo = n_edges + s0, lo - n_s
            for m in range(count):
                if has_lex:
                    c = lex_tok[(lo_start if m < n_s else lo) + m]
                    if (
                        y[c] < min_logp
                        or (topk > 0 and not taken[c])
                        or (n == K and base + gk + y[c] <= cand_score[0])
                    ):
                        continue
                else:
                    if m == n_sorted:
                        n_sorted = sort_more(y, order, taken, n_sorted)
                    c = order[m]
                    if y[c] < min_logp or (n == K and base + gk + y[c] <= cand_score[0]):
                        break  # no later token can do better
                if child[k, c]:
                    continue  # merged into that hypothesis' stay above
                d = wsc[k] if starts[c] and inw[k] else 0.0
                if kind == CHAR_LM:
                    d = alpha * _lm_step(lm, lms[k], tok_unit[c])[0] + beta
                if hot is not None:
                    d += hot_gain[hs[k], c]
                x = (pb[k] if c == last[k] else ptot[k]) + y[c]
                if x > NEG_INF:
                    n = offer(heap, n, x + bonus[k] + d, x, d, k, c)
        # hypothesis pruning relative to the best
        if threshold < math.inf and n > 0:
            floor = cand_score[:n].max() - threshold
            for i in range(n):
                if cand_score[i] < floor:
                    cand_score[i] = NEG_INF
        # the new hypotheses, packed into slots 0 … n_live - 1 (the loops above visit only those)
        j = 0
        for i in range(n):
            if cand_score[i] == NEG_INF:  # pruned by the threshold
                continue
            p, c = cand_parent[i], cand_token[i]
            n_tot[j] = cand_ctc[i]
            n_bonus[j] = bonus[p] + cand_gain[i]
            if c > 0:  # l + c
                n_pb[j] = NEG_INF
                n_pnb[j] = cand_ctc[i]
                n_h[j] = h[p] * HASH_MUL + (c + 1)
                n_ph[j] = h[p]
                n_last[j] = c
                hist_parent[t, j], hist_tok[t, j] = p, c
                new_word = starts[c]  # c ends the current word (if any) and starts the next
                if kind == CHAR_LM:
                    n_lms[j] = _lm_step(lm, lms[p], tok_unit[c])[1]
                elif kind == WORD_LM and new_word and inw[p]:
                    n_lms[j] = _lm_step(lm, lms[p], wid[p])[1]
                else:
                    n_lms[j] = lms[p]
                n_inw[j] = (inw[p] and not new_word) or grows[c]
                n_wh[j] = (0 if new_word else wh[p]) * hash_mul[c] + hash_add[c]
                if has_lex:
                    if new_word:
                        n_node[j] = first[c]
                    elif dense_trie:
                        n_node[j] = trie[node[p], c]
                    else:
                        n_node[j] = _next_node(ptr, cont_tok, cont_next, node[p], c)
                if hot is not None:
                    n_hs[j] = hot_next[hs[p], c]
                n_wsc[j], n_wid[j] = 0.0, 0
                if n_inw[j] and kind == WORD_LM:  # what ending this word will add
                    n_wid[j] = _word_id(fu, n_wh[j])
                    n_wsc[j] = alpha * _lm_step(lm, n_lms[j], n_wid[j])[0] + beta
                elif n_inw[j] and kind == NO_LM:
                    n_wsc[j] = beta
            else:
                n_pb[j], n_pnb[j] = stay_pb[p], stay_pnb[p]
                n_h[j], n_ph[j], n_last[j] = h[p], ph[p], last[p]
                n_lms[j], n_inw[j], n_wh[j], n_node[j] = lms[p], inw[p], wh[p], node[p]
                if hot is not None:
                    n_hs[j] = hs[p]
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
        hs, n_hs = n_hs, hs

    # finish: the last word, the end of the sentence, unfinished hotword matches, the lexicon's completeness
    any_complete = False
    total[n_live:] = NEG_INF
    for k in range(n_live):
        fin = 0.0
        if kind == CHAR_LM:
            fin = alpha * _lm_step(lm, lms[k], fu.eos)[0]
        elif inw[k] or kind == WORD_LM:
            state = lms[k]
            if inw[k]:
                fin = beta
                if kind == WORD_LM:
                    w = _word_id(fu, wh[k])
                    lw, state = _lm_step(lm, state, w)
                    fin += alpha * lw
            if kind == WORD_LM:
                fin += alpha * _lm_step(lm, state, fu.eos)[0]
        if hot is not None:
            fin += hot_finish[hs[k]]
        total[k] = ptot[k] + bonus[k] + fin
        if has_lex and total[k] > NEG_INF and (node[k] == 0 or is_word[node[k]]):
            any_complete = True
    if has_lex and any_complete:
        for k in range(n_live):
            if not (node[k] == 0 or is_word[node[k]]):
                total[k] = NEG_INF
    return 1 if has_lex and not any_complete else 0


@cached_njit()
def _search_batch(
    lp: np.ndarray,  # (B, T, V) float32
    lengths: np.ndarray,  # (B,) int64
    opt: SearchOptions,
    fu: NativeFusion,
    sp: NativeSpelling,
    lex: NativeLexicon,
    hot: NativeHotwords | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Search every utterance: ``scores``, ``ctc`` (B, N), ``emitted``, ``nonblank`` (T, B, N), and the
    number of utterances that end inside a word in every hypothesis (with a lexicon)."""
    B, T, _ = lp.shape
    K = opt.beam_size
    N = min(opt.nbest, K)
    scores = np.full((B, N), NEG_INF)
    ctc = np.full((B, N), NEG_INF)
    emitted = np.zeros((T, B, N), np.int64)
    nonblank = np.zeros((T, B, N), np.bool_)
    out = Trace(
        np.zeros((T, K), np.int64),
        np.zeros((T, K), np.int64),
        np.zeros((T, K), np.bool_),
        np.empty(K),
        np.empty(K),
    )
    hopeless = 0
    hist_parent, hist_tok, nb, ctc_k, total = out.parent, out.token, out.nonblank, out.ctc, out.total
    for b in range(B):
        n_frames = lengths[b]
        hopeless += _search_one(lp[b], n_frames, opt, fu, sp, lex, hot, out)
        rank = np.argsort(-total, kind="mergesort")[:N]
        for i in range(N):
            cur = rank[i]
            scores[b, i], ctc[b, i] = total[cur], ctc_k[cur]
            if total[cur] == NEG_INF:
                continue  # an empty slot: no path
            for t in range(n_frames - 1, -1, -1):
                emitted[t, b, i] = hist_tok[t, cur]
                nonblank[t, b, i] = nb[t, cur]
                cur = hist_parent[t, cur]
    return scores, ctc, emitted, nonblank, hopeless


def search(
    log_probs: Tensor,
    lengths: Tensor,
    beam_size: int,
    nbest: int = 1,
    token_topk: int = 0,
    token_min_logp: float | None = None,
    beam_threshold: float | None = None,
    fusion: NativeFusion | None = None,
    lexicon: NativeLexicon | None = None,
    hotwords: NativeHotwords | None = None,
    spelling: NativeSpelling | None = None,
) -> SearchResult:
    """CTC prefix beam search of a batch ``(B, T, V)`` on the CPU; hypotheses best first, -inf for an
    empty slot; CPU tensors.

    ``fusion``, ``lexicon``, ``hotwords`` and ``spelling``: from ``to_native()`` of a fusion, a lexicon
    trie, a hotword trie and the tokens' :class:`~speechkit.decoders.lexicon.Spelling` (default: no LM,
    no bonus, no lexicon, no hotwords; one character a token, no separator). The arguments are taken as
    ``BeamDecoder`` passes them (checked by ``Decoder.check_inputs`` and the decoder's config),
    except what keeps the compiled loops' unchecked memory accesses in bounds.
    """
    B, T = log_probs.shape[:2]
    if beam_size < 1 or nbest < 1 or (B and (int(lengths.min()) < 0 or int(lengths.max()) > T)):
        raise ValueError(
            f"beam search: beam_size, nbest ≥ 1 and lengths in [0, {T}] (the frames log_probs holds)"
        )
    V = log_probs.shape[2]
    for what, size in (
        ("hotwords", None if hotwords is None else hotwords.next.shape[1]),
        ("spelling", None if spelling is None else spelling.starts.shape[0]),
        ("lexicon", None if lexicon is None or not lexicon.is_word.shape[0] else lexicon.first.shape[0]),
    ):
        if size is not None and size != V:
            raise ValueError(f"beam search: {what} built for {size} tokens, log_probs has {V}")
    min_logp = NEG_INF if token_min_logp is None else float(token_min_logp)
    threshold = math.inf if beam_threshold is None else float(beam_threshold)
    opt = SearchOptions(beam_size, nbest, token_topk, min_logp, threshold)
    scores, ctc, emitted, nonblank, hopeless = _search_batch(
        np.ascontiguousarray(log_probs.detach().to("cpu", torch.float32).numpy()),
        lengths.detach().to("cpu", torch.int64).numpy(),
        opt,
        fusion if fusion is not None else Fusion(0.0).to_native(),
        spelling if spelling is not None else Spelling.letters(V).to_native(),
        lexicon if lexicon is not None else NO_LEXICON,
        hotwords,
    )
    if hopeless:
        log.warning("lexicon: %d utterance(s) end inside a word in every hypothesis", hopeless)
    return SearchResult(
        torch.from_numpy(scores).float(),
        torch.from_numpy(ctc).float(),
        torch.from_numpy(emitted),
        torch.from_numpy(nonblank),
    )


def compile_state() -> str:
    """How far :func:`search` is from running: "ready" (compiled in this process), "cached" (on disk,
    loads in about a second) or "cold" (its next call compiles, ~``COMPILE_SECONDS``)."""
    return dispatcher_state(_search_batch)

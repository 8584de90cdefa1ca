"""The GPU engine of the beam search: CTC prefix beam search, batched and vectorised in torch.

Each hypothesis is a label prefix ``l`` with two log-probabilities over the frames seen so
far: ``pb`` (alignments ending in blank) and ``pnb`` (ending in ``l``'s last token). At frame
``t``, with ``y`` the frame's log-probabilities (natural log throughout)::

    pb'(l)    = logaddexp(pb, pnb)(l) + y[blank]                       # stay, blank
    pnb'(l)   = pnb(l) + y[last(l)]                                    # stay, repeat
    pnb'(l+c) = (pb(l) if c == last(l) else logaddexp(pb, pnb)(l)) + y[c]   # extend

Equal prefixes are merged: when ``l + c`` is already a hypothesis, its mass goes into that
hypothesis instead of a new one. The search keeps ``beam_size`` hypotheses per utterance,
ranked by ``logaddexp(pb, pnb) + alpha · log P_lm + beta · units`` (+ hotword boosts,
hotwords.py). The CTC part of a hypothesis that was never pruned is exactly its CTC
log-probability (the sum over all alignments, as ``ctc_loss`` computes it); one that was pruned
and re-created lost some alignments (:mod:`speechkit.decoders.ctc_score` restores them). ``beam_size`` alone is an
exact prefix beam search: the token and hypothesis pruning options are off unless set.

One Python iteration per frame: :func:`expand`, the fusion's, hotwords' and lexicon's scores, top-K,
:func:`select`; everything inside is ``(batch, beam, tokens)`` tensor algebra, so the same code
runs on CPU and GPU. It is also the reference the compiled CPU engine (beam_compiled.py) is
tested against.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import torch
from torch import Tensor

from speechkit.decoders.base import SearchResult
from speechkit.decoders.fusion import Fusion
from speechkit.decoders.hotwords import ROOT, HotwordTrie
from speechkit.decoders.lexicon import LexiconTrie, Spelling, extend_hash
from speechkit.functional import lengths_mask

log = logging.getLogger(__name__)

NEG_INF = float("-inf")


class Beams(NamedTuple):
    """The ``(B, K)`` hypotheses: CTC state, prefix identity and what fusion has added."""

    pb: Tensor  # log P(alignments so far end in blank)
    pnb: Tensor  # ... end in the last token
    h: Tensor  # prefix hash
    ph: Tensor  # the parent prefix's hash
    last: Tensor  # last token (0: the empty prefix)
    bonus: Tensor  # alpha · log P_lm + beta · units (+ hotword boosts) so far


class Frame(NamedTuple):
    """One frame of the batch: its log-probabilities and candidate tokens."""

    y: Tensor  # (B, V) log-probabilities
    y_tok: Tensor  # (B, M) those of the candidate tokens
    tok: Tensor  # (B, M) the candidate tokens
    pos: Tensor  # (B, V) each token's slot among the candidates (-1: not a candidate)
    active: Tensor  # (B, 1) the frame lies within the utterance


class Stays(NamedTuple):
    """What :func:`expand` works out for each ``(B, K)`` hypothesis besides the candidates' scores."""

    ptot: Tensor  # logaddexp(pb, pnb)
    stay_pb: Tensor  # pb' of the prefix kept
    stay_pnb: Tensor  # pnb' of the prefix kept (the extension merged into it included)
    switch: Tensor  # the merged-in extension carries more mass: timestamps follow it
    j: Tensor  # the hypothesis whose extension merged in


class Step(NamedTuple):
    """How :func:`select` made each new ``(B, K)`` hypothesis."""

    parent: Tensor  # the parent's slot
    c: Tensor  # the token appended (0: none)
    is_ext: Tensor  # a token was appended (within the utterance)
    hist_parent: Tensor  # the slot its history (timestamps) came from
    hist_tok: Tensor  # the token appended on that history (0: none)
    nonblank: Tensor  # it is most likely still on its last token


def expand(beams: Beams, frame: Frame) -> tuple[Tensor, Stays]:
    """One frame of CTC prefix extension for ``(B, K)`` hypotheses: the ``(B, K, 1 + M)`` candidates.

    Slot 0 of a hypothesis keeps its prefix; slot ``1 + m`` extends it by candidate token
    ``frame.tok[:, m]``. Returns the candidates' scores (CTC + ``bonus``) and what :func:`select` needs.
    """
    pb, pnb, h, ph, last = beams.pb, beams.pnb, beams.h, beams.ph, beams.last
    y, y_tok, tok, pos = frame.y, frame.y_tok, frame.tok, frame.pos
    B, K = pb.shape
    M = y_tok.shape[1]
    ptot = torch.logaddexp(pb, pnb)
    valid = ptot > NEG_INF
    y_last = y.gather(1, last)
    stay_pb = ptot + y[:, :1]  # pb'(l) = (pb + pnb)(l) · y[blank]
    stay_pnb = pnb + y_last  # pnb'(l) = pnb(l) · y[last]  (the empty prefix has pnb = -inf)

    # merge: hypothesis k is hypothesis j plus last(k) → j's extension flows into k, not a new one
    sorted_h, order = torch.where(valid, h, -1).sort(1)
    want = torch.where(valid & (last > 0), ph, -2)
    at = torch.searchsorted(sorted_h, want).clamp_(max=K - 1)
    merged = sorted_h.gather(1, at) == want
    j = order.gather(1, at)
    from_j = torch.where(last.gather(1, j) == last, pb.gather(1, j), ptot.gather(1, j)) + y_last
    # timestamps follow the larger share: a merged prefix takes the history of j's extension
    switch = merged & (from_j > torch.logaddexp(stay_pb, stay_pnb))
    stay_pnb = torch.where(merged, torch.logaddexp(stay_pnb, from_j), stay_pnb)

    # pnb'(l + c) = (pb if c == last(l) else pb + pnb)(l) · y[c]
    repeat = tok[:, None, :] == last[:, :, None]
    ext = torch.where(repeat, pb[:, :, None], ptot[:, :, None]) + y_tok[:, None, :]
    cand = torch.cat([torch.logaddexp(stay_pb, stay_pnb)[:, :, None], ext], 2).view(B, K * (M + 1))
    # an extension that already is a hypothesis (merged above) is not a candidate of its own
    p_m = torch.where(merged, pos.gather(1, last), -1)
    at = torch.where(p_m >= 0, j * (M + 1) + 1 + p_m, 0)
    cand = cand.scatter_reduce(1, at, torch.where(p_m >= 0, NEG_INF, math.inf), "amin")
    cand = cand.view(B, K, M + 1) + beams.bonus[:, :, None]
    return cand, Stays(ptot, stay_pb, stay_pnb, switch, j)


def select(
    top: Tensor, idx: Tensor, frame: Frame, beams: Beams, stays: Stays, delta: Tensor | None, arange: Tensor
) -> tuple[Beams, Step]:
    """The new ``(B, K)`` hypotheses from the chosen candidates ``idx`` (scores ``top``) of :func:`expand`.

    ``delta`` ``(B, K, M)``: what fusion and hotwords added to each extension (None: nothing); ``arange``: ``(B, K)``
    slot numbers. Rows not ``frame.active`` (past their utterance's end) keep their hypotheses.
    """
    pb, pnb, h, ph, last, bonus = beams.pb, beams.pnb, beams.h, beams.ph, beams.last, beams.bonus
    tok, active = frame.tok, frame.active
    B, K = pb.shape
    M1 = tok.shape[1] + 1
    parent = torch.where(active, idx // M1, arange)
    slot = idx % M1
    is_ext = (slot > 0) & active
    m = (slot - 1).clamp(min=0)
    c = torch.where(is_ext, tok.gather(1, m), 0)
    last_p, ptot_p = last.gather(1, parent), stays.ptot.gather(1, parent)
    live = top > NEG_INF  # with fewer than K live candidates, topk also returns dead ones
    new_pb = torch.where(is_ext | ~live, NEG_INF, stays.stay_pb.gather(1, parent))
    ext_pnb = torch.where(c == last_p, pb.gather(1, parent), ptot_p) + frame.y.gather(1, c)
    new_pnb = torch.where(is_ext, ext_pnb, stays.stay_pnb.gather(1, parent)).masked_fill(~live, NEG_INF)
    pb, pnb = torch.where(active, new_pb, pb), torch.where(active, new_pnb, pnb)
    bonus = bonus.gather(1, parent)
    if delta is not None:
        bonus = bonus + torch.where(is_ext, delta.view(B, -1).gather(1, parent * (M1 - 1) + m), 0.0)
    hp = h.gather(1, parent)
    h = torch.where(is_ext, extend_hash(hp, c), hp)
    ph = torch.where(is_ext, hp, ph.gather(1, parent))
    last = torch.where(is_ext, c, last_p)
    took = ~is_ext & stays.switch.gather(1, parent) & active
    hist_parent = torch.where(took, stays.j.gather(1, parent), parent)
    hist_tok = torch.where(took, last, c)
    step = Step(parent, c, is_ext, hist_parent, hist_tok, (pnb > pb) & active)
    return Beams(pb, pnb, h, ph, last, bonus), step


def prefix_beam_search(
    log_probs: Tensor,
    lengths: Tensor,
    beam_size: int,
    nbest: int = 1,
    fusion: Fusion | None = None,
    lexicon: LexiconTrie | None = None,
    hotwords: HotwordTrie | None = None,
    spelling: Spelling | None = None,
    space_id: int = -1,
    token_topk: int = 0,
    token_min_logp: float | None = None,
    beam_threshold: float | None = None,
    compile: bool = False,
) -> SearchResult:
    """CTC prefix beam search over a batch: ``log_probs`` ``(B, T, V)`` (log-softmax), ``lengths`` ``(B,)``.

    ``spelling``: how the tokens write words (default: one character a token, ``space_id`` the
    separator); ``compile``: :func:`expand` and :func:`select` compiled by ``torch.compile`` (fused kernels).
    Arguments are taken as ``BeamDecoder`` passes them (checked by ``Decoder.check_inputs`` and the
    decoder's config).
    """
    dev = log_probs.device
    B, T, V = log_probs.shape
    K = beam_size
    fusion = fusion or Fusion(0.0)
    spelling = (spelling or Spelling.letters(V, space_id)).to(dev)
    lengths = lengths.to(dev)
    if lexicon is not None:
        lexicon.to(dev)
    if hotwords is not None:
        hotwords.to(dev)
    T = int(lengths.max()) if B else 0
    lp_all = log_probs[:, :T].float()
    expand_, select_ = _compiled() if compile else (expand, select)

    zeros_l = torch.zeros(B, K, dtype=torch.long, device=dev)
    pb = torch.full((B, K), NEG_INF, device=dev)
    pb[:, 0] = 0.0  # one hypothesis, the empty prefix: all mass on "ended in blank"
    pnb = torch.full((B, K), NEG_INF, device=dev)
    beams = Beams(pb, pnb, zeros_l.clone(), zeros_l.clone(), zeros_l.clone(), torch.zeros(B, K, device=dev))
    in_word = torch.zeros(B, K, dtype=torch.bool, device=dev)  # current word non-empty
    word_hash, node = zeros_l.clone(), zeros_l.clone()  # current word's hash; its lexicon trie node
    hot = torch.full((B, K), ROOT, dtype=torch.long, device=dev)  # hotword automaton state
    state = fusion.start(B * K, dev)
    plain = type(fusion) is Fusion and fusion.beta == 0.0 and lexicon is None and hotwords is None
    track_words = not plain
    flat = (torch.arange(B, device=dev) * K)[:, None]
    arangeK = torch.arange(K, device=dev).expand(B, K)

    # Each frame's candidate tokens. Without LM, lexicon, bonus or hotwords, no token ranked below K + 1
    # in a frame can enter the beam: each hypothesis has K + 1 better candidates (its extensions
    # by better tokens, or the hypotheses those merge into, less one for its own last token).
    topk = token_topk if token_topk else (K + 1 if plain else 0)
    M = min(topk, V - 1) if topk else V - 1
    if M < V - 1:
        y_toks, toks = lp_all[:, :, 1:].topk(M, dim=2, sorted=False)
        toks = toks + 1
        poss = torch.full_like(lp_all, -1, dtype=torch.long)
        poss.scatter_(2, toks, torch.arange(M, device=dev).expand(B, T, M))
    else:
        y_toks = lp_all[:, :, 1:]
        toks = torch.arange(1, V, device=dev).expand(B, T, V - 1)
        poss = torch.arange(-1, V - 1, device=dev).expand(B, T, V)
    if token_min_logp is not None:
        y_toks = y_toks.masked_fill(y_toks < token_min_logp, NEG_INF)
    actives = lengths_mask(lengths, T).T[:, :, None]  # (T, B, 1)
    bps, ems, nbs = [], [], []

    for t in range(T):
        frame = Frame(lp_all[:, t], y_toks[:, t], toks[:, t], poss[:, t], actives[t])
        cand, stays = expand_(beams, frame)
        delta = None
        if not plain:
            # (B, K, M): extending (b, k) by tok[b, m] completes its current word (tok starts the next)
            ends = in_word[:, :, None] & torch.take(spelling.starts, frame.tok)[:, None, :]
            delta = fusion.extend(state, in_word, word_hash, frame.tok, ends)  # (B, K, M) or None
            if hotwords is not None:
                gains = hotwords.gains(hot, frame.tok)
                delta = gains if delta is None else delta + gains
            if delta is not None:
                cand[:, :, 1:] += delta
            if lexicon is not None:
                cand[:, :, 1:] += lexicon.penalty(node, frame.tok)
        cand = cand.view(B, -1)
        if beam_threshold is not None:
            best = cand.max(1, keepdim=True).values
            cand = cand.masked_fill(cand < best - beam_threshold, NEG_INF)
        top, idx = cand.topk(K, dim=1)
        beams, step = select_(top, idx, frame, beams, stays, delta, arangeK)
        if hotwords is not None:
            hp = hot.gather(1, step.parent)
            hot = torch.where(step.is_ext, hotwords.step(hp, step.c), hp)
        if track_words:
            parent, c, is_ext = step.parent, step.c, step.is_ext
            inw, wh = in_word.gather(1, parent), word_hash.gather(1, parent)
            ends, new_in_word, new_hash = spelling.step(inw, wh, c)
            state = fusion.advance(state, (parent + flat).view(-1), c, is_ext, inw, wh, ends)
            in_word = torch.where(is_ext, new_in_word, inw)
            word_hash = torch.where(is_ext, new_hash, wh)
            if lexicon is not None:
                np_ = node.gather(1, parent)
                node = torch.where(is_ext, lexicon.step(np_, c), np_)
        bps.append(step.hist_parent)
        ems.append(step.hist_tok)
        nbs.append(step.nonblank)

    # finish: last word, end of sentence, unfinished hotword matches, lexicon completeness; then rank
    ctc = torch.logaddexp(beams.pb, beams.pnb)
    total = ctc + beams.bonus + fusion.finish(state, in_word, word_hash)
    if hotwords is not None:
        total = total + hotwords.end(hot)
    if lexicon is not None:
        complete = (node == 0) | lexicon.is_word[node]
        constrained = total.masked_fill(~complete, NEG_INF)
        hopeless = ~(constrained > NEG_INF).any(1, keepdim=True)
        if bool(hopeless.any()):
            log.warning("lexicon: %d utterance(s) end inside a word in every hypothesis", int(hopeless.sum()))
        total = torch.where(hopeless, total, constrained)
    n = min(nbest, K)
    scores, best = total.topk(n, dim=1)
    cur = best

    # backtrack the chosen hypotheses through the per-frame parents
    emitted = torch.zeros(T, B, n, dtype=torch.long, device=dev)
    nonblank = torch.zeros(T, B, n, dtype=torch.bool, device=dev)
    for t in range(T - 1, -1, -1):
        emitted[t] = ems[t].gather(1, cur)
        nonblank[t] = nbs[t].gather(1, cur)
        cur = bps[t].gather(1, cur)
    return SearchResult(scores, ctc.gather(1, best), emitted, nonblank)


_COMPILED: tuple | None = None


def _compiled() -> tuple:
    """:func:`expand` and :func:`select` compiled by torch.compile (fused kernels; compiled once)."""
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = (torch.compile(expand, dynamic=True), torch.compile(select, dynamic=True))
    return _COMPILED

"""CTC prefix beam search, batched and vectorised in torch, with LM fusion, a lexicon and timestamps.

Each hypothesis is a label prefix ``l`` with two log-probabilities over the frames seen so
far: ``pb`` (alignments ending in blank) and ``pnb`` (ending in ``l``'s last token). At frame
``t``, with ``y`` the frame's log-probabilities (natural log throughout)::

    pb'(l)    = logaddexp(pb, pnb)(l) + y[blank]                       # stay, blank
    pnb'(l)   = pnb(l) + y[last(l)]                                    # stay, repeat
    pnb'(l+c) = (pb(l) if c == last(l) else logaddexp(pb, pnb)(l)) + y[c]   # extend

Equal prefixes are merged: when ``l + c`` is already a hypothesis, its mass goes into that
hypothesis instead of a new one. The search keeps ``beam_size`` hypotheses per utterance,
ranked by ``logaddexp(pb, pnb) + alpha · log P_lm + beta · units``. The CTC part of a
hypothesis that was never pruned is exactly its CTC log-probability (the sum over all
alignments, as ``ctc_loss`` computes it); one that was pruned and re-created lost some
alignments, so by default (``exact_scores``) the n-best are rescored by ``ctc_loss`` and
every returned score is exact. ``beam_size`` alone is an exact prefix beam search: the
token and hypothesis pruning options are off unless set.

The pieces compose: :func:`prefix_beam_search` is the search core; a :class:`Fusion` adds
LM and insertion scores (:class:`CharFusion`, :class:`WordFusion`, or the plain
:class:`Fusion`); a :class:`LexiconTrie` restricts words to a list. Every frame step works
on ``(batch, beam, tokens)`` tensors at once, so the same code runs on CPU and GPU.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from speechkit.decoders import native
from speechkit.decoders.base import BLANK, Decoder, Hypothesis, tokens_to_text, word_spans
from speechkit.decoders.fusion import CharFusion, Fusion, WordFusion, build_lm
from speechkit.decoders.lexicon import LexiconTrie, extend_hash
from speechkit.registry import register

log = logging.getLogger(__name__)


NEG_INF = float("-inf")


@dataclass
class BeamConfig:
    beam_size: int = 16  # hypotheses kept per utterance
    nbest: int = 1  # hypotheses returned per utterance
    token_topk: int = 0  # extend by only the k most likely tokens of a frame (0: all)
    token_min_logp: float | None = None  # extend by no token below this log-probability (None: off)
    beam_threshold: float | None = None  # drop hypotheses scoring this far below the best (None: off)
    blank_skip_logp: float | None = None  # frames with log P(blank) ≥ this count as pure blank; runs of
    # them take one search step (e.g. -0.001: P(blank) ≥ 0.999; None: off, every frame is searched)
    alpha: float = 0.5  # LM weight (natural-log LM probabilities)
    beta: float = 0.0  # bonus per unit: per character with a char LM, else per word
    lm: Any = None  # an `lm` plugin config (+decoder/lm=ngram decoder.lm.path=…), its name, or an LM
    lexicon: str | None = None  # word list (first field of each line): the only words allowed
    space: str = " "  # the word separator token
    exact_scores: bool = True  # rescore the n-best by the full CTC sum (ctc_loss), then re-rank
    compile: bool = False  # torch.compile the frame step (fused kernels; compiles on first use)
    engine: str = "auto"  # auto: the compiled CPU engine (native.py) for CPU tensors when it covers the
    # search (any but an LM other than ngram), else the batched torch search; torch; native


@dataclass
class SearchResult:
    """Final hypotheses of a batch, best first: ``(B, N)`` tensors, ``(T, B, N)`` per-frame paths."""

    scores: Tensor  # (B, N) fused log-probability, -inf for an empty slot
    ctc: Tensor  # (B, N) its CTC part: log-probability of the alignments the search kept
    emitted: Tensor  # (T, B, N) token appended at each frame, 0 where none
    nonblank: Tensor  # (T, B, N) whether the hypothesis' last token is (most likely) still on


def expand(
    pb: Tensor,
    pnb: Tensor,
    h: Tensor,
    ph: Tensor,
    last: Tensor,
    bonus: Tensor,
    y: Tensor,
    y_tok: Tensor,
    tok: Tensor,
    pos: Tensor,
) -> tuple[Tensor, ...]:
    """One frame of CTC prefix extension for ``(B, K)`` hypotheses: the ``(B, K, 1 + M)`` candidates.

    ``y`` ``(B, V)`` is the frame's log-probabilities, ``y_tok`` ``(B, M)`` those of its candidate
    tokens ``tok`` and ``pos`` ``(B, V)`` each token's slot among them (-1: not a candidate). Slot 0
    of a hypothesis keeps its prefix; slot ``1 + m`` extends it by candidate token ``m``.
    Returns the candidates' scores (CTC + ``bonus``) and what :func:`select` needs.
    """
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
    cand = cand.view(B, K, M + 1) + bonus[:, :, None]
    return cand, ptot, stay_pb, stay_pnb, switch, j


def select(
    top: Tensor,
    idx: Tensor,
    active: Tensor,
    tok: Tensor,
    y: Tensor,
    pb: Tensor,
    pnb: Tensor,
    ptot: Tensor,
    stay_pb: Tensor,
    stay_pnb: Tensor,
    last: Tensor,
    h: Tensor,
    ph: Tensor,
    bonus: Tensor,
    delta: Tensor | None,
    switch: Tensor,
    j: Tensor,
    arange: Tensor,
) -> tuple[Tensor, ...]:
    """The new ``(B, K)`` hypotheses from the chosen candidates ``idx`` (scores ``top``) of :func:`expand`.

    Rows not ``active`` (past their utterance's end) keep their hypotheses unchanged.
    Returns the new CTC state, the parent, the token appended (0: none) and the history
    (parent and token) that timestamps follow.
    """
    B, K = pb.shape
    M1 = tok.shape[1] + 1
    parent = torch.where(active, idx // M1, arange)
    slot = idx % M1
    is_ext = (slot > 0) & active
    m = (slot - 1).clamp(min=0)
    c = torch.where(is_ext, tok.gather(1, m), 0)
    last_p, ptot_p = last.gather(1, parent), ptot.gather(1, parent)
    live = top > NEG_INF  # with fewer than K live candidates, topk also returns dead ones
    new_pb = torch.where(is_ext | ~live, NEG_INF, stay_pb.gather(1, parent))
    ext_pnb = torch.where(c == last_p, pb.gather(1, parent), ptot_p) + y.gather(1, c)
    new_pnb = torch.where(is_ext, ext_pnb, stay_pnb.gather(1, parent)).masked_fill(~live, NEG_INF)
    pb, pnb = torch.where(active, new_pb, pb), torch.where(active, new_pnb, pnb)
    bonus = bonus.gather(1, parent)
    if delta is not None:
        bonus = bonus + torch.where(is_ext, delta.view(B, -1).gather(1, parent * (M1 - 1) + m), 0.0)
    hp = h.gather(1, parent)
    h = torch.where(is_ext, extend_hash(hp, c), hp)
    ph = torch.where(is_ext, hp, ph.gather(1, parent))
    last = torch.where(is_ext, c, last_p)
    took = ~is_ext & switch.gather(1, parent) & active
    hist_parent = torch.where(took, j.gather(1, parent), parent)
    hist_tok = torch.where(took, last, c)
    return pb, pnb, h, ph, last, bonus, parent, c, is_ext, hist_parent, hist_tok, (pnb > pb) & active


def collapse_blank_runs(lp: Tensor, lengths: Tensor, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """Shorten ``lp`` ``(B, T, V)``: every run of frames with log P(blank) ≥ ``threshold`` becomes one
    frame that allows only blank, with the run's summed blank log-probability.

    On such a frame the search can only append blank: every prefix's probability gets the same
    factor and its "ends in a token" mass moves to "ends in blank" (the token's own probability,
    below ``1 - e^threshold``, is taken as zero), so a run is one step. Returns the short
    log-probabilities ``(B, T', V)``, their lengths, and ``src`` ``(B, T')``: each short frame's
    frame in ``lp`` (-1 for a collapsed run).
    """
    B, T, V = lp.shape
    dev = lp.device
    inside = torch.arange(T, device=dev)[None, :] < lengths[:, None]
    skip = (lp[:, :, 0] >= threshold) & inside
    opens = skip & ~torch.nn.functional.pad(skip[:, :-1], (1, 0), value=False)  # a run's first frame
    real = inside & ~skip
    pos = (real | opens).long().cumsum(1) - 1  # each frame's short frame (a run's frames share one)
    new_lengths = (real | opens).sum(1)
    Tn = int(new_lengths.max()) if B else 0
    out = torch.full((B, Tn, V), NEG_INF, device=dev)
    b, t = real.nonzero(as_tuple=True)
    out[b, pos[b, t]] = lp[b, t]
    src = torch.full((B, Tn), -1, dtype=torch.long, device=dev)
    src[b, pos[b, t]] = t
    run_blank = torch.zeros(B, Tn, device=dev).scatter_add_(
        1, pos.clamp(min=0), torch.where(skip, lp[:, :, 0], 0.0)
    )
    is_run = (src < 0) & (torch.arange(Tn, device=dev)[None, :] < new_lengths[:, None])
    out[:, :, 0] = torch.where(is_run, run_blank, out[:, :, 0])
    return out, new_lengths, src


def prefix_beam_search(
    log_probs: Tensor,
    lengths: Tensor,
    beam_size: int,
    nbest: int = 1,
    fusion: Fusion | None = None,
    lexicon: LexiconTrie | None = None,
    space_id: int = -1,
    token_topk: int = 0,
    token_min_logp: float | None = None,
    beam_threshold: float | None = None,
    compile: bool = False,
    blank_skip_logp: float | None = None,
    engine: str = "auto",
) -> SearchResult:
    """CTC prefix beam search over a batch: ``log_probs`` ``(B, T, V)`` (log-softmax), ``lengths`` ``(B,)``.

    One Python iteration per frame: :func:`expand`, the fusion's and lexicon's scores, top-K,
    :func:`select`; everything inside is ``(B, K, ·)`` tensor algebra. ``engine`` ``"native"``
    (or ``"auto"`` on CPU tensors) runs the same search compiled (:mod:`speechkit.decoders.native`)
    unless the LM is one it does not know (only ``ngram``).
    """
    native.check_search_args(log_probs, lengths, beam_size, nbest, token_topk)
    dev = log_probs.device
    B, T, V = log_probs.shape
    K = beam_size
    fusion = fusion or Fusion(0.0, space_id)
    lengths = lengths.to(dev)
    if lexicon is not None:
        lexicon.to(dev)
    T = int(lengths.max()) if B else 0
    lp_all = log_probs[:, :T].float()
    src = None
    if blank_skip_logp is not None and T:
        T_full = T
        lp_all, lengths, src = collapse_blank_runs(lp_all, lengths, blank_skip_logp)
        B, T, V = lp_all.shape
    fu = native_fusion(engine, dev, fusion, lexicon, space_id, compile)
    if fu is not None:
        scores, ctc, emitted, nonblank = (
            x.to(dev)
            for x in native.search(lp_all, lengths, K, nbest, token_topk, token_min_logp, beam_threshold, fu)
        )
        if src is not None:
            emitted, nonblank = _uncollapse(src, T_full, emitted, nonblank)
        return SearchResult(scores, ctc, emitted, nonblank)
    expand_, select_ = _compiled() if compile else (expand, select)

    zeros_l = torch.zeros(B, K, dtype=torch.long, device=dev)
    pb = torch.full((B, K), NEG_INF, device=dev)
    pb[:, 0] = 0.0  # one hypothesis, the empty prefix: all mass on "ended in blank"
    pnb = torch.full((B, K), NEG_INF, device=dev)
    h, ph, last = zeros_l.clone(), zeros_l.clone(), zeros_l.clone()  # prefix hash, parent's hash, last token
    bonus = torch.zeros(B, K, device=dev)  # alpha · log P_lm + beta · units so far
    in_word = torch.zeros(B, K, dtype=torch.bool, device=dev)  # current word non-empty
    word_hash, node = zeros_l.clone(), zeros_l.clone()  # current word's hash; its lexicon trie node
    state = fusion.start(B * K, dev)
    plain = type(fusion) is Fusion and fusion.beta == 0.0 and lexicon is None
    track_words = not plain
    flat = (torch.arange(B, device=dev) * K)[:, None]
    arangeK = torch.arange(K, device=dev).expand(B, K)

    # Each frame's candidate tokens. Without LM, lexicon or bonus, no token ranked below K + 1
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
    actives = (torch.arange(T, device=dev)[None, :] < lengths[:, None]).T[:, :, None]  # (T, B, 1)
    bps, ems, nbs = [], [], []

    for t in range(T):
        y, y_tok, tok, active = lp_all[:, t], y_toks[:, t], toks[:, t], actives[t]
        cand, ptot, stay_pb, stay_pnb, switch, j = expand_(
            pb, pnb, h, ph, last, bonus, y, y_tok, tok, poss[:, t]
        )
        delta = None
        if not plain:
            delta = fusion.extend(state, in_word, word_hash, tok)  # (B, K, M) or None
            if delta is not None:
                cand[:, :, 1:] += delta
            if lexicon is not None:
                cand[:, :, 1:] += lexicon.penalty(node, tok)
        cand = cand.view(B, -1)
        if beam_threshold is not None:
            best = cand.max(1, keepdim=True).values
            cand = cand.masked_fill(cand < best - beam_threshold, NEG_INF)
        top, idx = cand.topk(K, dim=1)
        pb, pnb, h, ph, last, bonus, parent, c, is_ext, hist_parent, hist_tok, nb = select_(
            top,
            idx,
            active,
            tok,
            y,
            pb,
            pnb,
            ptot,
            stay_pb,
            stay_pnb,
            last,
            h,
            ph,
            bonus,
            delta,
            switch,
            j,
            arangeK,
        )
        if track_words:
            inw, wh = in_word.gather(1, parent), word_hash.gather(1, parent)
            state = fusion.advance(state, (parent + flat).view(-1), c, is_ext, inw, wh)
            is_space = c == space_id
            in_word = torch.where(is_ext, ~is_space, inw)
            word_hash = torch.where(is_ext, torch.where(is_space, 0, extend_hash(wh, c)), wh)
            if lexicon is not None:
                np_ = node.gather(1, parent)
                node = torch.where(is_ext, lexicon.step(np_, c, is_space), np_)
        bps.append(hist_parent)
        ems.append(hist_tok)
        nbs.append(nb)

    # finish: last word, end of sentence, lexicon completeness; then rank
    ctc = torch.logaddexp(pb, pnb)
    total = ctc + bonus + fusion.finish(state, in_word, word_hash)
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
    if src is not None:
        emitted, nonblank = _uncollapse(src, T_full, emitted, nonblank)
    return SearchResult(scores, ctc.gather(1, best), emitted, nonblank)


def _uncollapse(src: Tensor, T_full: int, emitted: Tensor, nonblank: Tensor) -> tuple[Tensor, Tensor]:
    """Per-frame paths ``(T', B, N)`` of collapsed frames back on the input's ``T_full`` frames.

    A collapsed run of blanks emits nothing and ends every token (``src`` from :func:`collapse_blank_runs`).
    """
    _, B, N = emitted.shape
    b, t = (src >= 0).nonzero(as_tuple=True)
    em_full = torch.zeros(T_full, B, N, dtype=torch.long, device=emitted.device)
    nb_full = torch.zeros(T_full, B, N, dtype=torch.bool, device=emitted.device)
    em_full[src[b, t], b] = emitted[t, b]
    nb_full[src[b, t], b] = nonblank[t, b]
    return em_full, nb_full


ENGINES = ("auto", "torch", "native")


def native_fusion(
    engine: str,
    device: torch.device,
    fusion: Fusion | None,
    lexicon: LexiconTrie | None,
    space_id: int,
    compile: bool = False,
) -> tuple | None:
    """The fusion as the compiled CPU engine takes it when the search runs there, else None.

    ``engine="native"`` where it cannot (an LM other than ``ngram``) is an error.
    """
    if engine not in ENGINES:
        raise ValueError(f"decoder.engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "torch" or (engine == "auto" and (device.type != "cpu" or compile)):
        return None
    fu = native.fusion_args(fusion, lexicon, space_id)
    if fu is None and engine == "native":
        raise ValueError(
            "decoder.engine=native takes no LM or the ngram LM; use decoder.engine=auto "
            "(the torch search for other LMs)"
        )
    return fu


# --------------------------------------------------------------------------- the plugin


def rescore_exact(
    log_probs: Tensor, lengths: Tensor, res: SearchResult, native_cpu: bool = False
) -> SearchResult:
    """Replace each hypothesis' CTC part by the exact sum over all its alignments, and re-rank.

    The search's CTC score misses the alignments of a prefix that was pruned at some frame and
    extended again later; ``ctc_loss`` (one batched forward pass over the n-best) restores them,
    or, with ``native_cpu`` and CPU tensors, the compiled forward algorithm of ``native.py``.
    """
    T, B, N = res.emitted.shape
    if T == 0 or B == 0:
        return res
    if native_cpu and log_probs.device.type == "cpu":
        exact = native.ctc_logprob(log_probs, lengths, res.emitted, res.ctc)
        return _rerank(res, exact)
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


_COMPILED: tuple | None = None


def _compiled() -> tuple:
    """:func:`expand` and :func:`select` compiled by torch.compile (fused kernels; compiled once)."""
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = (torch.compile(expand, dynamic=True), torch.compile(select, dynamic=True))
    return _COMPILED


@register("decoder", "beam", BeamConfig)
class BeamDecoder(Decoder):
    """CTC prefix beam search, batched on CPU or GPU, with optional LM fusion and lexicon."""

    def __init__(self, cfg: BeamConfig, tokens: list[str], frame_shift_s: float | None = None) -> None:
        super().__init__(tokens, frame_shift_s)
        if cfg.beam_size < 1 or cfg.nbest < 1:
            raise ValueError(
                f"beam decoder: beam_size and nbest must be ≥ 1, got {cfg.beam_size}, {cfg.nbest}"
            )
        if len(self.tokens) < 2:
            raise ValueError(
                f"beam decoder: tokens must hold the blank and at least one symbol, got {tokens!r}"
            )
        self.cfg = cfg
        self.space_id = self.tokens.index(cfg.space) if cfg.space in self.tokens[1:] else -1
        self.lm = build_lm(cfg.lm)
        self.lexicon = LexiconTrie.from_file(cfg.lexicon, self.tokens, cfg.space) if cfg.lexicon else None
        if self.lm is None:
            self.fusion = Fusion(cfg.beta, self.space_id)
        elif self.lm.unit == "char":
            self.fusion = CharFusion(self.lm, self.tokens, cfg.alpha, cfg.beta, self.space_id)
        elif self.lm.unit == "word":
            self.fusion = WordFusion(self.lm, self.tokens, cfg.alpha, cfg.beta, self.space_id)
        else:
            raise ValueError(f"decoder.lm: unit must be 'char' or 'word', not {self.lm.unit!r}")
        native_fusion(
            cfg.engine, torch.device("cpu"), self.fusion, self.lexicon, self.space_id
        )  # refuse early

    @torch.no_grad()
    def search(self, log_probs: Tensor, lengths: Tensor) -> SearchResult:
        c = self.cfg
        return prefix_beam_search(
            log_probs,
            lengths,
            beam_size=c.beam_size,
            nbest=c.nbest,
            fusion=self.fusion,
            lexicon=self.lexicon,
            space_id=self.space_id,
            token_topk=c.token_topk,
            token_min_logp=c.token_min_logp,
            beam_threshold=c.beam_threshold,
            compile=c.compile,
            blank_skip_logp=c.blank_skip_logp,
            engine=c.engine,
        )

    @torch.no_grad()
    def __call__(self, log_probs: Tensor, lengths: Tensor) -> list[list[Hypothesis]]:
        """``log_probs`` ``(B, T, V)``, ``lengths`` ``(B,)`` → per utterance, its n-best list, best first."""
        log_probs, lengths = self.check_inputs(log_probs, lengths)
        res = self.search(log_probs, lengths)
        if self.cfg.exact_scores:
            res = rescore_exact(log_probs, lengths, res, native_cpu=self.cfg.engine != "torch")
        scores = res.scores.cpu().tolist()
        toks, starts, ends, offsets = native.paths(res.emitted, res.nonblank)
        N = res.emitted.shape[2]
        out = []
        for b, row in enumerate(scores):
            hyps = []
            for n, score in enumerate(row):
                if score == NEG_INF and hyps:
                    break
                lo, hi = offsets[b * N + n], offsets[b * N + n + 1]
                hyps.append(self._hypothesis(score, toks[lo:hi], starts[lo:hi], ends[lo:hi]))
            out.append(hyps)
        return out

    def _hypothesis(self, score: float, toks: list[int], starts: list[int], ends: list[int]) -> Hypothesis:
        text = tokens_to_text(toks, self.tokens)
        words = word_spans(toks, starts, self.tokens, self.frame_shift_s, ends, self.cfg.space)
        return Hypothesis(text, score, toks, starts, words)

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

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from speechkit.decoders.base import BLANK, Decoder, Hypothesis, word_spans
from speechkit.lm.base import LanguageModel
from speechkit.registry import build, register

log = logging.getLogger(__name__)

NEG_INF = float("-inf")


@dataclass
class BeamConfig:
    beam_size: int = 16  # hypotheses kept per utterance
    nbest: int = 1  # hypotheses returned per utterance
    token_topk: int = 0  # extend by only the k most likely tokens of a frame (0: all)
    token_min_logp: float | None = None  # extend by no token below this log-probability (None: off)
    beam_threshold: float | None = None  # drop hypotheses scoring this far below the best (None: off)
    alpha: float = 0.5  # LM weight (natural-log LM probabilities)
    beta: float = 0.0  # bonus per unit: per character with a char LM, else per word
    lm: Any = None  # an `lm` plugin config (+decoder/lm=ngram decoder.lm.path=…), its name, or an LM
    lexicon: str | None = None  # word list (first field of each line): the only words allowed
    space: str = " "  # the word separator token
    exact_scores: bool = True  # rescore the n-best by the full CTC sum (ctc_loss), then re-rank
    compile: bool = False  # torch.compile the frame step (fused kernels; compiles on first use)


# --------------------------------------------------------------------------- hashing


_HASH_MUL = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64: odd, well mixed


def extend_hash(h: Tensor, c: Tensor) -> Tensor:
    """Hash of a sequence extended by token ``c``: ``h · A + c + 1`` in wrapping 64-bit arithmetic.

    Equal prefixes get equal hashes; distinct prefixes collide with probability about 2**-64.
    """
    return h * _HASH_MUL + (c + 1)


def hash_sequences(seqs: list[list[int]]) -> Tensor:
    """``(len(seqs),)`` hashes of token sequences, the same as repeated :func:`extend_hash` from 0."""
    n, L = len(seqs), max((len(s) for s in seqs), default=0)
    ids = torch.full((n, L), -1, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    h = torch.zeros(n, dtype=torch.long)
    for j in range(L):
        h = torch.where(ids[:, j] >= 0, extend_hash(h, ids[:, j]), h)
    return h


# --------------------------------------------------------------------------- lexicon


class LexiconTrie:
    """Prefix trie of allowed words over token ids, as tensors: ``child[node, token]`` (-1: none).

    Node 0 is the root (no letters of the current word yet); ``is_word[node]`` marks complete
    words. A hypothesis may add a letter only along an edge, and the separator only after a
    complete word.
    """

    def __init__(self, words: list[list[int]], vocab_size: int, space_id: int = -1) -> None:
        self.space_id = space_id
        children: list[dict[int, int]] = [{}]
        terminal = [False]
        for w in words:
            node = 0
            for c in w:
                nxt = children[node].get(c)
                if nxt is None:
                    nxt = children[node][c] = len(children)
                    children.append({})
                    terminal.append(False)
                node = nxt
            terminal[node] = node != 0
        self.child = torch.full((len(children), vocab_size), -1, dtype=torch.long)
        for node, ch in enumerate(children):
            for c, nxt in ch.items():
                self.child[node, c] = nxt
        self.is_word = torch.tensor(terminal, dtype=torch.bool)
        self.num_words = sum(terminal)

    @classmethod
    def from_file(cls, path: str | Path, tokens: list[str], space: str = " ") -> LexiconTrie:
        """Words from ``path`` (the first field of each line), spelt with ``tokens`` (one per character)."""
        stoi = {t: i for i, t in enumerate(tokens) if i != BLANK}
        words, skipped = [], []
        with Path(path).open(encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if not fields:
                    continue
                w = fields[0]
                if all(ch in stoi and ch != space for ch in w):
                    words.append([stoi[ch] for ch in w])
                else:
                    skipped.append(w)
        if skipped:
            log.warning(
                "lexicon %s: %d words use characters outside the tokens, e.g. %r",
                path,
                len(skipped),
                skipped[:3],
            )
        if not words:
            raise ValueError(f"lexicon {path}: no word can be spelt with the decoder's tokens")
        return cls(words, len(tokens), tokens.index(space) if space in tokens[1:] else -1)

    def to(self, device: torch.device) -> LexiconTrie:
        self.child, self.is_word = self.child.to(device), self.is_word.to(device)
        # log-domain mask: 0 where a token may follow a node, -inf where not (the separator may
        # follow a complete word only)
        ok = self.child >= 0
        if self.space_id > 0:
            ok[:, self.space_id] = self.is_word
        self._penalty = torch.zeros(ok.shape, device=device).masked_fill_(~ok, NEG_INF)
        return self

    def penalty(self, node: Tensor, tok: Tensor) -> Tensor:
        """``(B, K, M)``: 0 where hypothesis ``(b, k)`` at trie ``node`` may take token ``tok[b, m]``, else -inf."""
        return torch.take(self._penalty, node[:, :, None] * self.child.shape[1] + tok[:, None, :])

    def step(self, node: Tensor, c: Tensor, is_space: Tensor) -> Tensor:
        """The trie node after appending token ``c`` (the root after the separator)."""
        nxt = torch.take(self.child, node * self.child.shape[1] + c).clamp_(min=0)
        return torch.where(is_space, 0, nxt)


# --------------------------------------------------------------------------- fusion (LM + bonus)


class Fusion:
    """Scores added to the CTC log-probability: ``beta`` per completed word, no LM.

    A fusion keeps per-hypothesis state (flattened to ``N = batch × beam``) and answers three
    questions, all batched: what extending each hypothesis by each candidate token adds
    (:meth:`extend`), how the state follows the chosen extensions (:meth:`advance`), and
    what finishing each hypothesis adds (:meth:`finish`).
    """

    def __init__(self, beta: float, space_id: int) -> None:
        self.beta, self.space_id = beta, space_id

    def start(self, n: int, device: torch.device) -> Any:
        return None

    def extend(self, state: Any, in_word: Tensor, word_hash: Tensor, tok: Tensor) -> Tensor | None:
        """``(B, K, M)`` score added by extending hypothesis ``(b, k)`` with token ``tok[b, m]`` (None: nothing)."""
        if self.beta == 0.0:
            return None
        ends_word = (tok[:, None, :] == self.space_id) & in_word[:, :, None]
        return ends_word * self.beta

    def advance(
        self, state: Any, parent: Tensor, tok: Tensor, is_ext: Tensor, in_word: Tensor, word_hash: Tensor
    ) -> Any:
        """State of the new hypotheses: parent ``parent`` (flat ``(N,)``) extended by ``tok`` where ``is_ext``.

        ``in_word`` and ``word_hash`` are the *parent's* current-word flags and hashes.
        """
        return state

    def finish(self, state: Any, in_word: Tensor, word_hash: Tensor) -> Tensor:
        """``(B, K)`` score added when each hypothesis ends (its last word completes)."""
        return in_word * self.beta


class CharFusion(Fusion):
    """A character LM: ``alpha · log P_lm(c | history) + beta`` for every token ``c`` emitted."""

    def __init__(
        self, lm: LanguageModel, tokens: list[str], alpha: float, beta: float, space_id: int
    ) -> None:
        super().__init__(beta, space_id)
        self.lm, self.alpha = lm, alpha
        self.lm_ids = lm.index(tokens)  # (V,) LM unit of each decoder token

    def start(self, n: int, device: torch.device) -> Any:
        self.lm_ids = self.lm_ids.to(device)
        return self.lm.start(n, device)

    def extend(self, state: Any, in_word: Tensor, word_hash: Tensor, tok: Tensor) -> Tensor:
        B, K = in_word.shape
        ids = torch.take(self.lm_ids, tok)[:, None, :].expand(B, K, -1).reshape(B * K, -1)
        return self.alpha * self.lm.logprobs(state, ids).view(B, K, -1) + self.beta

    def advance(self, state, parent, tok, is_ext, in_word, word_hash):
        state = self.lm.select(state, parent)
        return self.lm.advance(state, torch.take(self.lm_ids, tok.reshape(-1)), is_ext.reshape(-1))

    def finish(self, state: Any, in_word: Tensor, word_hash: Tensor) -> Tensor:
        return self.alpha * self.lm.end_logprobs(state).view(in_word.shape)


class WordFusion(Fusion):
    """A word LM: ``alpha · log P_lm(word | history) + beta`` each time a word is completed.

    Words are recognised by the hash of their spelling (see :func:`hash_sequences`); a word
    the LM does not know scores as the LM's ``<unk>``.
    """

    def __init__(
        self, lm: LanguageModel, tokens: list[str], alpha: float, beta: float, space_id: int
    ) -> None:
        super().__init__(beta, space_id)
        self.lm, self.alpha = lm, alpha
        stoi = {t: i for i, t in enumerate(tokens) if i != BLANK and i != space_id}
        spelt = [(w, [stoi.get(ch, -1) for ch in w]) for w in lm.vocab if w not in ("<s>", "</s>", "<unk>")]
        spelt = [(w, s) for w, s in spelt if s and -1 not in s]
        hashes = hash_sequences([s for _, s in spelt])
        ids = lm.index([w for w, _ in spelt])
        order = hashes.argsort()
        self.hashes, self.ids = hashes[order], ids[order]
        self.unk_id = lm.index(["<unk>"])[0]

    def word_ids(self, word_hash: Tensor) -> Tensor:
        """LM id of each current word (by the hash of its spelling), ``<unk>`` if unknown."""
        pos = torch.searchsorted(self.hashes, word_hash).clamp_(max=self.hashes.numel() - 1)
        return torch.where(torch.take(self.hashes, pos) == word_hash, torch.take(self.ids, pos), self.unk_id)

    def start(self, n: int, device: torch.device) -> Any:
        self.hashes, self.ids, self.unk_id = (
            self.hashes.to(device),
            self.ids.to(device),
            self.unk_id.to(device),
        )
        return self.lm.start(n, device)

    def _word_score(self, state: Any, ids: Tensor) -> Tensor:
        return self.lm.logprobs(state, ids[:, None])[:, 0]

    def extend(self, state: Any, in_word: Tensor, word_hash: Tensor, tok: Tensor) -> Tensor:
        self._ids = self.word_ids(word_hash.reshape(-1))  # (N,) kept for advance() of this frame
        score = self.alpha * self._word_score(state, self._ids).view(in_word.shape) + self.beta
        return (tok[:, None, :] == self.space_id) * torch.where(in_word, score, 0.0)[:, :, None]

    def advance(self, state, parent, tok, is_ext, in_word, word_hash):
        state = self.lm.select(state, parent)
        ends = is_ext & (tok == self.space_id) & in_word
        return self.lm.advance(state, self._ids.index_select(0, parent), ends.reshape(-1))

    def finish(self, state: Any, in_word: Tensor, word_hash: Tensor) -> Tensor:
        ids = self.word_ids(word_hash.reshape(-1))
        score = self.alpha * self._word_score(state, ids).view(in_word.shape) + self.beta
        last = torch.where(in_word, score, 0.0)
        state = self.lm.advance(state, ids, in_word.reshape(-1))
        return last + self.alpha * self.lm.end_logprobs(state).view(in_word.shape)


# --------------------------------------------------------------------------- the search core


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
) -> SearchResult:
    """CTC prefix beam search over a batch: ``log_probs`` ``(B, T, V)`` (log-softmax), ``lengths`` ``(B,)``.

    One Python iteration per frame: :func:`expand`, the fusion's and lexicon's scores, top-K,
    :func:`select`; everything inside is ``(B, K, ·)`` tensor algebra.
    """
    dev = log_probs.device
    B, T, V = log_probs.shape
    K = beam_size
    fusion = fusion or Fusion(0.0, space_id)
    lengths = lengths.to(dev)
    if lexicon is not None:
        lexicon.to(dev)
    T = int(lengths.max()) if B else 0
    lp_all = log_probs[:, :T].float()
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
    return SearchResult(scores, ctc.gather(1, best), emitted, nonblank)


# --------------------------------------------------------------------------- the plugin


def rescore_exact(log_probs: Tensor, lengths: Tensor, res: SearchResult) -> SearchResult:
    """Replace each hypothesis' CTC part by the exact sum over all its alignments, and re-rank.

    The search's CTC score misses the alignments of a prefix that was pruned at some frame and
    extended again later; ``ctc_loss`` (one batched forward pass over the n-best) restores them.
    """
    T, B, N = res.emitted.shape
    if T == 0 or B == 0:
        return res
    em = res.emitted.permute(1, 2, 0).reshape(B * N, T)
    target_lengths = (em > 0).sum(1)
    order = (em == 0).to(torch.uint8).argsort(dim=1, stable=True)  # emitted tokens first, in order
    targets = em.gather(1, order)[:, : max(int(target_lengths.max()), 1)]
    lp = log_probs[:, :T].float().repeat_interleave(N, 0).transpose(0, 1)  # (T, B·N, V)
    nll = torch.nn.functional.ctc_loss(
        lp, targets, lengths.to(lp.device).repeat_interleave(N), target_lengths, blank=BLANK, reduction="none"
    )
    exact = torch.where(res.scores > NEG_INF, -nll.view(B, N), NEG_INF)
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


def build_lm(spec: Any) -> LanguageModel | None:
    """An LM from a config node / dict with a ``name``, a plugin name, or an LM object (returned as is)."""
    if spec is None or spec == "" or spec == "none":
        return None
    if hasattr(spec, "logprobs") and hasattr(spec, "advance"):
        return spec
    if isinstance(spec, str):
        return build("lm", spec)
    if dataclasses.is_dataclass(spec):
        spec = dataclasses.asdict(spec)
    elif not isinstance(spec, dict):
        from omegaconf import OmegaConf

        spec = OmegaConf.to_container(spec, resolve=True)
    if "name" not in spec:
        raise ValueError(f"decoder.lm needs a 'name' (an lm plugin, e.g. decoder.lm=ngram); got {spec!r}")
    return build("lm", **spec)


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
        )

    @torch.no_grad()
    def __call__(self, log_probs: Tensor, lengths: Tensor) -> list[list[Hypothesis]]:
        """``log_probs`` ``(B, T, V)``, ``lengths`` ``(B,)`` → per utterance, its n-best list, best first."""
        res = self.search(log_probs, lengths)
        if self.cfg.exact_scores:
            res = rescore_exact(log_probs, lengths, res)
        scores = res.scores.cpu().tolist()
        emitted = res.emitted.permute(1, 2, 0).cpu().numpy()  # (B, N, T)
        nonblank = res.nonblank.permute(1, 2, 0).cpu().numpy()
        out = []
        for b, row in enumerate(scores):
            hyps = []
            for n, score in enumerate(row):
                if score == NEG_INF and hyps:
                    break
                hyps.append(self._hypothesis(score, emitted[b, n], nonblank[b, n]))
            out.append(hyps)
        return out

    def _hypothesis(self, score: float, emitted: np.ndarray, nonblank: np.ndarray) -> Hypothesis:
        frames = np.flatnonzero(emitted)
        toks = emitted[frames].tolist()
        # a token ends at the last frame before the next token where the path is still on it
        on = np.flatnonzero(nonblank)
        nxt = np.append(frames[1:], len(emitted))
        ends = on[np.searchsorted(on, nxt) - 1] if len(on) else frames
        frames_l = frames.tolist()
        text = "".join(self.tokens[t] for t in toks)
        words = word_spans(toks, frames_l, self.tokens, self.frame_shift_s, ends.tolist(), self.cfg.space)
        return Hypothesis(text, score, toks, frames_l, words)

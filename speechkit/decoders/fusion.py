"""Score fusion for the beam search: LM log-probabilities and insertion bonuses per character or word.

The search tracks words (lexicon.py's :class:`~speechkit.decoders.lexicon.Spelling`: a word is complete
when the next token starts a new one, a separator for characters, ``" the"`` for subwords, or when
the utterance ends) and tells a fusion where they end; a fusion scores them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from speechkit.decoders.lexicon import Spelling, hash_sequences
from speechkit.lm.base import LanguageModel
from speechkit.lm.ngram import EOS, NgramLM
from speechkit.registry import as_params, build, registry

log = logging.getLogger(__name__)

NEG_INF = float("-inf")


# --------------------------------------------------------------------------- for the compiled search

NO_LM, CHAR_LM, WORD_LM = 0, 1, 2  # NativeFusion.kind


class NativeNgram(NamedTuple):
    """An ``ngram`` LM's tables as NumPy arrays (``NgramLM.tables``; dense ones 0 × 0 when absent)."""

    dense_logp: np.ndarray  # (S, U) float32
    dense_next: np.ndarray  # (S, U) int64
    keys: np.ndarray  # (E,) int64, sorted: context node · U + unit
    logp: np.ndarray  # (E,) float32
    child: np.ndarray  # (E,) int64
    bow: np.ndarray  # (S,) float32
    suffix: np.ndarray  # (S,) int64
    order: int
    num_units: int


_EMPTY_1I = np.zeros(0, np.int64)
_EMPTY_1F = np.zeros(0, np.float32)
_NO_NGRAM = NativeNgram(
    np.zeros((0, 0), np.float32),
    np.zeros((0, 0), np.int64),
    _EMPTY_1I,
    _EMPTY_1F,
    _EMPTY_1I,
    _EMPTY_1F,
    _EMPTY_1I,
    0,
    1,
)


class NativeFusion(NamedTuple):
    """A fusion as the compiled search reads it, built by the fusion's ``to_native``."""

    kind: int  # NO_LM (beta per completed word), CHAR_LM or WORD_LM
    beta: float
    alpha: float = 0.0
    lm: NativeNgram = _NO_NGRAM
    lm_max: float = 0.0  # the LM's largest log-probability: bounds what fusion adds to an extension
    bos: int = 0  # the LM state at the start
    eos: int = 0  # the LM id of </s>
    tok_unit: np.ndarray = _EMPTY_1I  # (V,) int64, char LM: each token's LM unit
    word_hashes: np.ndarray = _EMPTY_1I  # (W,) int64, word LM: the spelling hashes of its words, sorted
    word_ids: np.ndarray = _EMPTY_1I  # (W,) int64: their LM ids
    unk: int = 0  # word LM: the id of <unk>


def _native_ngram(lm: LanguageModel) -> NativeNgram | None:
    """An ``ngram`` LM's tables for the compiled search; None for any other LM (a subclass may score differently)."""
    if type(lm) is not NgramLM:
        return None
    t = lm.tables()
    dense = t.dense_logp is not None
    return NativeNgram(
        t.dense_logp.numpy() if dense else _NO_NGRAM.dense_logp,
        t.dense_next.numpy() if dense else _NO_NGRAM.dense_next,
        t.keys.numpy(),
        t.logp.numpy(),
        t.child.numpy(),
        t.bow.numpy(),
        t.suffix.numpy(),
        t.order,
        t.num_units,
    )


# --------------------------------------------------------------------------- fusion (LM + bonus)


def _native_lm_fusion(fusion: Any, kind: int, **extra: Any) -> NativeFusion | None:
    """The compiled form of an n-gram LM fusion (None when its LM is not an n-gram the engine reads)."""
    lm = _native_ngram(fusion.lm)
    if lm is None:
        return None
    return NativeFusion(
        kind,
        float(fusion.beta),
        alpha=float(fusion.alpha),
        lm=lm,
        lm_max=fusion.lm.max_logprob,
        bos=int(fusion.lm.bos_state),
        eos=fusion.lm.stoi[EOS],
        **extra,
    )


class Fusion:
    """Scores added to the CTC log-probability: ``beta`` per completed word, no LM.

    A fusion keeps per-hypothesis state (flattened to ``N = batch × beam``) and answers three
    questions, all batched: what extending each hypothesis by each candidate token adds
    (:meth:`extend`), how the state follows the chosen extensions (:meth:`advance`), and
    what finishing each hypothesis adds (:meth:`finish`). The search says where words end (its
    :class:`~speechkit.decoders.lexicon.Spelling`).
    """

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def start(self, n: int, device: torch.device) -> Any:
        return None

    def extend(
        self, state: Any, in_word: Tensor, word_hash: Tensor, tok: Tensor, ends: Tensor
    ) -> Tensor | None:
        """``(B, K, M)`` score added by extending hypothesis ``(b, k)`` with token ``tok[b, m]`` (None: nothing).

        ``in_word``, ``word_hash`` ``(B, K)``: each hypothesis' current word (non-empty; hash of its
        spelling); ``ends`` ``(B, K, M)``: the extension completes that word.
        """
        if self.beta == 0.0:
            return None
        return ends * self.beta

    def advance(
        self, state: Any, parent: Tensor, tok: Tensor, is_ext: Tensor, in_word: Tensor, word_hash: Tensor,
        ends: Tensor,
    ) -> Any:  # fmt: skip
        """State of the new hypotheses: parent ``parent`` (flat ``(N,)``) extended by ``tok`` where ``is_ext``.

        ``in_word`` and ``word_hash`` are the *parent's* current-word flags and hashes; ``ends``: the
        extension completed that word.
        """
        return state

    def finish(self, state: Any, in_word: Tensor, word_hash: Tensor) -> Tensor:
        """``(B, K)`` score added when each hypothesis ends (its last word completes)."""
        return in_word * self.beta

    def to_native(self) -> NativeFusion | None:
        """This fusion as the compiled search takes it; None where the search cannot run it (a subclass)."""
        if type(self) is not Fusion:  # a subclass may score differently
            return None
        return NativeFusion(NO_LM, float(self.beta))


class CharFusion(Fusion):
    """A character LM: ``alpha · log P_lm(c | history) + beta`` for every token ``c`` emitted (one
    character each: ``BeamDecoder`` refuses it for subwords)."""

    def __init__(self, lm: LanguageModel, tokens: list[str], alpha: float, beta: float) -> None:
        super().__init__(beta)
        self.lm, self.alpha = lm, alpha
        self.lm_ids = lm.index(tokens)  # (V,) LM unit of each decoder token

    def start(self, n: int, device: torch.device) -> Any:
        self.lm_ids = self.lm_ids.to(device)
        return self.lm.start(n, device)

    def extend(self, state: Any, in_word: Tensor, word_hash: Tensor, tok: Tensor, ends: Tensor) -> Tensor:
        B, K = in_word.shape
        ids = torch.take(self.lm_ids, tok)[:, None, :].expand(B, K, -1).reshape(B * K, -1)
        return self.alpha * self.lm.logprobs(state, ids).view(B, K, -1) + self.beta

    def advance(self, state, parent, tok, is_ext, in_word, word_hash, ends):
        state = self.lm.select(state, parent)
        return self.lm.advance(state, torch.take(self.lm_ids, tok.reshape(-1)), is_ext.reshape(-1))

    def finish(self, state: Any, in_word: Tensor, word_hash: Tensor) -> Tensor:
        return self.alpha * self.lm.end_logprobs(state).view(in_word.shape)

    def to_native(self) -> NativeFusion | None:
        if type(self) is not CharFusion:
            return None
        return _native_lm_fusion(self, CHAR_LM, tok_unit=self.lm_ids.cpu().numpy())


class WordFusion(Fusion):
    """A word LM: ``alpha · log P_lm(word | history) + beta`` each time a word is completed.

    Words are recognised by the hash of their letters (:class:`~speechkit.decoders.lexicon.Spelling`),
    whichever tokens wrote them (``"cat"`` from ``" cat"`` or ``" ca"`` + ``"t"``); a word the LM
    does not know scores as the LM's ``<unk>``.
    """

    def __init__(self, lm: LanguageModel, spelling: Spelling, alpha: float, beta: float) -> None:
        super().__init__(beta)
        self.lm, self.alpha = lm, alpha
        spelt = [(w, spelling.spell(w)) for w in lm.vocab if w not in ("<s>", "</s>", "<unk>")]
        spelt = [(w, s) for w, s in spelt if s is not None]
        if not spelt:  # every word is <unk> (the LM and the decoder share no spelling)
            log.warning("word LM: none of its %d words can be spelt with the decoder's tokens", len(lm.vocab))
            spelt = [("<unk>", [])]  # hash 0, the empty word, which no completed word has
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

    def extend(self, state: Any, in_word: Tensor, word_hash: Tensor, tok: Tensor, ends: Tensor) -> Tensor:
        self._ids = self.word_ids(word_hash.reshape(-1))  # (N,) kept for advance() of this frame
        score = self.alpha * self._word_score(state, self._ids).view(in_word.shape) + self.beta
        return torch.where(ends, score[:, :, None], 0.0)

    def advance(self, state, parent, tok, is_ext, in_word, word_hash, ends):
        state = self.lm.select(state, parent)
        return self.lm.advance(state, self._ids.index_select(0, parent), (is_ext & ends).reshape(-1))

    def finish(self, state: Any, in_word: Tensor, word_hash: Tensor) -> Tensor:
        ids = self.word_ids(word_hash.reshape(-1))
        score = self.alpha * self._word_score(state, ids).view(in_word.shape) + self.beta
        last = torch.where(in_word, score, 0.0)
        state = self.lm.advance(state, ids, in_word.reshape(-1))
        return last + self.alpha * self.lm.end_logprobs(state).view(in_word.shape)

    def to_native(self) -> NativeFusion | None:
        if type(self) is not WordFusion:
            return None
        return _native_lm_fusion(
            self,
            WORD_LM,
            word_hashes=self.hashes.cpu().numpy(),
            word_ids=self.ids.cpu().numpy(),
            unk=int(self.unk_id),
        )


# --------------------------------------------------------------------------- the LM of a decoder config


def build_lm(spec: Any) -> LanguageModel | None:
    """An LM from a config node / dict with a ``name``, a plugin name, or an LM object (returned as is)."""
    if spec is None or spec == "" or spec == "none":
        return None
    if hasattr(spec, "logprobs") and hasattr(spec, "advance"):
        return spec
    if isinstance(spec, str):
        if spec not in registry("lm").names() and (Path(spec).suffix or "/" in spec):  # decoder.lm=lm.arpa
            raise ValueError(
                f"decoder.lm={spec} names an LM plugin, not a file: pass decoder.lm=ngram "
                f"decoder.lm.path={spec} (kenlm for a KenLM binary, char_rnn for a speechkit-train-lm lm.pt)"
            )
        return build("lm", spec)
    params = as_params(spec)  # a DictConfig, dict or dataclass node
    if "name" not in params:
        raise ValueError(f"decoder.lm needs a 'name' (an lm plugin, e.g. decoder.lm=ngram); got {spec!r}")
    return build("lm", params)

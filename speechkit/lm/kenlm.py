"""``kenlm`` LM plugin: a KenLM model (ARPA or binary) behind speechkit's batched LM protocol.

Needs the ``kenlm`` package (``pip install kenlm``; it compiles with a C++ compiler). KenLM
scores one word at a time, so this wrapper keeps a table of distinct KenLM states and a cache
of ``(state, word) → (log-prob, next state)``: the beam's many repeated queries are dictionary
hits, and only new pairs reach KenLM. For ARPA files the ``ngram`` plugin reads the same file
and scores it fully vectorised (also on GPU); use this one for KenLM's binary format.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from speechkit.lm.base import LanguageModel
from speechkit.registry import register

LN10 = math.log(10.0)  # KenLM scores are log10


@dataclass
class KenLMConfig:
    path: str = "???"  # ARPA or KenLM binary file
    unit: str = "word"  # "word", or "char" for a model over space-separated characters
    space_symbol: str = "|"  # the word separator's spelling in a char model
    vocab: str | None = None  # word list (first field a line) for a binary word model; ARPA: its unigrams


@register("lm", "kenlm", KenLMConfig)
class KenLM(LanguageModel):
    """A KenLM model (word or character units) fused through per-state caches."""

    def __init__(self, cfg: KenLMConfig) -> None:
        try:
            import kenlm
        except ImportError as e:
            raise ImportError("the kenlm LM needs the kenlm package: pip install kenlm") from e
        if cfg.unit not in ("char", "word"):
            raise ValueError(f"kenlm lm: unit must be 'char' or 'word', not {cfg.unit!r}")
        self.cfg, self.unit = cfg, cfg.unit
        self.model = kenlm.Model(cfg.path)
        self._kenlm = kenlm
        self.vocab: list[str] = []
        self.stoi: dict[str, int] = {}
        for w in ("<unk>", "<s>", "</s>", *self._words(cfg)):
            self._id(w)
        begin = kenlm.State()
        self.model.BeginSentenceWrite(begin)
        self.states = [begin]  # state id → kenlm.State
        self.state_ids = {begin: 0}
        self.cache: dict[tuple[int, int], tuple[float, int]] = {}

    @staticmethod
    def _words(cfg: KenLMConfig) -> list[str]:
        """The model's words, which a word LM's decoder needs to recognise spelt-out words."""
        if cfg.vocab:
            with open(cfg.vocab, encoding="utf-8") as f:
                return [line.split()[0] for line in f if line.strip()]
        with open(cfg.path, "rb") as f:
            if b"\\data\\" not in f.read(4096):
                if cfg.unit == "word":
                    raise ValueError(f"kenlm lm: {cfg.path} is binary; give its word list as vocab=words.txt")
                return []
        words, in_unigrams = [], False
        with open(cfg.path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line == "\\1-grams:":
                    in_unigrams = True
                elif in_unigrams and line.startswith("\\"):
                    break
                elif in_unigrams and line:
                    words.append(line.split()[1])
        return words

    def _id(self, word: str) -> int:
        if word not in self.stoi:
            self.stoi[word] = len(self.vocab)
            self.vocab.append(word)
        return self.stoi[word]

    def _score(self, state: int, word: int) -> tuple[float, int]:
        key = (state, word)
        hit = self.cache.get(key)
        if hit is None:
            out = self._kenlm.State()
            lp = self.model.BaseScore(self.states[state], self.vocab[word], out) * LN10
            nxt = self.state_ids.get(out)
            if nxt is None:
                nxt = self.state_ids[out] = len(self.states)
                self.states.append(out)
            hit = self.cache[key] = (lp, nxt)
        return hit

    def _lookup(self, state: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
        pairs = torch.stack([state.reshape(-1), ids.reshape(-1)], 1).cpu()
        uniq, inverse = pairs.unique(dim=0, return_inverse=True)
        scored = [self._score(s, w) for s, w in uniq.tolist()]
        lp = torch.tensor([x[0] for x in scored], dtype=torch.float32)[inverse]
        nxt = torch.tensor([x[1] for x in scored], dtype=torch.long)[inverse]
        return lp.view(ids.shape).to(ids.device), nxt.view(ids.shape).to(ids.device)

    def index(self, symbols: Sequence[str]) -> Tensor:
        if self.unit == "char":
            symbols = [self.cfg.space_symbol if s == " " else s for s in symbols]
        # KenLM maps unknown words to <unk> itself; ids here only name the spelling
        return torch.tensor([self._id(s) for s in symbols], dtype=torch.long)

    def start(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.zeros(n, dtype=torch.long, device=device)

    def logprobs(self, state: Tensor, ids: Tensor) -> Tensor:
        return self._lookup(state[:, None].expand_as(ids), ids)[0]

    def end_logprobs(self, state: Tensor) -> Tensor:
        return self.logprobs(state, torch.full_like(state, self.stoi["</s>"])[:, None])[:, 0]

    def select(self, state: Tensor, index: Tensor) -> Tensor:
        return state[index]

    def advance(self, state: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        return torch.where(mask, self._lookup(state, ids)[1], state)

"""Prefix hashing (to merge equal label prefixes) and the lexicon trie that keeps words in a word list."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from speechkit.decoders.base import BLANK

log = logging.getLogger(__name__)

NEG_INF = float("-inf")
HASH_MUL = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64: odd, well mixed


def extend_hash(h: Tensor, c: Tensor) -> Tensor:
    """Hash of a sequence extended by token ``c``: ``h · A + c + 1`` in wrapping 64-bit arithmetic.

    Equal prefixes get equal hashes; distinct prefixes collide with probability about 2**-64.
    """
    return h * HASH_MUL + (c + 1)


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


class NativeLexicon(NamedTuple):
    """A lexicon trie as the compiled search reads it (:meth:`LexiconTrie.to_native`; empty: no lexicon)."""

    child: np.ndarray  # (nodes, V) int64: the node after each token (-1: none)
    is_word: np.ndarray  # (nodes,) bool: a complete word ends here
    allowed_ptr: np.ndarray  # (nodes + 1,) int64: where each node's tokens start in allowed_tok
    allowed_tok: np.ndarray  # int64: the tokens each node allows (its letters; the separator after a word)


NO_LEXICON = NativeLexicon(
    np.zeros((0, 0), np.int64), np.zeros(0, np.bool_), np.zeros(0, np.int64), np.zeros(0, np.int64)
)


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
        # allowed[node, token]: a token may follow a node along an edge; the separator after a
        # complete word only. Also as lists per node (CSR, row-major) for the compiled search.
        self.allowed = self.child >= 0
        if 0 < space_id < vocab_size:
            self.allowed[:, space_id] = self.is_word
        self.allowed_ptr = torch.cat([torch.zeros(1, dtype=torch.long), self.allowed.sum(1).cumsum(0)])
        self.allowed_tok = self.allowed.nonzero()[:, 1]

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
        # log-domain mask: 0 where a token may follow a node, -inf where not
        self._penalty = torch.zeros(self.allowed.shape, device=device).masked_fill_(
            ~self.allowed.to(device), NEG_INF
        )
        return self

    def penalty(self, node: Tensor, tok: Tensor) -> Tensor:
        """``(B, K, M)``: 0 where hypothesis ``(b, k)`` at trie ``node`` may take token ``tok[b, m]``, else -inf."""
        return torch.take(self._penalty, node[:, :, None] * self.child.shape[1] + tok[:, None, :])

    def step(self, node: Tensor, c: Tensor, is_space: Tensor) -> Tensor:
        """The trie node after appending token ``c`` (the root after the separator)."""
        nxt = torch.take(self.child, node * self.child.shape[1] + c).clamp_(min=0)
        return torch.where(is_space, 0, nxt)

    def to_native(self) -> NativeLexicon:
        """The trie as NumPy arrays (sharing the CPU tensors' memory) for the compiled search."""
        return NativeLexicon(
            self.child.cpu().numpy(),
            self.is_word.cpu().numpy(),
            self.allowed_ptr.numpy(),
            self.allowed_tok.numpy(),
        )

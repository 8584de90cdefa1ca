"""How tokens write words (:class:`Spelling`), prefix hashing (to merge equal label prefixes and to
recognise words), and the lexicon trie that keeps words in a word list.

A token writes its text: one character (``char`` models), a piece of a word (``bpe``: ``"ing"``), or,
when its text starts with the separator (``decoder.space``), the start of a new word (``" the"``;
a character model's separator token ``" "`` starts a new, still empty, word). So a word is complete
when the next token starts a new one, or when the utterance ends; the search keeps, per hypothesis,
whether its current word is non-empty and the hash of its spelling (its characters, whichever
tokens wrote them), which is how the word LM and the lexicon recognise it.
"""

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
DENSE_MAX = 1 << 22  # entries of the largest dense lexicon table the compiled search gets (32 MB)
_MASK64 = (1 << 64) - 1


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


def _int64(x: int) -> int:
    """A non-negative integer below 2**64 as the int64 with the same bits."""
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


# --------------------------------------------------------------------------- spelling


class NativeSpelling(NamedTuple):
    """A :class:`Spelling` as the compiled search reads it (:meth:`Spelling.to_native`)."""

    starts: np.ndarray  # (V,) bool: the token starts a new word (its text begins with the separator)
    grows: np.ndarray  # (V,) bool: it writes letters (the current word is non-empty after it)
    hash_mul: np.ndarray  # (V,) int64: word hash after the token = (word hash, 0 if it starts a word)
    hash_add: np.ndarray  # (V,) int64:   · hash_mul + hash_add


class Spelling:
    """How ``tokens`` write words, as ``(V,)`` tables over token ids.

    ``starts[v]``: token ``v``'s text begins with the separator ``space`` (it ends the current word
    and starts a new one); ``body[v]``: its text after that separator (its letters); ``grows[v]``: the
    body is not empty. A word's hash is that of its letters' codes (:meth:`spell`, as
    :func:`hash_sequences`); appending token ``v`` to a word of hash ``h`` gives
    ``h · hash_mul[v] + hash_add[v]`` (``h`` = 0 where ``v`` starts a word), whatever tokens spelt it.
    A letter's code is the id of the one-character token that writes it, so for character tokens
    the word hash is the hash of the word's token ids.
    """

    def __init__(self, tokens: list[str], space: str = " ") -> None:
        self.tokens, self.space = list(tokens), space
        V = len(tokens)
        starts = [bool(space) and i != BLANK and t.startswith(space) for i, t in enumerate(tokens)]
        self.body = [
            "" if i == BLANK else t[len(space) :] if s else t for i, (t, s) in enumerate(zip(tokens, starts))
        ]
        # letters' codes: the id of the one-character token writing the letter, else ids from V on
        self.code: dict[str, int] = {}
        for i, t in enumerate(tokens):
            if i != BLANK and len(t) == 1 and t != space:
                self.code.setdefault(t, i)
        for b in self.body:
            for ch in b:
                if ch not in self.code:
                    self.code[ch] = V + len(self.code)
        # tokens whose text holds the separator after its start: they would write across a word end
        self.straddling = [t for t, b in zip(tokens, self.body) if space and space in b]
        mul, add = [], []
        for b in self.body:
            m, a = 1, 0
            for ch in b:
                m, a = (m * HASH_MUL) & _MASK64, (a * HASH_MUL + self.code.get(ch, -1) + 1) & _MASK64
            mul.append(_int64(m))
            add.append(_int64(a))
        self.starts = torch.tensor(starts, dtype=torch.bool)
        self.grows = torch.tensor([bool(b) for b in self.body], dtype=torch.bool)
        self.hash_mul = torch.tensor(mul, dtype=torch.long)
        self.hash_add = torch.tensor(add, dtype=torch.long)

    @classmethod
    def letters(cls, vocab_size: int, space_id: int = -1) -> Spelling:
        """Character tokens ``0 … vocab_size - 1``, token ``space_id`` the separator (-1: none)."""
        return cls([" " if i == space_id else chr(0x4E00 + i) for i in range(vocab_size)], " ")

    @property
    def writes_words(self) -> bool:
        """Some token continues a word (characters or subwords); False when every token starts one
        (phones, ``" sil"``): then a word of the text is one token, not a spelling."""
        return bool((self.grows & ~self.starts).any())

    @property
    def multi_char(self) -> list[str]:
        """The tokens that write more than one character (subwords: ``" the"``, ``"ing"``), shortest first."""
        return sorted((t for i, t in enumerate(self.tokens) if i != BLANK and len(t) > 1), key=len)

    def spell(self, word: str) -> list[int] | None:
        """The codes of ``word``'s letters; None if a letter is in no token or is the separator."""
        codes = [self.code.get(ch, -1) for ch in word]
        return codes if word and -1 not in codes and self.space not in word else None

    def to(self, device: torch.device) -> Spelling:
        self.starts, self.grows = self.starts.to(device), self.grows.to(device)
        self.hash_mul, self.hash_add = self.hash_mul.to(device), self.hash_add.to(device)
        return self

    def step(self, in_word: Tensor, word_hash: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """After appending tokens ``c``: ``(ends, in_word, word_hash)``, ``ends`` where ``c`` completes the
        current (non-empty) word, and the new word's flags and hashes (all of ``c``'s shape)."""
        starts = torch.take(self.starts, c)
        ends = starts & in_word
        h = torch.where(starts, 0, word_hash) * torch.take(self.hash_mul, c) + torch.take(self.hash_add, c)
        return ends, (in_word & ~starts) | torch.take(self.grows, c), h

    def to_native(self) -> NativeSpelling:
        return NativeSpelling(
            self.starts.cpu().numpy(), self.grows.cpu().numpy(), self.hash_mul.cpu().numpy(),
            self.hash_add.cpu().numpy(),
        )  # fmt: skip


# --------------------------------------------------------------------------- lexicon


class NativeLexicon(NamedTuple):
    """A lexicon trie as the compiled search reads it (:meth:`LexiconTrie.to_native`; empty: no lexicon)."""

    cont_ptr: np.ndarray  # (nodes + 1,) int64: where each node's continuing tokens start in cont_tok
    cont_tok: np.ndarray  # int64: the tokens that continue the word at each node (sorted per node)
    cont_next: np.ndarray  # int64: the node each of them leads to
    first: np.ndarray  # (V,) int64: the node after a word-starting token (-1: it starts no listed word)
    is_word: np.ndarray  # (nodes,) bool: a complete word ends here
    start_tok: np.ndarray  # int64: the word-starting tokens that start a listed word, the empty ones first
    n_empty: int  # how many of them write no letter (the separator alone): allowed after a word only
    trie: np.ndarray  # (nodes, V) int64: cont_next as a dense table (-1: none) where it is small, else 0 × 0


NO_LEXICON = NativeLexicon(
    np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
    np.zeros(0, np.bool_), np.zeros(0, np.int64), 0, np.zeros((0, 0), np.int64),
)  # fmt: skip


class LexiconTrie:
    """Prefix trie of the allowed words' letters, stepped by tokens.

    Node 0 is the root (no letters of the current word yet); ``is_word[node]`` marks complete words.
    A token that continues the word walks its letters down the trie (``"ing"`` three edges); one that
    starts a word (:class:`Spelling`) walks its letters from the root, and may come only after a
    complete word, or, when it writes letters, at the root (the utterance's start). Tokens and the
    node they lead to are kept per node, sparse (``cont_*``, CSR) for continuing tokens and once per
    token (``first``) for starting ones: a dense node × token table over 5 000 subwords would not fit.
    """

    def __init__(self, words: list[list[int]], spelling: Spelling) -> None:
        self.spelling = spelling
        V = len(spelling.tokens)
        children: list[dict[int, int]] = [{}]
        parent, code_of, terminal = [-1], [-1], [False]
        for w in words:
            node = 0
            for c in w:
                nxt = children[node].get(c)
                if nxt is None:
                    nxt = children[node][c] = len(children)
                    children.append({})
                    parent.append(node)
                    code_of.append(c)
                    terminal.append(False)
                node = nxt
            terminal[node] = node != 0
        codes = spelling.code

        def walk(node: int, body: str) -> int:
            for ch in body:
                node = children[node].get(codes.get(ch, -1), -1)
                if node < 0:
                    break
            return node

        # continuing tokens: every node's ancestors within the longest body spell the bodies that lead to it
        starts = spelling.starts.tolist()
        by_body: dict[tuple[int, ...], list[int]] = {}
        for v, b in enumerate(spelling.body):
            if v != BLANK and b and not starts[v] and all(ch in codes for ch in b):
                by_body.setdefault(tuple(codes[ch] for ch in b), []).append(v)
        longest = max(map(len, by_body), default=0)
        edges = []
        for n in range(1, len(children)):
            a, seq = n, []
            for _ in range(longest):
                seq.append(code_of[a])
                a = parent[a]
                for v in by_body.get(tuple(reversed(seq)), ()):
                    edges.append((a, v, n))
                if a == 0:
                    break
        edges.sort()
        e = torch.tensor(edges, dtype=torch.long).view(-1, 3)
        self.cont_tok, self.cont_next = e[:, 1].contiguous(), e[:, 2].contiguous()
        counts = torch.bincount(e[:, 0], minlength=len(children))
        self.cont_ptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        self.cont_key = e[:, 0] * V + e[:, 1]  # sorted: (node, token) pairs
        self.first = torch.tensor(
            [walk(0, b) if s and v != BLANK else -1 for v, (s, b) in enumerate(zip(starts, spelling.body))],
            dtype=torch.long,
        )
        grows = spelling.grows.tolist()
        start_tok = sorted((v for v in range(V) if self.first[v] >= 0), key=lambda v: (grows[v], v))
        self.start_tok = torch.tensor(start_tok, dtype=torch.long)
        self.n_empty = sum(not grows[v] for v in start_tok)
        self.is_word = torch.tensor(terminal, dtype=torch.bool)
        self.num_words = sum(terminal)
        self.num_nodes = len(children)

    @classmethod
    def from_file(cls, path: str | Path, spelling: Spelling) -> LexiconTrie:
        """Words from ``path`` (the first field of each line), spelt with ``spelling``'s letters."""
        words, skipped = [], []
        with Path(path).open(encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if not fields:
                    continue
                codes = spelling.spell(fields[0])
                if codes is None:
                    skipped.append(fields[0])
                else:
                    words.append(codes)
        if skipped:
            log.warning(
                "lexicon %s: %d words use characters outside the tokens, e.g. %r",
                path,
                len(skipped),
                skipped[:3],
            )
        if not words:
            raise ValueError(f"lexicon {path}: no word can be spelt with the decoder's tokens")
        return cls(words, spelling)

    # ---------------------------------------------------------------- the torch search's view

    def to(self, device: torch.device) -> LexiconTrie:
        self.spelling.to(device)
        self.is_word, self.first = self.is_word.to(device), self.first.to(device)
        # a sentinel past every (node, token) key, so that a look-up's position always exists
        sentinel = torch.tensor([torch.iinfo(torch.long).max])
        self._key = torch.cat([self.cont_key, sentinel]).to(device)
        self._next = torch.cat([self.cont_next, torch.zeros(1, dtype=torch.long)]).to(device)
        return self

    def _continue(self, node: Tensor, tok: Tensor) -> tuple[Tensor, Tensor]:
        """Whether token ``tok`` continues the word at ``node`` (broadcast shapes), and the node it leads to."""
        key = node * len(self.spelling.tokens) + tok
        pos = torch.searchsorted(self._key, key)
        return torch.take(self._key, pos) == key, torch.take(self._next, pos)

    def penalty(self, node: Tensor, tok: Tensor) -> Tensor:
        """``(B, K, M)``: 0 where hypothesis ``(b, k)`` at trie ``node`` may take token ``tok[b, m]``, else -inf."""
        node3, tok3 = node[:, :, None], tok[:, None, :]
        cont, _ = self._continue(node3, tok3)
        sp = self.spelling
        after_word = self.is_word[node3] | ((node3 == 0) & torch.take(sp.grows, tok3))
        ok = torch.where(torch.take(sp.starts, tok3), (torch.take(self.first, tok3) >= 0) & after_word, cont)
        return torch.zeros(ok.shape, device=ok.device).masked_fill_(~ok, NEG_INF)

    def step(self, node: Tensor, c: Tensor) -> Tensor:
        """The trie node after appending token ``c`` (any node where ``c`` is not allowed)."""
        _, nxt = self._continue(node, c)
        return torch.where(torch.take(self.spelling.starts, c), torch.take(self.first, c), nxt).clamp_(min=0)

    def _dense(self) -> np.ndarray:
        """The continuing tokens' next nodes as a (nodes, V) table when it has at most ``DENSE_MAX``
        entries (characters: a look-up instead of a bisection per new hypothesis), else 0 × 0."""
        V = len(self.spelling.tokens)
        if self.num_nodes * V > DENSE_MAX:
            return np.zeros((0, 0), np.int64)
        table = np.full((self.num_nodes, V), -1, np.int64)
        node = np.repeat(np.arange(self.num_nodes), np.diff(self.cont_ptr.numpy()))
        table[node, self.cont_tok.numpy()] = self.cont_next.numpy()
        return table

    def to_native(self) -> NativeLexicon:
        """The trie as NumPy arrays for the compiled search."""
        return NativeLexicon(
            self.cont_ptr.numpy(), self.cont_tok.numpy(), self.cont_next.numpy(), self.first.cpu().numpy(),
            self.is_word.cpu().numpy(), self.start_tok.numpy(), int(self.n_empty), self._dense(),
        )  # fmt: skip

"""Hotwords (context biasing): words and phrases the beam search rewards as hypotheses spell them.

A hotword list is a file with one word or phrase a line and an optional boost after a tab
(``anna<TAB>3.0``), or, from Python, a list of such lines or of ``(text, boost)`` pairs. A boost is
a log-score per character (``decoder.hotword_boost`` where a line gives none); a completed hotword
of n characters adds n · boost to its hypothesis' score.

Matching walks a character trie of the hotwords as a hypothesis writes text (a token writes its
text, one character after another, so subword tokens work as characters do):

- a match starts at a word start: the utterance's start, or after the separator (``decoder.space``)
  or punctuation (any character but a letter, a digit, ``'`` and ``-``: ``"(Smith"``);
- each character along the trie earns its node's boost (the largest of the hotwords through it),
  so the search is steered towards a hotword while it spells it;
- a hotword completes at a word end (a separator, punctuation — ``"Smith,"`` —, or the end of the
  utterance) and keeps what it earned; a phrase ("new york") locks in each hotword it passes
  ("new") at that word's end;
- a match that fails gives back what it earned since its start or its last completed hotword,
  and falls back to the longest suffix of what it matched that starts at a word start and is
  still in the trie (Aho-Corasick's failure arc, kept to word starts), else to the trie's root
  (after a separator) or to "inside a word no hotword starts with" until the next separator.

So a hypothesis' final score changes only by the hotwords it completes; partial matches only
guide the search. Matches do not overlap: a hotword lying inside a longer one that is still
matching at its end ("smith" in "john smith jr") counts only if the longer one fails right there.

The whole automaton is precomputed per (state, token) as two tables, the next state and what the
token adds, so both engines step it by a look-up: :class:`HotwordTrie` holds them as tensors for the
torch search, :meth:`HotwordTrie.to_native` as the :class:`NativeHotwords` the compiled one reads.
They are dense, 16 bytes per state and token: 100 names of 6 letters (~600 states) over 5 000
subwords take 48 MB, over 28 characters 0.3 MB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from speechkit.decoders.base import BLANK

ROOT, OUTSIDE = 0, 1  # automaton states: at a word start; inside a word no hotword starts with
INSIDE_WORD = "'-"  # besides letters and digits, what a word may hold ("O'Brien", "Jean-Luc")


class Hotword(NamedTuple):
    """One entry of a hotword list."""

    text: str  # the word or phrase, words separated by one space
    boost: float  # log-score per character
    where: str  # where it was given ("names.txt:3", "decoder.hotwords[2]"), for error messages


class NativeHotwords(NamedTuple):
    """A hotword automaton as the compiled search reads it (:meth:`HotwordTrie.to_native`)."""

    next: np.ndarray  # (S, V) int64: the state after appending each token
    gain: np.ndarray  # (S, V) float64: what appending it adds to the score (< 0: a match failed)
    finish: np.ndarray  # (S,) float64: what ending the utterance in each state adds
    best: np.ndarray  # (S,) float64: max(0, the state's largest gain): bounds an extension's gain


def read_hotwords(spec: Any, default_boost: float) -> list[Hotword]:
    """The entries of a hotword list: ``spec`` a file's path, or a list of lines or ``(text, boost)`` pairs.

    A line is ``text`` or ``text<TAB>boost``; white space inside ``text`` is collapsed to single
    spaces. A missing file, an empty line or a boost that is not a finite number is a
    ``ValueError`` naming the file and line (or the list's index).
    """
    if isinstance(spec, str | Path):
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"decoder.hotwords: no such file: {path} (one word or phrase a line)")
        lines = path.read_text(encoding="utf-8").splitlines()
        items = [(line, f"{path}:{i}") for i, line in enumerate(lines, 1)]
        if not items:
            raise ValueError(f"decoder.hotwords: {path} is empty (one word or phrase a line)")
    elif isinstance(spec, Sequence):
        items = [(item, f"decoder.hotwords[{i}]") for i, item in enumerate(spec)]
    else:
        raise ValueError(f"decoder.hotwords: a file's path or a list of words, not {type(spec).__name__}")
    entries = []
    for item, where in items:
        if isinstance(item, str):
            text, tab, boost = item.partition("\t")
        elif isinstance(item, Sequence) and len(item) == 2 and isinstance(item[0], str):
            text, tab, boost = item[0], "\t", item[1]
        else:
            raise ValueError(f"{where}: expected a word or phrase, or a (text, boost) pair, got {item!r}")
        text = " ".join(text.split())
        if not text:
            raise ValueError(
                f"{where}: empty line (each line holds a word or phrase, then optionally a tab and its boost)"
            )
        try:
            value = float(boost) if tab else float(default_boost)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"{where}: the boost of {text!r} must be a number, got {boost!r}")
        entries.append(Hotword(text, value, where))
    return entries


def spelling_problem(text: str, tokens: list[str], space: str) -> str | None:
    """Why ``text`` cannot be written with ``tokens`` (None: it can), e.g. a character in no token.

    Written as the search writes it: a concatenation of token texts, optionally after a separator
    (a subword model's first token of a word starts with one).
    """
    symbols = [t for i, t in enumerate(tokens) if i != BLANK and t]
    missing = sorted({ch for ch in text if not any(ch in t for t in symbols)})
    if missing:
        return f"{''.join(missing)!r} is in none of the model's tokens"
    for target in (text, space + text):
        can = [True] + [False] * len(target)  # can[i]: target[:i] is a concatenation of tokens
        for i in range(len(target)):
            if can[i]:
                for t in symbols:
                    if target.startswith(t, i):
                        can[i + len(t)] = True
        if can[-1]:
            return None
    return "it cannot be spelt with the model's tokens"


class HotwordTrie:
    """The hotword automaton over ``tokens``: ``next[state, token]``, ``gain[state, token]``, ``finish[state]``.

    States: ``ROOT`` (at a word start), ``OUTSIDE`` (inside a word no hotword starts with), and one per
    node of the character trie of the hotwords (see the module's docstring for the matching rules).
    """

    def __init__(self, hotwords: list[Hotword], tokens: list[str], space: str = " ") -> None:
        if not hotwords:
            raise ValueError("decoder.hotwords: the list is empty")
        for hw in hotwords:
            problem = spelling_problem(hw.text, tokens, space)
            if problem:
                chars = "".join(sorted({ch for v, t in enumerate(tokens) if v != BLANK for ch in t}))
                raise ValueError(
                    f"{hw.where}: hotword {hw.text!r}: {problem} (their characters: {chars!r:.100}); "
                    "remove the line or spell it with those"
                )
        self.hotwords, self.space = hotwords, space
        # the character trie: per state its children, the boost its last character earns, whether a
        # hotword ends there, and its text
        children: list[dict[str, int]] = [{}, {}]
        boost, terminal, text = [0.0, 0.0], [False, False], ["", ""]
        for hw in hotwords:
            node = ROOT
            for ch in hw.text:
                nxt = children[node].get(ch)
                if nxt is None:
                    nxt = children[node][ch] = len(children)
                    children.append({})
                    boost.append(hw.boost)
                    terminal.append(False)
                    text.append(text[node] + ch)
                boost[nxt] = max(boost[nxt], hw.boost)
                node = nxt
            terminal[node] = True
        S = len(children)
        # held[s]: what the match that led to s holds and would give back on failing (earned since its
        # start, or since the last hotword it completed: a separator after a hotword locks it in)
        held = [0.0] * S
        for node in range(S):  # parents are numbered before their children
            for ch, nxt in children[node].items():
                locked = terminal[node] and self.ends_word(ch)
                held[nxt] = boost[nxt] + (0.0 if locked else held[node])
        # fail[s]: where a failed match goes on: the longest proper suffix of its text that starts
        # after a word boundary (separator or punctuation) and is a state; ROOT when only the empty one
        # is; OUTSIDE without a boundary
        node_of = {t: s for s, t in enumerate(text) if s > OUTSIDE}
        fail = [OUTSIDE] * S
        for s in range(OUTSIDE + 1, S):
            starts = [k + 1 for k, ch in enumerate(text[s]) if self.ends_word(ch)]
            for k in starts:  # the longest suffix first; the empty one (text ends in a separator) is ROOT
                suffix = text[s][k:]
                if not suffix or suffix in node_of:
                    fail[s] = node_of[suffix] if suffix else ROOT
                    break
        self.children, self.boost, self.terminal, self.held, self.fail = children, boost, terminal, held, fail
        self.text = text

        # characters → the (S, A) tables of the character automaton, then tokens → (S, V) by composing
        alphabet = sorted({ch for v, t in enumerate(tokens) if v != BLANK for ch in t} | {space})
        col = {ch: a for a, ch in enumerate(alphabet)}
        c_next = np.zeros((S, len(alphabet)), np.int64)
        c_gain = np.zeros((S, len(alphabet)))
        for s in range(S):
            for ch, a in col.items():
                c_next[s, a], c_gain[s, a] = self.char_step(s, ch)
        V = len(tokens)
        t_next = np.tile(np.arange(S)[:, None], (1, V))
        t_gain = np.zeros((S, V))
        for v, tok in enumerate(tokens):
            if v == BLANK:
                continue  # never appended
            state = np.arange(S)
            for ch in tok:
                t_gain[:, v] += c_gain[state, col[ch]]
                state = c_next[state, col[ch]]
            t_next[:, v] = state
        self.next = torch.from_numpy(t_next)
        self.gain = torch.from_numpy(t_gain)
        self.finish = torch.tensor([self.end_gain(s) for s in range(S)], dtype=torch.float64)
        self.num_states = S

    @classmethod
    def from_spec(cls, spec: Any, tokens: list[str], default_boost: float, space: str = " ") -> HotwordTrie:
        """The automaton of a hotword file or list (:func:`read_hotwords`) over ``tokens``."""
        return cls(read_hotwords(spec, default_boost), tokens, space)

    def ends_word(self, ch: str) -> bool:
        """``ch`` is a word boundary: the separator or punctuation (not a letter, digit, ' or -)."""
        return ch == self.space or not (ch.isalnum() or ch in INSIDE_WORD)

    def char_step(self, s: int, ch: str) -> tuple[int, float]:
        """The state after writing character ``ch`` in state ``s``, and what that adds to the score."""
        if s == OUTSIDE:
            return (ROOT if self.ends_word(ch) else OUTSIDE), 0.0
        nxt = self.children[s].get(ch)
        if nxt is not None:
            return nxt, self.boost[nxt]
        if s == ROOT:
            return (ROOT if self.ends_word(ch) else OUTSIDE), 0.0
        if self.ends_word(ch) and self.terminal[s]:
            return ROOT, 0.0  # a hotword completes: it keeps what it earned
        f = self.fail[s]  # the match fails: give back what it holds, go on from the suffix
        nxt, gain = self.char_step(f, ch)
        return nxt, gain + self.held[f] - self.held[s]

    def end_gain(self, s: int) -> float:
        """What ending the utterance in state ``s`` adds: 0 after a completed hotword, else the give-back."""
        if s <= OUTSIDE or self.terminal[s]:
            return 0.0
        f = self.fail[s]
        return self.end_gain(f) + self.held[f] - self.held[s]

    def score(self, token_ids: Sequence[int]) -> float:
        """The total a label sequence earns (what the search adds to its score): completed hotwords only."""
        s, total = ROOT, 0.0
        for v in token_ids:
            total += float(self.gain[s, v])
            s = int(self.next[s, v])
        return total + float(self.finish[s])

    # ---------------------------------------------------------------- the torch search's view

    def to(self, device: torch.device) -> HotwordTrie:
        self.next, self.finish = self.next.to(device), self.finish.to(device)
        self._gain32 = self.gain.to(device, torch.float32)
        return self

    def gains(self, state: Tensor, tok: Tensor) -> Tensor:
        """``(B, K, M)``: what appending token ``tok[b, m]`` to hypothesis ``(b, k)`` in ``state`` adds."""
        return torch.take(self._gain32, state[:, :, None] * self.next.shape[1] + tok[:, None, :])

    def step(self, state: Tensor, c: Tensor) -> Tensor:
        """The states after appending tokens ``c`` (same shape as ``state``)."""
        return torch.take(self.next, state * self.next.shape[1] + c)

    def end(self, state: Tensor) -> Tensor:
        """What ending each hypothesis in ``state`` adds (float32, ``state``'s shape)."""
        return self.finish.float()[state]

    def to_native(self) -> NativeHotwords:
        """The automaton as NumPy arrays for the compiled search."""
        gain = self.gain.cpu().numpy()
        best = np.maximum(gain[:, 1:].max(1, initial=0.0), 0.0)
        return NativeHotwords(self.next.cpu().numpy(), gain, self.finish.cpu().numpy(), best)

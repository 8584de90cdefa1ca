"""Character or word n-gram LM: interpolated Kneser-Ney training, ARPA read/write, batched scoring.

Smoothing is interpolated Kneser-Ney with one absolute discount per order,
``D_k = n1 / (n1 + 2 n2)`` (``n1``, ``n2``: how many order-``k`` n-grams have adjusted count 1
and 2), and KenLM's adjusted counts: the highest order counts occurrences, lower orders count
distinct left contexts (except n-grams starting with ``<s>``, which have none). It is stored
in backoff form, as SRILM and KenLM write it::

    p(w | h) = (a(h w) - D) / a(h ·) + b(h) · p(w | h')   for (h w) in the model
    p(w | h) = b(h) · p(w | h')                           otherwise,  b(h) = D · N1+(h ·) / a(h ·)

ARPA files hold log10; this module converts to natural log when it reads one. Files that
KenLM's ``lmplz``/``build_binary`` tools write in ARPA form read as they are. For a character
LM each character is one ARPA "word" and the word separator is written as ``space_symbol``
(``|`` by default, the wav2letter/flashlight convention).

A file's unit is read from its 1-gram vocabulary (:func:`detect_unit`): entries of several
characters (other than ``<s>``, ``</s>``, ``<unk>`` and the separator) make a word LM, single
characters a character LM. ``unit=auto`` (the default) takes it from the file; ``unit=char`` or
``unit=word`` are checked against it, so a word LM is never scored as a character LM unnoticed.

Scoring is batched: a hypothesis' state is the id of its longest context in the model, and
one backoff walk of at most ``order`` vectorised ``searchsorted`` look-ups scores every
hypothesis at once. Small models (character LMs, small word vocabularies) precompute the
whole (context × unit) table, so that scoring and advancing are single gathers.

Train from the command line (``key=value``, like every speechkit command)::

    speechkit-ngram text=lm_train.txt order=4 unit=char out=lm.arpa
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from speechkit.lm.base import LanguageModel
from speechkit.registry import register

log = logging.getLogger(__name__)

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
LN10 = math.log(10.0)  # ARPA log10 → natural log
UNK_FLOOR = -100.0  # natural-log score of a unit the model has no entry for at all (no <unk>)
DENSE_LIMIT = 4_000_000  # contexts × units up to which the whole (context, unit) table is precomputed

# One order's n-grams: words → (log10 p, log10 backoff)
Ngrams = dict[tuple[str, ...], tuple[float, float]]


@dataclass
class NgramConfig:
    path: str | None = None  # ARPA file to read (KenLM's or speechkit's)
    text: str | None = None  # else: a text file (one sentence a line) to train on
    order: int = 3  # n of the n-gram when training
    unit: str = "auto"  # "char", "word", or "auto": an ARPA file's own (training from text: char)
    space_symbol: str = "|"  # the word separator's ARPA spelling in a char LM


# --------------------------------------------------------------------------- text → units


def sentence_units(line: str, unit: str, space_symbol: str = "|") -> list[str]:
    """One line of text → its units: whitespace-separated words, or characters (spaces as ``space_symbol``)."""
    words = line.split()
    if unit == "word":
        return words
    if unit != "char":
        raise ValueError(f"n-gram unit must be 'char' or 'word', not {unit!r}")
    return list(space_symbol.join(words)) if len(space_symbol) == 1 else _chars(words, space_symbol)


def _chars(words: list[str], space_symbol: str) -> list[str]:
    out: list[str] = []
    for i, w in enumerate(words):
        if i:
            out.append(space_symbol)
        out.extend(w)
    return out


# --------------------------------------------------------------------------- training


def train_kneser_ney(sentences: Iterable[Sequence[str]], order: int) -> list[Ngrams]:
    """Interpolated Kneser-Ney estimates of every order, ready to write as ARPA (log10)."""
    if order < 1:
        raise ValueError(f"n-gram order must be at least 1, not {order}")
    counts: list[Counter] = [Counter() for _ in range(order + 1)]  # counts[k]: raw k-gram counts
    for units in sentences:
        s = (BOS, *units, EOS)
        for k in range(1, order + 1):
            for i in range(len(s) - k + 1):
                counts[k][s[i : i + k]] += 1
    if not counts[1]:
        raise ValueError("cannot train an n-gram LM on an empty text")

    # adjusted counts: highest order raw, lower orders the number of distinct left extensions
    adjusted: list[Counter] = [Counter() for _ in range(order + 1)]
    adjusted[order] = counts[order]
    for k in range(1, order):
        left = Counter(g[1:] for g in counts[k + 1])
        adjusted[k] = Counter({g: (c if g[0] == BOS else left[g]) for g, c in counts[k].items()})
        adjusted[k] = Counter({g: c for g, c in adjusted[k].items() if c > 0})

    def discount(k: int) -> float:
        coc = Counter(adjusted[k].values())
        n1, n2 = coc.get(1, 0), coc.get(2, 0)
        d = n1 / (n1 + 2 * n2) if n1 and n2 else 0.5
        return min(max(d, 0.1), 0.9)

    prob: list[dict[tuple[str, ...], float]] = [{} for _ in range(order + 1)]  # natural probabilities
    bow: list[dict[tuple[str, ...], float]] = [{} for _ in range(order + 1)]

    # order 1: discounted continuation counts interpolated with the uniform distribution
    vocab = sorted({g[0] for g in adjusted[1]} - {BOS} | {EOS, UNK})
    uni = {g: c for g, c in adjusted[1].items() if g[0] != BOS}
    d1, total = discount(1), sum(uni.values())
    gamma = d1 * len(uni) / total
    for w in vocab:
        prob[1][(w,)] = max(uni.get((w,), 0) - d1, 0.0) / total + gamma / len(vocab)

    for k in range(2, order + 1):
        dk = discount(k)
        by_ctx: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
        for g, c in adjusted[k].items():
            by_ctx[g[:-1]].append((g[-1], c))
        for h, follow in by_ctx.items():
            tot = sum(c for _, c in follow)
            gamma = dk * len(follow) / tot
            bow[k - 1][h] = gamma
            for w, c in follow:
                prob[k][(*h, w)] = (c - dk) / tot + gamma * prob[k - 1][(*h[1:], w)]

    out: list[Ngrams] = []
    for k in range(1, order + 1):
        table: Ngrams = {}
        for g, p in prob[k].items():
            table[g] = (math.log10(p), math.log10(bow[k][g]) if g in bow[k] else 0.0)
        if k == 1:  # <s> is never predicted; it still carries a backoff (ARPA convention: -99)
            table[(BOS,)] = (-99.0, math.log10(bow[1][(BOS,)]) if (BOS,) in bow[1] else 0.0)
        out.append(table)
    return out


# --------------------------------------------------------------------------- ARPA files


def read_arpa(path: str | Path) -> list[Ngrams]:
    """Read an ARPA file (KenLM's, SRILM's or speechkit's) → one dict per order (log10 values)."""
    path = Path(path)
    tables: list[Ngrams] = []
    declared: dict[int, int] = {}
    section = None  # None: before \data\, 0: in \data\, k: in \k-grams:
    with path.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            if line == "\\data\\":
                section = 0
            elif line == "\\end\\":
                break
            elif line.startswith("\\") and line.endswith("-grams:"):
                section = int(line[1:].split("-")[0])
                while len(tables) < section:
                    tables.append({})
            elif section == 0 and line.startswith("ngram "):
                k, n = line[6:].split("=")
                declared[int(k)] = int(n)
            elif section:
                parts = line.split()
                if len(parts) not in (section + 1, section + 2):
                    raise ValueError(
                        f"{path}:{lineno}: a {section}-gram line needs a log10 probability, {section} "
                        f"words and an optional backoff; got {line!r}"
                    )
                try:
                    logp = float(parts[0])
                    backoff = float(parts[section + 1]) if len(parts) == section + 2 else 0.0
                except ValueError:
                    raise ValueError(f"{path}:{lineno}: not a number in {line!r}") from None
                tables[section - 1][tuple(parts[1 : section + 1])] = (logp, backoff)
    if not tables:
        raise ValueError(f"{path}: no n-grams found; is it an ARPA file (\\data\\ … \\end\\)?")
    for k, n in declared.items():
        if k <= len(tables) and len(tables[k - 1]) != n:
            log.warning("%s: header declares %d %d-grams, read %d", path, n, k, len(tables[k - 1]))
    return tables


def write_arpa(tables: list[Ngrams], path: str | Path) -> None:
    """Write n-grams (one dict per order, log10 values) as an ARPA file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        f.write("\\data\\\n")
        for k, table in enumerate(tables, 1):
            f.write(f"ngram {k}={len(table)}\n")
        for k, table in enumerate(tables, 1):
            f.write(f"\n\\{k}-grams:\n")
            for g in sorted(table):
                logp, backoff = table[g]
                line = f"{logp:.7f}\t{' '.join(g)}"
                if k < len(tables) and backoff != 0.0:
                    line += f"\t{backoff:.7f}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")


# --------------------------------------------------------------------------- the unit of a file

SPECIAL = (BOS, EOS, UNK)


class DetectedUnit(NamedTuple):
    """What an n-gram vocabulary says about its unit (see :func:`detect_unit`)."""

    unit: str | None  # "char", "word", or None: nothing but <s>, </s>, <unk> and the separator
    example: str | None  # an entry that shows it (the most probable one of its kind)
    separator: str | None = None  # a char LM's separator spelt otherwise than space_symbol (e.g. "<space>")


def detect_unit(unigrams: Ngrams, space_symbol: str = "|") -> DetectedUnit:
    """The unit of an LM from its 1-grams (log10 values, as :func:`read_arpa` gives them).

    Entries of several characters (other than ``<s>``, ``</s>``, ``<unk>`` and ``space_symbol``)
    make a word LM; single characters a character LM. A single such entry among many characters
    is taken for a character LM's separator spelt another way (``<space>``), not for a word.
    """
    by_prob = sorted(unigrams, key=lambda g: -unigrams[g][0])
    entries = [g[0] for g in by_prob if g[0] not in SPECIAL and g[0] != space_symbol]
    multi = [w for w in entries if len(w) > 1]
    chars = [w for w in entries if len(w) == 1]
    if len(multi) == 1 and len(chars) >= 3 and (space_symbol,) not in unigrams:
        return DetectedUnit("char", chars[0], separator=multi[0])
    if multi:
        return DetectedUnit("word", multi[0])
    if chars:
        return DetectedUnit("char", chars[0])
    return DetectedUnit(None, None)


def resolve_unit(unit: str, ngrams: list[Ngrams], space_symbol: str, source: str) -> str:
    """``unit`` ("auto", "char" or "word") checked against the n-grams read from ``source``; the unit to use.

    A mismatch is a ``ValueError`` naming the file, what it holds (with an entry) and the setting to use.
    """
    if unit not in ("auto", "char", "word"):
        raise ValueError(f"ngram lm: unit must be 'auto', 'char' or 'word', not {unit!r}")
    found = detect_unit(ngrams[0], space_symbol)
    if found.separator is not None and unit != "word":
        raise ValueError(
            f"{source}: a character LM whose word separator is spelt {found.separator!r} (1-grams such as "
            f"{found.example!r} and {found.separator!r}), but decoder.lm.space_symbol={space_symbol!r}: set "
            f"decoder.lm.space_symbol={found.separator!r} (or decoder.lm.unit=word if it is a word LM)"
        )
    if unit == "auto":
        unit = found.unit or "char"
        log.debug("%s: %s LM (1-grams such as %r)", source, unit, found.example)
        return unit
    if unit == "char" and found.unit == "word":
        raise ValueError(
            f"{source}: a word LM (1-grams such as {found.example!r}), but decoder.lm.unit=char would score "
            "it character by character: set decoder.lm.unit=word (or decoder.lm.unit=auto to take the "
            "file's own unit)"
        )
    if unit == "word" and found.unit == "char" and (space_symbol,) in ngrams[0]:
        raise ValueError(
            f"{source}: a character LM (1-grams such as {found.example!r} and the word separator "
            f"{space_symbol!r}), but decoder.lm.unit=word would look whole words up in it: set "
            "decoder.lm.unit=char (or decoder.lm.unit=auto to take the file's own unit)"
        )
    return unit


# --------------------------------------------------------------------------- the plugin


class NgramTables(NamedTuple):
    """An :class:`NgramLM`'s look-up tables on the CPU (see ``NgramLM._compile``), by :meth:`NgramLM.tables`.

    Entry ``(context node, unit)`` has key ``node · num_units + unit``; node 0 is the empty context.
    """

    keys: Tensor  # (E,) int64, sorted
    logp: Tensor  # (E,) float32: natural-log p(unit | context)
    child: Tensor  # (E,) int64: the context node after the unit (-1: none, the top order)
    bow: Tensor  # (S,) float32: natural-log backoff weight of each context node
    suffix: Tensor  # (S,) int64: each context node with its oldest unit dropped
    dense_logp: Tensor | None  # (S, U) float32: every (context, unit) log-probability, small models only
    dense_next: Tensor | None  # (S, U) int64: the context node after it
    order: int
    num_units: int  # U


@register("lm", "ngram", NgramConfig)
class NgramLM(LanguageModel):
    """Character or word n-gram LM (interpolated Kneser-Ney), read from or written to ARPA."""

    def __init__(self, cfg: NgramConfig, ngrams: list[Ngrams] | None = None) -> None:
        self.cfg = cfg
        if cfg.unit not in ("auto", "char", "word"):
            raise ValueError(f"ngram lm: unit must be 'auto', 'char' or 'word', not {cfg.unit!r}")
        if ngrams is None and cfg.path:
            ngrams = read_arpa(cfg.path)
            self.unit = resolve_unit(cfg.unit, ngrams, cfg.space_symbol, cfg.path)
        elif ngrams is None and cfg.text:
            self.unit = "char" if cfg.unit == "auto" else cfg.unit  # text has no unit of its own
            ngrams = self._train_tables(cfg.text, cfg.order, self.unit, cfg.space_symbol)
        elif ngrams is None:
            raise ValueError(
                "ngram lm: give an ARPA file (decoder.lm.path=lm.arpa) or a text file to train on "
                "(decoder.lm.text=lm_train.txt)"
            )
        elif cfg.unit == "auto":  # n-grams built in memory (train()): their unit is known, or read here
            self.unit = detect_unit(ngrams[0], cfg.space_symbol).unit or "char"
        else:
            self.unit = cfg.unit
        self.ngrams = ngrams
        self.order = len(ngrams)
        self._compile()

    # ---- construction

    @staticmethod
    def _train_tables(text_file: str | Path, order: int, unit: str, space_symbol: str) -> list[Ngrams]:
        with Path(text_file).open(encoding="utf-8") as f:
            sentences = [sentence_units(line, unit, space_symbol) for line in f if line.strip()]
        return train_kneser_ney(sentences, order)

    @classmethod
    def train(
        cls, text_file: str | Path, order: int = 3, unit: str = "char", space_symbol: str = "|"
    ) -> NgramLM:
        """Train on a text file (one sentence a line) with interpolated Kneser-Ney."""
        cfg = NgramConfig(text=str(text_file), order=order, unit=unit, space_symbol=space_symbol)
        return cls(cfg, cls._train_tables(text_file, order, unit, space_symbol))

    def save_arpa(self, path: str | Path) -> None:
        write_arpa(self.ngrams, path)

    def _compile(self) -> None:
        """Index the n-grams for batched look-ups.

        Context nodes are the n-grams of order < n (node 0: the empty context). Entry
        ``(node, unit)`` is keyed ``node * U + unit`` in a sorted tensor; it holds the
        natural-log probability and the node of the extended context (-1 at the top order).
        """
        vocab = sorted({g[0] for g in self.ngrams[0]} | {BOS, EOS, UNK})
        self.vocab = vocab
        self.stoi = {w: i for i, w in enumerate(vocab)}
        U = len(vocab)
        node_of: dict[tuple[int, ...], int] = {(): 0}
        node_bow = [0.0]
        for table in self.ngrams[:-1]:
            for g, (_, backoff) in table.items():
                node_of[tuple(self.stoi[w] for w in g)] = len(node_bow)
                node_bow.append(backoff * LN10)

        keys, logp, child = [], [], []
        for table in self.ngrams:
            for g, (lp, _) in table.items():
                ids = tuple(self.stoi[w] for w in g)
                ctx = node_of.get(ids[:-1])
                if ctx is None:  # a pruned file without this prefix: add a neutral context
                    ctx = node_of[ids[:-1]] = len(node_bow)
                    node_bow.append(0.0)
                keys.append(ctx * U + ids[-1])
                logp.append(lp * LN10 if lp > -99 else -math.inf)
                child.append(node_of.get(ids, -1))
        if (UNK,) not in self.ngrams[0]:  # no <unk> in the file: give it the floor score
            keys.append(self.stoi[UNK])
            logp.append(UNK_FLOOR)
            child.append(-1)
        suffix = [0] * len(node_bow)
        for ids, node in node_of.items():
            s = ids[1:]
            while s and s not in node_of:
                s = s[1:]
            suffix[node] = node_of[s] if ids else 0

        keys_t = torch.tensor(keys, dtype=torch.long)
        order = keys_t.argsort()
        self._cpu = {
            "keys": keys_t[order],
            "logp": torch.tensor(logp, dtype=torch.float32)[order],
            "child": torch.tensor(child, dtype=torch.long)[order],
            "bow": torch.tensor(node_bow, dtype=torch.float32),
            "suffix": torch.tensor(suffix, dtype=torch.long),
        }
        self._dev: dict[str, dict[str, Tensor]] = {}
        self.num_states = len(node_bow)
        self.bos_state = node_of.get((self.stoi[BOS],), 0)
        self._dense = None
        if self.num_states * U <= DENSE_LIMIT:
            states = torch.arange(self.num_states).repeat_interleave(U)
            units = torch.arange(U).repeat(self.num_states)
            lp, nxt = self._walk(self._cpu, states, units)
            self._cpu["dense_logp"] = lp.view(self.num_states, U)
            self._cpu["dense_next"] = nxt.view(self.num_states, U)
            self._dense = True
        # the largest log-probability the LM gives (≤ 0 in any proper file; the beam search's bound uses it)
        self.max_logprob = max(max(logp, default=0.0), float(self._cpu["dense_logp"].max()) if self._dense else 0.0)

    def tables(self) -> NgramTables:
        """The look-up tables (CPU tensors, shared, not copied), for scorers outside torch."""
        t = self._cpu
        dense_logp, dense_next = t.get("dense_logp"), t.get("dense_next")
        return NgramTables(
            t["keys"],
            t["logp"],
            t["child"],
            t["bow"],
            t["suffix"],
            dense_logp,
            dense_next,
            self.order,
            len(self.vocab),
        )

    def _tables(self, device: torch.device) -> dict[str, Tensor]:
        key = str(device)
        if key not in self._dev:
            self._dev[key] = {k: v.to(device) for k, v in self._cpu.items()}
        return self._dev[key]

    def _walk(self, t: dict[str, Tensor], state: Tensor, unit: Tensor) -> tuple[Tensor, Tensor]:
        """Backoff walk: natural-log p(unit | state) and the next state, for ``(N,)`` states and units."""
        keys, n_keys, U = t["keys"], t["keys"].numel(), len(self.vocab)
        h = state
        acc = torch.zeros(state.shape, dtype=torch.float32, device=state.device)
        done = torch.zeros(state.shape, dtype=torch.bool, device=state.device)
        nxt = torch.full(state.shape, -1, dtype=torch.long, device=state.device)
        for _ in range(self.order):  # contexts hold at most order - 1 units
            key = h * U + unit
            pos = torch.searchsorted(keys, key).clamp_(max=n_keys - 1)
            found = keys[pos] == key
            # p(w | h) = p(h w) if listed, else b(h) · p(w | h')
            acc = acc + torch.where(done, 0.0, torch.where(found, t["logp"][pos], t["bow"][h]))
            done = done | found
            ch = t["child"][pos]
            nxt = torch.where(found & (nxt < 0) & (ch >= 0), ch, nxt)
            h = t["suffix"][h]
        acc = torch.where(done, acc, acc + UNK_FLOOR)
        return acc, nxt.clamp(min=0)

    # ---- the LanguageModel protocol

    def index(self, symbols: Sequence[str]) -> Tensor:
        unk = self.stoi[UNK]
        if self.unit == "char":
            symbols = [self.cfg.space_symbol if s == " " else s for s in symbols]
        return torch.tensor([self.stoi.get(s, unk) for s in symbols], dtype=torch.long)

    def start(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.full((n,), self.bos_state, dtype=torch.long, device=device)

    def logprobs(self, state: Tensor, ids: Tensor) -> Tensor:
        t = self._tables(state.device)
        if self._dense:
            return torch.take(t["dense_logp"], state[:, None] * len(self.vocab) + ids)
        st = state[:, None].expand_as(ids).reshape(-1)
        return self._walk(t, st, ids.reshape(-1))[0].view(ids.shape)

    def end_logprobs(self, state: Tensor) -> Tensor:
        eos = torch.full_like(state, self.stoi[EOS])
        return self.logprobs(state, eos[:, None])[:, 0]

    def select(self, state: Tensor, index: Tensor) -> Tensor:
        return state.index_select(0, index)

    def advance(self, state: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        t = self._tables(state.device)
        if self._dense:
            nxt = torch.take(t["dense_next"], state * len(self.vocab) + ids)
        else:
            nxt = self._walk(t, state, ids)[1]
        return torch.where(mask, nxt, state)

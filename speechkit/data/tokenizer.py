"""Tokenizers: text ↔ token ids, id 0 the CTC blank.

A tokenizer's ``tokens[i]`` is the text id ``i`` writes, so a label sequence reads as its tokens
joined (white space runs collapsed): characters (``char``), subwords whose word-initial pieces
start with a space (``bpe``, speechkit/data/bpe.py: sentencepiece's ``▁the`` is ``" the"``), or
phones that each start with one (``phone``: ``" sil"``), or whole words of a closed vocabulary
(``word``: ``" bin"``). A token that starts with a space starts a word; the decoders need nothing
else to write text and word times. ``unit`` names what the tokens are (``char``, ``subword``,
``phone``, ``word``; :func:`speechkit.metrics.named_rates` reads it), and
a tokenizer with more to save than its tokens returns it from ``state()`` (a dict of tensors and
plain data, kept in the checkpoint and passed back as ``state=``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechkit.registry import register

BLANK_SYMBOL = "<blank>"


class UnknownSymbolError(ValueError):
    """Text holds symbols the tokenizer's vocabulary lacks."""

    def __init__(self, symbols: list[str], text: str, what: str = "characters", fix: str = "") -> None:
        self.symbols = symbols
        self.what = what  # "characters", or "phones" for a phone inventory
        shown = ", ".join(repr(s) for s in symbols)
        super().__init__(
            f"{what} {shown} in {text!r} are not in the model's vocabulary; "
            + (
                fix
                or "train with data that contains them, or clean the transcript (tokenizer.lowercase, "
                "tokenizer.normalize)"
            )
        )


def check_spellable(tokenizer, examples, fix: str = "add examples with them to the training data, "
                    "or clean these transcripts") -> None:
    """Raise :class:`~speechkit.data.errors.DataError` listing every example (``manifest:line``)
    whose transcript uses symbols the tokenizer's vocabulary lacks: before work starts, not after.
    ``fix``: what the message tells the user to do."""
    from speechkit.data.errors import DataError

    bad, what = [], "characters"
    for ex in examples:
        try:
            tokenizer.encode(ex.text)
        except UnknownSymbolError as e:
            bad.append(f"  {ex.where}: {e.what} {', '.join(map(repr, e.symbols))} in {ex.text!r}")
            what = e.what
    if bad:
        raise DataError(
            examples[0].manifest,
            f"{len(bad)} transcript(s) use {what} the model's vocabulary lacks:\n"
            + "\n".join(bad[:20])
            + (f"\n  … and {len(bad) - 20} more" if len(bad) > 20 else ""),
            fix,
        )


NORMALIZE = ("NFC", "NFKC", "none")


def check_normalize(normalize: str) -> None:
    if normalize not in NORMALIZE:
        raise ValueError(f"tokenizer.normalize={normalize!r}: use one of {', '.join(NORMALIZE)}")


def clean_text(text: str, normalize: str = "NFC", lowercase: bool = False) -> str:
    """``text`` Unicode-normalised (``normalize``: NFC, NFKC or none), white space runs collapsed, ends
    trimmed, lower-cased with ``lowercase``: what every tokenizer encodes and the metrics compare."""
    if normalize != "none":
        text = unicodedata.normalize(normalize, text)
    text = " ".join(text.split())  # collapse runs of white space
    return text.lower() if lowercase else text


@dataclass
class CharConfig:
    lowercase: bool = False  # lower-case every transcript before tokenising
    normalize: str = "NFC"  # Unicode normalisation of transcripts: NFC, NFKC, none


@register("tokenizer", "char", CharConfig)
class CharTokenizer:
    """Characters as tokens; the vocabulary is every character of the training transcripts."""

    unit = "char"

    def __init__(self, cfg: CharConfig, tokens: list[str] | None = None) -> None:
        check_normalize(cfg.normalize)
        self.cfg = cfg
        self.tokens: list[str] = list(tokens) if tokens is not None else [BLANK_SYMBOL]
        if self.tokens[0] != BLANK_SYMBOL:
            raise ValueError(f"token 0 must be the blank {BLANK_SYMBOL!r}, got {self.tokens[0]!r}")
        self._ids = {t: i for i, t in enumerate(self.tokens)}

    def clean(self, text: str) -> str:
        return clean_text(text, self.cfg.normalize, self.cfg.lowercase)

    def fit(self, texts: Iterable[str]) -> CharTokenizer:
        """Build the vocabulary from training transcripts (sorted, so the same data gives the same ids)."""
        chars = set()
        for t in texts:
            chars.update(self.clean(t))
        self.tokens = [BLANK_SYMBOL, *sorted(chars)]
        self._ids = {t: i for i, t in enumerate(self.tokens)}
        return self

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        text = self.clean(text)
        try:
            return [self._ids[c] for c in text]
        except KeyError:
            raise UnknownSymbolError(sorted({c for c in text if c not in self._ids}), text) from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.tokens[i] for i in ids if i != 0)


def saved_state(tokenizer: Any) -> dict[str, Any] | None:
    """What a checkpoint keeps of ``tokenizer`` besides its tokens (its ``state()``; None: nothing)."""
    state = getattr(tokenizer, "state", None)
    return state() if callable(state) else None


@dataclass
class PhoneConfig:
    inventory: Any = None  # the phone set, fixed: a file (first field of each line) or a list
    # [sil,dh,ax]; None: every phone of the training transcripts, sorted
    lowercase: bool = False  # lower-case every transcript before tokenising
    normalize: str = "NFC"  # Unicode normalisation of transcripts: NFC, NFKC, none


def read_inventory(inventory: str | Path | Sequence[str], symbol: str = "phone") -> list[str]:
    """The symbols (phones, words) of ``inventory`` in its order: a list, or a file's first field of
    each non-blank line."""
    if isinstance(inventory, str | Path):
        path = Path(inventory)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer.inventory={inventory}: no such file (one {symbol} a line)")
        phones = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        phones = [str(p) for p in inventory]
    repeated = sorted({p for p in phones if phones.count(p) > 1})
    bad = [p for p in phones if p == BLANK_SYMBOL or not p or p != "".join(p.split())]
    problem = "it is empty" if not phones else f"repeated: {repeated}" if repeated else f"unusable: {bad}"
    if repeated or bad or not phones:
        raise ValueError(
            f"tokenizer.inventory={inventory!r}: {problem}; "
            f"list each {symbol} once, without white space, none named {BLANK_SYMBOL!r}"
        )
    return phones


@register("tokenizer", "phone", PhoneConfig)
class PhoneTokenizer:
    """Phones as tokens: transcripts are white-space-separated phone symbols (TIMIT's "sil dh ax s")."""

    unit = "phone"  # also the symbol's name in messages

    def __init__(self, cfg: PhoneConfig, tokens: list[str] | None = None) -> None:
        check_normalize(cfg.normalize)
        self.cfg = cfg
        if tokens is not None:  # a checkpoint's: each symbol is written with the space that starts it
            if not tokens or tokens[0] != BLANK_SYMBOL or not all(t.startswith(" ") for t in tokens[1:]):
                raise ValueError(
                    f"{self.unit} tokens must be {BLANK_SYMBOL!r} then ' {self.unit.upper()}' each, "
                    f"got {tokens[:5]!r}"
                )
            self._set([t[1:] for t in tokens[1:]])
        else:
            self._set(read_inventory(cfg.inventory, self.unit) if cfg.inventory is not None else [])

    def _set(self, phones: list[str]) -> None:
        self.phones = list(phones)
        self.tokens = [BLANK_SYMBOL, *(" " + p for p in self.phones)]  # a phone is a word of the text
        self._ids = {p: i for i, p in enumerate(self.phones, start=1)}

    def clean(self, text: str) -> str:
        return clean_text(text, self.cfg.normalize, self.cfg.lowercase)

    def fit(self, texts: Iterable[str]) -> PhoneTokenizer:
        """The inventory: the training transcripts' phones, sorted; with ``inventory`` set, the fixed one,
        and every transcript is checked against it (:class:`UnknownSymbolError` for the first that fails)."""
        if self.cfg.inventory is not None:
            for t in texts:
                self.encode(t)
            return self
        phones: set[str] = set()
        for t in texts:
            phones.update(self.clean(t).split())
        self._set(sorted(phones))
        return self

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        phones = self.clean(text).split()
        try:
            return [self._ids[p] for p in phones]
        except KeyError:
            fix = (
                "add them to tokenizer.inventory, or correct the transcript"
                if self.cfg.inventory is not None
                else "train with data that contains them, or correct the transcript"
            )
            unknown = sorted({p for p in phones if p not in self._ids})
            raise UnknownSymbolError(unknown, text, self.unit + "s", fix) from None

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.phones[i - 1] for i in ids if i != 0)


@dataclass
class WordConfig(PhoneConfig):
    """The phone tokenizer's keys; ``inventory`` is the vocabulary: a file (first field of each line, a
    words.txt) or a list [bin,lay,place]; None: every word of the training transcripts, sorted."""


@register("tokenizer", "word", WordConfig)
class WordTokenizer(PhoneTokenizer):
    """Whole words as tokens, for a closed vocabulary (GRID's 51 words, digits, commands): one label
    per word instead of one per letter, so CTC has a handful of labels to place in an utterance
    instead of dozens (measured on lips_grid and asr_grid: recipes/lips_grid/README.md, "In 10
    minutes"; benchmarks/README.md, "Time to accuracy"). A transcript with a word outside the
    vocabulary is an error, in training and in a fixed ``inventory``; the model can write no other
    word. Error rates: WER and CER, as for characters."""

    unit = "word"

    @property
    def words(self) -> list[str]:
        """The vocabulary in id order (id ``i + 1`` is ``words[i]``)."""
        return self.phones

"""Tokenizers: text ↔ token ids, id 0 the CTC blank."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from speechkit.registry import register

BLANK_SYMBOL = "<blank>"


class UnknownSymbolError(ValueError):
    """Text holds symbols the tokenizer's vocabulary lacks."""

    def __init__(self, symbols: list[str], text: str) -> None:
        self.symbols = symbols
        shown = ", ".join(repr(s) for s in symbols)
        super().__init__(
            f"characters {shown} in {text!r} are not in the model's vocabulary; "
            "train with data that contains them, or clean the transcript (tokenizer.lowercase, "
            "tokenizer.normalize)"
        )


def check_spellable(tokenizer, examples) -> None:
    """Raise :class:`~speechkit.data.errors.DataError` listing every example (``manifest:line``)
    whose transcript uses symbols the tokenizer's vocabulary lacks: before work starts, not after."""
    from speechkit.data.errors import DataError

    bad = []
    for ex in examples:
        try:
            tokenizer.encode(ex.text)
        except UnknownSymbolError as e:
            bad.append(f"  {ex.where}: characters {', '.join(map(repr, e.symbols))} in {ex.text!r}")
    if bad:
        raise DataError(
            examples[0].manifest,
            f"{len(bad)} transcript(s) use characters the model's vocabulary lacks:\n" + "\n".join(bad[:20])
            + (f"\n  … and {len(bad) - 20} more" if len(bad) > 20 else ""),
            "add examples with them to the training data, or clean these transcripts",
        )


@dataclass
class CharConfig:
    lowercase: bool = False  # lower-case every transcript before tokenising
    normalize: str = "NFC"  # Unicode normalisation of transcripts: NFC, NFKC, none


@register("tokenizer", "char", CharConfig)
class CharTokenizer:
    """Characters as tokens; the vocabulary is every character of the training transcripts."""

    def __init__(self, cfg: CharConfig, tokens: list[str] | None = None) -> None:
        if cfg.normalize not in ("NFC", "NFKC", "none"):
            raise ValueError(f"tokenizer.normalize={cfg.normalize!r}: use one of NFC, NFKC, none")
        self.cfg = cfg
        self.tokens: list[str] = list(tokens) if tokens is not None else [BLANK_SYMBOL]
        if self.tokens[0] != BLANK_SYMBOL:
            raise ValueError(f"token 0 must be the blank {BLANK_SYMBOL!r}, got {self.tokens[0]!r}")
        self._ids = {t: i for i, t in enumerate(self.tokens)}

    def clean(self, text: str) -> str:
        if self.cfg.normalize != "none":
            text = unicodedata.normalize(self.cfg.normalize, text)
        text = " ".join(text.split())  # collapse runs of white space
        return text.lower() if self.cfg.lowercase else text

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

"""The ``bpe`` tokenizer: subword units learnt by sentencepiece (BPE or unigram), and the command
``speechkit-bpe text=FILE out=bpe.model [vocab_size=256]`` that trains one ahead of time.

Ids: a speechkit id is the sentencepiece id + 1, so id 0 stays the CTC blank. The models trained here
have no ``<s>``/``</s>`` (CTC marks no sentence ends) and their ``<unk>`` is sentencepiece id 0
(speechkit id 1): sentencepiece cannot do without one, but :meth:`BpeTokenizer.encode` never
produces it: text with characters the model lacks is refused (:class:`UnknownSymbolError`), as the
``char`` tokenizer refuses it, rather than trained on or scored as ``<unk>``. A piece's token is its
text with sentencepiece's word mark ``▁`` written as a space (``▁the`` → ``" the"``), so the decoders
join tokens into text and find word starts as they do for characters.

The trained model (its serialized proto) is the tokenizer's :meth:`~BpeTokenizer.state`, saved in
the checkpoint, which therefore rebuilds the tokenizer without the file it may have come from.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from speechkit.data.tokenizer import BLANK_SYMBOL, UnknownSymbolError, check_normalize, clean_text
from speechkit.registry import register

WORD_MARK = "▁"  # U+2581: sentencepiece's mark of a piece that starts a word
MODEL_TYPES = ("bpe", "unigram")
SEED = 0  # sentencepiece's random generator, fixed so the same text gives the same model


@dataclass
class BpeConfig:
    vocab_size: int = 256  # at most this many subword units, <unk> included (the blank makes one more);
    # a small training text gives fewer
    model_type: str = "bpe"  # bpe or unigram
    character_coverage: float = 1.0  # share of the training text's characters the units cover; below
    # 1 the rarest are left out, which fit() refuses while the training text uses them
    model: str | None = None  # an existing sentencepiece .model file (speechkit-bpe) instead of training
    lowercase: bool = False  # lower-case every transcript before tokenising
    normalize: str = "NFC"  # Unicode normalisation of transcripts: NFC, NFKC, none


def train_sentencepiece(
    texts: Iterable[str], vocab_size: int = 256, model_type: str = "bpe", character_coverage: float = 1.0
) -> bytes:
    """A sentencepiece model trained on ``texts`` (cleaned already), as its serialized proto.

    Deterministic: one thread, every sentence in its order (no sampling, no shuffling), a fixed seed;
    no normalisation of sentencepiece's own (``identity``), so a piece spells exactly the text.
    """
    import sentencepiece as spm

    sentences = [t for t in texts if t]
    if not sentences:
        raise ValueError("tokenizer=bpe: the training text is empty; there is nothing to learn units from")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"tokenizer.model_type={model_type!r}: use one of {', '.join(MODEL_TYPES)}")
    spm.set_random_generator_seed(SEED)
    longest = max(len(t.encode("utf-8")) for t in sentences)  # sentencepiece skips longer sentences silently
    out = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=out, vocab_size=vocab_size, model_type=model_type,
            character_coverage=character_coverage, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
            normalization_rule_name="identity", num_threads=1, input_sentence_size=0,
            shuffle_input_sentence=False, hard_vocab_limit=False, max_sentence_length=max(4192, longest),
            minloglevel=2,
        )  # fmt: skip
    except RuntimeError as e:
        need = re.search(r"required_chars\. \d+ vs (\d+)", str(e))
        if need:  # every character of the text is a unit, and <unk> is one more
            raise ValueError(
                f"tokenizer.vocab_size={vocab_size} is too small: the training text has {int(need[1]) - 1} "
                f"distinct characters (the space included), each a unit, and <unk>; give at least {need[1]}"
            ) from None
        raise ValueError(
            f"sentencepiece could not learn {vocab_size} units: {' '.join(str(e).split())}"
        ) from None
    return out.getvalue()


def _as_bytes(model: Any) -> bytes:
    """A saved model (uint8 tensor, bytes, or list of byte values) as bytes."""
    if isinstance(model, torch.Tensor):
        return model.detach().cpu().to(torch.uint8).numpy().tobytes()
    return bytes(model)


@register("tokenizer", "bpe", BpeConfig)
class BpeTokenizer:
    """Subword units (sentencepiece BPE or unigram) learnt from the training transcripts."""

    unit = "subword"

    def __init__(
        self, cfg: BpeConfig, tokens: list[str] | None = None, state: dict[str, Any] | None = None
    ) -> None:
        check_normalize(cfg.normalize)
        if cfg.model_type not in MODEL_TYPES:
            raise ValueError(f"tokenizer.model_type={cfg.model_type!r}: use one of {', '.join(MODEL_TYPES)}")
        self.cfg = cfg
        self.sp: Any = None
        self.tokens: list[str] = [BLANK_SYMBOL]
        if state is not None:  # a checkpoint's: the model itself, wherever tokenizer.model pointed
            if "model" not in state:
                raise ValueError("tokenizer=bpe: the saved tokenizer state has no sentencepiece model")
            self._load(_as_bytes(state["model"]))
        elif cfg.model:
            path = Path(cfg.model)
            if not path.is_file():
                raise FileNotFoundError(
                    f"tokenizer.model={cfg.model}: no such file (train one with speechkit-bpe)"
                )
            self._load(path.read_bytes(), str(path))
        elif tokens is not None:
            raise ValueError(
                "tokenizer=bpe: tokens alone cannot rebuild it; its sentencepiece model is missing "
                "(a checkpoint's tokenizer_state, or tokenizer.model=FILE)"
            )
        if tokens is not None and list(tokens) != self.tokens:
            raise ValueError("tokenizer=bpe: the saved tokens are not those of its sentencepiece model")

    def _load(self, proto: bytes, where: str = "the saved tokenizer state") -> None:
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor()
        try:
            sp.load_from_serialized_proto(proto)
        except (RuntimeError, OSError) as e:
            raise ValueError(f"tokenizer=bpe: {where} is not a sentencepiece model ({e})") from None
        pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
        self.sp, self._proto = sp, proto
        self.tokens = [BLANK_SYMBOL, *(p.replace(WORD_MARK, " ") for p in pieces)]
        plain = (i for i in range(len(pieces)) if not (sp.is_unknown(i) or sp.is_control(i)))
        self._chars = {c for i in plain for c in pieces[i]} - {WORD_MARK}

    def clean(self, text: str) -> str:
        return clean_text(text, self.cfg.normalize, self.cfg.lowercase)

    def fit(self, texts: Iterable[str]) -> BpeTokenizer:
        """Learn the units from the training transcripts; with ``model`` set, check the transcripts
        against that model instead (:class:`UnknownSymbolError` for the first it cannot spell)."""
        if self.cfg.model:
            for t in texts:
                self.encode(t)
            return self
        cleaned = [self.clean(t) for t in texts]
        c = self.cfg
        self._load(train_sentencepiece(cleaned, c.vocab_size, c.model_type, c.character_coverage))
        left_out = sorted({ch for t in cleaned for ch in t if ch != " "} - self._chars)
        if left_out:
            raise ValueError(
                f"tokenizer.character_coverage={c.character_coverage} left out the characters "
                f"{', '.join(map(repr, left_out[:20]))}, which the training transcripts use; "
                "set tokenizer.character_coverage=1.0 or clean the transcripts"
            )
        return self

    def state(self) -> dict[str, torch.Tensor]:
        """The trained model as a checkpoint keeps it: ``{"model": its serialized proto, uint8 (bytes,)}``."""
        if self.sp is None:
            raise RuntimeError("tokenizer=bpe is not trained: call fit(texts) or set tokenizer.model=FILE")
        return {"model": torch.frombuffer(bytearray(self._proto), dtype=torch.uint8)}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        if self.sp is None:
            raise RuntimeError("tokenizer=bpe is not trained: call fit(texts) or set tokenizer.model=FILE")
        text = self.clean(text)
        ids = self.sp.encode(text)
        if self.sp.unk_id() in ids:
            unknown = sorted({ch for ch in text if ch != " " and ch not in self._chars}) or [text]
            raise UnknownSymbolError(unknown, text)
        return [i + 1 for i in ids]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``: their pieces joined, word marks as spaces, the ends trimmed."""
        return " ".join("".join(self.tokens[i] for i in ids if i != 0).split())


# --------------------------------------------------------------------------- speechkit-bpe

CLI_USAGE = "speechkit-bpe text=FILE out=FILE [vocab_size=256] [model_type=bpe|unigram] [lowercase=false]"
CLI_HELP = f"""\
usage: {CLI_USAGE}

Train a sentencepiece model of subword units on a text file (one transcript a line), for
tokenizer=bpe tokenizer.model=FILE. The checkpoint keeps a copy, so the file is needed for training only.

  text=FILE                training text, one transcript a line
  out=FILE                 the .model file to write
  vocab_size=N             at most this many units, <unk> included (default 256)
  model_type=bpe|unigram   how units are learnt (default bpe)
  character_coverage=F     share of the characters the units cover (default 1.0)
  lowercase=true|false     lower-case the text first (default false); use the tokenizer's setting
  normalize=NFC|NFKC|none  Unicode normalisation (default NFC); use the tokenizer's setting

example: speechkit-bpe text=train.txt out=bpe.model vocab_size=500"""

#: the command's keys and their defaults (None: required)
CLI_KEYS: dict[str, str | None] = {
    "text": None,
    "out": None,
    "vocab_size": "256",
    "model_type": "bpe",
    "character_coverage": "1.0",
    "lowercase": "false",
    "normalize": "NFC",
}


def parse_args(argv: Sequence[str]) -> tuple[BpeConfig, Path, Path]:
    """``key=value`` arguments → (the tokenizer's config, the text, the output); errors are ``UsageError``."""
    from speechkit.cli import UsageError, parse_key_values

    a = parse_key_values(argv, CLI_KEYS, "speechkit-bpe")
    if not a["vocab_size"].isdigit() or int(a["vocab_size"]) < 2:
        raise UsageError(f"vocab_size={a['vocab_size']}: give a whole number ≥ 2")
    try:
        coverage = float(a["character_coverage"])
    except ValueError:
        coverage = -1.0
    if not 0 < coverage <= 1:
        raise UsageError(f"character_coverage={a['character_coverage']}: give a number in (0, 1]")
    if a["lowercase"] not in ("true", "false"):
        raise UsageError(f"lowercase={a['lowercase']}: give true or false")
    if a["model_type"] not in MODEL_TYPES:
        raise UsageError(f"model_type={a['model_type']}: give one of {', '.join(MODEL_TYPES)}")
    try:
        check_normalize(a["normalize"])
    except ValueError as e:
        raise UsageError(str(e).removeprefix("tokenizer.")) from None
    if not Path(a["text"]).is_file():
        raise UsageError(f"text={a['text']}: no such file (give the training text, one transcript a line)")
    cfg = BpeConfig(
        int(a["vocab_size"]), a["model_type"], coverage, None, a["lowercase"] == "true", a["normalize"]
    )
    return cfg, Path(a["text"]), Path(a["out"])


def _work(argv: list[str]) -> None:
    from speechkit.cli import UsageError

    cfg, text, out = parse_args(argv)
    try:
        tok = BpeTokenizer(cfg).fit(text.read_text(encoding="utf-8").splitlines())
        out.write_bytes(_as_bytes(tok.state()["model"]))
    except (OSError, ValueError) as e:  # an empty text, too small a vocabulary, an unwritable output
        raise UsageError(str(e).replace("tokenizer.", "")) from None
    print(f"wrote {out} ({len(tok) - 1} {cfg.model_type} units, <unk> included)")


def main(argv: Sequence[str] | None = None) -> None:
    """``speechkit-bpe text=FILE out=FILE [vocab_size=N]``: train a sentencepiece model, write it."""
    from speechkit.cli import run

    run(_work, CLI_USAGE, CLI_HELP, argv)


if __name__ == "__main__":
    main()

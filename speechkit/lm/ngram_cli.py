"""``speechkit-ngram text=FILE out=FILE [order=3] [unit=char|word]``: train an interpolated
Kneser-Ney n-gram LM (speechkit/lm/ngram.py) on a text file and write it as ARPA."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from speechkit.cli import UsageError, parse_key_values, run
from speechkit.lm.ngram import NgramLM

CLI_USAGE = "speechkit-ngram text=FILE out=FILE [order=3] [unit=char|word] [space_symbol=|]"
CLI_HELP = f"""\
usage: {CLI_USAGE}

Train an interpolated Kneser-Ney n-gram LM on a text file (one sentence a line) and write it as ARPA.

  text=FILE          training text, one sentence a line
  out=FILE           the ARPA file to write
  order=N            n of the n-gram (default 3)
  unit=char|word     what the LM predicts (default char)
  space_symbol=SYM   the word separator's spelling in a char LM (default |)

example: speechkit-ngram text=lm_train.txt order=4 unit=char out=lm.arpa"""

#: the command's keys and their defaults (None: required)
CLI_KEYS: dict[str, str | None] = {"text": None, "out": None, "order": "3", "unit": "char", "space_symbol": "|"}


def parse_args(argv: Sequence[str]) -> dict[str, str]:
    """``key=value`` arguments → the command's options, defaults filled in; errors are ``UsageError``."""
    out = parse_key_values(argv, CLI_KEYS, "speechkit-ngram")
    if not out["order"].isdigit() or int(out["order"]) < 1:
        raise UsageError(f"order={out['order']}: give a whole number ≥ 1")
    if out["unit"] not in ("char", "word"):
        raise UsageError(f"unit={out['unit']}: give char or word")
    return out


def _work(argv: list[str]) -> None:
    a = parse_args(argv)
    if not Path(a["text"]).is_file():
        raise UsageError(f"text={a['text']}: no such file (give the training text, one sentence a line)")
    try:
        lm = NgramLM.train(a["text"], order=int(a["order"]), unit=a["unit"], space_symbol=a["space_symbol"])
        lm.save_arpa(a["out"])
    except (OSError, ValueError) as e:  # an empty text, an unwritable output: one line
        raise UsageError(str(e)) from None
    sizes = ", ".join(f"{k}-grams: {len(t)}" for k, t in enumerate(lm.ngrams, 1))
    print(f"wrote {a['out']} ({a['unit']} {lm.order}-gram, {sizes})")


def main(argv: Sequence[str] | None = None) -> None:
    """``speechkit-ngram text=FILE order=N unit=char|word out=FILE``: train an n-gram LM, write ARPA."""
    run(_work, CLI_USAGE, CLI_HELP, argv)


if __name__ == "__main__":
    main()

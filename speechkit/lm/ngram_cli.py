"""``speechkit-ngram text=FILE out=FILE [order=3] [unit=char|word]``: train an interpolated
Kneser-Ney n-gram LM (speechkit/lm/ngram.py) on a text file and write it as ARPA."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

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


def _cli_error(message: str) -> SystemExit:
    return SystemExit(f"error: {message}")


def parse_args(argv: Sequence[str]) -> dict[str, str]:
    """``key=value`` arguments → the command's options, defaults filled in; errors are ``SystemExit``."""
    if any(a.startswith("--") and a != "--help" for a in argv):
        # the old argparse form: name the same command in the new one
        new, it = [], iter(argv)
        for a in it:
            key, eq, value = a[2:].partition("=") if a.startswith("--") else ("", "", a)
            if a.startswith("--") and not eq:
                value = next(it, "")
            new.append(f"{key.replace('-', '_')}={value}" if key else value)
        raise SystemExit(
            "error: speechkit-ngram takes key=value arguments like every speechkit command, not --flags: "
            f"speechkit-ngram {' '.join(new)}"
        )
    opts: dict[str, str] = {}
    for a in argv:
        key, eq, value = a.partition("=")
        if not eq or not key:
            raise _cli_error(f"{a!r} is not key=value (e.g. text=lm_train.txt)")
        key = key.replace("-", "_")
        if key not in CLI_KEYS:
            near = difflib.get_close_matches(key, CLI_KEYS, n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            raise _cli_error(f"unknown key {key!r}; {hint}valid keys: {', '.join(CLI_KEYS)}")
        opts[key] = value
    missing = [k for k, default in CLI_KEYS.items() if default is None and not opts.get(k)]
    if missing:
        raise _cli_error(f"missing {' and '.join(f'{k}=FILE' for k in missing)}")
    out = {k: opts.get(k, default) for k, default in CLI_KEYS.items()}
    if not out["order"].isdigit() or int(out["order"]) < 1:
        raise _cli_error(f"order={out['order']}: give a whole number ≥ 1")
    if out["unit"] not in ("char", "word"):
        raise _cli_error(f"unit={out['unit']}: give char or word")
    return out  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> None:
    """``speechkit-ngram text=FILE order=N unit=char|word out=FILE``: train an n-gram LM, write ARPA."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(CLI_HELP)
        return
    try:
        a = parse_args(argv)
        if not Path(a["text"]).is_file():
            raise SystemExit(f"error: text={a['text']}: no such file (give the training text, one sentence a line)")
        try:
            lm = NgramLM.train(a["text"], order=int(a["order"]), unit=a["unit"], space_symbol=a["space_symbol"])
            lm.save_arpa(a["out"])
        except (OSError, ValueError) as e:  # an empty text, an unwritable output: one line
            raise SystemExit(f"error: {' '.join(str(e).split())}") from None
    except SystemExit as e:  # the user's mistake: the usage line, one error line, status 2 (as every command)
        if not (isinstance(e.code, str) and e.code.startswith("error:")):
            raise
        print(f"usage: {CLI_USAGE}", file=sys.stderr)
        print(e.code, file=sys.stderr)
        raise SystemExit(2) from None
    sizes = ", ".join(f"{k}-grams: {len(t)}" for k, t in enumerate(lm.ngrams, 1))
    print(f"wrote {a['out']} ({a['unit']} {lm.order}-gram, {sizes})")


if __name__ == "__main__":
    main()

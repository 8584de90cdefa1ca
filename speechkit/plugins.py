"""``speechkit-plugins [KIND]``: the registered plugins (of one kind, or all), each with its
parameters, their defaults and a line of help."""

from __future__ import annotations

import sys
from typing import NoReturn

USAGE = """\
usage: speechkit-plugins [KIND]

The registered plugins of KIND (default: every kind), each with a one-sentence description and
its parameters: name, type, default and help. KIND: {kinds}.
example: speechkit-plugins decoder"""


def main(argv: list[str] | None = None) -> None:
    from speechkit.registry import REGISTRIES, PluginError, describe

    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(USAGE.format(kinds=", ".join(REGISTRIES)))
        return
    if len(args) > 1:
        _fail(f"speechkit-plugins takes at most one kind, got {' '.join(args)}; kinds: {', '.join(REGISTRIES)}")
    kind = args[0].removeprefix("kind=") if args else None
    if kind is not None and kind not in REGISTRIES and kind.endswith("s") and kind[:-1] in REGISTRIES:
        kind = kind[:-1]  # "decoders": the kind decoder
    try:
        print(describe(kind))
    except PluginError as e:
        _fail(str(e))


def _fail(message: str) -> NoReturn:
    """The user's mistake: the usage line and one ``error:`` line on stderr, status 2 (as every command)."""
    print(f"usage: {USAGE.splitlines()[0].removeprefix('usage: ')}", file=sys.stderr)
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()

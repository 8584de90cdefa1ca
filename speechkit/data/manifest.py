"""Manifests: JSON lines, one example a line (NeMo-compatible for audio).

``{"audio_filepath": "wav/0001.wav", "duration": 1.93, "text": "bin blue at c five please"}``;
images use ``image_filepath``, videos ``video_filepath``. Relative paths are relative to the
manifest's own folder. Every unusable line is reported with the manifest's name and line number.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechkit.data.errors import DataError

MAX_ERRORS_SHOWN = 20
MAX_FLOAT = sys.float_info.max  # largest finite float, about 1.8e308


@dataclass(frozen=True)
class Example:
    path: Path  # the media file, absolute or relative to the working directory
    text: str | None  # None where the manifest has no transcript (transcription only)
    manifest: Path
    line: int  # 1-based line number in the manifest
    duration: float | None = None  # seconds, where the manifest says
    fields: tuple[tuple[str, object], ...] = ()  # the line's other fields (speaker, fps, …)
    source: Any = field(default=None, compare=False, repr=False)  # data.format=lhotse: the cut it came from

    @property
    def where(self) -> str:
        return f"{self.manifest}:{self.line}"

    @property
    def length(self) -> float | None:
        """How long the example is, for batching by length: ``duration`` (s) where the manifest has one,
        else an image's ``width`` / ``height`` (a text line scaled to a fixed height has frames in
        proportion to it), else None."""
        if self.duration is not None:
            return self.duration
        size = dict(self.fields)
        w, h = size.get("width"), size.get("height")
        if all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in (w, h)):
            return float(w) / float(h)
        return None


class ManifestError(DataError):
    """One or more lines of a manifest cannot be used; ``problems`` lists them all."""

    def __init__(self, manifest: Path, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        shown = "\n".join(f"  {manifest}:{line}: {msg}" for line, msg in problems[:MAX_ERRORS_SHOWN])
        more = len(problems) - MAX_ERRORS_SHOWN
        if more > 0:
            shown += f"\n  … and {more} more"
        super().__init__(
            manifest,
            f"{len(problems)} unusable line(s):\n{shown}\n",
            "fix or remove these lines (speechkit-validate lists every problem)",
        )


def manifest_list(value: Any) -> list[str]:
    """A ``data.*_manifest`` setting as a list of paths: one path, or a list of them (corpora trained
    together: ``data.train_manifest=[a/train.jsonl,b/train.jsonl]``); [] when unset."""
    if not value:
        return []
    if isinstance(value, (str, Path)):
        return [str(value)]
    if isinstance(value, Sequence) and all(isinstance(v, (str, Path)) for v in value):
        return [str(v) for v in value]
    raise ValueError(f"a manifest setting is {value!r}: give a path, or a list of paths ([a.jsonl,b.jsonl])")


def write_manifest(path: str | Path, rows: Iterable[dict]) -> Path:
    """Write ``rows`` as a JSON-lines manifest (UTF-8, one object a line, ``\\n`` endings); returns ``path``."""
    path = Path(path)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_manifest(path: str | Path, modality: str = "audio", require_text: bool = True) -> list[Example]:
    """Read every example of a JSON-lines manifest whose media key is ``{modality}_filepath``.

    Raises :class:`ManifestError` naming every bad line (not JSON, not an object, missing or
    wrongly typed key, empty transcript) — nothing is dropped silently.
    """
    examples, problems = parse_manifest(path, modality, require_text)
    if problems:
        raise ManifestError(Path(path), problems)
    if not examples:
        raise DataError(path, "manifest has no examples", "point data.*_manifest at a non-empty manifest")
    return examples


def parse_manifest(
    path: str | Path, modality: str = "audio", require_text: bool = True
) -> tuple[list[Example], list[tuple[int, str]]]:
    """The usable examples of a manifest and ``(line, problem)`` for every line that is not.

    A missing or non-UTF-8 manifest raises :class:`DataError`; :func:`read_manifest` raises on
    any problem, ``speechkit-validate`` reports them all and checks the rest.
    """
    path = Path(path)
    key = f"{modality}_filepath"
    if path.is_dir():
        inside = ", ".join(sorted(p.name for p in path.glob("*.jsonl"))[:4]) or "none"
        raise DataError(
            path,
            f"a folder, not a manifest file (JSON-lines files in it: {inside})",
            "give the path of a .jsonl file, or make one with speechkit-manifest dir=FOLDER out=FILE",
        )
    if not path.is_file():
        raise DataError(path, "manifest not found", "check data.*_manifest, or run the recipe's prepare.py")
    root = path.parent
    examples: list[Example] = []
    problems: list[tuple[int, str]] = []
    try:
        # JSON lines end at "\n" only: str.splitlines() would also break at form feeds, U+2028 and
        # other characters a JSON string may hold raw, and shift every later line number
        raw_lines = [line.removesuffix("\r") for line in path.read_text(encoding="utf-8").split("\n")]
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text ({e})", "write the manifest as UTF-8 JSON lines") from None
    for n, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as e:
            problems.append(
                (n, f"not valid JSON ({e.msg} at column {e.colno}); each line must be one JSON object")
            )
            continue
        if not isinstance(item, dict):
            problems.append((n, f"expected a JSON object, got {type(item).__name__}"))
            continue
        media = item.get(key)
        if not isinstance(media, str) or not media:
            others = [k for k in item if k.endswith("_filepath")]
            hint = (
                f" (it has {', '.join(others)}: is this a manifest for another modality?)" if others else ""
            )
            problems.append((n, f"no {key!r} string{hint}"))
            continue
        text = item.get("text")
        if require_text or text is not None:
            if not isinstance(text, str):
                problems.append((n, f"'text' must be a string, got {type(text).__name__}"))
                continue
            if not text.strip():
                problems.append((n, "empty transcript; CTC needs at least one label"))
                continue
        duration = item.get("duration")
        # finite: json also reads NaN, Infinity and integers too large for a float
        if duration is not None and (
            not isinstance(duration, int | float)
            or isinstance(duration, bool)
            or not 0 <= duration <= MAX_FLOAT
        ):
            problems.append((n, f"'duration' must be a finite non-negative number, got {duration!r}"))
            continue
        media_path = Path(media)
        if not media_path.is_absolute():
            media_path = root / media_path
        rest = tuple((k, v) for k, v in item.items() if k not in (key, "text", "duration"))
        examples.append(Example(media_path, text, path, n, duration, rest))
    return examples, problems

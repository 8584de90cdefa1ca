"""lhotse manifests → speechkit's JSON-lines manifests.

A corpus recipe (speechkit/corpora/<corpus>.py) lets lhotse parse the corpus into recordings
and supervisions, then calls :func:`write_manifest_from_lhotse`. speechkit's loaders read whole
files, so only a supervision that covers its whole, single-channel, single-file recording
becomes a manifest line; every other one is returned as skipped with its reason — counted and
listed by ``speechkit-prepare``, never dropped silently. This module imports nothing from lhotse:
it reads the objects' fields, so it is importable (and testable) without lhotse installed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from speechkit.data.errors import DataError

# A supervision may end this much before its recording ends and still count as the whole file
# (lhotse rounds durations; compressed formats pad a few ms).
WHOLE_FILE_TOLERANCE_S = 0.010  # seconds
# A start this close to 0 is 0: durations and offsets are written rounded to the millisecond.
ZERO_START_S = 0.0005  # seconds

Skipped = list[tuple[str, str]]  # (supervision or recording id, reason)


def _media_file(rec: Any, modality: str) -> tuple[Path | None, str]:
    """The one local file a recording reads from, or None and why speechkit cannot read it whole."""
    if getattr(rec, "transforms", None):
        return None, "recording has lhotse transforms (speed/volume/…); speechkit reads files as they are"
    sources = rec.sources
    if len(sources) != 1:
        return None, f"recording has {len(sources)} sources (separate files per channel); speechkit reads one"
    source = sources[0]
    if source.type != "file":
        return None, f"recording's source is of type {source.type!r}, not a local file"
    if modality == "audio" and len(source.channels) != 1:
        return None, (
            f"recording has {len(source.channels)} channels; speechkit's loader would average them "
            "instead of reading the supervised one"
        )
    path = Path(source.source).absolute()
    if not path.is_file():
        return None, f"{modality} file not found: {path}"
    return path, ""


def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` when it lies inside it, else absolute (POSIX separators)."""
    try:
        return path.relative_to(folder.absolute()).as_posix()
    except ValueError:
        return path.as_posix()


def write_manifest_from_lhotse(
    recordings: Iterable[Any],
    supervisions: Iterable[Any],
    path: Path,
    *,
    modality: str = "audio",
    text: Callable[[Any], str | None] = lambda s: s.text,
    extra: Callable[[Any, Any], dict] | None = None,
    also_skipped: Iterable[tuple[str, str]] = (),
) -> tuple[int, Skipped]:
    """Write one manifest line per usable supervision to ``path``; return ``(lines, skipped)``.

    ``recordings`` and ``supervisions`` are lhotse ``RecordingSet``/``SupervisionSet`` (or any
    iterables of ``Recording``/``SupervisionSegment``). Each line has ``{modality}_filepath``
    (relative to ``path``'s folder when the file lies under it, absolute otherwise), ``duration``
    (the recording's, in seconds, rounded to the ms), ``text`` (``text(sup)``), ``id`` (the
    supervision id), ``speaker`` and ``language`` where lhotse knows them, and ``extra(sup, rec)``.

    Skipped, as ``(id, reason)``: a supervision whose recording is missing, not one local file,
    not one channel (audio), not found on disk, or not covered whole (a start after 0, an end
    more than ``WHOLE_FILE_TOLERANCE_S`` before the recording's); an empty transcript; and a
    recording that no supervision refers to (audio without transcript). ``also_skipped`` adds
    what the recipe found before lhotse ran (lhotse passes over some problems silently). Every
    skip is also listed in :func:`skipped_path` beside the manifest (``id<TAB>reason`` lines,
    read by ``speechkit-prepare``'s summary). Two supervisions with one id raise :class:`DataError`.
    """
    path = Path(path)
    sups = list(supervisions)
    counts = Counter(s.id for s in sups)
    dups = sorted(i for i, n in counts.items() if n > 1)
    if dups:
        shown = ", ".join(dups[:5]) + (f" and {len(dups) - 5} more" if len(dups) > 5 else "")
        raise DataError(
            path,
            f"{len(dups)} utterance id(s) occur more than once in the corpus: {shown}",
            "each utterance needs its own id; remove the duplicated transcript lines or files",
        )
    recs = {r.id: r for r in recordings}
    used: set[str] = set()
    rows: list[dict] = []
    skipped: Skipped = list(also_skipped)
    for sup in sups:
        rec = recs.get(sup.recording_id)
        if rec is None:
            skipped.append((sup.id, f"no {modality} for this transcript (recording {sup.recording_id!r})"))
            continue
        used.add(rec.id)
        media, why = _media_file(rec, modality)
        if media is None:
            skipped.append((sup.id, why))
            continue
        if sup.start > ZERO_START_S or sup.start + sup.duration < rec.duration - WHOLE_FILE_TOLERANCE_S:
            skipped.append(
                (
                    sup.id,
                    f"covers {sup.start:.3f}–{sup.start + sup.duration:.3f} s of a {rec.duration:.3f} s "
                    "recording; speechkit reads whole files (cut the segments into files first)",
                )
            )
            continue
        transcript = text(sup)
        if transcript is None or not transcript.strip():
            skipped.append((sup.id, "empty transcript"))
            continue
        row: dict = {
            f"{modality}_filepath": _relative(media, path.parent),
            "duration": round(rec.duration, 3),
            "text": transcript,
            "id": sup.id,
        }
        if sup.speaker is not None:
            row["speaker"] = sup.speaker
        if sup.language is not None:
            row["language"] = sup.language
        if extra is not None:
            row.update(extra(sup, rec))
        rows.append(row)
    skipped.extend((rid, f"{modality} without transcript") for rid in recs if rid not in used)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    listing = skipped_path(path)
    if skipped:
        listing.write_text("".join(f"{i}\t{' '.join(why.split())}\n" for i, why in skipped), encoding="utf-8")
    else:
        listing.unlink(missing_ok=True)  # a listing from an earlier run would no longer be true
    return len(rows), skipped


def skipped_path(manifest: Path) -> Path:
    """Where the skips of ``manifest`` are listed: ``train.jsonl`` → ``train.skipped.tsv``."""
    manifest = Path(manifest)
    return manifest.with_name(f"{manifest.stem}.skipped.tsv")


def read_skipped(manifest: Path) -> Skipped:
    """The ``(id, reason)`` skips listed beside ``manifest`` (none when there is no listing)."""
    listing = skipped_path(manifest)
    if not listing.is_file():
        return []
    lines = listing.read_text(encoding="utf-8").splitlines()
    return [(utt, why) for utt, _, why in (line.partition("\t") for line in lines) if utt]


def write_lm_text(rows: Iterable[dict], out_dir: Path) -> tuple[Path, Path]:
    """Write ``lm_train.txt`` (each row's ``text`` on one line, whitespace collapsed) and
    ``words.txt`` (the sorted vocabulary, one word a line) to ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    lines = [" ".join(r["text"].split()) for r in rows]
    words = sorted({w for line in lines for w in line.split()})
    lm_path, words_path = out_dir / "lm_train.txt", out_dir / "words.txt"
    lm_path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    words_path.write_text("".join(w + "\n" for w in words), encoding="utf-8")
    return lm_path, words_path


def read_rows(path: Path) -> list[dict]:
    """The rows of a manifest this module wrote (one JSON object a line)."""
    text = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.split("\n") if line.strip()]


__all__ = [
    "WHOLE_FILE_TOLERANCE_S",
    "read_rows",
    "read_skipped",
    "skipped_path",
    "write_lm_text",
    "write_manifest_from_lhotse",
]

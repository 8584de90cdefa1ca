"""LibriSpeech and Mini LibriSpeech → speechkit manifests, through lhotse's ``prepare_librispeech``.

``corpus_dir`` is the ``LibriSpeech`` folder the archives extract to::

    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   (id TEXT, a line)

Each subset becomes ``out/<subset>.jsonl`` (``out/train-clean-100.jsonl``, ``out/dev-clean.jsonl``,
…), its transcripts upper case as published (``tokenizer.lowercase=true`` lower-cases them).
Before lhotse runs, the transcripts and FLAC files are inventoried, so a transcript line without
audio and audio without a transcript line (which lhotse passes over) are listed as skipped, and a
duplicated utterance id or a blank line (on which lhotse fails without naming the file) is an error
naming the file and line.
"""

from __future__ import annotations

from pathlib import Path

from speechkit.cli import UsageError
from speechkit.corpora.lhotse_io import Skipped, write_manifest_from_lhotse
from speechkit.data.errors import DataError

LIBRISPEECH = (
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
)
MINI_LIBRISPEECH = ("train-clean-5", "dev-clean-2")
SUBSETS = {"librispeech": LIBRISPEECH, "mini_librispeech": MINI_LIBRISPEECH}
LAYOUT = "LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac and <speaker>-<chapter>.trans.txt"


def _check_layout(corpus_dir: Path, corpus: str) -> list[str]:
    """The subsets of ``corpus`` present in ``corpus_dir``; a folder one level off, or holding the
    other corpus, is a :class:`DataError` saying which folder to give instead."""
    if not corpus_dir.is_dir():
        raise DataError(
            corpus_dir, "no such folder", f"give corpus_dir= the extracted LibriSpeech folder ({LAYOUT})"
        )
    names = {p.name for p in corpus_dir.iterdir() if p.is_dir()}
    present = [s for s in SUBSETS[corpus] if s in names]
    if present:
        return present
    other = "mini_librispeech" if corpus == "librispeech" else "librispeech"
    if names & set(SUBSETS[other]):
        found = ", ".join(sorted(names & set(SUBSETS[other])))
        raise DataError(corpus_dir, f"holds {found}, subsets of {other}", f"run with corpus={other}")
    if "LibriSpeech" in names:
        raise DataError(
            corpus_dir,
            "is one level too high: it holds LibriSpeech/",
            f"give corpus_dir={corpus_dir / 'LibriSpeech'}",
        )
    if corpus_dir.name in LIBRISPEECH + MINI_LIBRISPEECH or next(corpus_dir.glob("*/*/*.trans.txt"), None):
        raise DataError(
            corpus_dir,
            "is one level too deep: it is a subset folder (<speaker>/<chapter>/… inside)",
            f"give its parent, corpus_dir={corpus_dir.parent}",
        )
    raise DataError(
        corpus_dir,
        f"holds none of the {corpus} subsets ({', '.join(SUBSETS[corpus])})",
        f"give the extracted LibriSpeech folder ({LAYOUT})",
    )


def _choose(subsets: list[str] | None, present: list[str], corpus: str, corpus_dir: Path) -> list[str]:
    if not subsets:
        return present
    unknown = [s for s in subsets if s not in SUBSETS[corpus]]
    if unknown:
        raise UsageError(
            f"subsets={','.join(unknown)}: not a {corpus} subset; give some of {', '.join(SUBSETS[corpus])}"
        )
    absent = [s for s in subsets if s not in present]
    if absent:
        raise DataError(
            corpus_dir,
            f"has no {', '.join(absent)} folder (present: {', '.join(present)})",
            "extract it there first",
        )
    return subsets


def _inventory(part_dir: Path) -> Skipped:
    """What lhotse will pass over in one subset — transcript lines without their FLAC file, FLAC
    files without a transcript line — as ``(id, reason)``; a duplicated id or a line lhotse cannot
    split into id and text raises :class:`DataError`."""
    seen: dict[str, str] = {}  # utterance id → "file:line"
    skipped: Skipped = []
    transcripts = sorted(part_dir.rglob("*.trans.txt"))
    if not transcripts:
        raise DataError(part_dir, "has no <speaker>-<chapter>.trans.txt files", f"expected {LAYOUT}")
    for trans in transcripts:
        for n, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
            fields = line.split(maxsplit=1)
            if len(fields) < 2:
                raise DataError(
                    f"{trans}:{n}",
                    "blank line" if not fields else f"utterance {fields[0]} has no transcript",
                    "every line must be '<speaker>-<chapter>-<utt> TEXT'; delete or complete it",
                )
            utt = fields[0]
            if utt in seen:
                raise DataError(
                    f"{trans}:{n}", f"utterance id {utt} is also on {seen[utt]}", "delete one of the lines"
                )
            seen[utt] = f"{trans}:{n}"
            flac = part_dir / Path(utt.replace("-", "/")).parent / f"{utt}.flac"  # where lhotse looks
            if not flac.is_file():
                skipped.append((utt, f"transcript {trans.name}:{n} has no audio {flac}"))
    for flac in sorted(part_dir.rglob("*.flac")):
        if flac.stem not in seen:
            skipped.append((flac.stem, f"audio {flac} has no transcript line"))
    return skipped


def prepare(
    corpus_dir: Path, out: Path, *, corpus: str, subsets: list[str] | None, num_jobs: int = 1
) -> dict[str, Path]:
    """Write ``out/<subset>.jsonl`` for each subset (default: every one present); return subset → manifest.

    ``corpus`` is ``librispeech`` or ``mini_librispeech``; ``num_jobs`` threads read the audio
    headers. Transcripts stay as published (upper case).
    """
    from lhotse.recipes import prepare_librispeech

    corpus_dir, out = Path(corpus_dir), Path(out)
    parts = _choose(subsets, _check_layout(corpus_dir, corpus), corpus, corpus_dir)
    written: dict[str, Path] = {}
    for part in parts:
        not_seen = _inventory(corpus_dir / part)
        # output_dir=None: lhotse would otherwise reuse manifests cached there, even stale ones
        m = prepare_librispeech(corpus_dir, dataset_parts=[part], output_dir=None, num_jobs=num_jobs)[part]
        path = out / f"{part}.jsonl"
        write_manifest_from_lhotse(m["recordings"], m["supervisions"], path, also_skipped=not_seen)
        written[part] = path
    return written

"""Mozilla Common Voice → speechkit manifests, through lhotse's ``prepare_commonvoice``.

``corpus_dir`` is the release folder as extracted, ``language=`` one of its language folders::

    cv-corpus-<version>/<language>/{train,dev,test,validated,invalidated,other}.tsv
    cv-corpus-<version>/<language>/clips/common_voice_<language>_<n>.mp3

Each split becomes ``out/<split>.jsonl`` (default: train, dev and test, those present), MP3 clips
referenced where they are, durations those of the decoded audio. The TSVs are read first for
their ``path`` column, so a listed clip that is missing (lhotse passes over it) is listed as
skipped and a clip listed twice is an error naming both lines. lhotse 1.33 reads a ``variant``
column that releases before 15.0 lack; for those the TSV is given to lhotse with an empty
``variant`` column added (a copy in a temporary folder, the clips reached through a link).
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from pathlib import Path

from speechkit.cli import UsageError
from speechkit.corpora.lhotse_io import Skipped, write_manifest_from_lhotse
from speechkit.data.errors import DataError

log = logging.getLogger("speechkit.corpora")

SPLITS = ("train", "dev", "test", "validated", "invalidated", "other")  # the TSVs lhotse reads
DEFAULT_SPLITS = ("train", "dev", "test")
COLUMNS = ("client_id", "path", "sentence", "age", "gender", "accents")  # what lhotse reads, besides variant
LAYOUT = "cv-corpus-<version>/<language>/{train,dev,test}.tsv and <language>/clips/*.mp3"


def _language_dir(corpus_dir: Path, language: str) -> Path:
    """``corpus_dir/language``, or a :class:`DataError` saying which folder to give instead."""
    if not corpus_dir.is_dir():
        raise DataError(
            corpus_dir, "no such folder", f"give corpus_dir= the extracted release folder ({LAYOUT})"
        )
    if (corpus_dir / "clips").is_dir() or next(corpus_dir.glob("*.tsv"), None):
        raise DataError(
            corpus_dir,
            "is one level too deep: it is a language folder (clips/ and *.tsv inside)",
            f"give its parent, corpus_dir={corpus_dir.parent} language={corpus_dir.name}",
        )
    releases = sorted(p.name for p in corpus_dir.glob("cv-corpus-*") if p.is_dir())
    if releases:
        raise DataError(
            corpus_dir,
            f"is one level too high: it holds {', '.join(releases)}",
            f"give corpus_dir={corpus_dir / releases[0]}",
        )
    lang_dir = corpus_dir / language
    if not (lang_dir / "clips").is_dir():
        present = sorted(p.name for p in corpus_dir.iterdir() if (p / "clips").is_dir())
        found = f"its languages: {', '.join(present)}" if present else "it holds no <language>/clips/ folder"
        raise DataError(corpus_dir, f"has no {language}/clips/ folder ({found})", f"expected {LAYOUT}")
    return lang_dir


def _choose(subsets: list[str] | None, lang_dir: Path) -> list[str]:
    present = [s for s in SPLITS if (lang_dir / f"{s}.tsv").is_file()]
    if not subsets:
        chosen = [s for s in DEFAULT_SPLITS if s in present]
        if not chosen:
            raise DataError(lang_dir, "has none of train.tsv, dev.tsv, test.tsv", f"expected {LAYOUT}")
        return chosen
    unknown = [s for s in subsets if s not in SPLITS]
    if unknown:
        raise UsageError(
            f"subsets={','.join(unknown)}: not a Common Voice split; give some of {', '.join(SPLITS)}"
        )
    absent = [s for s in subsets if s not in present]
    if absent:
        raise DataError(
            lang_dir, f"has no {', '.join(s + '.tsv' for s in absent)}", "check the release and language"
        )
    return subsets


def _inventory(tsv: Path) -> tuple[Skipped, bool]:
    """Clips ``tsv`` lists that are not in ``clips/``, as ``(id, reason)``, and whether it has the
    ``variant`` column. A missing column, a row of the wrong width or a clip listed twice raises
    :class:`DataError` (lhotse would fail on them without naming the line)."""
    clips = tsv.parent / "clips"
    skipped: Skipped = []
    seen: dict[str, int] = {}
    with tsv.open(encoding="utf-8", newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)  # as lhotse reads it
        missing = [c for c in COLUMNS if c not in (rows.fieldnames or ())]
        if missing:
            raise DataError(
                f"{tsv}:1", f"header lacks the column(s) {', '.join(missing)}", "give the TSV as published"
            )
        for row in rows:
            n = rows.line_num
            if None in row or None in row.values():
                raise DataError(
                    f"{tsv}:{n}",
                    "has a different number of tab-separated fields than the header",
                    "repair the line",
                )
            name = row["path"]
            if name in seen:
                raise DataError(
                    f"{tsv}:{n}", f"clip {name} is also listed on line {seen[name]}", "delete one line"
                )
            seen[name] = n
            if not (clips / name).is_file():
                skipped.append((Path(name).stem, f"{tsv.name}:{n} lists {name}, which is not in {clips}"))
    return skipped, "variant" in rows.fieldnames


def _with_variant(tsv: Path, dest: Path) -> None:
    """Copy ``tsv`` to ``dest`` with an empty last column ``variant`` (lhotse 1.33 requires it)."""
    with tsv.open(encoding="utf-8", newline="") as f, dest.open("w", encoding="utf-8", newline="") as g:
        for i, line in enumerate(f):
            body = line.rstrip("\r\n")
            g.write(f"{body}\t{'variant' if i == 0 else ''}\n" if body else "\n")


def _extra(sup, rec) -> dict:
    custom = sup.custom or {}
    fields = {"gender": sup.gender, "age": custom.get("age"), "accents": custom.get("accents")}
    return {k: v for k, v in fields.items() if v}


def prepare(
    corpus_dir: Path,
    out: Path,
    *,
    corpus: str,
    subsets: list[str] | None,
    language: str = "en",
    num_jobs: int = 1,
) -> dict[str, Path]:
    """Write ``out/<split>.jsonl`` for each split of ``language`` (default: train, dev, test, those
    present); return split → manifest. ``num_jobs`` processes read the clips' headers."""
    import soundfile
    from lhotse.recipes import prepare_commonvoice
    from lhotse.utils import fastcopy

    corpus_dir, out = Path(corpus_dir), Path(out)
    lang_dir = _language_dir(corpus_dir, language)
    splits = _choose(subsets, lang_dir)
    if "MP3" not in soundfile.available_formats():
        log.warning(
            "libsndfile %s reads no MP3 (1.1 or later does): speechkit's audio loader cannot read these clips",
            soundfile.__libsndfile_version__,
        )
    written: dict[str, Path] = {}
    for split in splits:
        not_found, has_variant = _inventory(lang_dir / f"{split}.tsv")
        with tempfile.TemporaryDirectory(prefix="speechkit-cv-") as tmp:
            root = corpus_dir
            if not has_variant:  # a release before 15.0: give lhotse a copy with the column
                root = Path(tmp) / "corpus"
                (root / language).mkdir(parents=True)
                _with_variant(lang_dir / f"{split}.tsv", root / language / f"{split}.tsv")
                os.symlink(lang_dir.absolute() / "clips", root / language / "clips", target_is_directory=True)
            m = prepare_commonvoice(
                root, Path(tmp) / "lhotse", languages=[language], splits=[split], num_jobs=num_jobs
            )
            recordings = m[language][split]["recordings"]
            if root != corpus_dir:  # point the recordings back at the real clips
                recordings = [
                    fastcopy(
                        r,
                        sources=[
                            fastcopy(s, source=str(lang_dir / "clips" / Path(s.source).name))
                            for s in r.sources
                        ],
                    )
                    for r in recordings
                ]
            path = out / f"{split}.jsonl"
            write_manifest_from_lhotse(
                recordings, m[language][split]["supervisions"], path, extra=_extra, also_skipped=not_found
            )
        written[split] = path
    return written

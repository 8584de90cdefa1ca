"""The IAM Handwriting Database's text lines (``speechkit-prepare corpus=iam``), which lhotse does not cover.

Expected under ``corpus_dir``: ``lines/a01/a01-000u/a01-000u-00.png`` (lines.tgz), ``ascii/lines.txt``
(ascii.tgz; ``ascii/forms.txt`` gives the writers) and the split of IAM's "Large Writer Independent
Text Line Recognition Task" — trainset.txt, validationset1.txt, validationset2.txt, testset.txt,
each listing line ids — in ``split_dir`` (default: ``corpus_dir`` or its
``largeWriterIndependentTextLineRecognitionTask/``). Writes ``train``, ``dev`` (validation set 1),
``dev2`` (validation set 2) and ``test`` manifests: ``image_filepath``, ``text`` (words joined by
spaces), ``id``, ``writer``, ``segmentation`` (ok/err).
"""

from __future__ import annotations

from pathlib import Path

from speechkit.cli import UsageError
from speechkit.data.errors import DataError

SPLIT_FILES = {"train": "trainset.txt", "dev": "validationset1.txt", "dev2": "validationset2.txt",
               "test": "testset.txt"}  # fmt: skip
TASK_FOLDER = "largeWriterIndependentTextLineRecognitionTask"  # the name of the task's download
DOWNLOAD = "https://fki.tic.heia-fr.ch/databases/iam-handwriting-database (registration required)"


def _table(path: Path, what: str) -> list[list[str]]:
    """The fields of each line of one of IAM's ascii files, ``#`` comments left out."""
    if not path.is_file():
        raise DataError(
            path, f"not found: {what}", f"unpack IAM's ascii.tgz into the corpus folder; get it at {DOWNLOAD}"
        )
    return [
        line.split(" ", 8)
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]


def _split_dir(corpus_dir: Path, given: str) -> Path:
    candidates = [Path(given)] if given else [corpus_dir, corpus_dir / TASK_FOLDER]
    for folder in candidates:
        if all((folder / name).is_file() for name in SPLIT_FILES.values()):
            return folder
    raise DataError(
        candidates[0],
        f"IAM's split files ({', '.join(SPLIT_FILES.values())}) are not here",
        f"download {TASK_FOLDER}.zip from {DOWNLOAD}, unpack it and give split_dir=THAT_FOLDER",
    )


def prepare(
    corpus_dir: Path,
    out: Path,
    *,
    corpus: str,
    subsets: list[str] | None,
    split_dir: str = "",
    skip_err: bool = False,
    **options,
) -> dict[str, Path]:
    """Write ``<out>/<subset>.jsonl`` for each subset (all four by default); return their paths.

    ``split_dir``: the split files' folder. ``skip_err``: leave out the lines whose segmentation
    IAM marks ``err``, each listed in ``<out>/<subset>.skipped.tsv``. A listed line missing from
    lines.txt or from ``lines/`` is an error naming how many and the first.
    """
    if options:
        raise UsageError(f"corpus={corpus} takes split_dir= and skip_err=, not {', '.join(sorted(options))}=")
    if not isinstance(skip_err, bool):
        raise UsageError(f"skip_err={skip_err}: give true or false")
    wanted = subsets or list(SPLIT_FILES)
    if bad := [s for s in wanted if s not in SPLIT_FILES]:
        raise UsageError(f"corpus={corpus} has subsets {', '.join(SPLIT_FILES)}, not {', '.join(bad)}")
    corpus_dir, out = Path(corpus_dir), Path(out)
    if not (corpus_dir / "lines").is_dir():
        raise DataError(
            corpus_dir,
            "has no lines/ folder",
            "give corpus_dir= the folder where IAM's lines.tgz is unpacked",
        )
    splits = _split_dir(corpus_dir, split_dir)
    # id, ok/err, graylevel, components, x y w h, the words joined by |
    lines = {f[0]: f for f in _table(corpus_dir / "ascii" / "lines.txt", "the transcriptions") if len(f) == 9}
    forms = corpus_dir / "ascii" / "forms.txt"
    # form id → writer id; without forms.txt the form id stands in (one writer a form, often many forms a writer)
    writer_of = {f[0]: f[1] for f in _table(forms, "the writers")} if forms.is_file() else {}
    from speechkit.data.manifest import write_manifest

    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for subset in wanted:
        listing = splits / SPLIT_FILES[subset]
        ids = listing.read_text(encoding="utf-8").split()
        if missing := [i for i in ids if i not in lines]:
            raise DataError(listing, f"{len(missing)} line id(s) not in ascii/lines.txt (first: {missing[0]})",
                            "use the split files and ascii.tgz of the same IAM release")  # fmt: skip
        # Lines marked err are kept by default: the task's split files list them, its published sizes
        # (6,161 / 900 / 940 / 1,861 lines) count them, and the err is about IAM's segmentation of the
        # line into words, which a line recogniser does not use.
        skipped = [i for i in ids if skip_err and lines[i][1] == "err"]
        kept = [i for i in ids if i not in skipped]
        images = {i: corpus_dir / "lines" / i.split("-")[0] / i.rsplit("-", 1)[0] / f"{i}.png" for i in kept}
        if absent := [p for p in images.values() if not p.is_file()]:
            raise DataError(absent[0], f"line image not found ({len(absent)} of the {len(kept)} in {listing.name})",
                            "unpack IAM's lines.tgz into <corpus_dir>/lines")  # fmt: skip
        rows = []
        for line_id in kept:
            form = line_id.rsplit("-", 1)[0]
            words = lines[line_id][8].replace("|", " ").replace("&quot;", '"')  # &quot;: the XML it came from
            rows.append({"image_filepath": _relative(images[line_id], out), "text": " ".join(words.split()),
                         "id": line_id, "writer": writer_of.get(form, form), "segmentation": lines[line_id][1]})  # fmt: skip
        written[subset] = write_manifest(out / f"{subset}.jsonl", rows)
        report = out / f"{subset}.skipped.tsv"  # where speechkit-prepare finds every corpus's skips
        if skipped:
            report.write_text(
                "".join(f"{i}\tsegmentation marked err (skip_err=true)\n" for i in skipped), "utf-8"
            )
        else:
            report.unlink(missing_ok=True)  # one from an earlier run would no longer be true
    return written


def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` when it lies inside it, else absolute (POSIX separators)."""
    path, folder = path.absolute(), folder.absolute()
    return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else path.as_posix()

"""``speechkit-manifest dir=DIR out=manifest.jsonl``: a manifest from your own recordings.

The utterances come from a folder of media files with their transcripts beside them, a CSV/TSV,
or a Kaldi data folder (listings.py). Each media file is opened once for its header
(media_info.py) and its duration, sample rate and channels (audio), size (images) or frames and
frame rate (video) are written as fields. What cannot be used — missing transcript, transcript
without media, unreadable, empty or truncated file, zero duration, duplicate id — is skipped,
counted and shown, and listed in full in ``<out stem>.skipped.tsv``; ``strict=true`` makes any
skip an error. ``split=0.9,0.05,0.05`` also writes ``<out stem>.{train,dev,test}.jsonl`` beside
``out``, each speaker (``split_by=speaker``) or value of any field (``split_by=FIELD``) in one split.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from speechkit.cli import UsageError, parse_key_values, run
from speechkit.data.errors import DataError
from speechkit.data.listings import Item, Skipped, from_csv, from_folder, from_kaldi

CLI_USAGE = (
    "speechkit-manifest dir=DIR | csv=FILE | kaldi=DIR out=FILE [modality=audio|image|video] "
    "[split=0.9,0.05,0.05] [split_by=speaker|FIELD] [seed=0] [strict=false]"
)
CLI_HELP = f"""\
usage: {CLI_USAGE}

Write a manifest (JSON lines) of your own recordings, text-line images or videos and their transcripts.

input (one of):
  dir=DIR              every media file under DIR, each with its transcript x.txt or x.lab beside it
  csv=FILE             a CSV/TSV with a path and a text column (its other columns are kept as fields)
  kaldi=DIR            a Kaldi data folder: wav.scp, text, and utt2spk (speakers) if present

options:
  out=FILE             the manifest to write; what was skipped is listed in <out stem>.skipped.tsv
  modality=NAME        audio (default), image or video
  media_dir=DIR        what relative paths of csv= and kaldi= are relative to (default: the CSV's
                       folder; for Kaldi the working directory, as in a Kaldi recipe)
  path_column=NAME     csv: the media path column (default: path, file, filename, audio_filepath, …)
  text_column=NAME     csv: the transcript column (default: text, transcript, sentence, …)
  speaker_column=NAME  csv: the speaker column (default: speaker, speaker_id, client_id, spk)
  speaker_pattern=RE   dir: a regex on the path under DIR; its group named "speaker" (else its first
                       group) is the speaker (default: the file's parent folder)
  split=F,F[,F]        also write <out stem>.train/.dev[/.test].jsonl, these fractions of the utterances
  split_by=KEY         speaker, or any field: each of its values stays in one split (default: none)
  seed=N               the split's random seed (default 0)
  strict=BOOL          any skipped file is an error and nothing is written (default false)
  show=N               skipped files printed (default 10; the .skipped.tsv lists them all)

example: speechkit-manifest dir=my_recordings out=data/mine.jsonl split=0.9,0.1 split_by=speaker"""

#: the command's keys and their defaults (None: required; "": not given)
CLI_KEYS: dict[str, str | None] = {
    "dir": "", "csv": "", "kaldi": "", "out": None, "modality": "audio", "media_dir": "",
    "path_column": "", "text_column": "", "speaker_column": "", "speaker_pattern": "",
    "split": "", "split_by": "", "seed": "0", "strict": "false", "show": "10",
}  # fmt: skip
MODALITIES = ("audio", "image", "video")
SPLIT_NAMES = ("train", "dev", "test")


def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` when it lies inside it, else absolute (POSIX separators)."""
    try:
        return path.relative_to(folder.absolute()).as_posix()
    except ValueError:
        return path.as_posix()


def build_rows(items: list[Item], modality: str, folder: Path) -> tuple[list[dict], Skipped]:
    """One manifest row per usable item — ``{modality}_filepath`` (relative to ``folder`` when the
    file lies inside it), ``duration``, ``text``, ``id``, the measured fields, then the item's own
    — and ``(where, reason)`` for every other: a duplicate id or file, an empty transcript, a
    media file that cannot be used."""
    from tqdm import tqdm

    from speechkit.data.media_info import read_media

    rows: list[dict] = []
    skipped: Skipped = []
    ids: dict[str, str] = {}  # id → where it was first listed
    files: dict[Path, str] = {}  # media file → where it was first listed
    for item in tqdm(items, desc="reading", unit="file", disable=None, mininterval=1.0):
        if item.id in ids or item.path in files:
            what, first = (
                (f"id {item.id!r}", ids[item.id])
                if item.id in ids
                else (f"file {item.path}", files[item.path])
            )
            skipped.append((item.where, f"duplicate {what}: {first} has it too (the first is kept)"))
            continue
        ids[item.id] = files[item.path] = item.where
        if not item.text:
            skipped.append((item.where, "empty transcript; CTC needs at least one label"))
            continue
        try:
            info = read_media(item.path, modality)
        except DataError as e:
            named = Path(item.where).absolute() == item.path  # listed by its own name: say it once
            skipped.append((item.where, e.problem if named else f"{e.where}: {e.problem}"))
            continue
        row = {f"{modality}_filepath": _relative(item.path, folder)}
        if "duration" in info:
            row["duration"] = round(info.pop("duration"), 6)  # seconds
        row.update(text=item.text, id=item.id, **info)
        for k, v in item.fields.items():  # a listing's own columns never replace what was measured
            row.setdefault(k, v)
        rows.append(row)
    return rows, skipped


def parse_split(value: str) -> list[float]:
    """``"0.9,0.05,0.05"`` → the fractions; 2 or 3 of them in [0, 1] adding up to 1, train's above 0."""
    try:
        parts = [float(x) for x in value.split(",")]
    except ValueError:
        parts = []
    if (
        not 2 <= len(parts) <= 3
        or not all(0 <= p <= 1 for p in parts)
        or abs(sum(parts) - 1) > 1e-6
        or not parts[0]
    ):
        raise UsageError(
            f"split={value}: give 2 or 3 fractions (train,dev[,test]) adding up to 1, e.g. 0.9,0.05,0.05"
        )
    return parts


def split_rows(rows: list[dict], fractions: list[float], key: str = "", seed: int = 0) -> list[list[dict]]:
    """``rows`` in ``len(fractions)`` parts holding about those fractions of the rows, each value of
    ``rows[i][key]`` in one part (``key=""``: each row on its own); the same for the same ``seed``.

    The groups are shuffled; each part with a fraction above 0 first takes one group (the smallest
    part first), then each next group goes to the part furthest below its share.
    """
    group_of = [str(r[key]) if key else str(i) for i, r in enumerate(rows)]
    sizes = Counter(group_of)
    order = sorted(sizes)
    random.Random(seed).shuffle(order)
    parts = [i for i, f in enumerate(fractions) if f > 0]
    if len(order) < len(parts):
        what = f"{len(order)} value(s) of {key!r}" if key else f"{len(order)} utterance(s)"
        raise DataError(f"split_by={key}" if key else "split", f"{what} cannot fill {len(parts)} splits",
                        "give fewer splits, or split by something with more values")  # fmt: skip
    target = [f * len(rows) for f in fractions]
    have = [0] * len(fractions)
    part_of: dict[str, int] = {}
    first = sorted(parts, key=lambda i: fractions[i])  # one group each, the smallest part first
    for n, g in enumerate(order):
        i = first[n] if n < len(first) else max(parts, key=lambda i: target[i] - have[i])
        part_of[g] = i
        have[i] += sizes[g]
    return [[r for r, g in zip(rows, group_of) if part_of[g] == i] for i in range(len(fractions))]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def describe(rows: list[dict], modality: str) -> str:
    """``N utterances, H hours, S speakers`` (images: lines and no hours; speakers where known)."""
    text = _count(len(rows), "line" if modality == "image" else "utterance")
    seconds = sum(r.get("duration", 0.0) for r in rows)
    if modality != "image":
        text += f", {seconds / 3600:.2f} hours" if seconds >= 360 else f", {seconds / 60:.1f} minutes"
    speakers = {r["speaker"] for r in rows if "speaker" in r}
    return text + (f", {_count(len(speakers), 'speaker')}" if speakers else "")


def _bool(key: str, value: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise UsageError(f"{key}={value}: give true or false")
    return value.lower() in ("true", "1", "yes")


def _read(a: dict[str, str], modality: str) -> tuple[list[Item], Skipped]:
    """The items of the one input the command names (dir=, csv= or kaldi=)."""
    if a["dir"]:
        return from_folder(Path(a["dir"]), modality, a["speaker_pattern"])
    if a["csv"]:
        keys = ("media_dir", "path_column", "text_column", "speaker_column")
        return from_csv(Path(a["csv"]), *(a[k] for k in keys))
    return from_kaldi(Path(a["kaldi"]), a["media_dir"])


def _report(skipped: Skipped, listing: Path, show: int) -> None:
    """Write every skip to ``listing`` (``where<TAB>reason`` lines, as speechkit-prepare writes
    them; none: no listing) and print how many and the first ``show``."""
    if not skipped:
        listing.unlink(missing_ok=True)  # one from an earlier run would no longer be true
        return
    listing.write_text(
        "".join(f"{where}\t{' '.join(why.split())}\n" for where, why in skipped), encoding="utf-8"
    )
    print(f"skipped {len(skipped)} (all listed in {listing}):")
    print("".join(f"  {where}: {why}\n" for where, why in skipped[:show]), end="")
    if len(skipped) > show:
        print(f"  … and {len(skipped) - show} more")


def _work(argv: list[str]) -> None:
    a = parse_key_values(argv, CLI_KEYS, "speechkit-manifest")
    sources = [k for k in ("dir", "csv", "kaldi") if a[k]]
    if len(sources) != 1:
        got = f" (got {' and '.join(k + '=' for k in sources)})" if sources else ""
        raise UsageError(f"give one input: dir=FOLDER, csv=FILE or kaldi=FOLDER{got}")
    modality, strict = a["modality"], _bool("strict", a["strict"])
    if modality not in MODALITIES:
        raise UsageError(f"modality={modality}: give one of {', '.join(MODALITIES)}")
    if not a["seed"].isdigit() or not a["show"].isdigit():
        raise UsageError("seed= and show= take whole numbers ≥ 0")
    fractions = parse_split(a["split"]) if a["split"] else None
    key = a["split_by"]
    if key and not fractions:
        raise UsageError(f"split_by={key} needs split=… (e.g. split=0.9,0.05,0.05)")
    out = Path(a["out"])
    if out.is_dir():
        raise UsageError(f"out={out} is a folder; give the manifest's file name (e.g. {out / 'all.jsonl'})")
    stem = out.name.removesuffix(".jsonl")

    items, skipped = _read(a, modality)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, bad = build_rows(items, modality, out.parent)
    skipped += bad
    if key:
        how = (
            "give speaker_pattern=, a speaker column or utt2spk"
            if key == "speaker"
            else f"give each a {key!r}"
        )
        skipped += [
            (r[f"{modality}_filepath"], f"no {key!r} to split by ({how})") for r in rows if key not in r
        ]
        rows = [r for r in rows if key in r]
    listing = out.with_name(f"{stem}.skipped.tsv")
    _report(skipped, listing, int(a["show"]))
    if not rows or (strict and skipped):
        first = f"first: {skipped[0][0]}: {skipped[0][1]}" if skipped else "nothing was listed"
        problem = "strict=true and" if rows else f"no usable {modality} files:"
        raise DataError(
            out, f"{problem} {len(skipped)} skipped ({first}); nothing written", f"see {listing} for all"
        )
    written = [(out, rows)]
    if fractions:
        parts = split_rows(rows, fractions, key, int(a["seed"]))
        written += [
            (out.with_name(f"{stem}.{name}.jsonl"), part) for name, part in zip(SPLIT_NAMES, parts) if part
        ]
    from speechkit.data.manifest import write_manifest

    for path, part in written:
        write_manifest(path, part)
        print(f"wrote {path}: {describe(part, modality)}")
    print(f"{describe(rows, modality)}, {len(skipped)} skipped")


def main(argv: Sequence[str] | None = None) -> None:
    """``speechkit-manifest dir=DIR out=FILE``: a manifest from a folder, a CSV or a Kaldi data folder."""
    run(_work, CLI_USAGE, CLI_HELP, argv)


if __name__ == "__main__":
    main()

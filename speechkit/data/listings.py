"""Where a user's utterances are listed, read into :class:`Item` s for ``speechkit-manifest``:

- a folder of media files, each with its transcript beside it (``x.wav`` + ``x.txt`` or ``x.lab``);
- a CSV or TSV with a path and a text column;
- a Kaldi data folder (``wav.scp``, ``text``, ``utt2spk``).

Nothing is dropped silently: each reader returns ``(items, skipped)``, where ``skipped`` names
every listed thing it could not turn into an item and why. Media files are not opened here
(media_info.py reads them).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from speechkit.data.errors import DataError

# Formats only libsndfile reads: its verdict on such a file is final. The others (compressed
# formats, containers) go to FFmpeg (PyAV) when libsndfile cannot read them.
SOUNDFILE_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".au", ".caf", ".w64")
OTHER_AUDIO_SUFFIXES = (".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".wma", ".mka", ".webm", ".mp4")
SUFFIXES = {
    "audio": SOUNDFILE_SUFFIXES + OTHER_AUDIO_SUFFIXES,  # .mp4, .webm: their sound track
    "image": (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"),
    "video": (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".npy"),
}
TRANSCRIPT_SUFFIXES = (".txt", ".lab")  # in this order: x.txt wins over x.lab
PATH_COLUMNS = ("path", "file", "filename", "file_name", "filepath", "audio_filepath", "image_filepath",
                "video_filepath", "audio", "wav", "image", "video")  # fmt: skip
TEXT_COLUMNS = ("text", "transcript", "transcription", "sentence", "normalized_text", "label")
SPEAKER_COLUMNS = ("speaker", "speaker_id", "client_id", "spk", "writer")


@dataclass
class Item:
    """One utterance as its listing gives it, before its media file is read."""

    id: str
    path: Path  # the media file, absolute
    text: str  # whitespace-normalised
    where: str  # where it is listed, for messages: the media file, or the listing's file:line
    fields: dict = field(default_factory=dict)  # speaker, and a CSV's other columns


Skipped = list[tuple[str, str]]  # (where, reason)


def normalise(text: str) -> str:
    """Runs of whitespace (newlines, tabs) → one space; none at the ends."""
    return " ".join(text.split())


def from_folder(root: Path, modality: str, speaker_pattern: str = "") -> tuple[list[Item], Skipped]:
    """The ``modality``'s files under ``root`` (recursive; hidden files and folders left out)
    paired with their ``.txt``/``.lab`` transcripts. The id is the path relative to ``root``
    without its suffix; the speaker is ``speaker_pattern``'s match on that path (its group named
    ``speaker``, else its first group, else the whole match), by default the parent folder's name
    (none for files directly in ``root``)."""
    if not root.is_dir():
        raise DataError(root, "is not a folder", "give dir= the folder that holds your recordings")
    try:
        pattern = re.compile(speaker_pattern) if speaker_pattern else None
    except re.error as e:
        raise DataError(f"speaker_pattern={speaker_pattern}", f"not a regular expression ({e})") from None
    files = sorted(
        p
        for p in root.rglob("*")
        if (p.is_file() or p.is_symlink()) and not any(s.startswith(".") for s in p.relative_to(root).parts)
    )
    media = [p for p in files if p.suffix.lower() in SUFFIXES[modality]]
    if not media:
        raise _no_media(root, modality, files)
    transcripts: dict[Path, Path] = {}
    for suffix in TRANSCRIPT_SUFFIXES:
        transcripts.update(
            (p.with_suffix(""), p)
            for p in files
            if p.suffix.lower() == suffix and p.with_suffix("") not in transcripts
        )
    items: list[Item] = []
    skipped: Skipped = []
    for p in media:
        rel = p.relative_to(root).as_posix()
        sidecar = transcripts.get(p.with_suffix(""))
        if sidecar is None:
            skipped.append((str(p), f"missing transcript: no {p.stem}.txt or {p.stem}.lab beside it"))
            continue
        try:
            text = normalise(sidecar.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, OSError) as e:
            skipped.append((str(sidecar), f"transcript is not readable UTF-8 text ({type(e).__name__}: {e})"))
            continue
        fields = {}
        if pattern is not None:
            m = pattern.search(rel)
            if m is None:
                skipped.append((str(p), f"speaker_pattern {pattern.pattern!r} does not match {rel!r}"))
                continue
            fields["speaker"] = m.group(
                "speaker" if "speaker" in pattern.groupindex else min(1, pattern.groups)
            )
        elif "/" in rel:
            fields["speaker"] = p.parent.name
        items.append(Item(rel.rsplit(".", 1)[0], p.absolute(), text, str(p), fields))
    stems = {p.with_suffix("") for p in media}
    skipped += [
        (str(t), f"transcript without media: no {modality} file {stem.name}.* beside it")
        for stem, t in sorted(transcripts.items())
        if stem not in stems
    ]
    return items, skipped


def _no_media(root: Path, modality: str, files: list[Path]) -> DataError:
    """The error for a folder without a single file of the modality: what it holds instead."""
    others = Counter(
        p.suffix.lower() or "(no suffix)" for p in files if p.suffix.lower() not in TRANSCRIPT_SUFFIXES
    )
    guess = [m for m, s in SUFFIXES.items() if m != modality and any(x in s for x in others)]
    held = ", ".join(f"{n} {s}" for s, n in others.most_common(5)) or "no media files"
    return DataError(
        root,
        f"holds no {modality} files ({' '.join(SUFFIXES[modality])}); it holds {held}",
        f"give modality={guess[0]}" if guess else "check dir= and modality=",
    )


def _column(header: list[str], given: str, defaults: Sequence[str], key: str, where: Path) -> str | None:
    """The column named ``given`` (an error if there is none), else the first of ``defaults``
    present in ``header`` in any case, else None."""
    if given:
        if given not in header:
            raise DataError(
                where,
                f"has no column {given!r}; its columns: {', '.join(header)}",
                f"give {key}= one of them",
            )
        return given
    lower = {h.lower(): h for h in header}
    return next((lower[d] for d in defaults if d in lower), None)


def from_csv(
    path: Path, media_dir: str = "", path_column: str = "", text_column: str = "", speaker_column: str = ""
) -> tuple[list[Item], Skipped]:
    """The rows of a CSV or TSV (delimiter sniffed: comma, tab, semicolon or bar; a TSV is read
    without quoting, as Common Voice's are). A path is absolute or relative to ``media_dir`` (by
    default the listing's folder); every column other than the path and the text is kept as a
    field, and the speaker column (``speaker_column``, else a usual name) also as ``speaker``."""
    if not path.is_file():
        raise DataError(path, "no such file", "give csv= your CSV or TSV listing")
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text ({e})", "save the listing as UTF-8") from None
    try:
        dialect = csv.Sniffer().sniff(raw[:65536], delimiters=",\t;|")
    except csv.Error:  # one column, or too few lines to tell
        dialect = csv.excel_tab if "\t" in raw.split("\n", 1)[0] else csv.excel
    quoting = csv.QUOTE_NONE if dialect.delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(raw), dialect, quoting=quoting)
    header = [h.strip() for h in next(reader, [])]
    if not any(header):
        raise DataError(path, "is empty", "its first line must name the columns (e.g. path,text)")
    path_col = _column(header, path_column, PATH_COLUMNS, "path_column", path)
    text_col = _column(header, text_column, TEXT_COLUMNS, "text_column", path)
    for col, key in ((path_col, "path_column"), (text_col, "text_column")):
        if col is None:
            raise DataError(
                path, f"no {key.split('_')[0]} column among {', '.join(header)}", f"name it with {key}="
            )
    speaker_col = _column(header, speaker_column, SPEAKER_COLUMNS, "speaker_column", path)
    base = Path(media_dir) if media_dir else path.parent
    items: list[Item] = []
    skipped: Skipped = []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            skipped.append(
                (where, f"{len(row)} cells, the header has {len(header)} (a stray delimiter or quote?)")
            )
            continue
        cells = dict(zip(header, row))
        media = cells[path_col].strip()
        if not media:
            skipped.append((where, f"empty {path_col!r} cell"))
            continue
        fields = {k: v for k, v in cells.items() if k not in (path_col, text_col)}
        if speaker_col is not None:
            fields["speaker"] = cells[speaker_col].strip()
        p = Path(media) if Path(media).is_absolute() else base / media
        items.append(Item(media, p.absolute(), normalise(cells[text_col]), where, fields))
    return items, skipped


def _kaldi_table(path: Path) -> tuple[list[tuple[str, str, str]], Skipped]:
    """``(id, the rest of the line, where)`` for each line of a Kaldi table; a bare id is skipped."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text ({e})", "convert it to UTF-8 (iconv)") from None
    rows, skipped = [], []
    for n, line in enumerate(lines, start=1):
        parts = line.split(maxsplit=1)
        if len(parts) == 2:
            rows.append((parts[0], parts[1].strip(), f"{path}:{n}"))
        elif parts:
            skipped.append((f"{path}:{n}", f"{parts[0]!r} has nothing after its id"))
    return rows, skipped


def from_kaldi(folder: Path, media_dir: str = "") -> tuple[list[Item], Skipped]:
    """A Kaldi data folder: each ``wav.scp`` line that names a file (a relative path is read from
    ``media_dir``, by default the working directory, as Kaldi's recipes do) with its ``text``, and
    its speaker from ``utt2spk`` where that exists. A command (``utt sox x.sph -t wav - |``) or an
    archive offset (``utt x.ark:123``) is skipped: speechkit reads whole files. A folder with
    ``segments`` is refused: its utterances are parts of recordings."""
    for name in ("wav.scp", "text"):
        if not (folder / name).is_file():
            raise DataError(
                folder, f"has no {name}", "give kaldi= a Kaldi data folder (wav.scp, text[, utt2spk])"
            )
    if (folder / "segments").is_file():
        raise DataError(
            folder / "segments",
            "utterances are segments of longer recordings, and speechkit reads whole files",
            "cut the segments into files first (e.g. with sox or lhotse) and list those",
        )
    scp, skipped = _kaldi_table(folder / "wav.scp")
    texts, bad = _kaldi_table(folder / "text")
    skipped += bad
    speakers = (
        {u: s for u, s, _ in _kaldi_table(folder / "utt2spk")[0]} if (folder / "utt2spk").is_file() else {}
    )
    text_of: dict[str, str] = {}
    for utt, text, where in texts:
        if utt in text_of:
            skipped.append((where, f"duplicate id {utt!r} in text (the first transcript is kept)"))
        else:
            text_of[utt] = normalise(text)
    base = Path(media_dir) if media_dir else Path.cwd()
    items: list[Item] = []
    for utt, value, where in scp:
        if value.endswith("|"):
            reason = f"{utt!r} is a command, not a file ({value}); run it to write a file and list that"
        elif re.search(r"\.ark:\d+$", value):
            reason = f"{utt!r} is an offset into an archive ({value}); extract it to a file and list that"
        elif utt not in text_of:
            reason = f"missing transcript: {utt!r} is not in {folder / 'text'}"
        else:
            p = Path(value) if Path(value).is_absolute() else base / value
            fields = {"speaker": speakers[utt]} if utt in speakers else {}
            items.append(Item(utt, p.absolute(), text_of[utt], where, fields))
            continue
        skipped.append((where, reason))
    listed = {u for u, _, _ in scp}
    skipped += [
        (w, f"transcript without media: {u!r} is not in wav.scp") for u, _, w in texts if u not in listed
    ]
    return items, skipped

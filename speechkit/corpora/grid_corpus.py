"""The GRID audio-visual corpus (Cooke, Barker, Cunningham & Shao 2006, JASA 120(5)) → manifests,
read by lhotse's GRID recipe.

lhotse's layout, as the Zenodo release (doi 10.5281/zenodo.3625687) unzips::

    <corpus_dir>/alignments/s1/bbaf2n.align   "<start> <end> <word>" a line, times in 1/25000 s
    <corpus_dir>/audio_25k/s1/bbaf2n.wav      25 kHz mono, 3 s
    <corpus_dir>/s1/bbaf2n.mpg                360 × 288 face video, 25 fps, 75 frames (video=true)

Videos are found anywhere below ``corpus_dir``, as lhotse finds them, the speaker being the
nearest folder named ``s<N>`` (so Sheffield's ``s1/video/mpg_6000/`` layout works too). 33
speakers have video (s21's was lost), 34 have audio. lhotse's ``download_grid`` renames
alignment folders it says Zenodo mis-assigns; a hand-downloaded copy shows such folders here as
audio without transcripts, listed.

Each utterance is parsed by lhotse (``lhotse.recipes.grid.process_single``: the recording and
its word alignment); ``prepare_grid`` itself is not called: it makes recordings of the .mpg
files only (their audio track, decoded by an ffmpeg process per file: ~0.2 s each, and nothing
without ffmpeg), requires audio_25k/ but never reads it, drops what it cannot read without a
word, reads the alignment times as milliseconds (they count 1/25000 s: 1000 per video frame)
and keeps ``sp`` (short pause) in the text. Video is probed here with PyAV (frames, rate).

Text: the six words, ``sil`` and ``sp`` dropped (``bin blue at f two now``). Splits, by speaker:
``test`` the speakers ``test_speakers`` (default 1, 2, 20 and 22: LipNet's unseen-speaker
protocol, Assael et al. 2016, "LipNet: End-to-End Sentence-level Lipreading", §4.1); ``dev``
``dev_per_speaker`` utterances of every other speaker, the first by a hash of their ids (stable
whatever else is present); ``train`` the rest.

Writes ``out/{train,dev,test}.jsonl`` (absolute ``audio_filepath``, ``duration``, ``text``,
``id`` ``s1_bbaf2n``, ``speaker``, ``language``, ``words`` ``[[word, start_s, end_s], …]``) and,
with ``video=true``, ``out/video/{train,dev,test}.jsonl`` (``video_filepath``, ``duration``,
``num_frames``, ``fps`` and the same transcript fields) for every utterance of the audio
manifests that has a video (lhotse reads an alignment with its recording, so a video whose
audio is missing is listed as without transcript). Each manifest's skips (a transcript without
audio or video, audio or video without transcript, an unreadable file) are listed beside it in
``<split>.skipped.tsv``. ``mouth_crop=true`` (with ``video=true``) writes each video's mouth
region to ``out/video/mouths/<speaker>/<utterance>.mp4`` (speechkit/frontends/mouth_crop.py)
and points the video manifests at those clips.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from speechkit.cli import UsageError
from speechkit.corpora.lhotse_io import Skipped, read_rows, skipped_path, write_manifest_from_lhotse
from speechkit.data.errors import DataError
from speechkit.data.manifest import write_manifest

log = logging.getLogger("speechkit.corpora.grid")

SPLITS = ("train", "dev", "test")
LIPNET_UNSEEN_SPEAKERS = "s1,s2,s20,s22"  # Assael et al. 2016, §4.1: two men (1, 2), two women (20, 22)
ALIGN_UNITS_PER_S = 25_000  # .align times count 1/25000 s (1000 per 40 ms video frame)
LHOTSE_ALIGN_S = 1000 / ALIGN_UNITS_PER_S  # lhotse's recipe divides by 1000: its "seconds" × this = seconds
SILENCES = ("sil", "sp")  # alignment tokens that are not words: silence, short pause
SPEAKER = re.compile(r"^s\d+$")  # GRID's speaker folders: s1 … s34
LAYOUT = "alignments/s1/bbaf2n.align, audio_25k/s1/bbaf2n.wav and (video=true) s1/bbaf2n.mpg"
MOUTH_SIZE = (50, 100)  # pixels (height, width) of mouth crops: LipNet's


def _speaker_name(value: str) -> str:
    v = value.strip().lower()
    return v if v.startswith("s") else f"s{v}"


def _speakers(value: str | Iterable[str]) -> list[str]:
    names = value.split(",") if isinstance(value, str) else list(value)
    speakers = [_speaker_name(str(n)) for n in names if str(n).strip()]
    bad = [s for s in speakers if not SPEAKER.match(s)]
    if bad or not speakers:
        raise UsageError(f"test_speakers={value!r}: give GRID speakers like s1,s2,s20,s22")
    return speakers


def _subsets(subsets: list[str] | str | None) -> list[str]:
    if subsets is None or subsets == "":
        return list(SPLITS)
    names = subsets.split(",") if isinstance(subsets, str) else list(subsets)
    names = [str(n).strip().lower() for n in names if str(n).strip()]
    if not names or any(n not in SPLITS for n in names):
        raise UsageError(f"subsets={','.join(names)}: GRID's subsets are {', '.join(SPLITS)}")
    return names


def _folder(corpus_dir: Path, name: str) -> Path:
    path = corpus_dir / name
    if path.is_dir():
        return path
    above = sorted(p for p in corpus_dir.glob(f"*/{name}") if p.is_dir())
    if above:
        raise DataError(
            corpus_dir,
            f"has no {name}/, but {above[0].parent.name}/ does",
            f"give corpus_dir={above[0].parent}",
        )
    found = ", ".join(sorted(p.name for p in corpus_dir.iterdir())[:8]) or "nothing"
    raise DataError(
        corpus_dir,
        f"not GRID's layout: no {name}/ folder (found: {found})",
        f"lhotse's GRID layout is {LAYOUT}",
    )


def _index(files: Iterable[Path], where: Path, what: str) -> dict[str, tuple[str, Path]]:
    """``id`` (``s1_bbaf2n``, lhotse's) → (speaker, file) for the files below ``where`` in a speaker
    folder ``s<N>`` (the nearest); one id twice is a :class:`DataError` naming both files."""
    index: dict[str, tuple[str, Path]] = {}
    for f in sorted(files):
        folders = f.relative_to(where).parts[:-1]
        speaker = next((p for p in reversed(folders) if SPEAKER.match(p)), None)
        if speaker is None or "__MACOSX" in folders:
            continue
        uid = f"{speaker}_{f.stem}"
        if uid in index:
            raise DataError(
                f,
                f"utterance {uid} has two {what} files: {index[uid][1]} and {f}",
                "keep one copy of each file (did an archive get extracted twice?)",
            )
        index[uid] = (speaker, f)
    if not index:
        raise DataError(
            where, f"no {what} files in s<N>/ speaker folders", f"lhotse's GRID layout is {LAYOUT}"
        )
    return index


def _read(audio: dict[str, tuple[str, Path]], ali_dir: Path) -> tuple[list, list, Skipped]:
    """lhotse's recordings and supervisions of every audio file; what it cannot read, skipped."""
    from lhotse.recipes.grid import process_single

    recs, sups, skipped = [], [], []
    for uid, (speaker, wav) in tqdm(audio.items(), "GRID audio", unit="file", leave=False, disable=None):
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):  # process_single prints its errors
                result = process_single(wav, speaker, ali_dir, True)
        except (ValueError, OSError) as e:  # an .align line that is not "<start> <end> <word>"
            skipped.append((uid, f"malformed alignment {ali_dir / speaker / wav.stem}.align ({e})"))
            continue
        if result is None:
            skipped.append((uid, f"cannot read {wav}: {' '.join(printed.getvalue().split())[:300]}"))
            continue
        rec, sup = result
        recs.append(rec)
        if sup is not None:  # None: no alignment, listed by lhotse_io as audio without transcript
            sups.append(sup)
    return recs, sups, skipped


def _text(sup: Any) -> str:
    return " ".join(a.symbol for a in sup.alignment["word"] if a.symbol not in SILENCES)


def _words(sup: Any, rec: Any) -> dict:
    """The words with their start and end in seconds (lhotse's times rescaled: see LHOTSE_ALIGN_S)."""
    words = [a for a in sup.alignment["word"] if a.symbol not in SILENCES]
    return {
        "words": [
            [a.symbol, round(a.start * LHOTSE_ALIGN_S, 3), round((a.start + a.duration) * LHOTSE_ALIGN_S, 3)]
            for a in words
        ]
    }


def _split_ids(
    speakers: dict[str, str], transcribed: set[str], test_speakers: list[str], dev_per_speaker: int
) -> dict[str, set[str]]:
    """Utterance ids (``speakers``: id → speaker) of each split: test by speaker; dev the first
    ``dev_per_speaker`` transcribed utterances of each other speaker by the SHA-1 of their ids (at
    most half of them), so the choice stays whatever media files are missing; train the rest."""
    split: dict[str, set[str]] = {s: set() for s in SPLITS}
    by_speaker: dict[str, list[str]] = {}
    for uid, speaker in speakers.items():
        if speaker in test_speakers:
            split["test"].add(uid)
        elif uid in transcribed:
            by_speaker.setdefault(speaker, []).append(uid)
        else:
            split["train"].add(uid)  # audio or video without transcript: listed among train's skips
    for ids in by_speaker.values():
        ranked = sorted(ids, key=lambda i: hashlib.sha1(i.encode()).hexdigest())
        n_dev = min(dev_per_speaker, len(ids) // 2)
        split["dev"].update(ranked[:n_dev])
        split["train"].update(ranked[n_dev:])
    return split


def _mouth_cropper():
    """speechkit's mouth cropper (``crop_video_file(src, dst, size)``), or a clear error."""
    try:
        from speechkit.frontends import mouth_crop
    except ImportError as e:
        raise UsageError(
            f"mouth_crop=true needs speechkit.frontends.mouth_crop, which cannot be imported ({e})"
        ) from None
    crop = getattr(mouth_crop, "crop_video_file", None)
    if crop is None:
        raise UsageError(
            "mouth_crop=true: speechkit.frontends.mouth_crop has no crop_video_file() in this installation"
        )
    try:
        getattr(mouth_crop, "check_detector", lambda: None)()  # before hours of work, not after
    except ImportError as e:
        raise UsageError(f"mouth_crop=true: {e}") from None
    return crop


def _video_rows(
    audio_rows: list[dict], videos: dict[str, tuple[str, Path]], folder: Path, crop
) -> tuple[list[dict], Skipped]:
    """A video row for every audio row whose utterance has a video; the others skipped, with why."""
    from speechkit.data.media_info import video_info

    rows, skipped = [], []
    for a in tqdm(audio_rows, "GRID video", unit="file", leave=False, disable=None):
        uid = a["id"]
        if uid not in videos:
            skipped.append((uid, "transcript without video"))
            continue
        src = videos[uid][1]
        path = src.absolute()
        try:
            if crop is not None:
                path = folder / "mouths" / a["speaker"] / f"{src.stem}.mp4"
                if not path.is_file():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    crop(src, path, MOUTH_SIZE)
            info = video_info(path)
        except DataError as e:  # unreadable, no video stream, no face found
            skipped.append((uid, f"{e.problem} ({e.where})"))
            continue
        media = path.relative_to(folder).as_posix() if crop is not None else path.as_posix()
        row = {"video_filepath": media, "duration": round(info.get("duration", 0.0), 3), "text": a["text"]}
        row.update({k: info[k] for k in ("num_frames", "fps") if k in info})
        row.update({k: v for k, v in a.items() if k not in ("audio_filepath", "duration", "text")})
        rows.append(row)
    return rows, skipped


def prepare(
    corpus_dir: Path,
    out: Path,
    *,
    corpus: str = "grid",
    subsets: list[str] | str | None = None,
    test_speakers: str = LIPNET_UNSEEN_SPEAKERS,
    dev_per_speaker: int = 20,
    video: bool = False,
    mouth_crop: bool = False,
) -> dict[str, Path]:
    """Write GRID's manifests to ``out``; returns split name → manifest path (``video/<split>`` too).

    ``test_speakers``: held-out speakers, comma-separated (``s1,s2`` or ``1,2``);
    ``dev_per_speaker``: utterances of each training speaker kept for dev; ``video``: also the
    video manifests; ``mouth_crop``: crop the videos to the mouth first. A layout other than
    lhotse's, a duplicated utterance, a test speaker list that matches no speaker, or a split
    left empty raises :class:`DataError`; a file without its counterpart is skipped and listed.
    """
    corpus_dir, out = Path(corpus_dir).absolute(), Path(out)
    splits = _subsets(subsets)
    held_out = _speakers(test_speakers)
    if int(dev_per_speaker) < 0:
        raise UsageError(f"dev_per_speaker={dev_per_speaker}: give 0 or more")
    if mouth_crop and not video:
        raise UsageError("mouth_crop=true crops the videos: add video=true")
    crop = _mouth_cropper() if mouth_crop else None
    if not corpus_dir.is_dir():
        raise DataError(corpus_dir, "no such folder", f"give corpus_dir=the GRID folder holding {LAYOUT}")
    ali_dir = _folder(corpus_dir, "alignments")
    aligns = _index(ali_dir.glob("*/*.align"), ali_dir, ".align")
    audio_dir = _folder(corpus_dir, "audio_25k")
    audio = _index(audio_dir.glob("*/*.wav"), audio_dir, "audio (.wav)")
    videos = _index(corpus_dir.rglob("*.mpg"), corpus_dir, "video (.mpg)") if video else {}

    owner = {uid: speaker for uid, (speaker, _) in (*videos.items(), *audio.items(), *aligns.items())}
    speakers = sorted(set(owner.values()), key=lambda s: int(s[1:]))
    absent = [s for s in held_out if s not in speakers]
    if absent:
        log.warning("grid: test speaker(s) %s are not in %s", ", ".join(absent), corpus_dir)
    members = _split_ids(owner, set(aligns), held_out, int(dev_per_speaker))
    wanted = set().union(*(members[s] for s in splits))

    recs, sups, unread = _read({uid: a for uid, a in audio.items() if uid in wanted}, ali_dir)
    no_audio = [
        (uid, f"transcript without audio: no audio_25k/{s}/{f.stem}.wav")
        for uid, (s, f) in aligns.items()
        if uid not in audio
    ]
    written: dict[str, Path] = {}
    for split in splits:
        ids = members[split]
        if not ids:
            raise DataError(
                corpus_dir,
                f"the {split} split has no utterances (speakers: {', '.join(speakers)}; "
                f"test_speakers={','.join(held_out)})",
                "choose test_speakers= among the speakers present"
                if split == "test"
                else f"the corpus needs more speakers than {','.join(held_out)}",
            )
        path = out / f"{split}.jsonl"
        n, skipped = write_manifest_from_lhotse(
            [r for r in recs if r.id in ids],
            [s for s in sups if s.id in ids],
            path,
            text=_text,
            extra=_words,
            also_skipped=[(i, why) for i, why in (*unread, *no_audio) if i in ids],
        )
        if n == 0:
            reasons = "; ".join(f"{i}: {r}" for i, r in skipped[:3])
            raise DataError(path, f"every {split} utterance was skipped ({reasons})", "fix the corpus files")
        log.info("grid %s: %d utterances, %d skipped → %s", split, n, len(skipped), path)
        written[split] = path
        if video:
            written[f"video/{split}"] = _write_video(split, read_rows(path), videos, ids, out / "video", crop)
    return written


def _write_video(split: str, audio_rows: list[dict], videos: dict, ids: set[str], folder: Path, crop) -> Path:
    """``out/video/<split>.jsonl`` and its skipped listing."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, skipped = _video_rows(audio_rows, videos, folder, crop)
    used = {r["id"] for r in audio_rows}
    for uid in sorted(ids & (set(videos) - used)):
        skipped.append((uid, "video without transcript (its audio or alignment is missing or was skipped)"))
    path = write_manifest(folder / f"{split}.jsonl", rows)
    listing = skipped_path(path)
    if skipped:
        listing.write_text("".join(f"{i}\t{' '.join(why.split())}\n" for i, why in skipped), encoding="utf-8")
    else:
        listing.unlink(missing_ok=True)
    if not rows:
        raise DataError(
            path, f"no {split} utterance has a video ({len(skipped)} skipped)", f"expected {LAYOUT}"
        )
    log.info("grid video %s: %d utterances, %d skipped → %s", split, len(rows), len(skipped), path)
    return path

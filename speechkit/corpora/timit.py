"""TIMIT (LDC93S1) → phone-level manifests, read by lhotse's TIMIT recipe.

The LDC layout, names upper case as on the disc (lower-case copies are read too)::

    <corpus_dir>/TRAIN/DR1/FCJF0/SI1027.WAV   NIST SPHERE header + 16-bit PCM, 16 kHz, mono
                                 SI1027.PHN   "<first sample> <end sample> <phone>" a line
                                 SI1027.WRD   the same for words
                                 SI1027.TXT   "<first sample> <end sample> <sentence>"
    <corpus_dir>/TEST/DR1/…

``corpus_dir`` may also be the folder above ``TIMIT/``, or lhotse's layout (``data/TRAIN/…``,
the Kaggle copy; its ``SA1.WAV.wav`` RIFF duplicates are ignored). lhotse parses every
utterance (``lhotse.recipes.timit.prepare_recording``) and supplies the phone foldings and
speaker lists; its ``prepare_timit`` itself is not called: it reads only ``data/TRAIN``, keeps
the SA sentences, needs upper-case names, and logs a missing file as a warning only.

Splits, the standard ones (Lee & Hon 1989; Halberstadt 1998; Kaldi's egs/timit and lhotse
use the same lists): ``train`` the 462 TRAIN speakers (3696 utterances); ``dev`` 50 TEST
speakers (400); ``test`` the 24-speaker core test set of the TIMIT documentation, two men and
a woman per dialect region (192). The SA sentences — two calibration sentences every speaker
reads — are in no split; the other 94 TEST speakers are not used.

Targets are phones, space-separated (``sil dh ih s``). ``phones=61``: TIMIT's labels as
transcribed. ``phones=48`` and ``phones=39``: Lee & Hon's foldings (48 to train, 39 to score):
closures, pauses and epenthetic silence become ``sil`` in the 39 set, ``q`` (glottal stop) is
deleted. The foldings are lhotse's (``get_phonemes``), checked equal to Kaldi's
``conf/phones.60-48-39.map``; consecutive equal phones are kept as they are.

Writes ``{train,dev,test}.jsonl`` (absolute ``audio_filepath``, ``duration``, ``text``, ``id``,
``speaker``, ``language``, ``gender``, ``dialect_region``, ``sentence``: the orthographic
transcript), ``<split>.skipped.tsv`` listing the utterances left out and why (a transcript
without audio, audio without transcript, an unreadable file), and ``phones.txt``, the inventory,
one phone a line (``tokenizer=phone tokenizer.inventory=…/phones.txt``).
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from speechkit.cli import UsageError
from speechkit.corpora.lhotse_io import write_manifest_from_lhotse
from speechkit.data.errors import DataError

log = logging.getLogger("speechkit.corpora.timit")

PHONE_SETS = (39, 48, 61)
SPLITS = ("train", "dev", "test")
EXTENSIONS = ("WAV", "PHN", "WRD", "TXT")  # what lhotse's reader opens for each utterance
UTTERANCE_NAME = re.compile(r"^(SA|SI|SX)\d+$", re.IGNORECASE)  # SA1, SI1027, SX37
DIALECT_REGION = re.compile(r"^DR[1-8]$", re.IGNORECASE)
TRUNCATION_TOLERANCE_S = 0.010  # seconds a .PHN may run past the audio's end (more: a truncated file)
LAYOUT = "TRAIN/DR1/FCJF0/SI1027.WAV (NIST SPHERE) with SI1027.PHN, .WRD and .TXT beside it"


def phone_folding(phones: int) -> dict[str, str]:
    """TIMIT's 61 labels → the ``phones`` (39, 48 or 61) set; ``""`` for a deleted label (``q``)."""
    from lhotse.recipes.timit import get_phonemes

    if phones not in PHONE_SETS:
        raise UsageError(f"phones={phones!r}: TIMIT's phone sets are {', '.join(map(str, PHONE_SETS))}")
    folded = get_phonemes(39)  # its keys are the 61 labels, plus "sil" (not a TIMIT label)
    labels = sorted(k for k in folded if k != "sil")
    if phones == 61:
        return {p: p for p in labels}
    folded = get_phonemes(phones)
    return {p: folded[p] for p in labels}


def inventory(phones: int) -> list[str]:
    """The sorted phone set that ``phones`` (39, 48 or 61) folds TIMIT's labels into."""
    return sorted({p for p in phone_folding(phones).values() if p})


@dataclass
class _Utterance:
    part: str  # TRAIN or TEST, upper case
    region: str  # DR1 … DR8, upper case
    folder: Path  # the speaker's folder
    name: str  # SI1027, as on disk
    files: dict[str, Path] = field(default_factory=dict)  # WAV/PHN/WRD/TXT → path

    @property
    def speaker(self) -> str:
        return self.folder.name  # FCJF0, as on disk

    @property
    def id(self) -> str:
        return f"{self.speaker}-{self.name}"  # lhotse's recording and supervision id


def _as_int(value: Any, key: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{key}={value!r}: give a whole number") from None


def _subsets(subsets: list[str] | str | None) -> list[str]:
    if subsets is None or subsets == "":
        return list(SPLITS)
    names = subsets.split(",") if isinstance(subsets, str) else list(subsets)
    names = [str(n).strip().lower() for n in names if str(n).strip()]
    bad = [n for n in names if n not in SPLITS]
    if bad or not names:
        raise UsageError(f"subsets={','.join(names)}: TIMIT's subsets are {', '.join(SPLITS)}")
    return names


def _child(folder: Path, name: str) -> Path | None:
    """``folder``'s sub-folder called ``name`` in any case, or None."""
    if not folder.is_dir():
        return None
    return next((p for p in sorted(folder.iterdir()) if p.is_dir() and p.name.upper() == name), None)


def find_root(corpus_dir: Path) -> Path:
    """The folder holding TRAIN/ and TEST/: ``corpus_dir`` itself, its TIMIT/ or its data/ (lhotse's)."""
    if not corpus_dir.is_dir():
        raise DataError(
            corpus_dir, "no such folder", "pass corpus_dir=the TIMIT folder that holds TRAIN/ and TEST/"
        )
    candidates = [corpus_dir, _child(corpus_dir, "TIMIT"), _child(corpus_dir, "DATA")]
    for root in candidates:
        if root is not None and (_child(root, "TRAIN") or _child(root, "TEST")):
            return root
    if corpus_dir.name.upper() in ("TRAIN", "TEST"):
        raise DataError(
            corpus_dir,
            f"is one level too deep: it is TIMIT's own {corpus_dir.name}/",
            f"give corpus_dir={corpus_dir.parent}",
        )
    found = ", ".join(sorted(p.name for p in corpus_dir.iterdir())[:8]) or "nothing"
    raise DataError(
        corpus_dir,
        f"not a TIMIT folder: no TRAIN/ or TEST/ in it, nor in TIMIT/ or data/ below it (found: {found})",
        f"pass corpus_dir=the folder of the LDC layout {LAYOUT}",
    )


def _discover(part_dir: Path, utts: dict[tuple[str, str], _Utterance]) -> None:
    """Add each utterance under ``TRAIN/`` or ``TEST/`` (DR*/<speaker>/<name>.<ext>, any case) to ``utts``."""
    part = part_dir.name.upper()
    regions = [d for d in sorted(part_dir.iterdir()) if d.is_dir() and DIALECT_REGION.match(d.name)]
    if not regions:
        found = ", ".join(p.name for p in sorted(part_dir.iterdir())[:8]) or "nothing"
        raise DataError(
            part_dir,
            f"no dialect-region folders DR1 … DR8 in it (found: {found})",
            f"TIMIT's layout is {LAYOUT}; pass corpus_dir=the folder holding TRAIN/ and TEST/",
        )
    before = len(utts)
    for region in regions:
        for speaker in sorted(p for p in region.iterdir() if p.is_dir()):
            for f in sorted(speaker.iterdir()):
                stem, _, ext = f.name.partition(".")
                ext = ext.upper()
                if not f.is_file() or ext not in EXTENSIONS or not UTTERANCE_NAME.match(stem):
                    continue  # README, .DS_Store, the Kaggle copy's SA1.WAV.wav
                u = utts.setdefault(
                    (speaker.name.upper(), stem.upper()), _Utterance(part, region.name.upper(), speaker, stem)
                )
                if u.folder != speaker or ext in u.files:
                    first = u.files.get(ext) or next(iter(u.files.values()))
                    raise DataError(
                        f,
                        f"utterance {u.id} occurs twice: {first} and {f}",
                        "keep one copy of each file (a TIMIT speaker has one folder, in one dialect region)",
                    )
                u.files[ext] = f
    if len(utts) == before:
        raise DataError(
            part_dir, "no TIMIT utterance files in its DR*/<speaker>/ folders", f"expected {LAYOUT}"
        )


def _split_of(u: _Utterance, dev: set[str], test: set[str]) -> str | None:
    if u.name.upper().startswith("SA"):
        return None  # the two calibration sentences every speaker reads: in no standard split
    if u.part == "TRAIN":
        return "train"
    spk = u.speaker.lower()
    return "dev" if spk in dev else "test" if spk in test else None


def _missing(u: _Utterance) -> str | None:
    """Why lhotse cannot read ``u`` (a file missing), or None."""
    have = set(u.files)
    if "WAV" not in have:
        return f"transcript without audio: no {u.name}.WAV beside {next(iter(u.files.values()))}"
    if "PHN" not in have:
        return f"audio without phone transcript: no {u.name}.PHN beside {u.files['WAV']}"
    lacking = [e for e in EXTENSIONS if e not in have]
    if lacking:
        need = "lhotse's reader needs .PHN, .WRD and .TXT"
        return f"no {', '.join('.' + e for e in lacking)} beside {u.files['WAV']} ({need})"
    return None


def _read(u: _Utterance, folding: dict[str, str], scratch: Path) -> tuple[Any, Any]:
    """lhotse's Recording and SupervisionSegment of ``u``, its phone alignment folded by ``folding``.

    lhotse opens ``<wav>.with_suffix(".PHN")`` etc., so names that are not upper case are read
    through upper-case links in ``scratch``; the recording then points at the real file.
    """
    from lhotse import Recording
    from lhotse.recipes.timit import prepare_recording

    wav = u.files["WAV"]
    upper = all(u.files[e] == wav.with_suffix("." + e) for e in EXTENSIONS)
    if upper:
        rec, sup = prepare_recording(str(wav), 60, {})  # 60: lhotse's name for the unfolded labels
    else:
        folder = scratch / u.speaker
        folder.mkdir(parents=True, exist_ok=True)
        for ext, path in u.files.items():
            link = folder / f"{u.name}.{ext}"
            link.unlink(missing_ok=True)
            link.symlink_to(path.absolute())
        rec, sup = prepare_recording(str(folder / f"{u.name}.WAV"), 60, {})
        rec = Recording.from_file(wav.absolute(), recording_id=rec.id)
    unknown = sorted({a.symbol for a in sup.alignment["phone"] if a.symbol not in folding})
    if unknown:
        raise ValueError(f"{u.files['PHN']}: labels {unknown} are not TIMIT phones")
    # libsndfile (and so lhotse and speechkit's loader) reads a truncated SPHERE file without a word
    end = max((a.start + a.duration for a in sup.alignment["phone"]), default=0.0)
    if end > rec.duration + TRUNCATION_TOLERANCE_S:
        raise ValueError(f"truncated audio? it lasts {rec.duration:.3f} s but its .PHN runs to {end:.3f} s")
    folded = [folding[a.symbol] for a in sup.alignment["phone"]]
    return rec, sup.with_alignment(
        "phone", [a._replace(symbol=p) for a, p in zip(sup.alignment["phone"], folded)]
    )


def _phone_text(sup: Any) -> str:
    return " ".join(a.symbol for a in sup.alignment["phone"] if a.symbol)


def _extra(regions: dict[str, str]):
    def extra(sup: Any, rec: Any) -> dict:
        return {"gender": sup.gender, "dialect_region": regions[sup.id], "sentence": sup.text}

    return extra


def prepare(
    corpus_dir: Path,
    out: Path,
    *,
    corpus: str = "timit",
    subsets: list[str] | str | None = None,
    phones: int | str = 39,
) -> dict[str, Path]:
    """Write TIMIT's phone-level manifests to ``out``; returns split name → manifest path.

    ``subsets``: which of train, dev, test (default all); ``phones``: 39, 48 or 61. A missing
    file of an utterance (audio without transcript, or the reverse) or an unreadable one is
    skipped and listed in ``out/<split>.skipped.tsv``; a folder that is not TIMIT's
    layout, a duplicated utterance, or a split left empty raises :class:`DataError`.
    """
    from lhotse.recipes.timit import get_speakers

    corpus_dir, out = Path(corpus_dir).absolute(), Path(out)
    n_phones = _as_int(phones, "phones")
    folding = phone_folding(n_phones)
    splits = _subsets(subsets)
    root = find_root(corpus_dir)
    utts: dict[tuple[str, str], _Utterance] = {}  # (SPEAKER, NAME) → utterance, across TRAIN and TEST
    for part in sorted({"TRAIN" if s == "train" else "TEST" for s in splits}):
        part_dir = _child(root, part)
        if part_dir is None:
            raise DataError(root, f"no {part}/ folder", f"TIMIT's layout is {LAYOUT}, under TRAIN/ and TEST/")
        _discover(part_dir, utts)
    dev_speakers, test_speakers = (set(s) for s in get_speakers())
    by_split: dict[str, list[_Utterance]] = {s: [] for s in splits}
    for u in utts.values():
        split = _split_of(u, dev_speakers, test_speakers)
        if split in by_split:
            by_split[split].append(u)

    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="timit-") as scratch:
        for split in splits:
            written[split] = _write_split(split, by_split[split], folding, out, Path(scratch), root)
    _write_inventory(out, n_phones)
    return written


def _write_split(
    split: str, utts: list[_Utterance], folding: dict[str, str], out: Path, scratch: Path, root: Path
) -> Path:
    """``out/<split>.jsonl`` from ``utts``; what cannot be read is listed in ``out/<split>.skipped.tsv``."""
    from lhotse.audio.utils import AudioLoadingError

    path = out / f"{split}.jsonl"
    if not utts:
        part = "TRAIN" if split == "train" else "TEST"
        raise DataError(
            root,
            f"no utterance of TIMIT's standard {split} speakers found in {part}/",
            f"give corpus_dir=a complete TIMIT (layout {LAYOUT})",
        )
    recs, sups, skipped = [], [], []
    for u in tqdm(utts, f"TIMIT {split}", unit="utt", leave=False, disable=None):
        why = _missing(u)
        if why is None:
            try:
                rec, sup = _read(u, folding, scratch)
                recs.append(rec)
                sups.append(sup)
                continue
            except (AudioLoadingError, OSError, ValueError, RuntimeError) as e:  # bad audio, a malformed line
                why = f"cannot read: {type(e).__name__}: {e}"
        skipped.append((u.id, why))
    regions = {u.id: u.region for u in utts}
    n, skipped = write_manifest_from_lhotse(
        recs, sups, path, text=_phone_text, extra=_extra(regions), also_skipped=skipped
    )
    if n == 0:
        reasons = "; ".join(f"{i}: {r}" for i, r in skipped[:3])
        raise DataError(path, f"every {split} utterance was skipped ({reasons})", "fix the corpus files")
    log.info("timit %s: %d utterances, %d skipped → %s", split, n, len(skipped), path)
    return path


def _write_inventory(out: Path, phones: int) -> Path:
    path = out / "phones.txt"
    path.write_text("".join(p + "\n" for p in inventory(phones)), encoding="utf-8")
    return path

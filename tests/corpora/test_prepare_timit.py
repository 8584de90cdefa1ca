"""speechkit.corpora.timit on a tiny TIMIT in the LDC layout: NIST SPHERE audio written here, the
standard splits, Lee & Hon's phone foldings checked against the published table, and bad trees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lhotse")

from speechkit.cli import UsageError  # noqa: E402
from speechkit.corpora import timit  # noqa: E402
from speechkit.data.errors import DataError  # noqa: E402
from speechkit.frontends.audio_io import load_audio  # noqa: E402

RATE = 16_000  # Hz
# TIMIT's 61 labels (PHONCODE.DOC), and Lee & Hon (1989)'s foldings written out independently of lhotse:
# 61 → 48 (q deleted), then 48 → 39.
LABELS = (
    "aa ae ah ao aw ax ax-h axr ay b bcl ch d dcl dh dx eh el em en eng epi er ey f g gcl h# hh hv ih ix iy "
    "jh k kcl l m n ng nx ow oy p pau pcl q r s sh t tcl th uh uw ux v w y z zh"
).split()
TO_48 = {"ax-h": "ax", "axr": "er", "bcl": "vcl", "dcl": "vcl", "gcl": "vcl", "pcl": "cl", "tcl": "cl",
         "kcl": "cl", "em": "m", "eng": "ng", "h#": "sil", "pau": "sil", "hv": "hh", "nx": "n", "ux": "uw",
         "q": ""}  # fmt: skip
TO_39 = {"cl": "sil", "vcl": "sil", "epi": "sil", "el": "l", "en": "n", "ix": "ih", "ao": "aa", "ax": "ah",
         "zh": "sh"}  # fmt: skip


def fold(label: str, phones: int) -> str:
    if phones == 61:
        return label
    p = TO_48.get(label, label)
    return TO_39.get(p, p) if phones == 39 and p else p


# speaker folder → (part, dialect region, utterances); FAKS0 is a dev speaker, FELC0 a core-test
# speaker, MXYZ0 a TEST speaker in neither list, SA sentences are in no split
SPEAKERS = {
    "FCJF0": ("TRAIN", "DR1", ("SA1", "SI1027", "SX37")),
    "MRCG0": ("TRAIN", "DR2", ("SI1428", "SX78")),
    "FAKS0": ("TEST", "DR1", ("SI943", "SX133")),
    "FELC0": ("TEST", "DR1", ("SA2", "SI756", "SX36")),
    "MXYZ0": ("TEST", "DR1", ("SI1",)),
}
EXPECTED = {
    "train": ["FCJF0-SI1027", "FCJF0-SX37", "MRCG0-SI1428", "MRCG0-SX78"],
    "dev": ["FAKS0-SI943", "FAKS0-SX133"],
    "test": ["FELC0-SI756", "FELC0-SX36"],
}


def write_sphere(path: Path, samples: np.ndarray, uid: str) -> None:
    """A TIMIT .WAV: a 1024-byte NIST_1A header, then 16-bit little-endian PCM."""
    x = np.asarray(samples, dtype="<i2")
    fields = [
        "database_id -s5 TIMIT",
        "database_version -s3 1.0",
        f"utterance_id -s{len(uid)} {uid}",
        "channel_count -i 1",
        f"sample_count -i {len(x)}",
        f"sample_rate -i {RATE}",
        f"sample_min -i {int(x.min())}",
        f"sample_max -i {int(x.max())}",
        "sample_n_bytes -i 2",
        "sample_byte_format -s2 01",
        "sample_sig_bits -i 16",
        "end_head",
    ]
    header = ("NIST_1A\n   1024\n" + "\n".join(fields) + "\n").encode("ascii")
    path.write_bytes(header + b" " * (1024 - len(header)) + x.tobytes())


def make_timit(root: Path, seed: int = 0) -> dict[str, dict]:
    """The tree of SPEAKERS under ``root`` (TRAIN/DR1/FCJF0/SI1027.WAV …); returns id → what it holds."""
    rng = np.random.default_rng(seed)
    truth = {}
    for speaker, (part, region, names) in SPEAKERS.items():
        folder = root / part / region / speaker
        folder.mkdir(parents=True)
        for name in names:
            inner = [LABELS[i] for i in rng.integers(len(LABELS), size=10)]
            labels = ["h#", *inner, "h#"]
            lengths = rng.integers(200, 900, size=len(labels))  # samples per phone
            bounds = np.concatenate([[0], np.cumsum(lengths)])
            samples = (rng.standard_normal(bounds[-1]) * 2000).astype(np.int16)
            write_sphere(folder / f"{name}.WAV", samples, f"{speaker.lower()}_{name.lower()}")
            phn = "".join(f"{b} {e} {p}\n" for b, e, p in zip(bounds[:-1], bounds[1:], labels))
            (folder / f"{name}.PHN").write_text(phn)
            words = ["she", "had", "your"]
            cuts = np.linspace(bounds[1], bounds[-2], len(words) + 1).astype(int)
            wrd = "".join(f"{b} {e} {w}\n" for b, e, w in zip(cuts[:-1], cuts[1:], words))
            (folder / f"{name}.WRD").write_text(wrd)
            (folder / f"{name}.TXT").write_text(f"0 {bounds[-1]} She had your.\n")
            truth[f"{speaker}-{name}"] = {"labels": labels, "samples": samples, "speaker": speaker,
                                          "region": region, "path": folder / f"{name}.WAV"}  # fmt: skip
    return truth


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("phones", [39, 48, 61])
def test_folding_and_inventory_are_lee_and_hon_s_published_table(phones):
    folding = timit.phone_folding(phones)
    assert sorted(folding) == sorted(LABELS) and len(LABELS) == 61
    assert folding == {p: fold(p, phones) for p in LABELS}
    assert len(timit.inventory(phones)) == phones


def test_standard_splits_with_folded_phone_texts_and_exact_durations(tmp_path):
    truth = make_timit(tmp_path / "TIMIT")
    written = timit.prepare(
        tmp_path, tmp_path / "out", corpus="timit", subsets=None
    )  # the folder above TIMIT/
    assert written == {s: tmp_path / "out" / f"{s}.jsonl" for s in ("train", "dev", "test")}
    for split, ids in EXPECTED.items():
        got = rows(written[split])
        assert [r["id"] for r in got] == ids  # SA sentences and MXYZ0 (in no standard list) left out
        for r in got:
            t = truth[r["id"]]
            assert r["text"] == " ".join(p for p in (fold(x, 39) for x in t["labels"]) if p)
            assert abs(r["duration"] - len(t["samples"]) / RATE) <= 0.001
            gender = "female" if t["speaker"].startswith("F") else "male"
            assert (r["speaker"], r["dialect_region"], r["gender"]) == (t["speaker"], t["region"], gender)
            assert Path(r["audio_filepath"]) == t["path"].absolute()
            assert r["sentence"] == "She had your."
        assert not (tmp_path / "out" / f"{split}.skipped.tsv").exists()
    assert (tmp_path / "out" / "phones.txt").read_text().split() == timit.inventory(39)


def test_speechkit_reads_timit_sphere_audio_sample_exact(tmp_path):
    truth = make_timit(tmp_path)
    t = truth["FCJF0-SI1027"]
    wave = load_audio(t["path"], RATE)
    assert wave.shape == (len(t["samples"]),)
    np.testing.assert_array_equal((wave.numpy() * 32768).round().astype(np.int16), t["samples"])


@pytest.mark.parametrize("phones", [48, 61])
def test_other_phone_sets_fold_texts_and_inventory(tmp_path, phones):
    truth = make_timit(tmp_path)
    written = timit.prepare(tmp_path, tmp_path / "out", corpus="timit", subsets=["dev"], phones=phones)
    assert list(written) == ["dev"]
    for r in rows(written["dev"]):
        assert r["text"].split() == [p for p in (fold(x, phones) for x in truth[r["id"]]["labels"]) if p]
    assert (tmp_path / "out" / "phones.txt").read_text().split() == timit.inventory(phones)


def test_lower_case_copy_and_lhotse_data_layout_give_the_same_texts(tmp_path):
    truth = make_timit(tmp_path / "upper")
    lower = tmp_path / "kaggle" / "data"  # lhotse's layout: corpus_dir/data/TRAIN/…, here all lower case
    for f in sorted((tmp_path / "upper").rglob("*")):
        if f.is_file():
            dest = lower / f.relative_to(tmp_path / "upper").as_posix().lower()
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest)
    written = timit.prepare(tmp_path / "kaggle", tmp_path / "out", corpus="timit", subsets=["train"])
    got = rows(written["train"])
    assert [r["id"] for r in got] == [i.lower() for i in EXPECTED["train"]]
    for r in got:
        t = truth[r["id"].upper()]
        assert r["text"] == " ".join(p for p in (fold(x, 39) for x in t["labels"]) if p)
        audio = Path(r["audio_filepath"])
        assert audio == lower / "train" / t["region"].lower() / r["speaker"] / (
            r["id"].split("-")[1] + ".wav"
        )


def test_missing_audio_or_transcript_bad_phones_or_truncated_audio_are_skipped_and_listed(tmp_path):
    make_timit(tmp_path)
    (tmp_path / "TRAIN/DR1/FCJF0/SI1027.WAV").unlink()  # a transcript without audio
    (tmp_path / "TRAIN/DR1/FCJF0/SX37.PHN").unlink()  # audio without transcript
    (tmp_path / "TRAIN/DR2/MRCG0/SX78.PHN").write_text("0 100 h#\n100 200 xx\n")  # not a TIMIT label
    cut = tmp_path / "TEST/DR1/FAKS0/SX133.WAV"  # a truncated copy: its header and .PHN say more samples
    cut.write_bytes(cut.read_bytes()[: 1024 + 2 * 200])
    written = timit.prepare(tmp_path, tmp_path / "out", corpus="timit", subsets=["train", "dev"])
    assert [r["id"] for r in rows(written["train"])] == ["MRCG0-SI1428"]
    assert [r["id"] for r in rows(written["dev"])] == ["FAKS0-SI943"]
    assert (
        "truncated audio? it lasts 0.013 s but its .PHN runs to"
        in (tmp_path / "out/dev.skipped.tsv").read_text()
    )
    listed = dict(line.split("\t") for line in (tmp_path / "out/train.skipped.tsv").read_text().splitlines())
    assert sorted(listed) == ["FCJF0-SI1027", "FCJF0-SX37", "MRCG0-SX78"]
    assert listed["FCJF0-SI1027"].startswith("transcript without audio")
    assert listed["FCJF0-SX37"].startswith("audio without phone transcript")
    assert "['xx'] are not TIMIT phones" in listed["MRCG0-SX78"]


def test_missing_folder_and_wrong_layout_say_what_was_expected(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        timit.prepare(tmp_path / "nowhere", tmp_path / "out", corpus="timit", subsets=None)
    flat = tmp_path / "flat" / "TRAIN" / "FCJF0"  # no dialect-region level
    flat.mkdir(parents=True)
    write_sphere(flat / "SI1027.WAV", np.zeros(100), "x")
    with pytest.raises(
        DataError, match=r"no dialect-region folders DR1 … DR8 .*found: FCJF0.*TRAIN/DR1/FCJF0"
    ):
        timit.prepare(tmp_path / "flat", tmp_path / "out", corpus="timit", subsets=["train"])
    with pytest.raises(
        DataError, match=r"one level too deep: it is TIMIT's own TRAIN/ — give corpus_dir=.*flat$"
    ):
        timit.prepare(tmp_path / "flat" / "TRAIN", tmp_path / "out", corpus="timit", subsets=None)
    with pytest.raises(
        DataError, match=r"not a TIMIT folder: no TRAIN/ or TEST/.*found: SI1027.WAV\).*TRAIN/DR1/FCJF0"
    ):
        timit.prepare(flat, tmp_path / "out", corpus="timit", subsets=None)
    with pytest.raises(DataError, match=r"no TEST/ folder"):
        timit.prepare(tmp_path / "flat", tmp_path / "out", corpus="timit", subsets=["test"])


def test_duplicated_utterance_is_one_clear_error(tmp_path):
    make_timit(tmp_path)
    shutil.copytree(tmp_path / "TRAIN/DR1/FCJF0", tmp_path / "TRAIN/DR3/FCJF0")  # one speaker in two regions
    with pytest.raises(
        DataError, match=r"utterance FCJF0-SA1 occurs twice: .*DR1/FCJF0/SA1.* and .*DR3/FCJF0/SA1"
    ):
        timit.prepare(tmp_path, tmp_path / "out", corpus="timit", subsets=None)


def test_bad_options_are_usage_errors(tmp_path):
    make_timit(tmp_path)
    with pytest.raises(UsageError, match="phone sets are 39, 48, 61"):
        timit.prepare(tmp_path, tmp_path / "out", corpus="timit", subsets=None, phones=40)
    with pytest.raises(UsageError, match="subsets are train, dev, test"):
        timit.prepare(tmp_path, tmp_path / "out", corpus="timit", subsets=["core"])

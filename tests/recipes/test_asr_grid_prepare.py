"""recipes/asr_grid/prepare.py end to end on a tiny corpus (6/2/2 utterances, one job)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "recipes" / "asr_grid" / "prepare.py"
SIZES = {"train": 6, "dev": 2, "test": 2}

# The GRID grammar, written out again here so that the test does not trust the script's copy.
GRAMMAR = [
    {"bin", "lay", "place", "set"},
    {"blue", "green", "red", "white"},
    {"at", "by", "in", "with"},
    set("abcdefghijklmnopqrstuvxyz"),
    {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"},
    {"again", "now", "please", "soon"},
]

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("asr_grid")
    sizes = [f"--num-{split}={n}" for split, n in SIZES.items()]
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--out",
        str(out),
        *sizes,
        "--lm-sentences=50",
        "--seed=3",
        "--jobs=1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "synthesised 10 utterances" in proc.stdout
    return out


def read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("split", SIZES)
def test_manifest_rows_point_to_16khz_mono_flac_of_the_stated_duration(corpus: Path, split: str) -> None:
    rows = read_manifest(corpus / f"{split}.jsonl")
    assert len(rows) == SIZES[split]
    for row in rows:
        assert set(row) == {"audio_filepath", "duration", "text", "speaker"}
        path = corpus / row["audio_filepath"]  # relative to the manifest's folder
        assert not Path(row["audio_filepath"]).is_absolute() and path.is_file()
        info = sf.info(str(path))
        assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1)
        audio, _ = sf.read(str(path))
        assert abs(len(audio) / 16000 - row["duration"]) < 0.010
        assert 0.5 < row["duration"] < 10
        assert 0 < abs(audio).max() <= 1


@pytest.mark.parametrize("split", SIZES)
def test_texts_follow_the_grid_grammar(corpus: Path, split: str) -> None:
    for row in read_manifest(corpus / f"{split}.jsonl"):
        words = row["text"].split(" ")
        assert len(words) == 6, row["text"]
        assert all(word in slot for word, slot in zip(words, GRAMMAR, strict=True)), row["text"]


def test_speakers_of_the_splits_are_disjoint(corpus: Path) -> None:
    used = {split: {r["speaker"] for r in read_manifest(corpus / f"{split}.jsonl")} for split in SIZES}
    pools = json.loads((corpus / "speakers.json").read_text())
    for split in SIZES:
        assert used[split] <= set(pools[split])
    assert not set(pools["train"]) & set(pools["test"])
    assert not set(pools["train"]) & set(pools["dev"])
    assert not set(pools["dev"]) & set(pools["test"])
    variant = {split: {s.partition("+")[2] for s in pools[split]} for split in SIZES}
    assert not variant["train"] & variant["test"], "test variants must be unseen in training"


def test_lexicon_and_lm_text(corpus: Path) -> None:
    words = (corpus / "words.txt").read_text().split("\n")[:-1]
    assert len(words) == 51 and set(words) == set().union(*GRAMMAR)
    sentences = (corpus / "lm_train.txt").read_text().splitlines()
    assert len(sentences) == 50
    assert all(len(s.split()) == 6 and set(s.split()) <= set(words) for s in sentences)
    assert not (corpus / "failures.jsonl").exists()

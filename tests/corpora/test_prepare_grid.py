"""speechkit.corpora.grid_corpus on a tiny GRID in lhotse's layout (alignments/, audio_25k/, s<N>/*.mpg
written here): speaker splits, texts without sil/sp, word times, video manifests, bad trees, and a
3-step training run on the result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lhotse")
av = pytest.importorskip("av")
import soundfile as sf  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from speechkit.cli import UsageError  # noqa: E402
from speechkit.config import CONF_DIR, store_schemas  # noqa: E402
from speechkit.corpora import grid_corpus  # noqa: E402
from speechkit.corpora.grid import random_sentence  # noqa: E402
from speechkit.data.errors import DataError  # noqa: E402
from speechkit.frontends.video_io import load_video  # noqa: E402

RATE = 25_000  # Hz, audio_25k
UNITS = 25_000  # .align time units per second (1000 per 25 fps frame)
FPS, FRAMES = 25, 25  # 1 s clips (GRID's are 3 s)
SPEAKERS = ("s1", "s4", "s5", "s20")  # s1 and s20 are LipNet's unseen speakers; s2 and s22 absent
PER_SPEAKER = 3


def utterance_name(words: list[str]) -> str:
    """GRID's file name spells the sentence: bin blue at f two now → bbaf2n."""
    digit = {"zero": "z", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
             "seven": "7", "eight": "8", "nine": "9"}[words[4]]  # fmt: skip
    return f"{words[0][0]}{words[1][0]}{words[2][0]}{words[3]}{digit}{words[5][0]}"


def write_mpg(path: Path, seed: int) -> None:
    """An MPEG-1 program stream like GRID's videos (smaller frames, 1 s)."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w", format="mpeg") as c:
        v = c.add_stream("mpeg1video", rate=FPS)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        for _ in range(FRAMES):
            img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)


def make_grid(root: Path, video: bool = True, seed: int = 0) -> dict[str, dict]:
    """alignments/sN/<id>.align, audio_25k/sN/<id>.wav and sN/<id>.mpg; returns id → truth."""
    rng = np.random.default_rng(seed)
    truth = {}
    for speaker in SPEAKERS:
        for folder in ("alignments", "audio_25k", ""):
            (root / folder / speaker).mkdir(parents=True, exist_ok=True)
        names: set[str] = set()
        while len(names) < PER_SPEAKER:
            words = random_sentence(rng)
            name = utterance_name(words)
            if name in names:
                continue
            names.add(name)
            # sil, the six words with a short pause after the third, sil; ends half a frame early as GRID's
            cuts = np.linspace(4000, 20000, 7).astype(int)
            lines = [(0, cuts[0], "sil")]
            for i, w in enumerate(words):
                lines.append((cuts[i], cuts[i + 1] - (500 if i == 2 else 0), w))
                if i == 2:
                    lines.append((cuts[i + 1] - 500, cuts[i + 1], "sp"))
            lines.append((cuts[-1], 24500, "sil"))
            ali = "".join(f"{b} {e} {w}\n" for b, e, w in lines)
            (root / "alignments" / speaker / f"{name}.align").write_text(ali)
            samples = (rng.standard_normal(RATE) * 0.1).astype(np.float32)
            sf.write(root / "audio_25k" / speaker / f"{name}.wav", samples, RATE, subtype="PCM_16")
            if video:
                write_mpg(root / speaker / f"{name}.mpg", int(rng.integers(1 << 30)))
            spans = [[w, b / UNITS, e / UNITS] for b, e, w in lines if w not in ("sil", "sp")]
            truth[f"{speaker}_{name}"] = {"text": " ".join(words), "speaker": speaker, "words": spans}
    return truth


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def listed(manifest: Path) -> dict[str, str]:
    path = manifest.with_name(f"{manifest.stem}.skipped.tsv")
    return dict(line.split("\t") for line in path.read_text().splitlines()) if path.exists() else {}


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("grid") / "GRID"
    return root, make_grid(root)


def test_speaker_splits_texts_durations_and_word_times(grid, tmp_path, caplog):
    root, truth = grid
    written = grid_corpus.prepare(root, tmp_path, corpus="grid", subsets=None, dev_per_speaker=1)
    assert written == {s: tmp_path / f"{s}.jsonl" for s in ("train", "dev", "test")}
    assert "test speaker(s) s2, s22 are not in" in caplog.text
    by_split = {s: rows(p) for s, p in written.items()}
    assert {r["speaker"] for r in by_split["test"]} == {"s1", "s20"}  # LipNet's unseen speakers present
    assert len(by_split["test"]) == 2 * PER_SPEAKER
    for speaker in ("s4", "s5"):  # one dev utterance per training speaker, the rest train
        assert sum(r["speaker"] == speaker for r in by_split["dev"]) == 1
        assert sum(r["speaker"] == speaker for r in by_split["train"]) == PER_SPEAKER - 1
    all_rows = [r for split in by_split.values() for r in split]
    assert sorted(r["id"] for r in all_rows) == sorted(truth)
    for r in all_rows:
        t = truth[r["id"]]
        assert r["text"] == t["text"] and "sp" not in r["text"].split()
        assert abs(r["duration"] - 1.0) <= 0.001
        assert r["speaker"] == t["speaker"]
        assert [w for w, _, _ in r["words"]] == t["text"].split()
        np.testing.assert_allclose(
            [[b, e] for _, b, e in r["words"]], [[b, e] for _, b, e in t["words"]], atol=1e-3
        )
        assert Path(r["audio_filepath"]) == root / "audio_25k" / r["speaker"] / f"{r['id'].split('_')[1]}.wav"
    assert not any(listed(path) for path in written.values())
    # the dev choice is a function of the ids: a second run, of dev alone, picks the same
    again = grid_corpus.prepare(root, tmp_path / "again", corpus="grid", subsets=["dev"], dev_per_speaker=1)
    assert rows(again["dev"]) == by_split["dev"]


def test_video_manifests_pair_each_transcript_with_its_clip(grid, tmp_path):
    root, truth = grid
    written = grid_corpus.prepare(root, tmp_path, corpus="grid", subsets=None, test_speakers="4", video=True)
    assert set(written) == {"train", "dev", "test", "video/train", "video/dev", "video/test"}
    for split in ("train", "dev", "test"):
        audio, video = rows(written[split]), rows(written[f"video/{split}"])
        assert [r["id"] for r in video] == [r["id"] for r in audio]
        for r in video:
            speaker, name = r["id"].split("_")
            assert Path(r["video_filepath"]) == root / speaker / f"{name}.mpg"
            assert (r["num_frames"], r["fps"], r["duration"]) == (FRAMES, FPS, 1.0)
            assert r["text"] == truth[r["id"]]["text"] and r["speaker"] == speaker
    assert {r["speaker"] for r in rows(written["video/test"])} == {"s4"}
    clip = rows(written["video/dev"])[0]
    assert load_video(clip["video_filepath"], fps=FPS).shape[0] == clip["num_frames"]


def test_missing_counterparts_are_skipped_and_listed_never_silently(tmp_path):
    root = tmp_path / "GRID"
    truth = make_grid(root)
    no_audio, no_align, no_video = sorted(i for i in truth if truth[i]["speaker"] == "s1")
    (root / "audio_25k" / "s1" / f"{no_audio[3:]}.wav").unlink()
    (root / "alignments" / "s1" / f"{no_align[3:]}.align").unlink()
    (root / "s1" / f"{no_video[3:]}.mpg").unlink()
    written = grid_corpus.prepare(root, tmp_path / "out", corpus="grid", subsets=["test"], video=True)
    s20 = sorted(i for i in truth if truth[i]["speaker"] == "s20")
    assert sorted(r["id"] for r in rows(written["test"])) == sorted([no_video, *s20])
    assert listed(written["test"]) == {
        no_audio: f"transcript without audio: no audio_25k/s1/{no_audio[3:]}.wav",
        no_align: "audio without transcript",
    }
    assert sorted(r["id"] for r in rows(written["video/test"])) == s20
    why = "video without transcript (its audio or alignment is missing or was skipped)"
    assert listed(written["video/test"]) == {
        no_video: "transcript without video",
        no_audio: why,
        no_align: why,
    }


def test_bad_trees_are_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        grid_corpus.prepare(tmp_path / "nowhere", tmp_path / "out", corpus="grid", subsets=None)
    root = tmp_path / "top" / "GRID"
    make_grid(root, video=False)
    with pytest.raises(DataError, match=r"no alignments/, but GRID/ does — give corpus_dir=.*/top/GRID$"):
        grid_corpus.prepare(tmp_path / "top", tmp_path / "out", corpus="grid", subsets=None)
    shutil.rmtree(root / "audio_25k")
    with pytest.raises(
        DataError,
        match=r"not GRID's layout: no audio_25k/ folder \(found: alignments, s1, .*audio_25k/s1/bbaf2n.wav",
    ):
        grid_corpus.prepare(root, tmp_path / "out", corpus="grid", subsets=None)


def test_duplicated_utterance_is_one_clear_error(tmp_path):
    root = tmp_path / "GRID"
    truth = make_grid(root)
    speaker, name = next(iter(truth)).split("_")
    (root / "again" / speaker).mkdir(parents=True)  # an archive extracted twice
    shutil.copy(root / speaker / f"{name}.mpg", root / "again" / speaker / f"{name}.mpg")
    twice = rf"utterance {speaker}_{name} has two video \(.mpg\) files: .*/again/{speaker}/{name}.mpg and "
    with pytest.raises(DataError, match=twice + rf".*GRID/{speaker}/{name}.mpg"):
        grid_corpus.prepare(root, tmp_path / "out", corpus="grid", subsets=None, video=True)


def test_options_are_checked_before_any_work(tmp_path):
    root = tmp_path / "GRID"
    make_grid(root, video=False)
    with pytest.raises(UsageError, match="mouth_crop=true crops the videos: add video=true"):
        grid_corpus.prepare(root, tmp_path / "out", corpus="grid", subsets=None, mouth_crop=True)
    with pytest.raises(UsageError, match="give GRID speakers like s1,s2,s20,s22"):
        grid_corpus.prepare(root, tmp_path / "out", corpus="grid", subsets=None, test_speakers="bob")
    with pytest.raises(
        DataError, match=r"the test split has no utterances \(speakers: s1, s4, s5, s20; test_speakers=s9\)"
    ):
        grid_corpus.prepare(root, tmp_path / "out", corpus="grid", subsets=None, test_speakers="s9")


def test_mouth_crop_writes_clips_beside_the_video_manifest(grid, tmp_path, monkeypatch):
    mouth_crop = pytest.importorskip("speechkit.frontends.mouth_crop")
    root, _ = grid
    calls = []

    def fake_crop(src, dst, size):  # the face detector is tested in tests/frontends; here the wiring
        calls.append((Path(src), size))
        shutil.copy(src, dst)

    monkeypatch.setattr(mouth_crop, "crop_video_file", fake_crop)
    monkeypatch.setattr(mouth_crop, "check_detector", lambda name="lbp": None)
    written = grid_corpus.prepare(
        root, tmp_path, corpus="grid", subsets=["test"], video=True, mouth_crop=True
    )
    clips = rows(written["video/test"])
    assert [c["video_filepath"] for c in clips] == [
        f"mouths/{c['speaker']}/{c['id'].split('_')[1]}.mp4" for c in clips
    ]
    assert all((tmp_path / "video" / c["video_filepath"]).is_file() for c in clips)
    assert len(calls) == len(clips) and all(size == (50, 100) for _, size in calls)
    monkeypatch.delattr(mouth_crop, "crop_video_file")
    with pytest.raises(UsageError, match="mouth_crop has no crop_video_file"):
        grid_corpus.prepare(root, tmp_path, corpus="grid", subsets=["test"], video=True, mouth_crop=True)


def test_three_training_steps_on_the_prepared_audio(grid, tmp_path, monkeypatch):
    from speechkit.trainer import Trainer

    monkeypatch.setattr(Trainer, "plot", lambda self, final=False: None)  # training.png: tests/test_plots.py

    root, _ = grid
    written = grid_corpus.prepare(root, tmp_path / "data", corpus="grid", subsets=None, dev_per_speaker=1)
    store_schemas()  # dev: the training manifest again, as the tiny train split lacks letters of the dev one
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"data.train_manifest={written['train']}", f"data.dev_manifest={written['train']}",
            "data.num_workers=0", "data.batch_size=2", "frontend=mfcc", "frontend.sample_rate=25000",
            "frontend.n_mfcc=13", "encoder.num_layers=1", "encoder.hidden_size=16", "encoder.subsample=2",
            "trainer.device=cpu", "trainer.max_steps=3",
        ])  # fmt: skip
    trainer = Trainer(cfg, tmp_path / "run")
    metrics = trainer.fit()
    assert trainer.state.step == 3
    assert np.isfinite(metrics["dev_loss"]) and 0 <= metrics["dev_cer"]
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()

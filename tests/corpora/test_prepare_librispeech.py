"""speechkit-prepare corpus=librispeech|mini_librispeech on tiny trees in the published layout:
every utterance in the manifests with its real duration, odd input listed or refused by name,
and a prepared tree trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechkit.corpora.prepare import main
from tests.conftest import error_line

pytest.importorskip("lhotse")

RATE = 16000  # Hz, LibriSpeech's sample rate
WORDS = ("THE", "CAT", "SAT", "ON", "A", "MAT", "AND", "DOG", "RAN", "HOME")


def make_librispeech(root: Path, chapters: dict[str, list[tuple[str, str, int]]], seed: int = 0) -> dict:
    """Write ``root/LibriSpeech/<subset>/<spk>/<chapter>/`` trees: per subset, ``(speaker, chapter,
    utterances)``; returns utterance id → ``{"samples", "text", "speaker", "subset", "path"}``."""
    rng = np.random.default_rng(seed)
    base = root / "LibriSpeech"
    base.mkdir(parents=True)
    speakers = []
    utts: dict[str, dict] = {}
    for subset, entries in chapters.items():
        for spk, chapter, n in entries:
            folder = base / subset / spk / chapter
            folder.mkdir(parents=True)
            lines = []
            for u in range(n):
                utt = f"{spk}-{chapter}-{u:04d}"
                samples = int(rng.integers(4000, 9000))
                t = np.arange(samples) / RATE
                wave = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 400) * t) + 0.01 * rng.standard_normal(
                    samples
                )
                path = folder / f"{utt}.flac"
                sf.write(path, wave.astype(np.float32), RATE, subtype="PCM_16")
                text = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 5))))
                lines.append(f"{utt} {text}\n")
                utts[utt] = {"samples": samples, "text": text, "speaker": spk, "subset": subset, "path": path}
            (folder / f"{spk}-{chapter}.trans.txt").write_text("".join(lines))
            speakers.append(f"{spk:<4} | F | {subset:<16} | 1.00 | Some Reader")
    (base / "SPEAKERS.TXT").write_text(
        ";ID  |SEX| SUBSET           |MINUTES| NAME\n" + "\n".join(speakers) + "\n"
    )
    (base / "README.TXT").write_text("LibriSpeech ASR corpus (a tiny test copy)\n")
    return utts


def rows_of(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def prepare_error(capsys, *args: str) -> str:
    """The one ``error:`` line of a failed in-process run (exit status 2)."""
    with pytest.raises(SystemExit) as e:
        main(list(args))
    assert e.value.code == 2
    return error_line(capsys.readouterr().err)


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> tuple[Path, dict]:
    """A Mini LibriSpeech tree (train-clean-5: 2 speakers, dev-clean-2: 1) and its utterances."""
    root = tmp_path_factory.mktemp("mini")
    utts = make_librispeech(
        root, {"train-clean-5": [("19", "198", 4), ("26", "495", 4)], "dev-clean-2": [("84", "121", 3)]}
    )
    return root, utts


def test_librispeech_manifests_hold_every_utterance_with_its_duration_text_and_speaker(tmp_path, capsys):
    utts = make_librispeech(
        tmp_path, {"train-clean-100": [("19", "198", 3), ("26", "495", 2)], "dev-clean": [("84", "121", 2)]}
    )
    main(["corpus=librispeech", f"corpus_dir={tmp_path / 'LibriSpeech'}", f"out={tmp_path}"])
    printed = capsys.readouterr().out
    assert "train-clean-100: 5 utterances" in printed and "2 speakers, 0 skipped" in printed
    assert "dev-clean: 2 utterances" in printed
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == ["dev-clean.jsonl", "train-clean-100.jsonl"]
    seen = set()
    for subset in ("train-clean-100", "dev-clean"):
        for row in rows_of(tmp_path / f"{subset}.jsonl"):
            utt = utts[row["id"]]
            # the manifest sits above the corpus, so the paths are relative to it
            assert row["audio_filepath"] == utt["path"].relative_to(tmp_path).as_posix()
            assert (tmp_path / row["audio_filepath"]).is_file()
            assert abs(row["duration"] - utt["samples"] / RATE) <= 0.001
            assert (row["text"], row["speaker"], utt["subset"]) == (utt["text"], utt["speaker"], subset)
            seen.add(row["id"])
    assert seen == set(utts)
    train_texts = [rows["text"] for rows in rows_of(tmp_path / "train-clean-100.jsonl")]
    assert (tmp_path / "lm_train.txt").read_text().splitlines() == train_texts
    assert (tmp_path / "words.txt").read_text().splitlines() == sorted(
        {w for t in train_texts for w in t.split()}
    )
    assert not list(tmp_path.glob("*.skipped.tsv"))


def test_subsets_key_prepares_only_the_named_subsets_with_absolute_paths(mini, tmp_path, capsys):
    root, utts = mini
    main(
        [
            "corpus=mini_librispeech",
            f"corpus_dir={root / 'LibriSpeech'}",
            f"out={tmp_path}",
            "subsets=dev-clean-2",
        ]
    )
    assert [p.name for p in tmp_path.glob("*.jsonl")] == ["dev-clean-2.jsonl"]
    rows = rows_of(tmp_path / "dev-clean-2.jsonl")
    assert [Path(r["audio_filepath"]) for r in rows] == sorted(
        u["path"] for u in utts.values() if u["subset"] == "dev-clean-2"
    )
    assert "no training split prepared" in capsys.readouterr().out
    assert not (tmp_path / "lm_train.txt").exists()


def test_transcript_without_audio_and_audio_without_transcript_are_counted_and_listed(tmp_path, capsys):
    utts = make_librispeech(tmp_path, {"dev-clean": [("84", "121", 4)]})
    gone = next(u for u in utts if u.endswith("0001"))
    utts[gone]["path"].unlink()  # its transcript line stays
    chapter = utts[gone]["path"].parent
    sf.write(chapter / "84-121-0009.flac", np.zeros(1600, np.float32), RATE)  # no transcript line
    main(["corpus=librispeech", f"corpus_dir={tmp_path / 'LibriSpeech'}", f"out={tmp_path / 'm'}"])
    printed = capsys.readouterr().out
    assert "dev-clean: 3 utterances" in printed and "2 skipped" in printed
    assert {r["id"] for r in rows_of(tmp_path / "m" / "dev-clean.jsonl")} == set(utts) - {gone}
    listed = dict(
        line.split("\t") for line in (tmp_path / "m" / "dev-clean.skipped.tsv").read_text().splitlines()
    )
    assert set(listed) == {gone, "84-121-0009"}
    assert "84-121.trans.txt:2 has no audio" in listed[gone]
    assert "has no transcript line" in listed["84-121-0009"]


def test_unreadable_audio_is_one_error_line_naming_the_file(tmp_path, capsys):
    utts = make_librispeech(tmp_path, {"dev-clean": [("84", "121", 2)]})
    bad = next(iter(utts.values()))["path"]
    bad.write_bytes(b"not a flac file" * 20)
    line = prepare_error(
        capsys, "corpus=librispeech", f"corpus_dir={tmp_path / 'LibriSpeech'}", f"out={tmp_path}"
    )
    assert str(bad) in line and "lhotse cannot read this audio" in line and "Format not recognised" in line


@pytest.mark.parametrize(
    "trans_line, problem",
    [("84-121-0000 AGAIN THE SAME ID\n", "utterance id 84-121-0000 is also on"), ("\n", "blank line")],
)
def test_duplicated_id_or_blank_transcript_line_is_an_error_naming_the_line(
    tmp_path, capsys, trans_line, problem
):
    make_librispeech(tmp_path, {"dev-clean": [("84", "121", 2)]})
    trans = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121" / "84-121.trans.txt"
    trans.write_text(trans.read_text() + trans_line)
    line = prepare_error(
        capsys, "corpus=librispeech", f"corpus_dir={tmp_path / 'LibriSpeech'}", f"out={tmp_path}"
    )
    assert f"{trans}:3" in line and problem in line


@pytest.mark.parametrize(
    "corpus, where, expected",
    [
        ("librispeech", "missing", "no such folder"),
        ("librispeech", "", "one level too high: it holds LibriSpeech/ — give corpus_dir={root}/LibriSpeech"),
        ("librispeech", "LibriSpeech/dev-clean-2", "one level too deep"),
        ("librispeech", "LibriSpeech/train-clean-5/19", "holds none of the librispeech subsets"),
        ("librispeech", "LibriSpeech", "holds dev-clean-2, train-clean-5, subsets of mini_librispeech"),
    ],
)
def test_a_corpus_dir_off_by_a_level_or_of_the_other_corpus_says_what_to_give(
    mini, capsys, corpus, where, expected
):
    root, _ = mini
    line = prepare_error(capsys, f"corpus={corpus}", f"corpus_dir={root / where}", f"out={root / 'never'}")
    assert expected.format(root=root) in line
    assert not (root / "never").exists()


def test_a_subset_that_is_absent_or_unknown_is_named(mini, tmp_path, capsys):
    root, _ = mini
    args = ("corpus=mini_librispeech", f"corpus_dir={root / 'LibriSpeech'}", f"out={root / 'never'}")
    assert (
        "subsets=train-clean-100: not a mini_librispeech subset; give some of train-clean-5, dev-clean-2"
        in (prepare_error(capsys, *args, "subsets=train-clean-100"))
    )
    make_librispeech(tmp_path, {"dev-clean": [("84", "121", 1)]})
    line = prepare_error(
        capsys, "corpus=librispeech", f"corpus_dir={tmp_path / 'LibriSpeech'}", "out=x", "subsets=test-other"
    )
    assert "has no test-other folder (present: dev-clean)" in line


def test_a_prepared_mini_librispeech_trains_for_three_steps(mini, tmp_path, capsys):
    from hydra import compose, initialize_config_dir

    from speechkit.config import CONF_DIR, store_schemas
    from speechkit.trainer import Trainer

    root, _ = mini
    main(["corpus=mini_librispeech", f"corpus_dir={root / 'LibriSpeech'}", f"out={tmp_path / 'data'}"])
    assert "train with: data.train_manifest=" in capsys.readouterr().out
    store_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"data.train_manifest={tmp_path / 'data' / 'train-clean-5.jsonl'}",
                f"data.dev_manifest={tmp_path / 'data' / 'dev-clean-2.jsonl'}",
                "data.num_workers=0",
                "data.batch_size=4",
                "frontend=mfcc",
                "frontend.n_mfcc=13",
                "encoder.num_layers=1",
                "encoder.hidden_size=16",
                "trainer.max_steps=3",
                "trainer.device=cpu",
            ],
        )
    metrics = Trainer(cfg, tmp_path / "run").fit()
    assert metrics["step"] == 3 and np.isfinite(metrics["train_loss"]) and metrics["dev_cer"] >= 0
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()

"""speechkit-prepare corpus=commonvoice on tiny releases in the published layout (MP3 clips, TSVs
with the published columns, old and new): real durations that speechkit's loader agrees with,
odd input listed or refused by name."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechkit.corpora.prepare import main
from tests.conftest import error_line

pytest.importorskip("lhotse")
if "MP3" not in sf.available_formats():
    pytest.skip("this libsndfile writes no MP3 (1.1 or later does)", allow_module_level=True)

RATE = 48000  # Hz, Common Voice's clips
# the columns of Common Voice 17.0's {train,dev,test,validated,…}.tsv, and of 13.0's (no variant)
COLUMNS_17 = (
    "client_id path sentence_id sentence sentence_domain up_votes down_votes age gender accents variant locale segment"
).split()
COLUMNS_13 = "client_id path sentence up_votes down_votes age gender accents locale segment".split()


def make_commonvoice(
    root: Path,
    splits: dict[str, list[tuple[str, str, int]]],
    release: str = "cv-corpus-17.0-2024-03-15",
    lang: str = "en",
) -> dict:
    """Write ``root/<release>/<lang>/`` with ``clips/*.mp3`` and one TSV per split, rows of
    ``(client_id, sentence, samples)``; returns clip id → ``{"samples", "text", "speaker", "path"}``."""
    rng = np.random.default_rng(1)
    lang_dir = root / release / lang
    (lang_dir / "clips").mkdir(parents=True)
    columns = COLUMNS_17 if "17.0" in release else COLUMNS_13
    clips: dict[str, dict] = {}
    for split, rows in splits.items():
        lines = ["\t".join(columns)]
        for client, sentence, samples in rows:
            clip = f"common_voice_{lang}_{len(clips) + 39000:d}"
            path = lang_dir / "clips" / f"{clip}.mp3"
            t = np.arange(samples) / RATE
            sf.write(path, (0.2 * np.sin(2 * np.pi * rng.uniform(150, 300) * t)).astype(np.float32), RATE)
            values = {
                "client_id": client,
                "path": path.name,
                "sentence_id": f"{len(clips):064x}",
                "sentence": sentence,
                "up_votes": "2",
                "down_votes": "0",
                "age": "twenties" if client.startswith("a") else "",
                "gender": "female_feminine" if client.startswith("a") else "",
                "locale": lang,
            }
            lines.append("\t".join(values.get(c, "") for c in columns))
            clips[clip] = {"samples": samples, "text": sentence, "speaker": client, "path": path}
        (lang_dir / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return clips


@pytest.fixture(scope="module", autouse=True)
def _fork_instead_of_spawn():
    """lhotse reads each split's clips in a fresh *spawned* process, which imports lhotse and torch
    again (3-10 s a split); a forked one starts at once and passes the same pickled results back."""
    import lhotse.recipes.commonvoice as recipe

    with pytest.MonkeyPatch.context() as mp:
        if hasattr(recipe, "mp_get_context"):
            mp.setattr(recipe, "mp_get_context", lambda method: multiprocessing.get_context("fork"))
        yield


def rows_of(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def prepare_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    assert e.value.code == 2
    return error_line(capsys.readouterr().err)


TRAIN = [
    ("a1f3", "The cat sat on the mat.", 30000),
    ("b7c2", 'She said "hello" twice.', 41234),
    ("a1f3", "Go home.", 25000),
]
DEV = [("c9d0", "A dog ran.", 36000)]


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, dict, str]:
    """A 17.0 release (train 3 clips + 1 listed but missing, dev 1, validated unused), prepared."""
    root = tmp_path_factory.mktemp("cv")
    clips = make_commonvoice(root, {"train": TRAIN + [("b7c2", "Where am I?", 20000)], "dev": DEV})
    gone = next(c for c, v in clips.items() if v["text"] == "Where am I?")
    clips.pop(gone)["path"].unlink()
    corpus = root / "cv-corpus-17.0-2024-03-15"
    (corpus / "en" / "validated.tsv").write_text((corpus / "en" / "dev.tsv").read_text())
    main(["corpus=commonvoice", f"corpus_dir={corpus}", f"out={root / 'data'}", "language=en", "num_jobs=1"])
    return root, clips, gone


def test_commonvoice_manifests_hold_real_durations_that_speechkits_loader_reads(release, capsys):
    from speechkit.frontends.audio_io import load_audio

    root, clips, _ = release
    assert sorted(p.name for p in (root / "data").glob("*.jsonl")) == [
        "dev.jsonl",
        "train.jsonl",
    ]  # not validated
    rows = rows_of(root / "data" / "train.jsonl") + rows_of(root / "data" / "dev.jsonl")
    assert {r["id"] for r in rows} == set(clips)
    for row in rows:
        clip = clips[row["id"]]
        assert Path(row["audio_filepath"]) == clip["path"] and clip["path"].is_file()
        assert abs(row["duration"] - clip["samples"] / RATE) <= 0.001
        assert (row["text"], row["speaker"], row["language"]) == (clip["text"], clip["speaker"], "en")
        assert row.get("gender") == ("female_feminine" if clip["speaker"].startswith("a") else None)
        assert len(load_audio(row["audio_filepath"], RATE)) == clip["samples"]  # MP3 through libsndfile
    assert (root / "data" / "lm_train.txt").read_text().splitlines() == [s for _, s, _ in TRAIN]


def test_a_listed_clip_that_is_missing_is_counted_and_listed(release):
    root, _, gone = release
    listed = (root / "data" / "train.skipped.tsv").read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"{gone}\ttrain.tsv:5 lists {gone}.mp3, which is not in")


def test_a_release_before_15_without_the_variant_column_is_prepared(tmp_path, capsys):
    clips = make_commonvoice(tmp_path, {"dev": DEV}, release="cv-corpus-13.0-2023-03-09")
    tsv = tmp_path / "cv-corpus-13.0-2023-03-09" / "en" / "dev.tsv"
    before = tsv.read_bytes()
    main(["corpus=commonvoice", f"corpus_dir={tsv.parent.parent}", f"out={tmp_path / 'data'}", "subsets=dev"])
    assert "dev: 1 utterances" in capsys.readouterr().out
    (row,) = rows_of(tmp_path / "data" / "dev.jsonl")
    clip = clips[row["id"]]
    assert Path(row["audio_filepath"]) == clip["path"] and row["text"] == clip["text"]
    assert tsv.read_bytes() == before  # the corpus is left as it was


@pytest.mark.parametrize(
    "where, extra, expected",
    [
        ("nowhere", (), "no such folder"),
        (
            "",
            (),
            "one level too high: it holds cv-corpus-17.0-2024-03-15 — give corpus_dir={root}/cv-corpus-17.0",
        ),
        ("cv-corpus-17.0-2024-03-15/en", (), "one level too deep: it is a language folder"),
        ("cv-corpus-17.0-2024-03-15", ("language=de",), "has no de/clips/ folder (its languages: en)"),
        ("cv-corpus-17.0-2024-03-15", ("subsets=test",), "has no test.tsv"),
        (
            "cv-corpus-17.0-2024-03-15",
            ("subsets=clips",),
            "not a Common Voice split; give some of train, dev",
        ),
    ],
)
def test_a_wrong_folder_language_or_split_says_what_to_give(tmp_path, capsys, where, extra, expected):
    make_commonvoice(tmp_path, {"dev": DEV})
    line = prepare_error(
        capsys, "corpus=commonvoice", f"corpus_dir={tmp_path / where}", f"out={tmp_path / 'o'}", *extra
    )
    assert expected.format(root=tmp_path) in line


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda lines: lines + [lines[1]],
            "dev.tsv:3: clip common_voice_en_39000.mp3 is also listed on line 2",
        ),
        (
            lambda lines: [lines[0].replace("client_id", "client")] + lines[1:],
            "dev.tsv:1: header lacks the column(s) client_id",
        ),
        (
            lambda lines: lines + ["x\tcommon_voice_en_1.mp3"],
            "dev.tsv:3: has a different number of tab-separated fields",
        ),
    ],
)
def test_a_duplicated_clip_or_a_malformed_tsv_is_an_error_naming_the_line(tmp_path, capsys, edit, expected):
    make_commonvoice(tmp_path, {"dev": DEV})
    tsv = tmp_path / "cv-corpus-17.0-2024-03-15" / "en" / "dev.tsv"
    tsv.write_text("\n".join(edit(tsv.read_text().splitlines())) + "\n")
    line = prepare_error(
        capsys, "corpus=commonvoice", f"corpus_dir={tsv.parent.parent}", f"out={tmp_path / 'o'}"
    )
    assert expected in line


def test_an_unreadable_clip_is_one_error_line_naming_it(tmp_path, capsys):
    clips = make_commonvoice(tmp_path, {"dev": DEV})
    bad = next(iter(clips.values()))["path"]
    bad.write_bytes(b"ID3 but no frames" * 10)
    line = prepare_error(
        capsys, "corpus=commonvoice", f"corpus_dir={tmp_path / 'cv-corpus-17.0-2024-03-15'}", "out=o"
    )
    assert str(bad) in line and "lhotse cannot read this audio" in line

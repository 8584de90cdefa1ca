"""speechkit-transcribe on folders and manifests with bad inputs: on_error=raise names the manifest line,
on_error=skip transcribes the rest and reports each skipped input; Pipeline.decode keeps manifest lines."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from speechkit.checkpoint import load_checkpoint
from speechkit.data.dataset import Skipped
from speechkit.data.errors import DataError
from speechkit.data.manifest import parse_manifest
from tests.conftest import copy_of_tiny_run, error_line, run_cli, sample_rows, write_manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tiny_run, tmp_path_factory) -> Path:
    """The shared tiny checkpoint (tests/conftest.py), and a corrupt audio file beside it."""
    tmp = copy_of_tiny_run(tiny_run, tmp_path_factory, "skip")
    (tmp / "corrupt.wav").write_bytes(b"RIFF but not really a wave file")
    return tmp


def _ckpt(trained: Path) -> str:
    return f"checkpoint={trained / 'run/checkpoints/best.pt'}"


def _mixed_manifest(trained: Path) -> Path:
    """Lines 1, 4, 6 good; 2 a corrupt file; 3 not JSON; 5 a missing file; 7 no audio_filepath."""
    good = sample_rows("test", 3)
    corrupt, missing = str(trained / "corrupt.wav"), str(trained / "missing.wav")
    lines = [json.dumps(good[0]), json.dumps({"audio_filepath": corrupt}), "{not json", json.dumps(good[1]),
             json.dumps({"audio_filepath": missing}), json.dumps(good[2]),
             json.dumps({"image_filepath": "x.png"})]  # fmt: skip
    path = trained / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_skip_transcribes_every_good_line_and_reports_each_bad_one_by_manifest_line(trained, tmp_path):
    manifest = _mixed_manifest(trained)
    out = tmp_path / "preds.jsonl"
    p = run_cli("speechkit-transcribe", _ckpt(trained), f"input={manifest}", f"output={out}", "on_error=skip")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["audio_filepath"] for r in rows] == [r["audio_filepath"] for r in sample_rows("test", 3)]
    skipped = [line for line in p.stderr.splitlines() if line.startswith("skipped ")]
    assert [s.split(": ", 1)[0] for s in skipped] == [f"skipped {manifest}:{n}" for n in (2, 3, 5, 7)]
    assert "cannot read audio" in skipped[0] and "not valid JSON" in skipped[1] and "not found" in skipped[2]
    assert f"transcribed 3 file(s), skipped 4: {out}" in p.stdout
    report = [json.loads(line) for line in (tmp_path / "preds.skipped.jsonl").read_text().splitlines()]
    assert [(r["where"], r["path"]) for r in report] == [
        (f"{manifest}:2", str(trained / "corrupt.wav")), (f"{manifest}:3", None),
        (f"{manifest}:5", str(trained / "missing.wav")), (f"{manifest}:7", None),
    ]  # fmt: skip
    assert all(r["reason"] for r in report) and "Traceback" not in p.stderr


def test_raise_stops_at_the_first_bad_line_with_one_error_line_and_writes_nothing(trained, tmp_path):
    rows = sample_rows("test", 2)
    rows.insert(1, {"audio_filepath": str(trained / "corrupt.wav")})
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "preds.jsonl"
    p = run_cli("speechkit-transcribe", _ckpt(trained), f"input={manifest}", f"output={out}", check=False)
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert p.returncode != 0 and "Traceback" not in p.stderr and "<input>" not in p.stderr
    assert (
        len(errors) == 1
        and errors[0].startswith(f"error: {manifest}:2: ")
        and "cannot read audio" in errors[0]
    )
    assert not out.exists()
    p = run_cli("speechkit-transcribe", _ckpt(trained), f"input={_mixed_manifest(trained)}", f"output={out}",
                check=False)  # fmt: skip
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert p.returncode != 0 and "Traceback" not in p.stderr and not out.exists()
    assert len(errors) == 1 and errors[0].startswith(f"error: {trained / 'mixed.jsonl'}:3: not valid JSON")


def test_a_folder_with_a_corrupt_file_names_the_file_and_skip_transcribes_the_rest(trained, tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    for r in sample_rows("test", 2):
        shutil.copy(r["audio_filepath"], folder)
    shutil.copy(trained / "corrupt.wav", folder / "bad.wav")
    out = tmp_path / "preds.jsonl"
    p = run_cli("speechkit-transcribe", _ckpt(trained), f"input={folder}", f"output={out}", check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr and "<input>" not in p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1
        and errors[0].startswith(f"error: {folder / 'bad.wav'}: ")
        and "cannot read audio" in errors[0]
    )
    p = run_cli("speechkit-transcribe", _ckpt(trained), f"input={folder}", f"output={out}", "on_error=skip")
    assert [line.split(": ", 1)[0] for line in p.stderr.splitlines() if line.startswith("skipped ")] == [
        f"skipped {folder / 'bad.wav'}"
    ]
    assert len(out.read_text().splitlines()) == 2 and "transcribed 2 file(s), skipped 1" in p.stdout


def test_pipeline_decode_takes_manifest_examples_and_names_their_lines(trained):
    pipe = load_checkpoint(trained / "run/checkpoints/best.pt")
    manifest = _mixed_manifest(trained)
    examples, problems = parse_manifest(manifest, "audio", require_text=False)
    assert [line for line, _ in problems] == [3, 7]
    with pytest.raises(DataError, match=f"^{manifest}:2: ") as e:
        pipe.decode(examples)
    assert "<input>" not in str(e.value)
    with pytest.raises(DataError, match="corrupt.wav") as e:
        pipe.decode([sample_rows("test", 1)[0]["audio_filepath"], trained / "corrupt.wav"])
    assert "<input>" not in str(e.value)
    out = pipe.decode(examples, on_error="skip")
    assert [type(x).__name__ for x in out] == ["list", "Skipped", "list", "Skipped", "list"]
    assert [(s.index, s.where) for s in out if isinstance(s, Skipped)] == [
        (1, f"{manifest}:2"),
        (3, f"{manifest}:5"),
    ]
    good = pipe.decode([ex.path for ex in examples if ex.path.suffix == ".flac"])  # the sample files
    assert [nbest[0].text for nbest in good] == [x[0].text for x in out if isinstance(x, list)]


def test_a_symlink_loop_given_as_the_input_is_named_as_one(trained, tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    os.symlink(b, a)
    os.symlink(a, b)
    p = run_cli("speechkit-transcribe", _ckpt(trained), f"input={a}", check=False)
    assert p.returncode != 0 and error_line(p.stderr) and "symlink loop" in p.stderr
    assert "Traceback" not in p.stderr

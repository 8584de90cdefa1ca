"""Hostile corpora: symlink loops and dangling links as media paths, finite but absurd float audio,
empty manifests and non-finite numbers in manifest lines. Each must be a one-line DataError (or a
``speechkit-validate`` problem on its manifest line) naming the file and saying what to do."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir

from speechkit.config import CONF_DIR, store_schemas
from speechkit.data.errors import DataError
from speechkit.data.manifest import ManifestError, parse_manifest, read_manifest
from speechkit.frontends.audio import load_audio
from speechkit.frontends.image import load_image
from speechkit.frontends.video import load_video
from speechkit.validate import validate
from tests.conftest import run_cli, sample_rows, write_manifest

LOADERS = {
    "audio": lambda p: load_audio(p, 16000),
    "image": lambda p: load_image(p),
    "video": lambda p: load_video(p, fps=25.0, default_fps=25.0),
}
SUFFIX = {"audio": ".wav", "image": ".png", "video": ".npy"}


def symlink_loop(folder, suffix: str):
    """``a`` → ``b`` → ``a``: neither ever reaches a file. Returns ``a``."""
    a, b = folder / f"a{suffix}", folder / f"b{suffix}"
    os.symlink(b, a)
    os.symlink(a, b)
    return a


def validate_in_process(*overrides: str):
    """``validate()`` on the demo recipe with ``overrides``, without a subprocess."""
    store_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("validate", overrides=["recipe=demo", "data.num_workers=0", *overrides])
    return validate(cfg, progress=False)


def float_wav(path, peak: float):
    """One second of a 440 Hz tone at 16 kHz, peak ``peak``, stored as 32-bit float (no clipping)."""
    t = np.arange(16000) / 16000
    sf.write(path, (peak * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, subtype="FLOAT")
    return path


# ----------------------------------------------------------------------------- symlinks


@pytest.mark.parametrize("kind", LOADERS)
def test_a_symlink_loop_is_reported_as_a_loop_by_every_loader(tmp_path, kind):
    a = symlink_loop(tmp_path, SUFFIX[kind])
    with pytest.raises(DataError, match="symlink loop") as e:
        LOADERS[kind](a)
    assert e.value.where == str(a) and "not found" not in str(e.value)
    assert e.value.fix and "\n" not in str(e.value)


@pytest.mark.parametrize("kind", LOADERS)
def test_a_dangling_symlink_says_where_it_points(tmp_path, kind):
    gone = tmp_path / f"moved_away{SUFFIX[kind]}"
    link = tmp_path / f"link{SUFFIX[kind]}"
    os.symlink(gone, link)
    with pytest.raises(DataError, match="dangling symlink") as e:
        LOADERS[kind](link)
    assert e.value.where == str(link) and str(gone) in e.value.problem
    assert e.value.fix and "\n" not in str(e.value)


@pytest.mark.parametrize("kind", LOADERS)
def test_a_path_with_a_nul_character_is_a_data_error_not_a_value_error(kind):
    with pytest.raises(DataError, match="NUL character"):
        LOADERS[kind](f"a\x00b{SUFFIX[kind]}")


def test_validate_reports_a_symlink_loop_on_its_line_and_still_writes_the_report(tmp_path):
    rows = sample_rows("train", 2)
    loop = symlink_loop(tmp_path, ".wav")
    train = write_manifest(tmp_path / "train.jsonl", [rows[0], {**rows[1], "audio_filepath": str(loop)}])
    test = write_manifest(tmp_path / "test.jsonl", [{**rows[1], "audio_filepath": str(loop)}])  # both splits
    report = tmp_path / "validate.json"
    p = run_cli("speechkit-validate", "recipe=demo", f"data.train_manifest={train}", "data.dev_manifest=null",
                f"data.test_manifest={test}", f"report={report}", "data.num_workers=0", "progress=false", check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    problems = json.loads(report.read_text())["problems"]
    on_line = [pr for pr in problems if pr["where"] == f"{train}:2" and pr["kind"] == "unreadable"]
    assert (
        len(on_line) == 1 and "symlink loop" in on_line[0]["message"] and str(loop) in on_line[0]["message"]
    )
    assert any(pr["kind"] == "in two splits" for pr in problems)


# ----------------------------------------------------------------------------- absurd float audio


def test_float_audio_far_beyond_full_scale_is_refused_with_its_peak(tmp_path):
    path = float_wav(tmp_path / "loud.wav", 1e30)
    with pytest.raises(DataError, match=r"\[-1, 1\]") as e:
        load_audio(path, 16000)
    assert e.value.where == str(path) and "1e+30" in e.value.problem and "rescale" in e.value.fix


def test_float_audio_with_real_world_overshoot_still_loads(tmp_path):
    wave = load_audio(float_wav(tmp_path / "hot.wav", 4.0), 16000)  # +12 dB over full scale
    assert wave.shape == (16000,) and 3.9 < float(wave.abs().max()) <= 4.0


def test_validate_reports_float_audio_far_beyond_full_scale(tmp_path):
    row = sample_rows("train", 1)[0]
    loud = float_wav(tmp_path / "loud.wav", 1e30)
    train = write_manifest(
        tmp_path / "train.jsonl", [row, {**row, "audio_filepath": str(loud), "duration": 1.0}]
    )
    problems, stats = validate_in_process(
        f"data.train_manifest={train}", "data.dev_manifest=null", "data.test_manifest=null"
    )
    errors = [p for p in problems if p.severity == "error"]
    assert [(p.where, p.kind) for p in errors] == [(f"{train}:2", "unreadable")]
    assert "1e+30" in errors[0].message and stats["train"]["loaded"] == 1


# ----------------------------------------------------------------------------- manifests


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_duration_is_a_problem_on_its_line(tmp_path, value):
    row = sample_rows("train", 1)[0]
    path = tmp_path / "m.jsonl"
    path.write_text(
        json.dumps(row) + "\n" + json.dumps({**row, "duration": float(value)}) + "\n"
    )  # NaN, Infinity
    examples, problems = parse_manifest(path)
    assert len(examples) == 1 and [n for n, _ in problems] == [2]
    assert "'duration' must be a finite non-negative number" in problems[0][1]
    with pytest.raises(ManifestError, match=f"{path}:2"):
        read_manifest(path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_manifest_is_refused_by_read_manifest(tmp_path, content):
    path = tmp_path / "m.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match="no examples") as e:
        read_manifest(path)
    assert e.value.where == str(path)


def test_nan_text_is_a_problem_and_nan_in_other_fields_is_kept(tmp_path):
    audio = sample_rows("train", 1)[0]["audio_filepath"]
    path = tmp_path / "m.jsonl"
    path.write_text(
        f'{{"audio_filepath": "{audio}", "text": NaN}}\n'
        f'{{"audio_filepath": "{audio}", "text": "bin blue", "speaker": NaN, "fps": Infinity}}\n'
    )
    examples, problems = parse_manifest(path)
    assert problems == [(1, "'text' must be a string, got float")]
    assert [ex.line for ex in examples] == [2] and math.isnan(dict(examples[0].fields)["speaker"])


def test_validate_reports_an_empty_manifest_and_a_nan_duration(tmp_path):
    row = sample_rows("train", 1)[0]
    train = tmp_path / "train.jsonl"
    nan = float("nan")
    write_manifest(train, [row, {**row, "speaker": nan, "duration": nan}])
    dev = tmp_path / "dev.jsonl"
    dev.write_text("\n \n")
    problems, stats = validate_in_process(
        f"data.train_manifest={train}", f"data.dev_manifest={dev}", "data.test_manifest=null"
    )
    errors = {(p.where, p.kind) for p in problems if p.severity == "error"}
    assert errors == {(f"{train}:2", "manifest line"), (str(dev), "manifest")}
    empty = next(p for p in problems if p.where == str(dev))
    assert "no examples" in empty.message and empty.split == "dev"
    assert stats["train"]["loaded"] == 1


@pytest.mark.parametrize("keep", [0.9, 0.95, 0.97, 0.99])
def test_an_mp4_cut_inside_its_frame_data_is_refused_though_ffmpeg_conceals_it(tmp_path, keep):
    from speechkit.frontends.video import load_video
    from tests.frontends.test_video import pattern, write_video

    whole = tmp_path / "a.mp4"
    write_video(whole, pattern(12, 32, 64))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(keep * whole.stat().st_size)])
    with pytest.raises(DataError, match=r"cut.mp4: corrupt or truncated video: its '\w+' box declares \d+ bytes"):
        load_video(cut, fps=25.0)

"""speechkit-validate: every problem of a corpus, with its manifest line, before training."""

from __future__ import annotations

import json
import shutil

from tests.conftest import run_cli, sample_rows, write_manifest


def validate(*args):
    p = run_cli("speechkit-validate", *args, "data.num_workers=0", "progress=false", check=False)
    return p


def test_a_clean_corpus_passes(tmp_path):
    train = write_manifest(tmp_path / "train.jsonl", sample_rows("train", 6))
    dev = write_manifest(tmp_path / "dev.jsonl", sample_rows("dev", 2))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("abcdefghijklmnopqrstuvwxyz ")  # 6 training lines lack some letters the dev lines use
    p = validate("recipe=demo", f"data.train_manifest={train}", f"data.dev_manifest={dev}",
                 "data.test_manifest=null", f"vocab={vocab}", f"report={tmp_path / 'r.json'}")
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["errors"] == 0 and report["splits"]["train"]["loaded"] == 6
    assert "0 error(s), 0 warning(s)" in p.stdout


def test_every_kind_of_problem_is_reported_with_its_manifest_line(tmp_path):
    rows = sample_rows("train", 6)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x01\x00\x00WAVEfmt garbage" * 3)
    bad = [
        dict(rows[0]),  # line 1: fine
        {**rows[1], "audio_filepath": str(tmp_path / "missing.flac")},  # 2: missing file
        {**rows[2], "audio_filepath": str(corrupt)},  # 3: corrupt file
        {**rows[3], "duration": rows[3]["duration"] + 1.0},  # 4: wrong duration
        {**rows[4], "text": rows[4]["text"] + " ü"},  # 5: outside the vocabulary
        {**rows[5], "text": "a" * 400},  # 6: far too long for its frames (letters are in the vocabulary)
        dict(rows[0]),  # 7: duplicate of line 1
    ]
    train = write_manifest(tmp_path / "train.jsonl", bad)
    with open(train, "a") as f:
        f.write('{"audio_filepath": "x.wav", "text": ""}\n')  # 8: empty transcript
        f.write("not json\n")  # 9
    test = write_manifest(tmp_path / "test.jsonl", [rows[0]])  # line 1 of test: also in train
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("abcdefghijklmnopqrstuvwxyz ")
    p = validate("recipe=demo", f"data.train_manifest={train}", "data.dev_manifest=null",
                 f"data.test_manifest={test}", f"vocab={vocab}", f"report={tmp_path / 'r.json'}")
    assert p.returncode == 1, p.stdout + p.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    found = {(pr["where"].rsplit(":", 1)[-1], pr["kind"], pr["severity"]) for pr in report["problems"]
             if pr["where"].startswith(str(train))}
    assert ("2", "unreadable", "error") in found and ("3", "unreadable", "error") in found
    assert ("4", "duration", "error") in found
    assert ("5", "vocabulary", "error") in found
    assert ("6", "too short for CTC", "error") in found
    assert ("7", "duplicate", "warning") in found
    assert ("8", "manifest line", "error") in found and ("9", "manifest line", "error") in found
    assert ("1", "in two splits", "error") in found
    missing = next(pr for pr in report["problems"] if pr["where"] == f"{train}:2")
    assert "missing.flac" in missing["message"] and "not found" in missing["message"]
    assert f"{train}:4" in p.stdout  # the summary names lines too
    assert report["errors"] == 8 and report["warnings"] == 1


def test_resampled_audio_is_a_warning_not_an_error(tmp_path):
    import soundfile as sf
    from scipy.signal import resample_poly

    row = sample_rows("train", 1)[0]
    x, sr = sf.read(row["audio_filepath"])
    path = tmp_path / "at8k.wav"
    sf.write(path, resample_poly(x, 1, sr // 8000), 8000)
    train = write_manifest(tmp_path / "train.jsonl", [{**row, "audio_filepath": str(path)}])
    p = validate("recipe=demo", f"data.train_manifest={train}", "data.dev_manifest=null", "data.test_manifest=null",
                 f"report={tmp_path / 'r.json'}")
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert [pr["kind"] for pr in report["problems"]] == ["sample rate"]
    assert "8000 Hz" in report["problems"][0]["message"]


def test_no_manifest_is_a_one_line_error(tmp_path):
    p = validate("data.train_manifest=null", f"hydra.run.dir={tmp_path}")
    assert p.returncode != 0 and "no manifest to validate" in p.stderr


def test_video_manifest_is_checked_with_the_video_loader(tmp_path):
    np = __import__("numpy")
    clip = tmp_path / "clip.npy"
    np.save(clip, (np.random.default_rng(0).random((30, 32, 64)) * 255).astype("uint8"))
    shutil.copy(clip, tmp_path / "clip2.npy")
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    rows = [{"video_filepath": "clip.npy", "text": "bin blue", "fps": 25},
            {"video_filepath": "broken.npy", "text": "bin red", "fps": 25},
            {"video_filepath": "clip2.npy", "text": "set white at b one again please now " * 3, "fps": 25}]
    train = write_manifest(tmp_path / "train.jsonl", rows)
    p = validate("recipe=lips_grid", f"data.train_manifest={train}", "data.dev_manifest=null",
                 "data.test_manifest=null", "frontend.default_fps=25", f"report={tmp_path / 'r.json'}")
    assert p.returncode == 1, p.stdout + p.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    kinds = {(pr["where"].rsplit(":", 1)[-1], pr["kind"]) for pr in report["problems"]}
    assert kinds == {("2", "unreadable"), ("3", "too short for CTC")}


def test_several_manifests_of_a_split_are_all_checked(tmp_path):
    # data.train_manifest as a list (corpora trained together): a bad line of the second names that file
    first = write_manifest(tmp_path / "a.jsonl", sample_rows("train", 3))
    rows = sample_rows("train", 5)[3:]
    rows[1]["audio_filepath"] = str(tmp_path / "missing.flac")
    second = write_manifest(tmp_path / "b.jsonl", rows)
    p = validate("recipe=demo", f"data.train_manifest=[{first},{second}]", "data.dev_manifest=null",
                 "data.test_manifest=null", f"report={tmp_path / 'r.json'}")
    assert p.returncode == 1, p.stdout + p.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["splits"]["train"]["entries"] == 5 and report["splits"]["train"]["loaded"] == 4
    assert report["errors"] == 1 and f"{second}:2" in p.stdout

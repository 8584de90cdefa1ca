"""speechkit-transcribe on many processes (torchrun, gloo on CPU) and resumed runs: the merged output is
the one-process output in input order, skipped inputs are reported once, a half-done run (part files,
a half-written last line) is continued, and part files of another run are refused; speechkit/shards.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from speechkit.checkpoint import load_checkpoint
from speechkit.data.dataset import Skipped
from speechkit.data.manifest import parse_manifest
from speechkit.shards import PartsError, PartWriter, fingerprint, parts_dir, read_parts, share
from tests.conftest import REPO, copy_of_tiny_run, error_line, run_cli, sample_rows

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


@pytest.fixture(scope="module")
def trained(tiny_run, tmp_path_factory) -> Path:
    return copy_of_tiny_run(tiny_run, tmp_path_factory, "shards")


def _torchrun(trained: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [*TORCHRUN, "-m", "speechkit.transcribe", f"checkpoint={trained / 'run/checkpoints/best.pt'}", *args,
           "device=cpu", f"hydra.run.dir={trained / 'torchrun'}"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------- the pieces


def test_share_gives_each_rank_a_contiguous_run_of_about_equal_duration():
    weights = [1.0, 1.0, 4.0, 1.0, 1.0, 1.0, 1.0, 2.0]  # 12 s over two ranks: 6 s each
    ranks = share(weights, 2)
    assert ranks == sorted(ranks) and ranks == [0, 0, 0, 1, 1, 1, 1, 1]
    assert sum(w for w, r in zip(weights, ranks) if r == 0) == 6.0
    assert share([0.0] * 6, 3) == [0, 0, 1, 1, 2, 2]  # no weights: equal counts
    assert share([1.0] * 2, 4) in ([0, 2], [1, 3], [0, 3]) and share([5.0], 1) == [0]


def test_a_part_file_drops_a_half_written_last_line_and_prefers_a_row_to_a_skip(tmp_path):
    fp = fingerprint(["a.wav", "b.wav", "c.wav"], str(tmp_path / "model.pt"), {"decoder": "greedy"})
    w = PartWriter(tmp_path / "rank0.jsonl", fp)
    w.write([{"i": 0, "row": {"pred_text": "a"}}, {"i": 1, "key": 1, "skipped": {"reason": "corrupt"}}])
    w.close()
    with (tmp_path / "rank0.jsonl").open("a") as f:
        f.write('{"i": 2, "row": {"pred_')  # killed mid-write
    parts = read_parts(tmp_path, fp, 3)
    assert sorted(parts.records) == [0, 1] and parts.done == {0}  # the skipped input is tried again
    w = PartWriter(tmp_path / "rank0.jsonl", fp)  # continued: the broken line cut off first
    w.write([{"i": 1, "row": {"pred_text": "b"}}, {"i": 2, "row": {"pred_text": "c"}}])
    w.close()
    parts = read_parts(tmp_path, fp, 3)
    assert parts.done == {0, 1, 2} and parts.records[1]["row"]["pred_text"] == "b"
    assert len((tmp_path / "rank0.jsonl").read_text().splitlines()) == 5  # header, 4 records


def test_parts_of_other_inputs_or_settings_are_refused_naming_what_differs(tmp_path):
    ours = fingerprint(["a.wav", "b.wav"], "model.pt", {"decoder": "greedy"})
    PartWriter(tmp_path / "rank1.jsonl", ours).close()
    for theirs, what in (
        (fingerprint(["a.wav", "c.wav"], "model.pt", {"decoder": "greedy"}), "different inputs from"),
        (
            fingerprint(["a.wav", "b.wav"], "other.pt", {"decoder": "beam"}),
            "different checkpoint and settings from",
        ),
    ):
        with pytest.raises(PartsError, match=what) as e:
            read_parts(tmp_path, theirs, 2)
        assert "resume=false" in str(e.value) and "rank1.jsonl" in str(e.value)


# ----------------------------------------------------------------------------- the command


@pytest.mark.slow
def test_two_processes_write_the_one_process_output_in_input_order_and_report_every_skip(trained, tmp_path):
    rows = sample_rows("test", 9)
    (trained / "corrupt.wav").write_bytes(b"RIFF but not really a wave file")
    lines = [json.dumps(r) for r in rows]
    lines[2] = json.dumps({"audio_filepath": str(trained / "corrupt.wav")})
    lines.insert(6, "{not json")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")  # lines 3 (corrupt) and 7 (not JSON) are bad
    out = tmp_path / "preds.jsonl"
    p = _torchrun(trained, f"input={manifest}", f"output={out}", "on_error=skip", "batch_size=2")

    pipe = load_checkpoint(trained / "run/checkpoints/best.pt", device="cpu", batch_size=16)  # one process
    examples, problems = parse_manifest(manifest, "audio", require_text=False)
    one = [t.to_dict() for t in pipe.transcribe(examples, on_error="skip") if not isinstance(t, Skipped)]
    two = _rows(out)
    assert [r["audio_filepath"] for r in two] == [r["audio_filepath"] for r in one]  # input order
    assert [r["audio_filepath"] for r in two] == [r["audio_filepath"] for i, r in enumerate(rows) if i != 2]
    assert [r["pred_text"] for r in two] == [r["pred_text"] for r in one]
    assert [r["score"] for r in two] == pytest.approx([r["score"] for r in one], rel=1e-3, abs=1e-3)
    assert [line.split(": ", 1)[0] for line in p.stderr.splitlines() if line.startswith("skipped ")] == [
        f"skipped {manifest}:3", f"skipped {manifest}:7"
    ]  # fmt: skip
    report = _rows(tmp_path / "preds.skipped.jsonl")
    assert [(r["where"], r["path"]) for r in report] == [
        (f"{manifest}:3", str(trained / "corrupt.wav")), (f"{manifest}:7", None)
    ]  # fmt: skip
    assert f"transcribed 8 file(s), skipped 2: {out}" in p.stdout and p.stdout.count("transcribed") == 1
    assert "on 2 processes" in p.stderr and "file/s" in p.stderr and "RTF" in p.stderr
    assert not parts_dir(out).exists() and "Traceback" not in p.stderr


@pytest.mark.slow
def test_a_half_done_run_is_resumed_by_two_processes_transcribing_only_what_is_missing(trained, tmp_path):
    rows = sample_rows("test", 8)
    media = tmp_path / "fifth.flac"
    media.write_bytes(b"not yet a flac file")  # line 5 stops the first run, after two batches of two
    rows[4] = {**rows[4], "audio_filepath": str(media)}
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, parts = tmp_path / "preds.jsonl", parts_dir(tmp_path / "preds.jsonl")
    ckpt = f"checkpoint={trained / 'run/checkpoints/best.pt'}"
    args = (
        ckpt,
        f"input={manifest}",
        f"output={out}",
        "device=cpu",
        "batch_size=2",
        f"hydra.run.dir={tmp_path}",
    )
    p = run_cli("speechkit-transcribe", *args, check=False)
    assert p.returncode != 0 and error_line(p.stderr).startswith(f"error: {manifest}:5: ")
    assert f"kept 4 transcript(s) in {parts}" in p.stderr and not out.exists()

    # as if a killed four-process run had left them: inputs 0-1 in rank0.jsonl with half a line after
    # them, 2-3 in rank3.jsonl; their texts marked, to tell kept rows from transcribed ones
    header, *records = (parts / "rank0.jsonl").read_text().splitlines()
    records = [json.loads(r) for r in records]
    for r in records:
        r["row"]["pred_text"] = f"kept {r['i']}"
    dump = [json.dumps(r) for r in records]
    (parts / "rank0.jsonl").write_text("\n".join([header, *dump[:2]]) + "\n" + dump[2][:40])
    (parts / "rank3.jsonl").write_text("\n".join([header, *dump[2:]]) + "\n")

    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    p = run_cli("speechkit-transcribe", *args[:1], f"input={other}", *args[2:], check=False)
    assert p.returncode != 0 and "written for different inputs from" in error_line(p.stderr)
    assert "resume=false" in error_line(p.stderr) and (parts / "rank3.jsonl").exists()  # refused, kept

    shutil.copy(sample_rows("test", 5)[4]["audio_filepath"], media)  # the file fixed
    p = _torchrun(trained, f"input={manifest}", f"output={out}", "batch_size=2")
    assert f"resuming from {parts}: 4 of 8 input(s) done, 4 to go" in p.stderr
    done = _rows(out)
    assert [r["audio_filepath"] for r in done] == [r["audio_filepath"] for r in rows]
    assert [r["pred_text"] for r in done[:4]] == ["kept 0", "kept 1", "kept 2", "kept 3"]
    assert not any(r["pred_text"].startswith("kept") for r in done[4:]) and all("words" in r for r in done)
    assert f"transcribed 8 file(s): {out}" in p.stdout and not parts.exists()

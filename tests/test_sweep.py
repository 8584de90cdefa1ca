"""Sweeps (speechkit/sweep.py): the table and the best setting when a multirun ends, and the log-prob cache
that lets jobs 2…N of a decoder sweep skip the model (and misses when the checkpoint or manifest changes)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from speechkit.decoders.timing import energy_levels
from speechkit.sweep import (
    JOB_RECORD,
    LOGPROB_DIR,
    Job,
    LogProbBatch,
    LogProbCache,
    SweepSummary,
    logprob_key,
    read_jobs,
    summary_table,
)
from tests.test_cli_dataroot import run_in_process

# ----------------------------------------------------------------------------- the summary


def a_job(sweep_dir: Path, num: int, overrides: list[str], objective: float | None, metrics: dict) -> None:
    """A job directory as a finished job leaves it: its record and its metrics.json."""
    job_dir = sweep_dir / str(num)
    job_dir.mkdir(parents=True)
    record = {"job": num, "overrides": overrides, "status": "COMPLETED", "objective": objective}
    (job_dir / JOB_RECORD).write_text(json.dumps(record))
    (job_dir / "metrics.json").write_text(json.dumps(metrics))


def test_the_table_has_every_job_and_marks_the_lowest_objective_best():
    jobs = [Job(0, {"recipe": "demo", "trainer.lr": "1e-3"}, 0.40, {"dev_cer": 0.2, "step": 10}),
            Job(1, {"recipe": "demo", "trainer.lr": "2e-3"}, 0.25, {"dev_cer": 0.1, "step": 10}),
            Job(2, {"recipe": "demo", "trainer.lr": "4e-3"}, float("nan"), {"step": 3}),
            Job(3, {"recipe": "demo", "trainer.lr": "8e-3"}, 0.25, {"dev_cer": 0.3, "step": 10})]  # fmt: skip
    table = summary_table(jobs, "dev_wer")
    assert table.best.num == 1  # the first of the two lowest; NaN never wins
    rows = list(csv.DictReader(table.csv.splitlines()))
    assert [r["trainer.lr"] for r in rows] == ["1e-3", "2e-3", "4e-3", "8e-3"]
    assert [r["best"] for r in rows] == ["0", "1", "0", "0"]
    assert rows[0]["dev_wer"] == "0.4" and rows[2]["dev_cer"] == ""
    md = table.markdown.splitlines()
    assert md[0] == "common overrides: recipe=demo"
    assert "| job | trainer.lr | dev_wer | dev_cer | step |" in md
    assert "| 1 | 2e-3 | 0.2500 | 0.1000 | 10 |" in md
    assert md[-1] == "best: job 1: trainer.lr=2e-3 (dev_wer 0.2500)"


def test_a_train_sweep_ends_with_sweep_csv_and_md_and_the_best_printed(tmp_path, capsys):
    sweep_dir = tmp_path / "multirun"
    a_job(sweep_dir, 0, ["recipe=demo", "trainer.lr=1e-3"], 0.5, {"dev_wer": 0.5, "epoch": 2})
    a_job(sweep_dir, 1, ["recipe=demo", "trainer.lr=2e-3"], 0.3, {"dev_wer": 0.3, "epoch": 2})
    (sweep_dir / LOGPROB_DIR).mkdir()
    SweepSummary(objective="dev_wer").on_multirun_end(
        OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
    )
    out = capsys.readouterr().out
    assert "best: job 1: trainer.lr=2e-3 (dev_wer 0.3000)" in out
    assert (sweep_dir / "sweep.md").read_text().endswith("best: job 1: trainer.lr=2e-3 (dev_wer 0.3000)\n")
    assert [r["best"] for r in csv.DictReader((sweep_dir / "sweep.csv").open())] == ["0", "1"]
    assert not (sweep_dir / LOGPROB_DIR).exists()  # the cache goes with the sweep


@pytest.mark.slow
def test_an_eval_sweep_writes_the_table_and_its_second_job_takes_the_log_probs_from_the_cache(
    tiny_run, tmp_path, monkeypatch, capsys
):
    from speechkit.eval import main

    sweep_dir = tmp_path / "sweep"
    status, out, err = run_in_process(
        main, "-m", f"checkpoint={tiny_run / 'run' / 'checkpoints' / 'best.pt'}",
        f"data.test_manifest={tiny_run / 'test.jsonl'}", "decoder=beam", "decoder.engine=torch",
        "decoder.beam_size=1,2", "device=cpu", "progress=false", f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys,
    )  # fmt: skip
    assert status == 0, err
    metrics = [json.loads((sweep_dir / str(n) / "metrics.json").read_text()) for n in (0, 1)]
    assert [m["logprob_cache"] for m in metrics] == ["miss", "hit"]  # job 1 did not run the model
    rows = list(csv.DictReader((sweep_dir / "sweep.csv").open()))
    assert [r["decoder.beam_size"] for r in rows] == ["1", "2"]
    assert [float(r["wer"]) for r in rows] == [m["wer"] for m in metrics]
    best = min((0, 1), key=lambda n: metrics[n]["wer"])
    assert [r["best"] for r in rows] == ["1" if n == best else "0" for n in (0, 1)]
    best_line = f"best: job {best}: decoder.beam_size={best + 1} (wer {metrics[best]['wer']:.4f})"
    assert best_line in (sweep_dir / "sweep.md").read_text() and best_line in out
    assert not (sweep_dir / LOGPROB_DIR).exists()


def test_read_jobs_takes_the_records_in_job_order_and_numbers_only(tmp_path):
    for n in (10, 2):
        a_job(
            tmp_path, n, [f"+x={n}"], n / 10, {"wer": n / 10, "decoder": {"name": "greedy"}, "cache": "hit"}
        )
    jobs = read_jobs(tmp_path)
    assert [j.num for j in jobs] == [2, 10]
    assert jobs[0].overrides == {"x": "2"} and jobs[0].metrics == {"wer": 0.2}


# ----------------------------------------------------------------------------- the log-prob cache


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    """A stand-in checkpoint, a manifest and its two media files."""
    files = {name: tmp_path / name for name in ("best.pt", "test.jsonl", "a.wav", "b.wav")}
    for name, path in files.items():
        path.write_bytes(name.encode() * 100)
    return files


def key_of(f: dict[str, Path]) -> str:
    return logprob_key(f["best.pt"], f["test.jsonl"], [f["a.wav"], f["b.wav"]], device="cpu", batch_size=16)


def test_the_key_changes_with_the_checkpoint_the_manifest_a_media_file_or_a_setting(inputs):
    key = key_of(inputs)
    assert key_of(inputs) == key
    keys = {key}
    for name in ("best.pt", "test.jsonl"):
        saved = inputs[name].read_bytes()
        inputs[name].write_bytes(saved[:-1] + b"!")  # same size, other bytes
        keys.add(key_of(inputs))
        inputs[name].write_bytes(saved)
        assert key_of(inputs) == key
    st = inputs["a.wav"].stat()
    os.utime(inputs["a.wav"], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a rewritten media file
    keys.add(key_of(inputs))
    keys.add(
        logprob_key(inputs["best.pt"], inputs["test.jsonl"], [inputs["a.wav"]], device="cpu", batch_size=8)
    )
    assert len(keys) == 5


def test_the_cache_gives_back_what_was_stored_and_nothing_from_an_unfinished_run(tmp_path):
    batches = [LogProbBatch([1, 0], torch.randn(2, 5, 3).log_softmax(-1), torch.tensor([5, 4])),
               LogProbBatch([2], torch.randn(1, 2, 3).log_softmax(-1), torch.tensor([2]))]  # fmt: skip
    cache = LogProbCache(tmp_path, "k")
    assert not cache.hit
    first = cache.write(iter(batches))
    next(first)
    first.close()  # the job stopped after one batch
    assert not cache.hit and list(tmp_path.iterdir()) == []
    assert [b.indices for b in cache.write(batches)] == [[1, 0], [2]]
    assert cache.hit
    for got, want in zip(cache.read(), batches, strict=True):
        assert got.indices == want.indices
        assert torch.equal(got.log_probs, want.log_probs) and torch.equal(got.lengths, want.lengths)
        assert got.levels is None  # none were given
    levels = [
        energy_levels(torch.randn(800), 16000),
        energy_levels(torch.randn(100), 16000),
    ]  # 2nd: no window
    with_levels = LogProbBatch([0, 1], torch.randn(2, 5, 3).log_softmax(-1), torch.tensor([5, 4]), levels)
    (got,) = LogProbCache(tmp_path, "levels").write([with_levels])  # stored, and passed through
    (got,) = LogProbCache(tmp_path, "levels").read()
    assert [(lv.sample_rate, lv.num_samples, lv.level_db.tolist()) for lv in got.levels] == [
        (lv.sample_rate, lv.num_samples, lv.level_db.tolist()) for lv in levels
    ]
    assert got.aligner is None
    placed = torch.randn(2, 5, 3).log_softmax(-1)  # an aligner's log-probs (speechkit/aligner.py)
    with_aligner = LogProbBatch([0, 1], torch.randn(2, 5, 3).log_softmax(-1), torch.tensor([5, 4]), None, placed)
    list(LogProbCache(tmp_path, "aligner").write([with_aligner]))
    (got,) = LogProbCache(tmp_path, "aligner").read()
    assert torch.equal(got.aligner, placed)
    shutil.rmtree(cache.entry)
    assert not cache.hit

"""The benchmark scripts that reach into the trainer run on the shipped samples (a rename inside
``Trainer`` once broke ``train_throughput.py`` unseen: nothing ran it)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SAMPLES, run_cli


def test_train_throughput_runs_and_reports_each_setting():
    p = run_cli(sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), "--recipe", "demo",
                "--steps", "2", "--blocks", "1", "--warmup", "1", "--compare", "data.bucket=false,true",
                f"data.root={SAMPLES}", "encoder.hidden_size=16", "encoder.num_layers=1",
                "trainer.device=cpu")  # fmt: skip
    rows = [line for line in p.stdout.splitlines() if line.startswith("| data.bucket=")]
    assert [r.split("|")[1].strip() for r in rows] == ["data.bucket=false", "data.bucket=true"], p.stdout
    for r in rows:
        padding, steps_s, utts_s, audio_s = (float(c) for c in r.split("|")[2:6])
        assert 0.0 <= padding < 100.0
        assert steps_s > 0 and utts_s > 0
        assert audio_s > utts_s  # the samples' utterances are all longer than a second


def test_train_throughput_profiles_a_step_when_asked():
    p = run_cli(sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), "--recipe", "demo",
                "--steps", "1", "--blocks", "1", "--warmup", "1", "--compare", "trainer.seed=1", "--profile", "2",
                f"data.root={SAMPLES}", "encoder.hidden_size=16", "encoder.num_layers=1",
                "trainer.device=cpu")  # fmt: skip
    table = p.stdout.split("# trainer.seed=1: 2 steps under torch.profiler", 1)[1]
    assert "Self CPU" in table and "aten::" in table, p.stdout  # the step's operators, by their own time


def test_rnn_impl_bench_times_the_three_ways_and_they_agree():
    p = run_cli(sys.executable, str(REPO / "benchmarks" / "rnn_impl_bench.py"), "--hidden", "8", "--layers", "2",
                "--features", "5", "--batch", "3", "--frames", "6", "9", "--repeats", "1")  # fmt: skip
    rows = [line.split("|")[1:-1] for line in p.stdout.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [int(r[0]) for r in rows] == [6, 9], p.stdout
    for r in rows:
        assert all(float(c) >= 0 for c in r[1:4])
        assert float(r[6]) < 1e-5  # fp32: the same outputs to rounding


def test_pretrained_embedding_probe_trains_both_models_and_scores_them(tmp_path):
    pytest.importorskip(
        "openwakeword", reason="pip install --no-deps openwakeword==0.5.1 (the probe's embedding)"
    )
    if not Path("/usr/share/asterisk/sounds/en_US_f_Allison").is_dir():
        pytest.skip("the real voice is missing: apt-get install asterisk-core-sounds-en-wav")
    out = tmp_path / "probe.json"
    p = run_cli(sys.executable, str(REPO / "benchmarks" / "pretrained_embedding.py"), "--data", str(SAMPLES),
                "--train", "8", "--steps", "3", "--sentences", "2", "--jobs", "1", "--out", str(out))  # fmt: skip
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"embedding", "fbank"}, p.stdout
    for res in results.values():
        assert 0.0 <= res["letters in sentences"] <= 100.0 and res["synthetic test WER"] >= 0.0


def test_speech_embedding_bench_times_both_ways_and_agrees():
    pytest.importorskip(
        "openwakeword", reason="pip install --no-deps openwakeword==0.5.1 (the embedding's weights)"
    )
    pytest.importorskip("onnxruntime")
    p = run_cli(sys.executable, str(REPO / "benchmarks" / "speech_embedding_bench.py"),
                "--manifest", str(SAMPLES / "test.jsonl"), "--files", "4", "--repeats", "1")  # fmt: skip
    rows = [line for line in p.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 3, p.stdout
    diff, peak = re.search(r"\| ([\d.e+-]+) \(values up to (\d+)\) \|$", rows[1]).groups()
    assert float(diff) <= 1e-4 * float(peak)  # as tests/frontends/test_speech_embedding.py allows


def test_real_voices_reads_each_slot_through_the_alignment():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from real_voices import Item, score
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    silent = __import__("numpy").zeros(1, dtype="float32")
    items = [Item("letter-s", "letter", "s", silent), Item("digit-nine", "digit", "nine", silent),
             Item("sentence-0", "sentence", "at s nine", silent),
             Item("sentence-1", "sentence", "with b six", silent)]  # fmt: skip
    # her "at" heard as the letter "r": the "s" after it is still recognised; "with b six" lost its "b"
    out = score(items, ["s", "five", "r s nine", "with six"])
    assert out["letters alone"] == 100.0 and out["digits alone"] == 0.0
    assert out["letters in sentences"] == 50.0
    assert out["digits in sentences"] == 100.0
    assert out["sentence WER"] == pytest.approx(100 * 2 / 6)
    # letters 1 + 1 of 3, digits 0 + 2 of 3: the pooled figure; "at" heard as "r", "with" heard
    assert out["letters and digits, pooled"] == pytest.approx(100 * 4 / 6)
    assert out['"at"/"with"'] == 50.0


def _fake_run(folder: Path, history: list[dict]) -> Path:
    """A run folder as time_to_wer.py reads it: the trainer's dev evaluations in checkpoints/last.pt."""
    import torch

    (folder / "checkpoints").mkdir(parents=True)
    torch.save({"trainer": {"state": {"history": history}}}, folder / "checkpoints" / "last.pt")
    return folder


def test_time_to_wer_tabulates_each_run_and_plots_the_seeds_of_a_setting_alike(tmp_path):
    import importlib.util

    a = _fake_run(tmp_path / "a", [{"step": 100, "minutes": 1.0, "dev_wer": 0.5}, {"step": 400, "minutes": 4.0, "dev_wer": 0.2}])
    b = _fake_run(tmp_path / "b", [{"step": 300, "minutes": 3.0, "dev_wer": 0.4}, {"step": 1000, "minutes": 10.0, "dev_wer": 0.1}])
    p = run_cli(sys.executable, str(REPO / "benchmarks" / "time_to_wer.py"), "--out", str(tmp_path / "out"),
                f"x, seed 1={a}", f"x, seed 2={b}")
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[3:8]] for r in p.stdout.splitlines()
            if r.startswith("| x, seed")}
    assert rows["x, seed 1"] == ["40.0 %", "—", "—", "—", "20.00 % (4.0 min)"]  # 2 min: a third of the way from 50 to 20 %
    assert rows["x, seed 2"][:3] == ["60.0 %", "31.4 %", "10.0 %"]  # (0, 100 %) → (3 min, 40 %) → (10 min, 10 %)
    assert (tmp_path / "out" / "time_to_wer.png").stat().st_size > 10_000
    spec = importlib.util.spec_from_file_location("time_to_wer", REPO / "benchmarks" / "time_to_wer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.setting_of("no dropout, seed 1234") == module.setting_of("no dropout, seed 2") == "no dropout"
    assert module.setting_of("bf16, 4x, 10 min") == "bf16, 4x, 10 min"  # no seed: a setting of its own

"""The benchmark scripts that reach into the trainer run on the shipped samples (a rename inside
``Trainer`` once broke ``train_throughput.py`` unseen: nothing ran it)."""

from __future__ import annotations

import sys

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

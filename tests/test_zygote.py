"""The command-line tests' warm interpreter (tests/zygote.py): a command forked from it answers as a fresh
``python -m`` process does, and one that runs too long is killed without stopping the next."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import _Zygote, run_cli, sample_rows, write_manifest

pytestmark = pytest.mark.skipif(not _Zygote.fits(None), reason="commands run fresh here (not Linux, or SPEECHKIT_TEST_FRESH=1)")


@pytest.mark.parametrize("args", [["speechkit-train", "recipe=asr_gird"], ["speechkit-eval", "checkpoint=/no/such.pt",
                                                                             "data.test_manifest=/no/such.jsonl"]])
def test_a_forked_command_answers_exactly_as_a_fresh_process(args, tmp_path, monkeypatch):
    args = [*args, f"hydra.run.dir={tmp_path}"]
    warm = run_cli(*args, check=False)
    monkeypatch.setenv("SPEECHKIT_TEST_FRESH", "1")
    fresh = run_cli(*args, check=False)
    assert (warm.returncode, warm.stdout, warm.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert warm.returncode == 2 and warm.stderr.count("error:") == 1


def test_only_an_environment_read_at_run_time_may_differ():
    assert _Zygote.fits({**os.environ, "SPEECHKIT_CPU_PRECISION": "bf16", "HYDRA_FULL_ERROR": "1"})
    assert not _Zygote.fits({**os.environ, "PYTHONPATH": "/somewhere/else"})  # read at start-up: a fresh process
    assert not _Zygote.fits({**os.environ, "OMP_NUM_THREADS": "3"})  # read when torch loads OpenMP


def test_the_zygote_starts_again_when_the_workers_environment_changes(monkeypatch):
    before = _Zygote.get()
    monkeypatch.setenv("SPEECHKIT_TEST_SOMETHING", "1")  # read at run time: the same zygote
    assert _Zygote.get() is before
    monkeypatch.setenv("LIBRARY_SETTING_READ_AT_IMPORT", "1")
    after = _Zygote.get()
    assert after is not before and after.env["LIBRARY_SETTING_READ_AT_IMPORT"] == "1"
    assert before.proc.poll() == 0  # the old one stopped, not left behind


def test_a_command_past_its_timeout_is_killed_and_the_next_one_runs(tmp_path):
    train = write_manifest(tmp_path / "train.jsonl", sample_rows("train", 4))
    endless = ["recipe=demo", f"data.train_manifest={train}", "data.dev_manifest=null", "data.num_workers=0",
               "trainer.max_steps=1000000", "trainer.device=cpu", f"hydra.run.dir={tmp_path / 'run'}"]
    with pytest.raises(subprocess.TimeoutExpired):
        _Zygote.get().run("speechkit.train", endless, None, timeout=3)
    assert run_cli("speechkit-train", "recipe=asr_gird", check=False).returncode == 2

"""trainer.threads: auto picks the cores this process may use, less what the data loaders need."""

import os

import pytest

from speechkit.distributed import cpu_threads
from speechkit.train import compare_with_reference


def test_explicit_threads_are_taken_as_given_and_nonsense_is_refused():
    assert cpu_threads("3", 2) == 3 and cpu_threads(1, 0) == 1 and cpu_threads("0", 2) == 0
    with pytest.raises(ValueError, match="trainer.threads='many'"):
        cpu_threads("many", 2)


@pytest.mark.parametrize("cores, procs, workers, want", [
    (2, 1, 2, 1),    # this development machine: one thread beside two loader processes
    (2, 1, 0, 2),    # no loader processes: both cores
    (16, 1, 2, 14),  # a workstation: the loaders take two cores
    (16, 4, 2, 2),   # four processes under torchrun: 4 cores each, at most half of them for the loaders
    (8, 8, 2, 1),    # never below one
])
def test_auto_shares_the_cores_between_processes_and_loader_workers(monkeypatch, cores, procs, workers, want):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(procs))
    assert cpu_threads("auto", workers) == want


def test_a_run_is_compared_with_its_recipes_reference_run():
    ref = {"steps": 2440, "dev_wer": 0.0611, "source": "recipes/asr_grid/README.md"}
    line = compare_with_reference(ref, {"step": 2440, "dev_wer": 0.07})
    assert "2440 steps, dev WER 7.00 %" in line and "dev WER 6.11 %" in line and "same step count" in line
    assert "cut short" in compare_with_reference(ref, {"step": 100, "dev_wer": 0.5})
    longer = compare_with_reference(ref, {"step": 2780, "dev_wer": 0.05})
    assert "2780 steps against its 2440" in longer and "cut short" not in longer
    assert compare_with_reference(None, {"step": 1, "dev_wer": 0.5}) is None

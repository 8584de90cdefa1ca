"""trainer.threads: auto picks the cores this process may use, less what the data loaders need, and in a
long CPU run times the first steps at each candidate count and keeps the fastest."""

import os

import pytest
import torch

from speechkit import distributed
from speechkit.checkpoint import read_checkpoint
from speechkit.distributed import ThreadProbe, cpu_threads, thread_candidates
from speechkit.train import compare_with_reference
from speechkit.trainer import Trainer
from tests.test_trainer import _cfg


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


def test_a_time_budget_run_is_compared_at_equal_minutes_not_steps():
    ref = {"minutes": 10, "steps": 3086, "dev_wer": 0.0467, "source": "recipes/asr_grid/README.md"}
    line = compare_with_reference(ref, {"step": 4100, "minutes": 10.0, "dev_wer": 0.04})
    assert "4100 steps in 10.0 minutes, dev WER 4.00 %" in line and "3086 steps, dev WER 4.67 % in 10 minutes" in line
    assert "machine's speed" in line and "cut short" not in line and "ran longer" not in line
    assert "this run trained for less" in compare_with_reference(ref, {"step": 900, "minutes": 3.0, "dev_wer": 0.2})


@pytest.mark.parametrize("cores, procs, setting, want", [
    (2, 1, "auto", [1, 2]),             # this machine: the rule's 1 (beside two loader workers) and both cores
    (16, 1, "auto", [1, 2, 4, 8, 14, 16]),  # the rule's 14, both ends and the powers of two between
    (16, 4, "auto", [1, 2, 4]),         # four processes on the node: 4 cores each
    (1, 1, "auto", []),                 # nothing to choose
    (16, 1, "3", []),                   # a count given is taken as given
])
def test_the_probe_times_the_rules_count_and_the_powers_of_two_up_to_the_cores(monkeypatch, cores, procs, setting, want):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(procs))
    assert thread_candidates(setting, 2) == want


def _run_probe(probe: ThreadProbe, seconds_per_element: dict[int, float]) -> int:
    while probe.chosen is None:
        n = probe.threads()
        probe.record(seconds_per_element[n] * 1000, 1000)
    return probe.chosen


def test_the_probe_alternates_blocks_in_reversed_order_after_a_warm_up():
    probe = ThreadProbe([1, 2], first=1, warmup=2, block=3, rounds=3, settle=1)
    assert [n for n, _ in probe.schedule] == [1, 1] + [1] * 3 + [2] * 3 + [2] * 3 + [1] * 3 + [1] * 3 + [2] * 3
    assert [t for _, t in probe.schedule[:5]] == [False, False, False, True, True]  # warm-up, then settle
    assert probe.steps == 2 + 3 * 2 * 3


def test_the_probe_keeps_the_fastest_count_and_the_rules_count_when_it_is_within_the_margin():
    assert _run_probe(ThreadProbe([1, 2], first=1), {1: 1.0, 2: 0.8}) == 2
    assert _run_probe(ThreadProbe([1, 2], first=1), {1: 0.8, 2: 1.0}) == 1
    assert _run_probe(ThreadProbe([1, 2], first=1), {1: 1.04, 2: 1.0}) == 1  # level: the rule's count, every run
    assert _run_probe(ThreadProbe([1, 2, 4], first=4), {1: 2.0, 2: 1.0, 4: 1.2}) == 2
    probe = ThreadProbe([1, 2], first=1, warmup=0, block=2, rounds=1, settle=0)
    probe.record(1.0, 10)
    probe.record(99.0, 10, timed=False)  # an epoch's first step (the loader starting): not counted
    probe.record(1.0, 10)
    assert probe.record(1.0, 10) == 1 and "2: 1.00×" in probe.report()


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_long_run_times_its_first_steps_keeps_the_fastest_count_and_a_resumed_run_keeps_it(
    tmp_path, monkeypatch, restore_threads
):
    # Two candidates on any machine; one thread made to look 10× slower, so the choice is known. A
    # small schedule (13 steps): a run of 130 steps is long enough to time it.
    monkeypatch.setattr(distributed, "thread_candidates", lambda setting, workers: [1, 2])
    monkeypatch.setattr(distributed, "cpu_threads", lambda setting, workers: 1)
    ran_at = []

    class Probe(ThreadProbe):
        def __init__(self, candidates, first):
            super().__init__(candidates, first, warmup=1, block=3, rounds=2, settle=1)

        def record(self, seconds, work, timed=True):
            n = self.threads()
            ran_at.append(torch.get_num_threads() == n)  # the step ran at the count the probe asked for
            return super().record(seconds * (10 if n == 1 else 1), work, timed)

    monkeypatch.setattr(distributed, "ThreadProbe", Probe)
    common = ("encoder.hidden_size=16", "data.batch_size=2", "trainer.eval_every_epochs=1000", "trainer.seed=3")
    short = Trainer(_cfg(tmp_path / "s", 8, *common, "trainer.max_steps=100"), tmp_path / "s" / "run")
    assert short.thread_probe is None  # 100 steps < 10 × 13: the rule's count, no timing

    run = tmp_path / "l" / "run"
    trainer = Trainer(_cfg(tmp_path / "l", 8, *common, "trainer.max_steps=130"), run)
    assert trainer.thread_probe is not None and trainer.thread_probe.steps == 13
    trainer.fit()
    assert len(ran_at) == 13 and all(ran_at)
    assert trainer.state.threads == 2 and torch.get_num_threads() == 2
    assert read_checkpoint(run / "checkpoints" / "last.pt")["trainer"]["state"]["threads"] == 2

    torch.set_num_threads(1)
    resumed = Trainer(_cfg(tmp_path / "l", 8, *common, "trainer.max_steps=140", "trainer.resume=true"), run)
    assert resumed.thread_probe is None and torch.get_num_threads() == 2  # the chosen count, not timed again

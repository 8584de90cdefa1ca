"""Fault tolerance: a training run SIGKILLed at random moments and resumed each time ends with exactly
the weights of a run that was never interrupted."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from speechkit.checkpoint import read_checkpoint
from tests.conftest import REPO, sample_rows, write_manifest

pytestmark = pytest.mark.slow


def command(tmp_path, run_dir, resume: bool) -> list[str]:
    return [
        sys.executable, "-m", "speechkit.train", "recipe=demo",
        f"data.train_manifest={tmp_path / 'train.jsonl'}", f"data.dev_manifest={tmp_path / 'dev.jsonl'}",
        "encoder.hidden_size=16", "encoder.num_layers=1", "encoder.dropout=0", "augment=specaugment",
        "data.batch_size=4", "data.num_workers=0", "trainer.max_steps=30", "trainer.max_minutes=0",
        "trainer.max_epochs=100", "trainer.save_every_steps=2", "trainer.threads=1", "trainer.device=cpu",
        "trainer.deterministic=true", "trainer.warmup_steps=5", f"trainer.resume={str(resume).lower()}",
        f"hydra.run.dir={run_dir}",
    ]


def env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


def saved(path) -> tuple[int, int] | None:
    """Identity of the file now at ``path`` (inode, mtime), None while a save has it renamed away."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_weights(tmp_path):
    write_manifest(tmp_path / "train.jsonl", sample_rows("train", 24))
    write_manifest(tmp_path / "dev.jsonl", sample_rows("dev", 4))
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    subprocess.run(command(tmp_path, ref_dir, False), env=env(), check=True, capture_output=True, timeout=300)
    reference = read_checkpoint(ref_dir / "checkpoints" / "last.pt")

    rng = random.Random(7)
    last = run_dir / "checkpoints" / "last.pt"
    kills = []
    for attempt in range(3):
        stamp = saved(last)  # the previous attempt's save
        p = subprocess.Popen(command(tmp_path, run_dir, attempt > 0), env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        saves_before_kill, saved_at = rng.randint(1, 3), []
        deadline = time.monotonic() + 120
        while p.poll() is None and time.monotonic() < deadline:
            now = saved(last)
            if now is not None and now != stamp:
                stamp = now
                saved_at.append(time.monotonic())
                if len(saved_at) > saves_before_kill:
                    # anywhere in the next save interval (mid-step, mid-save, mid-evaluation), timed on
                    # this machine: a fixed delay lets a fast CPU finish the run before the kill
                    time.sleep(rng.uniform(0.0, 1.0) * (saved_at[-1] - saved_at[-2]))
                    os.kill(p.pid, signal.SIGKILL)
                    break
            time.sleep(0.005)
        p.wait(timeout=60)
        if p.returncode == -signal.SIGKILL:
            kills.append(read_checkpoint(last if last.exists() else last.with_name("last.prev.pt"))["trainer"]["state"]["step"])
    subprocess.run(command(tmp_path, run_dir, True), env=env(), check=True, capture_output=True, timeout=300)
    final = read_checkpoint(last)

    assert len(kills) >= 2, f"the run finished before it could be killed: {kills}"
    assert all(0 < s < 30 for s in kills)
    assert final["trainer"]["state"]["step"] == reference["trainer"]["state"]["step"] == 30
    for key, w in reference["model"].items():
        assert torch.equal(final["model"][key], w), f"{key} differs after {len(kills)} kills at steps {kills}"
    assert final["trainer"]["state"]["losses"] == reference["trainer"]["state"]["losses"]

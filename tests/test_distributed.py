"""Data-parallel training: two gloo processes under torchrun follow the single-process trajectory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from speechkit.checkpoint import read_checkpoint
from speechkit.distributed import Context
from tests.conftest import REPO, sample_rows, write_manifest


def test_each_rank_takes_an_interleaved_share_and_small_batches_are_dropped():
    batches = [[0, 1, 2, 3, 4], [5, 6], [7]]
    assert Context(world=2, rank=0).shard(batches) == [[0, 2, 4], [5]]
    assert Context(world=2, rank=1).shard(batches) == [[1, 3], [6]]
    assert Context().shard(batches) == batches  # single process: unchanged
    assert Context().sum([1, 2.5]) == [1.0, 2.5]


def _train(tmp_path, name, manifests, launcher):
    train, dev = manifests
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    args = [
        "recipe=demo", f"data.train_manifest={train}", f"data.dev_manifest={dev}",
        "encoder.hidden_size=32", "encoder.num_layers=1", "encoder.dropout=0",
        "data.batch_size=8", "trainer.max_steps=6", "trainer.max_minutes=0", "trainer.warmup_steps=2",
        "trainer.log_every_steps=1", "trainer.threads=1", "trainer.device=cpu", f"hydra.run.dir={tmp_path / name}",
    ]
    p = subprocess.run([*launcher, "-m", "speechkit.train", *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return tmp_path / name


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    manifests = (write_manifest(tmp_path / "train.jsonl", sample_rows("train", 24)),
                 write_manifest(tmp_path / "dev.jsonl", sample_rows("dev", 6)))
    single = _train(tmp_path, "single", manifests, [sys.executable])
    ddp = _train(tmp_path, "ddp", manifests,
                 [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"])

    a = read_checkpoint(single / "checkpoints" / "last.pt")
    b = read_checkpoint(ddp / "checkpoints" / "last.pt")
    la, lb = a["trainer"]["state"]["losses"], b["trainer"]["state"]["losses"]
    assert [s for s, _ in la] == [s for s, _ in lb] == [1, 2, 3, 4, 5, 6]
    assert torch.allclose(torch.tensor([x for _, x in lb]), torch.tensor([x for _, x in la]), rtol=1e-4)
    for k, w in a["model"].items():
        assert torch.allclose(b["model"][k].float(), w.float(), atol=1e-4, rtol=1e-3), k
    ha, hb = a["trainer"]["state"]["history"][-1], b["trainer"]["state"]["history"][-1]
    assert hb["dev_loss"] == pytest.approx(ha["dev_loss"], rel=1e-3)  # dev scored in two shares, summed
    assert hb["dev_cer"] == pytest.approx(ha["dev_cer"], abs=0.02)
    # one writer: rank 0's log and config only
    assert (ddp / "train.log").exists() and (ddp / "config.yaml").exists() and (ddp / "metrics.json").exists()

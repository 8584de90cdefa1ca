"""Data-parallel training: two gloo processes under torchrun compute the single-process gradient of the
same global batch, follow its loss trajectory, and leave one writer's run directory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from speechkit.checkpoint import read_checkpoint
from speechkit.distributed import Context
from tests.conftest import REPO, sample_rows, write_manifest

PROBE = REPO / "tests" / "ddp_probe.py"  # speechkit-train that also saves the first step's gradient


def test_each_rank_takes_an_interleaved_share_and_small_batches_are_dropped():
    batches = [[0, 1, 2, 3, 4], [5, 6], [7]]
    assert Context(world=2, rank=0).shard(batches) == [[0, 2, 4], [5]]
    assert Context(world=2, rank=1).shard(batches) == [[1, 3], [6]]
    assert Context().shard(batches) == batches  # single process: unchanged
    assert Context().sum([1, 2.5]) == [1.0, 2.5]


def _train(tmp_path, name, manifests, launcher):
    """Train 6 steps in a fresh working folder ``tmp_path/name``; returns it and the first step's gradient."""
    train, dev = manifests
    work = tmp_path / name
    work.mkdir()
    grads = tmp_path / f"{name}.grads.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    # 7 a global batch: the two ranks get unequal shares (4 + 3, and 2 + 1 for the last batch of 24),
    # so the loss weighting of Trainer.train_step matters, not only DDP's all-reduce
    args = [
        "recipe=demo", f"data.train_manifest={train}", f"data.dev_manifest={dev}",
        "encoder.hidden_size=32", "encoder.num_layers=1", "encoder.dropout=0",
        "aligner.weight=0.3", "aligner.channels=16",  # its loss is weighted across ranks like the main one
        "data.batch_size=7", "trainer.max_steps=6", "trainer.max_minutes=0", "trainer.warmup_steps=2",
        "trainer.log_every_steps=1", "trainer.threads=1", "trainer.device=cpu",
        f"hydra.run.dir={work / 'run'}",
    ]  # fmt: skip
    p = subprocess.run([*launcher, str(PROBE), str(grads), *args], cwd=work, env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert grads.exists(), f"{PROBE.name} saved no gradient: the optimiser never stepped?\n{p.stderr[-3000:]}"
    return work, torch.load(grads)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    manifests = (
        write_manifest(tmp_path / "train.jsonl", sample_rows("train", 24)),
        write_manifest(tmp_path / "dev.jsonl", sample_rows("dev", 8)),
    )  # dev batches 7 + 1: one per rank
    single, ga = _train(tmp_path, "single", manifests, [sys.executable])
    ddp, gb = _train(
        tmp_path,
        "ddp",
        manifests,
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"],
    )

    # What data parallelism promises is the gradient: DDP's mean of the two ranks' (rescaled) gradients is
    # the gradient of the single-process loss over the global batch. Not bit-for-bit: every element is a
    # float32 sum over utterances and frames, which two processes add in two shares and gloo then adds
    # together, another order than one process's. Reordering a float32 sum of n terms moves it by up to
    # about n·2⁻²⁴·Σ|terms| — relative to the terms, not to the result, so an element whose terms cancel
    # to ~0 keeps no relative accuracy; hence an absolute tolerance scaled to the tensor's largest
    # gradient, 1e-5·max|g|, plus rtol 1e-4 for the large elements (measured: differences under
    # 2e-6·max|g|). Weighting the ranks' shares as if equal moves the gradient by 1-6 % of max|g|.
    assert ga.keys() == gb.keys()
    for k, g in ga.items():
        scale = g.abs().max().item()
        err = (gb[k] - g).abs().max().item()
        assert torch.allclose(gb[k], g, rtol=1e-4, atol=1e-5 * scale), (
            f"{k}: max |Δg| {err:.2e}, max |g| {scale:.2e}"
        )

    # The weights after six AdamW steps are not compared: Adam divides by √v, so an element whose
    # gradient is ~0 steps by ±lr whichever way its rounding error points, and that sign depends on the
    # CPU's reduction order. The loss does not: to first order it moves by g·Δw, small exactly where
    # such an element's g is ~0 (measured: relative differences ~3e-7).
    a = read_checkpoint(single / "run" / "checkpoints" / "last.pt")
    b = read_checkpoint(ddp / "run" / "checkpoints" / "last.pt")
    la, lb = a["trainer"]["state"]["losses"], b["trainer"]["state"]["losses"]
    assert [s for s, _ in la] == [s for s, _ in lb] == [1, 2, 3, 4, 5, 6]
    assert torch.allclose(torch.tensor([x for _, x in lb]), torch.tensor([x for _, x in la]), rtol=1e-4)
    ha, hb = a["trainer"]["state"]["history"][-1], b["trainer"]["state"]["history"][-1]
    assert hb["dev_loss"] == pytest.approx(ha["dev_loss"], rel=1e-3)  # dev scored in two shares, summed
    # greedy decoding is a step function of the weights: a near-tie argmax that flips with the rounding
    # moves the CER by about 1/130 (130 dev characters); 0.02 allows two such flips
    assert hb["dev_cer"] == pytest.approx(ha["dev_cer"], abs=0.02)

    # One writer: rank 1 adds nothing to the run directory, nor to its working folder, and logs nothing
    # into rank 0's train.log.
    files = {
        name: sorted(p.relative_to(w).as_posix() for p in w.rglob("*") if p.is_file())
        for name, w in (("single", single), ("ddp", ddp))
    }
    assert files["ddp"] == files["single"]
    assert "run/train.log" in files["ddp"] and "run/metrics.json" in files["ddp"]
    log = (ddp / "run" / "train.log").read_text()
    assert "rank 0 of 2" in log and "rank 1 of 2" not in log

"""Data-parallel training on torch.distributed, launched by ``torchrun`` (one process per GPU or CPU slot).

``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (and the rendezvous address); the
trainer calls :func:`init` once, which joins the process group — NCCL when the process drives a
GPU, gloo on CPU — and pins each process to GPU ``LOCAL_RANK``. Without those variables nothing
is initialised and every helper here is a no-op for a single process.

How the trainer shares work (see docs/architecture.md, "Distributed training"):

- every rank builds the same global batches (same seed, same epoch) and takes the examples
  ``batch[rank::world]``; ``data.batch_size`` is the *global* batch, so a run on N processes
  takes the same optimiser steps as a single process;
- the loss of each rank is rescaled so that DistributedDataParallel's gradient average is the
  gradient of the single-process loss over the whole global batch (``Trainer.train_step``);
- elapsed time, "every rank has examples", dev error counts: summed across ranks, so every
  rank takes the same decisions (time budget, early stop) and nobody waits forever;
- only rank 0 writes logs, plots and checkpoints; every rank reads ``last.pt`` to resume.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def _adopt_submitit() -> None:
    """Inside a job of Hydra's submitit launcher (SLURM or local) with several tasks, export the
    torchrun-style variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) that submitit knows."""
    if "WORLD_SIZE" in os.environ or not os.environ.get("SUBMITIT_EXECUTOR"):
        return
    from submitit.helpers import TorchDistributedEnvironment

    env = TorchDistributedEnvironment()
    if env.world_size > 1:
        env.export(set_cuda_visible_devices=False)


def launched() -> bool:
    """True in a process started by torchrun, a multi-task submitit job, or any launcher setting WORLD_SIZE > 1."""
    _adopt_submitit()
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    _adopt_submitit()
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def cores_per_process() -> int:
    """The cores this process may use: its CPU affinity over the processes on this node (``LOCAL_WORLD_SIZE``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def cpu_threads(setting: str | int, num_workers: int) -> int:
    """Intra-op threads for ``trainer.threads``: ``N`` as given (0: torch's default, returned as 0);
    ``auto``: the cores this process may use (its CPU affinity over the processes on this node),
    less half of them at most for the data loader's ``num_workers`` processes, at least 1.

    Measured on a 2-core machine (benchmarks/README.md, "Threads"): the demo trained 1.4–1.5× faster with
    1 thread than with 2 next to two loader workers when idle, 1.1× beside another training job.
    """
    text = str(setting).strip().lower()
    if text != "auto":
        if not text.isdigit():
            raise ValueError(f"trainer.threads={setting!r}: use auto or a whole number (0: torch's default)")
        return int(text)
    per_process = cores_per_process()
    return max(1, per_process - min(num_workers, per_process // 2))


def thread_candidates(setting: str | int, num_workers: int) -> list[int]:
    """The thread counts ``trainer.threads=auto`` times at the start of a long CPU run (:class:`ThreadProbe`):
    1, 2, 4, … below the cores this process may use, those cores, and :func:`cpu_threads`' own choice.
    Empty for a set number, and when there is one count only (a single core)."""
    if str(setting).strip().lower() != "auto":
        return []
    per_process = cores_per_process()
    counts = {cpu_threads(setting, num_workers), per_process}
    counts.update(2**k for k in range(per_process.bit_length()) if 2**k < per_process)
    return sorted(counts) if len(counts) > 1 else []


class ThreadProbe:
    """``trainer.threads=auto`` on a CPU: the first steps of the run are timed at each candidate thread count
    and the fastest is kept for the rest of it. The steps are the run's own (nothing is trained twice or
    thrown away); what is timed is a whole iteration, the wait for the loader's next batch included, so
    threads that starve the loader workers lose. :func:`cpu_threads`' rule is what it measures against:
    another count is kept only when it is more than ``margin`` faster, so where the counts are level the
    run keeps the rule's (the same on every run), and where the machine is loaded or shaped otherwise than
    the rule assumes, the probe finds it (benchmarks/README.md, "Threads").

    Schedule: ``warmup`` steps at the first count (the loader's start, the kernels' first shapes), then
    ``rounds`` rounds of a block of ``block`` steps per count, the order reversed each round so that a
    drift in the machine's speed falls alike on all; the first ``settle`` steps of a block are not timed
    (batches the loader made under the previous count). Each count's time is per element of the batch
    (batches differ in length).
    """

    def __init__(self, candidates: Sequence[int], first: int, warmup: int = 4, block: int = 8,
                 rounds: int = 3, settle: int = 2, margin: float = 0.05) -> None:
        self.candidates, self.first, self.margin = list(candidates), first, margin
        self.schedule: list[tuple[int, bool]] = [(first, False)] * warmup  # (threads, timed)
        for r in range(rounds):
            for n in self.candidates if r % 2 == 0 else reversed(self.candidates):
                self.schedule += [(n, False)] * settle + [(n, True)] * (block - settle)
        self.seconds = dict.fromkeys(self.candidates, 0.0)
        self.work = dict.fromkeys(self.candidates, 0)
        self.done = 0  # steps of the schedule taken
        self.chosen: int | None = None

    @property
    def steps(self) -> int:
        return len(self.schedule)

    def threads(self) -> int:
        """The thread count for the next step."""
        return self.schedule[self.done][0]

    def record(self, seconds: float, work: int, timed: bool = True) -> int | None:
        """One step taken in ``seconds`` over a batch of ``work`` elements (``timed=False``: a step that is
        not comparable, such as an epoch's first); returns the chosen count once the schedule is done."""
        n, counted = self.schedule[self.done]
        if counted and timed and work > 0:
            self.seconds[n] += seconds
            self.work[n] += work
        self.done += 1
        if self.done == len(self.schedule):
            rates = {c: self.seconds[c] / self.work[c] for c in self.candidates if self.work[c]}
            fastest = min(rates, key=rates.__getitem__) if rates else self.first
            rule = rates.get(self.first)
            keep_rule = rule is not None and rule <= (1 + self.margin) * rates[fastest]
            self.chosen = self.first if keep_rule else fastest
        return self.chosen

    def report(self) -> str:
        """Each count's time per batch element relative to the chosen count's, for the log."""
        base = self.seconds[self.chosen] / max(self.work[self.chosen], 1)
        parts = [f"{c}: {self.seconds[c] / self.work[c] / base:.2f}×" for c in self.candidates if self.work[c] and base]
        return ", ".join(parts)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX tiles or AVX-512 BF16), where oneDNN's bf16 LSTM and
    matrix products run about twice as fast as fp32; elsewhere bf16 autocast is emulated and slower."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    try:
        return any(getattr(cpu, c)() for c in checks if hasattr(cpu, c))
    except RuntimeError:  # a torch built without the CPU capability probe
        return False


CPU_PRECISION_ENV = "SPEECHKIT_CPU_PRECISION"  # fp32 | bf16: what trainer.precision=auto picks on a CPU


def auto_precision(device: torch.device, model: torch.nn.Module | None = None) -> str:
    """``trainer.precision=auto``: on a GPU bf16 where supported, else fp16. On a CPU bf16 where it pays:
    the CPU has bf16 instructions and ``model`` holds an LSTM (oneDNN's bf16 LSTM trained asr_grid about
    twice as fast at the same accuracy; a GRU or a convolutional stem ran no faster: benchmarks/README.md,
    "Mixed precision on the CPU"), else fp32. ``$SPEECHKIT_CPU_PRECISION`` (fp32 or bf16) overrides the
    CPU's choice."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type != "cpu":
        return "fp32"
    forced = os.environ.get(CPU_PRECISION_ENV, "").strip().lower()
    if forced:
        if forced not in ("fp32", "bf16"):
            raise ValueError(f"${CPU_PRECISION_ENV}={forced!r}: use fp32 or bf16 (or unset it)")
        return forced
    has_lstm = model is None or any(isinstance(m, torch.nn.LSTM) for m in model.modules())
    return "bf16" if has_lstm and cpu_has_bf16() else "fp32"


@dataclass
class Context:
    """This process's place in the job; ``world == 1`` when not distributed."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str = ""

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, batches: Sequence[Sequence[int]]) -> list[list[int]]:
        """This rank's part of each global batch; batches with fewer examples than ranks are dropped."""
        if not self.active:
            return [list(b) for b in batches]
        return [list(b[self.rank :: self.world]) for b in batches if len(b) >= self.world]

    def sum(self, values: Sequence[float], device: torch.device | str = "cpu") -> list[float]:
        """Element-wise sum of ``values`` over all ranks (the values themselves when single)."""
        if not self.active:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def global_loss(self, loss: torch.Tensor, used: int, reduction: str = "mean") -> tuple[torch.Tensor, float]:
        """``(loss to backpropagate, the global batch's loss)`` from this rank's ``loss`` over its
        ``used`` utterances, such that DDP's gradient mean is the gradient of the single-process
        loss over the whole global batch.

        ``reduction="mean"``: each rank's loss is a mean over its usable utterances; it is weighted
        by ``world × used / used over all ranks``. ``"sum"``: DDP's mean of ``world ×`` the local sums
        is the global sum. Single process: the loss as it is.
        """
        if not self.active:
            return loss, float(loss.detach())
        mean = reduction == "mean"
        weight = float(used) if mean else 1.0
        total, weighted = self.sum([weight, weight * float(loss.detach())])
        if not mean:
            return loss * self.world, weighted
        if total <= 0:
            return loss * 0.0, 0.0
        return loss * (self.world * weight / total), weighted / total

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def init(device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group when launched by torchrun; returns the context and this rank's device.

    ``device`` is the configured one (``trainer.device``): on CUDA each rank takes GPU
    ``LOCAL_RANK``; on CPU the backend is gloo.
    """
    if not launched():
        return Context(), device
    world, rnk, local = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise RuntimeError(
                f"rank {rnk}: LOCAL_RANK={local} but this node has {torch.cuda.device_count()} GPU(s); "
                "start at most one process per GPU (torchrun --nproc-per-node=N)"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, device_id=device if backend == "nccl" else None)
    ctx = Context(world=world, rank=rnk, local_rank=local, backend=backend)
    log.info("distributed: rank %d of %d (%s, %s)", rnk, world, backend, device)
    return ctx, device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

"""Training throughput (utterances per second) with and without length-bucketed batching.

    python benchmarks/train_throughput.py                       # asr_grid, 40 steps each way
    python benchmarks/train_throughput.py --steps 60 --threads 2

Builds the recipe's Trainer twice — ``data.bucket=false`` (random batches of 32) and
``data.bucket=true`` (batches drawn from duration-sorted windows) — and times the same number of
optimiser steps through ``Trainer.train_step`` after a few warm-up steps, data loading included.
The two settings are timed in alternating blocks, so a busy machine slows both alike. Reports
utterances/s, audio seconds/s, and the share of padded batch time that is padding.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time

import torch
from hydra import compose, initialize_config_dir

from speechkit.config import CONF_DIR, store_schemas
from speechkit.data.sampler import EpochBatches, padding_fraction
from speechkit.registry import load_plugins


def make_trainer(recipe: str, bucket: bool, threads: int, run_dir: str, extra: list[str]):
    from speechkit.trainer import Trainer

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"recipe={recipe}", f"data.bucket={str(bucket).lower()}",
                                           f"trainer.threads={threads}", "data.num_workers=0", *extra])
    return Trainer(cfg, run_dir)


def timed_steps(trainer, batches_iter, n: int) -> tuple[float, int, float]:
    """Seconds for ``n`` steps (loading included), utterances, audio seconds."""
    utts, audio = 0, 0.0
    t0 = time.perf_counter()
    for _ in range(n):
        batch = next(batches_iter)
        trainer.train_step(batch)
        utts += len(batch)
        audio += sum(trainer.durations[i] for i in batch.indices)
    return time.perf_counter() - t0, utts, audio


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="asr_grid")
    p.add_argument("--steps", type=int, default=40, help="timed steps per setting")
    p.add_argument("--blocks", type=int, default=4, help="alternating blocks the steps are split into")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("overrides", nargs="*", help="extra config overrides (key=value)")
    a = p.parse_args()
    load_plugins()
    store_schemas()
    torch.manual_seed(0)
    results = {}
    iters, trainers = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for bucket in (False, True):
            tr = make_trainer(a.recipe, bucket, a.threads, f"{tmp}/{bucket}", a.overrides)
            batches = tr.epoch_batches(0)
            loader = tr._loader(tr.train_set, EpochBatches(batches))
            trainers[bucket], iters[bucket] = tr, itertools.cycle(loader)
            results[bucket] = {"padding": padding_fraction(batches, tr.durations), "seconds": 0.0,
                               "utts": 0, "audio": 0.0}
            timed_steps(tr, iters[bucket], a.warmup)
        per_block = max(a.steps // a.blocks, 1)
        for _ in range(a.blocks):
            for bucket in (False, True):
                s, u, au = timed_steps(trainers[bucket], iters[bucket], per_block)
                r = results[bucket]
                r["seconds"] += s
                r["utts"] += u
                r["audio"] += au
    print(f"# {a.recipe}: {per_block * a.blocks} steps per setting, torch threads {a.threads}")
    print("| batching | padding % of batch time | utterances / s | audio s / s |")
    print("| --- | ---: | ---: | ---: |")
    for bucket, r in results.items():
        name = "length-bucketed" if bucket else "random"
        print(f"| {name} | {100 * r['padding']:.1f} | {r['utts'] / r['seconds']:.1f} | {r['audio'] / r['seconds']:.1f} |")


if __name__ == "__main__":
    main()

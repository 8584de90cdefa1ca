"""Training throughput (steps and utterances per second) of one setting against another.

    python benchmarks/train_throughput.py                       # asr_grid, data.bucket=false,true
    python benchmarks/train_throughput.py --steps 60 --threads 2
    python benchmarks/train_throughput.py --compare trainer.precision=fp32,bf16
    python benchmarks/train_throughput.py --workers 2 --compare data.frontend_in_workers=false,true
    python benchmarks/train_throughput.py --workers 2 --compare trainer.seed=1234 --profile 20   # where a step's time goes
    python benchmarks/train_throughput.py --warmup 15 --compare torch.compile=false,true          # the model's forward compiled

Builds the recipe's Trainer once per value of the ``--compare`` key (default ``data.bucket``:
random batches of 32 against batches drawn from duration-sorted windows) and times the same number
of optimiser steps through ``Trainer.train_step`` after a few warm-up steps (in each block), data loading included
(in the main process, or in ``--workers`` loader processes).
The settings are timed in alternating blocks, so a busy machine slows them alike. Reports steps/s,
utterances/s, audio seconds/s, and the share of padded batch time that is padding. ``--profile N``
then runs N more steps of each setting under torch.profiler and prints its operators by their own CPU time.
``torch.compile=true`` is not a config key: that setting's Trainer runs its model's forward through
``torch.compile(dynamic=True)`` (the backward follows it); its compilation falls in the warm-up steps.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time

# speechkit before torch: its OMP_WAIT_POLICY=PASSIVE, as in speechkit-train (spinning OpenMP threads made two
# threads look 1.2x faster than one here, where training, which sleeps them, found them slower)
import speechkit  # noqa: F401

# isort: split
import torch
from hydra import compose, initialize_config_dir

from speechkit.config import CONF_DIR, store_schemas
from speechkit.data.sampler import EpochBatches, padding_fraction
from speechkit.registry import load_plugins

COMPILE = "torch.compile"  # the --compare key that is not a config key


def make_trainer(recipe: str, setting: str, threads: int, run_dir: str, extra: list[str], workers: int = 0):
    from speechkit.trainer import Trainer

    key, _, value = setting.partition("=")
    compiled = key == COMPILE and value.lower() in ("true", "1", "yes")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"recipe={recipe}", f"trainer.threads={threads}", f"data.num_workers={workers}",
                                           *extra, *([setting] if key != COMPILE else [])])
    trainer = Trainer(cfg, run_dir)
    if compiled:
        trainer.forward = torch.compile(trainer.forward, dynamic=True)
    return trainer


def timed_steps(trainer, batches_iter, n: int) -> tuple[float, int, float]:
    """Seconds for ``n`` steps (loading included), utterances, audio seconds."""
    utts, audio = 0, 0.0
    seconds = trainer.epoch_lengths(0)  # s (a word span's in a word-span epoch); images: width / height, not counted
    seconds = [d if ex.duration is not None else None for d, ex in zip(seconds, trainer.train_examples)]
    t0 = time.perf_counter()
    for _ in range(n):
        batch = next(batches_iter)
        trainer.train_step(batch)
        utts += len(batch)
        audio += sum(seconds[i] or 0.0 for i in batch.indices)
    return time.perf_counter() - t0, utts, audio


def warm_batches(trainer, loader, warmup: int):
    """A fresh pass over ``loader``, cycling, after ``warmup`` steps taken on it untimed: its workers started
    and the kernels' first shapes seen before the clock (a compiled forward compiles here)."""
    batches_iter = itertools.cycle(loader)
    timed_steps(trainer, batches_iter, warmup)
    return batches_iter


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="asr_grid")
    p.add_argument("--steps", type=int, default=40, help="timed steps per setting")
    p.add_argument("--blocks", type=int, default=4, help="alternating blocks the steps are split into")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=0, help="loader workers (0: load in the main process)")
    p.add_argument("--compare", default="data.bucket=false,true", help="KEY=V1,V2[,…]: the settings timed; V1;V2 when a value holds "
                   "commas (--compare 'augment=[vtlp,specaugment];[speed,vtlp,specaugment]')")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="then profile N steps of each setting")
    p.add_argument("overrides", nargs="*", help="extra config overrides (key=value)")
    a = p.parse_args()
    key, _, values = a.compare.partition("=")
    settings = [f"{key}={v}" for v in values.split(";" if ";" in values else ",")]
    load_plugins()
    store_schemas()
    torch.manual_seed(0)
    results, loaders, trainers = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, setting in enumerate(settings):
            tr = make_trainer(a.recipe, setting, a.threads, f"{tmp}/{i}", a.overrides, a.workers)
            batches = tr.epoch_batches(0)
            trainers[setting], loaders[setting] = tr, tr.train_loader(EpochBatches(batches), 0)
            indices = [[k[0] if isinstance(k, tuple) else k for k in b] for b in batches]  # word spans: (index, epoch)
            results[setting] = {"padding": padding_fraction(indices, tr.epoch_lengths(0)), "seconds": 0.0,
                                "steps": 0, "utts": 0, "audio": 0.0}
        per_block = max(a.steps // a.blocks, 1)
        for _ in range(a.blocks):
            for setting in settings:
                # a block's own loader, started (and its warm-up steps taken) before the clock: the workers
                # of the setting not being timed are gone, not filling their queues beside this one
                batches_iter = warm_batches(trainers[setting], loaders[setting], a.warmup)
                s, u, au = timed_steps(trainers[setting], batches_iter, per_block)
                del batches_iter
                r = results[setting]
                r["seconds"] += s
                r["steps"] += per_block
                r["utts"] += u
                r["audio"] += au
        print(f"# {a.recipe}: {per_block * a.blocks} steps per setting, torch threads {a.threads}, loader workers {a.workers}")
        print("| setting | padding % of batch time | steps / s | utterances / s | audio s / s |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for setting, r in results.items():
            sec = r["seconds"]
            audio = f"{r['audio'] / sec:.1f}" if r["audio"] else "—"
            print(f"| {setting} | {100 * r['padding']:.1f} | {r['steps'] / sec:.2f} | {r['utts'] / sec:.1f} | {audio} |")
        for setting in settings if a.profile else ():
            batches_iter = warm_batches(trainers[setting], loaders[setting], a.warmup)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                timed_steps(trainers[setting], batches_iter, a.profile)
            print(f"\n# {setting}: {a.profile} steps under torch.profiler")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=50))


if __name__ == "__main__":
    main()

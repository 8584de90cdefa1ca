"""``speechkit-train recipe=NAME [overrides]``: train a model; the run directory holds the rest."""

from __future__ import annotations

import json
import logging
import sys
from contextlib import nullcontext
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger("speechkit.train")


def task(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from speechkit import distributed, rundir
    from speechkit.checkpoint import CheckpointError

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    main = distributed.is_main()  # under torchrun only rank 0 writes (and holds the lock)
    before = rundir.is_new(run_dir) if main else None  # before anything of ours is logged into Hydra's empty log
    began: list[bool] = []  # set when training begins: from then on the directory is the run's record
    locked = False
    try:
        with rundir.lock(run_dir) if main else nullcontext():
            locked = True
            try:
                return _run(cfg, run_dir, main, began)
            finally:
                if before is not None and not began:  # a mistake found before the first step: no half-made run
                    rundir.undo_new(run_dir, before, keep=(rundir.LOCK_NAME, rundir.OWNER_NAME))
    except (rundir.RunDirError, CheckpointError) as e:
        sys.exit(f"error: {e}")
    finally:
        if before is not None and locked and not began:  # the lock too, once released
            rundir.undo_new(run_dir, before)


def _run(cfg: DictConfig, run_dir: Path, main: bool, began: list[bool]) -> float:
    from speechkit import distributed, rundir
    from speechkit.config import resolve_data_root
    from speechkit.trainer import Trainer

    resolve_data_root(cfg, uses=("train_manifest", "dev_manifest"))  # a recipe's data from any folder; the run's saved config names it absolutely
    resume = None
    if cfg.trainer.resume:  # checked before anything is written into the run directory
        resume = rundir.find_resume(run_dir / "checkpoints")
        if resume:
            rundir.check_resume_config(cfg, *resume)
    init = None if resume else rundir.find_init(cfg)  # trainer.init_from: a fine-tune's first weights
    try:
        trainer = Trainer(cfg, run_dir, resume=resume, init=init)  # checks every setting before anything is written
        resume = init = None  # the checkpoints' tensors are the trainer's now; do not hold a second copy
        if main:
            rundir.write_configs(run_dir, cfg)
        began.append(True)
        metrics = trainer.fit()
    finally:
        distributed.shutdown()
    if not main:
        return float(metrics.get("dev_wer", float("nan")))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"run directory: {run_dir}")
    if "dev_wer" in metrics:
        print(f"dev WER {100 * metrics['dev_wer']:.2f} %  CER {100 * metrics['dev_cer']:.2f} %  "
              f"(best {100 * trainer.state.best_wer:.2f} %)")
    line = None if cfg.trainer.get("init_from") else compare_with_reference(cfg.get("reference"), metrics)
    if line:
        print(line)
    return float(metrics.get("dev_wer", float("nan")))  # the value a Hydra sweeper would minimise


def compare_with_reference(ref, metrics: dict) -> str | None:
    """How this run compares with the run its recipe's README reports (the recipe's ``reference`` node:
    ``steps``, ``dev_wer``, ``source``, and ``minutes`` for a recipe trained on a wall-clock budget, whose
    steps follow the machine): one line, or None when the recipe gives no reference."""
    if not ref or "dev_wer" not in metrics:
        return None
    steps, dev = metrics.get("step"), metrics["dev_wer"]
    theirs = f"{ref.get('steps')} steps, dev WER {100 * ref['dev_wer']:.2f} %" if "dev_wer" in ref else ""
    if ref.get("minutes"):
        minutes = metrics.get("minutes")
        timed = isinstance(minutes, (int, float))
        took = f" in {minutes:.1f} minutes" if timed else ""
        less = " (this run trained for less: a smaller budget, or it was stopped)"
        cut = less if timed and minutes < 0.98 * ref["minutes"] else ""
        return (f"this run: {steps} steps{took}, dev WER {100 * dev:.2f} %; "
                f"{ref.get('source', 'the recipe README')}: {theirs} in {ref['minutes']:g} minutes{cut}. "
                "A time budget: the steps it buys, and so the result, follow the machine's speed")
    if steps == ref.get("steps"):
        same = "the same step count"
    elif isinstance(steps, int) and isinstance(ref.get("steps"), int) and steps > ref["steps"]:
        same = f"{steps} steps against its {ref['steps']}: a time budget or changed settings ran longer"
    else:
        same = f"{steps} of its {ref.get('steps')} steps: the run was cut short or its settings changed"
    return (f"this run: {steps} steps, dev WER {100 * dev:.2f} %; {ref.get('source', 'the recipe README')}: {theirs} "
            f"({same})")


def main() -> None:
    from speechkit.config import run_hydra

    run_hydra(task, "config", save_hydra_dir=False)  # .hydra/ is written by task, once the run may start


if __name__ == "__main__":
    main()

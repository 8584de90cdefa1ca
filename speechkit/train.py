"""``speechkit-train recipe=NAME [overrides]``: train a model; the run directory holds the rest."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("speechkit.train")


def task(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from speechkit import distributed
    from speechkit.trainer import Trainer

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    main = distributed.is_main()  # under torchrun only rank 0 writes
    if main:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))  # resolved, for people
    try:
        trainer = Trainer(cfg, run_dir)
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
    return float(metrics.get("dev_wer", float("nan")))  # the value a Hydra sweeper would minimise


def main() -> None:
    from speechkit.config import run_hydra

    run_hydra(task, "config")


if __name__ == "__main__":
    main()

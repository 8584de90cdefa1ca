"""Metric loggers the trainer writes to besides its log file and training.png (``trainer.logger``).

``none`` (the default) writes nothing; ``tensorboard`` writes event files under
``<run dir>/tensorboard`` (view them with ``tensorboard --logdir <run dir>``): ``train/loss`` and
``train/lr`` every ``trainer.log_every_steps`` steps, and after each epoch ``train/epoch_loss``,
``dev/loss``, ``dev/wer`` and ``dev/cer`` — all against the optimiser step. Only the process that
writes logs (rank 0 under torchrun) gets a real logger; the others get ``NullLogger``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

log = logging.getLogger(__name__)

LOGGERS = ("none", "tensorboard")
EPOCH_TAGS = {  # TrainState.history row key → tag
    "train_loss": "train/epoch_loss",
    "dev_loss": "dev/loss",
    "dev_wer": "dev/wer",
    "dev_cer": "dev/cer",
    "dev_aligner_loss": "dev/aligner_loss",
}


class NullLogger:
    """Writes nothing: ``trainer.logger=none``, and every process but the one that logs."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_epoch(self, row: dict[str, float], step: int) -> None:
        self.log({tag: row[key] for key, tag in EPOCH_TAGS.items() if key in row}, step)

    def close(self) -> None:
        pass


class TensorBoardLogger(NullLogger):
    """Scalars into TensorBoard event files in ``log_dir``; non-finite values are left out."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError(
                "trainer.logger=tensorboard needs the tensorboard package: pip install tensorboard "
                "(or pip install 'speechkit[tensorboard]'), or use trainer.logger=none"
            ) from None
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        log.info("TensorBoard event files: %s", self.log_dir)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for tag, value in metrics.items():
            if value is not None and math.isfinite(float(value)):
                self.writer.add_scalar(tag, float(value), global_step=step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def make_logger(name: str, run_dir: str | Path, main: bool = True) -> NullLogger:
    """The logger ``trainer.logger`` names, writing under ``run_dir``; a NullLogger unless ``main``."""
    if name not in LOGGERS:
        raise ValueError(f"trainer.logger={name!r} is not one of: {', '.join(LOGGERS)}")
    if name == "none" or not main:
        return NullLogger()
    return TensorBoardLogger(Path(run_dir) / "tensorboard")

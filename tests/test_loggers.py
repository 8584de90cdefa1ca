"""trainer.logger: TensorBoard event files that TensorBoard's own reader reads back."""

from __future__ import annotations

import sys

import pytest

from speechkit.loggers import NullLogger, TensorBoardLogger, make_logger

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    acc = event_accumulator.EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_logger_writes_scalars_tensorboard_reads_back(tmp_path):
    logger = make_logger("tensorboard", tmp_path)
    assert isinstance(logger, TensorBoardLogger)
    logger.log({"train/loss": 2.5, "train/lr": 1e-3}, step=10)
    logger.log({"train/loss": 1.5, "train/lr": 2e-3}, step=20)
    logger.log_epoch(
        {"epoch": 1, "train_loss": 2.0, "dev_wer": 0.25, "dev_cer": 0.1, "dev_loss": float("nan")}, 20
    )
    logger.close()
    got = _scalars(tmp_path / "tensorboard")
    assert got["train/loss"] == [(10, 2.5), (20, 1.5)]
    assert [s for s, _ in got["train/lr"]] == [10, 20] and got["train/lr"][1][1] == pytest.approx(2e-3)
    assert got["dev/wer"] == [(20, 0.25)] and got["train/epoch_loss"] == [(20, 2.0)]
    assert "dev/loss" not in got  # a non-finite value is left out, not written as NaN


def test_only_the_logging_process_writes(tmp_path):
    assert type(make_logger("tensorboard", tmp_path, main=False)) is NullLogger
    assert type(make_logger("none", tmp_path)) is NullLogger
    assert not (tmp_path / "tensorboard").exists()


def test_unknown_logger_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="trainer.logger='wandb' is not one of: none, tensorboard"):
        make_logger("wandb", tmp_path)


def test_missing_tensorboard_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(ImportError, match="pip install tensorboard"):
        make_logger("tensorboard", tmp_path)


@pytest.mark.slow
def test_trainer_logs_loss_lr_and_dev_error_rates(tmp_path):
    from hydra import compose, initialize_config_dir

    from speechkit.config import CONF_DIR, store_schemas
    from speechkit.trainer import Trainer
    from tests.conftest import sample_rows, write_manifest

    store_schemas()
    train = write_manifest(tmp_path / "train.jsonl", sample_rows("train", 8))
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"data.train_manifest={train}",
                f"data.dev_manifest={train}",
                "data.num_workers=0",
                "data.batch_size=4",
                "encoder.num_layers=1",
                "encoder.hidden_size=16",
                "trainer.device=cpu",
                "trainer.log_every_steps=1",
                "trainer.max_steps=4",
                "trainer.warmup_steps=2",
                "trainer.logger=tensorboard",
            ],
        )
    Trainer(cfg, tmp_path / "run").fit()
    got = _scalars(tmp_path / "run" / "tensorboard")
    assert [s for s, _ in got["train/loss"]] == [1, 2, 3, 4]  # log_every_steps=1
    assert got["train/lr"][0][1] > 0
    assert [s for s, _ in got["dev/wer"]] == [2, 4] and all(0 <= v for _, v in got["dev/cer"])

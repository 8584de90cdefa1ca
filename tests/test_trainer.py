"""The training loop: it learns, and a killed run resumed gives the same weights as one never killed."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from speechkit.config import CONF_DIR, store_schemas
from speechkit.trainer import Trainer, lr_factor
from tests.conftest import sample_rows, write_manifest


def _cfg(tmp_path, n_train, *overrides):
    store_schemas()
    tmp_path.mkdir(parents=True, exist_ok=True)
    train = write_manifest(tmp_path / "train.jsonl", sample_rows("train", n_train))
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[
            f"data.train_manifest={train}", f"data.dev_manifest={train}", "data.num_workers=0",
            "encoder.num_layers=1", "encoder.subsample=2", "trainer.device=cpu", "trainer.log_every_steps=1",
            *overrides,
        ])


def test_lr_warms_up_linearly_then_decays_to_the_floor():
    assert lr_factor(0.0, 0, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(0.0, 9, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(1.0, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(0.5, 100, 10, 0.1) == pytest.approx(0.55)


@pytest.mark.slow
def test_model_overfits_a_handful_of_utterances_to_their_exact_transcripts(tmp_path):
    # 4 utterances, each listed 8 times: 8 steps an epoch, so checkpoints and evaluations are rare
    rows = sample_rows("train", 4) * 8
    manifest = write_manifest(tmp_path / "four.jsonl", rows)
    cfg = _cfg(tmp_path, 4, f"data.train_manifest={manifest}", "encoder.hidden_size=128", "augment=none",
               "encoder.dropout=0", "data.batch_size=4", "data.bucket=false", "trainer.max_steps=400",
               "trainer.max_epochs=1000", "trainer.lr=4e-3", "trainer.warmup_steps=20",
               "trainer.eval_every_epochs=25", "trainer.seed=0")
    trainer = Trainer(cfg, tmp_path / "run")
    metrics = trainer.fit()
    assert metrics["dev_wer"] == 0.0, metrics
    assert (tmp_path / "run" / "training.png").stat().st_size > 10_000
    assert (tmp_path / "run" / "checkpoints" / "best.pt").exists()


class Killed(Exception):
    pass


def test_resume_after_a_kill_gives_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    # 10 utterances in batches of 2: 5 steps an epoch; 8 steps cross an epoch boundary, and the
    # kill at step 7 resumes mid-epoch from the step-6 checkpoint. Dropout and SpecAugment draw
    # random numbers, so the RNG state must come back too.
    # Losses are logged as means over 3 steps: the step-6 checkpoint falls inside an interval.
    common = ("encoder.hidden_size=16", "encoder.dropout=0.3", "data.batch_size=2", "trainer.max_steps=8",
              "trainer.save_every_steps=3", "trainer.eval_every_epochs=100", "trainer.seed=7", "trainer.warmup_steps=3",
              "trainer.log_every_steps=3")
    ref = Trainer(_cfg(tmp_path / "a", 10, *common), tmp_path / "a" / "run")
    ref.fit()

    run = tmp_path / "b" / "run"
    first = Trainer(_cfg(tmp_path / "b", 10, *common), run)
    real_step = Trainer.train_step

    def dying_step(self, batch):
        if self.state.step == 6:
            raise Killed
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", dying_step)
    with pytest.raises(Killed):
        first.fit()
    monkeypatch.setattr(Trainer, "train_step", real_step)
    resumed = Trainer(_cfg(tmp_path / "b", 10, *common, "trainer.resume=true"), run)
    assert (resumed.state.step, resumed.state.epoch, resumed.state.step_in_epoch) == (6, 1, 1)
    resumed.fit()
    assert resumed.state.step == ref.state.step == 8
    for (name, a), (_, b) in zip(ref.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert resumed.state.losses == ref.state.losses  # the logged means, across the kill
    assert [h["train_loss"] for h in resumed.state.history] == [h["train_loss"] for h in ref.state.history]


def test_non_finite_losses_skip_their_updates_and_too_many_in_a_row_stop_training(tmp_path, monkeypatch, caplog):
    cfg = _cfg(tmp_path, 8, "encoder.hidden_size=16", "data.batch_size=2", "trainer.max_steps=6",
               "trainer.max_nonfinite_in_row=3", "trainer.eval_every_epochs=100")
    trainer = Trainer(cfg, tmp_path / "run")
    real = trainer.loss_fn.forward
    calls = {"n": 0}

    def sometimes_nan(*args):
        loss, bad = real(*args)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] in (2, 3) else loss), bad

    monkeypatch.setattr(trainer.loss_fn, "forward", sometimes_nan)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    assert trainer.state.step == 6  # six updates taken …
    assert caplog.text.count("update skipped") == 2 and "(2 in a row)" in caplog.text  # … two skipped, logged
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values() if v.is_floating_point())
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())

    always = _cfg(tmp_path / "b", 8, "encoder.hidden_size=16", "data.batch_size=2", "trainer.max_steps=6",
                  "trainer.max_nonfinite_in_row=3")
    t2 = Trainer(always, tmp_path / "b" / "run")
    monkeypatch.setattr(t2.loss_fn, "forward", lambda *a: (real(*a)[0] * float("inf"), 0))
    with pytest.raises(FloatingPointError, match="3 non-finite losses in a row"):
        t2.fit()
    assert not (tmp_path / "b" / "run" / "checkpoints" / "last.pt").exists()  # nothing written from a broken run

"""The training loop: it learns, and a killed run resumed gives the same weights as one never killed."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from speechkit.config import CONF_DIR, store_schemas
from speechkit.data.sampler import EpochBatches
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


def test_a_linear_decay_is_a_straight_line_from_the_peak_to_the_floor():
    assert lr_factor(0.0, 100, 10, 0.0, "linear") == pytest.approx(1.0)
    assert lr_factor(0.25, 100, 10, 0.0, "linear") == pytest.approx(0.75)  # cosine: 0.854
    assert lr_factor(0.75, 100, 10, 0.0, "linear") == pytest.approx(0.25)  # cosine: 0.146
    assert lr_factor(1.0, 100, 10, 0.2, "linear") == pytest.approx(0.2)
    assert lr_factor(0.5, 4, 10, 0.0, "linear") == pytest.approx(0.25)  # still warming up: 5/10 of 0.5
    with pytest.raises(ValueError, match="lr_decay='step'"):
        lr_factor(0.5, 100, 10, 0.0, "step")


@pytest.mark.slow
def test_model_overfits_a_handful_of_utterances_to_their_exact_transcripts(tmp_path):
    # 4 utterances, each listed 8 times: 8 steps an epoch, so checkpoints and evaluations are rare.
    # The first evaluation with every word right, evaluating every 40 steps over seeds 0-19: at step 120-400
    # in a 400-step run (one seed only at its last step: the trajectory is chaotic, so another machine's
    # rounding draws another seed's luck); at 120-320 in a 600-step run (seeds 0-9), hence 600 steps, of
    # which the run takes those up to its first perfect evaluation (trainer.stop_at_wer=0)
    rows = sample_rows("train", 4) * 8
    manifest = write_manifest(tmp_path / "four.jsonl", rows)
    cfg = _cfg(tmp_path, 4, f"data.train_manifest={manifest}", "encoder.hidden_size=128", "augment=none",
               "encoder.dropout=0", "data.batch_size=4", "data.bucket=false", "trainer.max_steps=600",
               "trainer.max_epochs=1000", "trainer.lr=4e-3", "trainer.warmup_steps=20",
               "trainer.eval_every_epochs=5", "trainer.stop_at_wer=0", "trainer.seed=0")
    trainer = Trainer(cfg, tmp_path / "run")
    metrics = trainer.fit()
    assert metrics["dev_wer"] == 0.0, metrics
    measured = [h["dev_wer"] for h in trainer.state.history if "dev_wer" in h]
    assert measured[-1] == 0.0 and all(w > 0 for w in measured[:-1])  # it stopped at its first perfect one
    assert (tmp_path / "run" / "training.png").stat().st_size > 10_000
    assert (tmp_path / "run" / "checkpoints" / "best.pt").exists()


def test_eval_every_steps_measures_inside_epochs_off_the_training_clock(tmp_path, monkeypatch):
    # 10 utterances in batches of 2: 5 steps an epoch. Every 2 steps: 2 and 4 inside epoch 1, its end
    # (5) a row without dev metrics (eval_every_epochs=100), 6 and 8 inside epoch 2, 10 at its end
    # (a multiple of 2), 12 where max_steps stops. The clock moves 1 s a call and 100 s an evaluation:
    # the training time must not count the evaluations.
    import types

    import speechkit.trainer as trainer_module

    clock = [0.0]

    def tick():
        clock[0] += 1.0
        return clock[0]

    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(monotonic=tick))
    real_evaluate = Trainer.evaluate

    def slow_evaluate(self):
        clock[0] += 100.0
        return real_evaluate(self)

    monkeypatch.setattr(Trainer, "evaluate", slow_evaluate)
    cfg = _cfg(tmp_path, 10, "encoder.hidden_size=8", "data.batch_size=2", "data.bucket=false", "augment=none",
               "trainer.max_steps=12", "trainer.eval_every_epochs=100", "trainer.eval_every_steps=2")
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit()
    history = trainer.state.history
    assert [h["step"] for h in history] == [2, 4, 5, 6, 8, 10, 12]
    assert [h["step"] for h in history if "dev_wer" in h] == [2, 4, 6, 8, 10, 12]
    assert [h["epoch"] for h in history] == [0, 0, 1, 1, 1, 2, 2]
    assert trainer.state.train_seconds < 100  # 6 evaluations of 100 s each, none counted
    assert all(a["minutes"] <= b["minutes"] for a, b in zip(history, history[1:]))
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert [h["step"] for h in saved["trainer"]["state"]["history"]] == [2, 4, 5, 6, 8, 10, 12]


def test_early_stopping_counts_evaluations_inside_epochs(tmp_path, monkeypatch):
    # dev WER never improves after the first evaluation: patience 2 stops at the third, step 3,
    # inside the first epoch of 5 steps, with that evaluation its last row
    wers = iter([0.5, 0.6, 0.7, 0.8, 0.9])
    monkeypatch.setattr(Trainer, "evaluate", lambda self: {"dev_loss": 1.0, "dev_wer": next(wers), "dev_cer": 0.5})
    cfg = _cfg(tmp_path, 10, "encoder.hidden_size=8", "data.batch_size=2", "data.bucket=false", "augment=none",
               "trainer.max_steps=50", "trainer.eval_every_steps=1", "trainer.early_stop_patience=2")
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit()
    assert [(h["step"], h["dev_wer"]) for h in trainer.state.history] == [(1, 0.5), (2, 0.6), (3, 0.7)]
    assert trainer.state.step == 3 and trainer.state.best_wer == 0.5


def test_stop_at_wer_ends_the_run_at_the_first_evaluation_at_or_below_it(tmp_path, monkeypatch, caplog):
    # dev WER 0.5, 0.3, 0.2, …: stop_at_wer=0.2 stops at the third evaluation, step 3 of 50, and says so
    wers = iter([0.5, 0.3, 0.2, 0.1, 0.0])
    monkeypatch.setattr(Trainer, "evaluate", lambda self: {"dev_loss": 1.0, "dev_wer": next(wers), "dev_cer": 0.5})
    cfg = _cfg(tmp_path, 10, "encoder.hidden_size=8", "data.batch_size=2", "data.bucket=false", "augment=none",
               "trainer.max_steps=50", "trainer.eval_every_steps=1", "trainer.stop_at_wer=0.2")
    trainer = Trainer(cfg, tmp_path / "run")
    with caplog.at_level("INFO", logger="speechkit"):
        trainer.fit()
    assert [(h["step"], h["dev_wer"]) for h in trainer.state.history] == [(1, 0.5), (2, 0.3), (3, 0.2)]
    assert trainer.state.step == 3 and trainer.state.best_wer == 0.2
    assert "dev WER 20.00 % reached trainer.stop_at_wer=0.2 at step 3" in caplog.text


def test_training_png_is_drawn_once_at_the_end_with_the_last_row_on_it(tmp_path, monkeypatch):
    # 3 epochs of 2 steps inside one minute: the first epoch's row draws it (nothing drawn yet), the second's
    # is inside the minute between redraws, the third's is the run's end; fit's own final call adds nothing
    import speechkit.plots

    drawn = []
    monkeypatch.setattr(speechkit.plots, "plot_training", lambda losses, history, path: drawn.append(len(history)))
    cfg = _cfg(tmp_path, 4, "encoder.hidden_size=8", "data.batch_size=2", "augment=none", "trainer.max_steps=6")
    Trainer(cfg, tmp_path / "run").fit()
    assert drawn == [1, 3]


def test_a_negative_stop_at_wer_is_refused_naming_the_setting(tmp_path):
    cfg = _cfg(tmp_path, 2, "trainer.stop_at_wer=-0.1")
    with pytest.raises(ValueError, match=r"trainer.stop_at_wer=-0.1: use a dev WER to stop at"):
        Trainer(cfg, tmp_path / "run")


def test_ema_is_the_moving_average_of_the_trained_weights_and_best_pt_keeps_it(tmp_path, monkeypatch):
    # 4 steps, decay 0.6: the average starts at the first step's weights, then e = 0.6 e + 0.4 w after
    # each step. Dev is evaluated (and best.pt written) with the average; last.pt keeps the trained
    # weights and the average beside them, for resuming.
    decay, seen = 0.6, []
    real_step = Trainer.train_step

    def recording_step(self, batch):
        loss = real_step(self, batch)
        seen.append({k: p.detach().clone() for k, p in self.model.named_parameters()})
        return loss

    monkeypatch.setattr(Trainer, "train_step", recording_step)
    cfg = _cfg(tmp_path, 8, "encoder.hidden_size=8", "data.batch_size=2", "data.bucket=false", "augment=none",
               "trainer.max_steps=4", f"trainer.ema_decay={decay}")
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit()
    assert len(seen) == 4 and trainer.eval_model is trainer.ema.module
    expected = dict(seen[0])
    for weights in seen[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * w for k, w in weights.items()}
    ckpts = tmp_path / "run" / "checkpoints"
    best = torch.load(ckpts / "best.pt", map_location="cpu", weights_only=False)["model"]
    last = torch.load(ckpts / "last.pt", map_location="cpu", weights_only=False)
    moved = 0
    for k, e in expected.items():  # fp32 arithmetic in another order: a few ulps
        torch.testing.assert_close(best[k], e, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(last["model"][k], seen[-1][k], rtol=0, atol=0)
        torch.testing.assert_close(last["trainer"]["ema"][f"module.{k}"], e, rtol=1e-5, atol=1e-6)
        moved += not torch.allclose(e, seen[-1][k])
    assert moved > len(expected) // 2  # the average is not the last weights
    assert "moving average" in torch.load(ckpts / "best.pt", map_location="cpu", weights_only=False)["card"]["training"]["weights"]
    for k, v in trainer.model.state_dict().items():  # buffers (normalisation statistics) follow the model's
        if k not in expected:
            assert torch.equal(best[k], v.cpu()), k


def test_ema_decay_outside_0_1_is_refused(tmp_path):
    cfg = _cfg(tmp_path, 4, "encoder.hidden_size=8", "trainer.ema_decay=1.5")
    with pytest.raises(ValueError, match="trainer.ema_decay=1.5"):
        Trainer(cfg, tmp_path / "run")


class Killed(Exception):
    pass


@pytest.mark.parametrize("extra", [("trainer.ema_decay=0",), ("trainer.ema_decay=0.7",),
                                   ("data.frontend_in_workers=true", "augment=[gain,specaugment]")])
def test_resume_after_a_kill_gives_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch, extra):
    # 10 utterances in batches of 2: 5 steps an epoch; 8 steps cross an epoch boundary, and the
    # kill at step 7 resumes mid-epoch from the step-6 checkpoint. Dropout and SpecAugment draw
    # random numbers, so the RNG state must come back too; a weight average, its sum so far; a raw
    # augmentation run in the loader (frontend_in_workers), the same draws for the same batches.
    # Losses are logged as means over 3 steps: the step-6 checkpoint falls inside an interval.
    common = ("encoder.hidden_size=16", "encoder.dropout=0.3", "data.batch_size=2", "trainer.max_steps=8",
              "trainer.save_every_steps=3", "trainer.eval_every_epochs=100", "trainer.seed=7", "trainer.warmup_steps=3",
              "trainer.log_every_steps=3", *extra)
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
    if ref.ema is not None:
        for (name, a), (_, b) in zip(ref.ema.state_dict().items(), resumed.ema.state_dict().items()):
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


def test_bf16_autocast_on_the_cpu_trains_with_fp32_features_weights_and_log_probs(tmp_path):
    # bf16 autocast runs anywhere (emulated where the CPU lacks bf16 instructions, only slower)
    cfg = _cfg(tmp_path, 4, "encoder.hidden_size=16", "data.batch_size=2", "trainer.max_steps=3",
               "trainer.precision=bf16", "trainer.eval_every_epochs=100")
    trainer = Trainer(cfg, tmp_path / "run")
    seen = {}  # the dtype each stage's output had
    for name in ("frontend", "encoder"):
        getattr(trainer.model, name).register_forward_hook(lambda m, i, out, name=name: seen.update({name: out[0].dtype}))
    trainer.fit()
    assert trainer.state.step == 3 and all(math.isfinite(loss) for _, loss in trainer.state.losses)
    assert seen["frontend"] == torch.float32  # the frontend ran outside the autocast …
    assert seen["encoder"] == torch.bfloat16  # … the encoder inside it
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    batch = next(iter(trainer._loader(trainer.dev_set, EpochBatches([[0, 1]]))))
    with trainer.autocast():
        log_probs, _ = trainer.model(batch.x, batch.lengths)
    assert log_probs.dtype == torch.float32  # bf16 inside the encoder, fp32 out of the head's softmax
    card = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)["card"]
    assert card["training"]["precision"] == "bf16"


@pytest.mark.parametrize("mode", ["global", "online"])
def test_dataset_statistics_are_gathered_before_training_for_the_modes_that_use_them(tmp_path, mode):
    cfg = _cfg(tmp_path, 4, "encoder.hidden_size=8", "data.batch_size=2", "trainer.max_steps=1",
               "trainer.eval_every_epochs=100", "augment=none", f"frontend.normalize={mode}")
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit()
    frontend = trainer.model.frontend
    assert frontend.stats_count.item() > 0  # the training set's frames, before the first step
    mean, std = frontend.global_mean_std()
    assert bool(torch.isfinite(mean).all()) and bool((std > 0).all())


def test_precision_settings_on_the_cpu_and_fp16_there_is_refused(tmp_path):
    for setting, expected in (("auto", None), ("fp32", None), ("bf16", torch.bfloat16)):
        run = tmp_path / setting
        trainer = Trainer(_cfg(run, 2, "encoder.hidden_size=8", f"trainer.precision={setting}"), run / "run")
        with trainer.autocast():
            dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        assert dtype == expected, setting
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        Trainer(_cfg(tmp_path / "fp16", 2, "trainer.precision=fp16"), tmp_path / "fp16" / "run")


def test_auto_precision_is_bf16_on_gpus_that_support_it_and_on_cpus_with_bf16_instructions(monkeypatch):
    from speechkit import distributed

    for supported, expected in ((True, "bf16"), (False, "fp16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        assert distributed.auto_precision(torch.device("cuda", 0)) == expected
    monkeypatch.delenv("SPEECHKIT_CPU_PRECISION", raising=False)
    lstm, gru = torch.nn.Sequential(torch.nn.LSTM(4, 4)), torch.nn.Sequential(torch.nn.GRU(4, 4))
    for has_bf16, model, expected in ((True, lstm, "bf16"), (True, gru, "fp32"), (False, lstm, "fp32")):
        monkeypatch.setattr(distributed, "cpu_has_bf16", lambda h=has_bf16: h)
        assert distributed.auto_precision(torch.device("cpu"), model) == expected
    monkeypatch.setenv("SPEECHKIT_CPU_PRECISION", "fp32")  # as the test suite runs (conftest.py)
    assert distributed.auto_precision(torch.device("cpu")) == "fp32"
    monkeypatch.setenv("SPEECHKIT_CPU_PRECISION", "fp8")
    with pytest.raises(ValueError, match="use fp32 or bf16"):
        distributed.auto_precision(torch.device("cpu"))
    assert distributed.auto_precision(torch.device("mps")) == "fp32"


def test_fine_tuning_starts_from_the_checkpoints_weights_tokens_and_statistics_with_a_fresh_optimiser(tmp_path):
    # the first run fits the vocabulary on GRID sentences and global normalisation statistics on them
    small = ("encoder.hidden_size=8", "data.batch_size=2", "trainer.eval_every_epochs=100", "frontend.normalize=global")
    first = Trainer(_cfg(tmp_path / "a", 4, *small, "trainer.max_steps=2"), tmp_path / "a" / "run")
    first.fit()
    last = tmp_path / "a" / "run" / "checkpoints" / "last.pt"
    saved = torch.load(last, weights_only=False)

    # new data whose text has fewer letters: fitting on it would give a smaller vocabulary
    rows = [dict(r, text="bin blue") for r in sample_rows("test", 4)]
    (tmp_path / "b").mkdir()
    new = write_manifest(tmp_path / "b" / "new.jsonl", rows)
    cfg = _cfg(tmp_path / "b", 4, *small, "trainer.max_steps=2", f"data.train_manifest={new}",
               f"data.dev_manifest={new}", f"trainer.init_from={last}", "trainer.lr=1e-3")
    tuned = Trainer(cfg, tmp_path / "b" / "run")
    assert tuned.tokenizer.tokens == saved["tokens"] and len(saved["tokens"]) > len(set("bin blue")) + 1
    for name, value in tuned.model.state_dict().items():  # copied, not trained: equal to the bit
        assert torch.equal(value, saved["model"][name]), name
    assert tuned.state.step == 0 and not tuned.optimizer.state  # the optimiser and schedule start afresh
    tuned.fit()
    assert tuned.state.step == 2
    weight = "encoder.rnn.weight_hh_l0"
    assert not torch.equal(tuned.model.state_dict()[weight], saved["model"][weight])  # and then it trains
    # the statistics are the checkpoint's: not re-estimated on the new data
    assert torch.equal(tuned.model.frontend.stats_count, saved["model"]["frontend.stats_count"])
    card = torch.load(tmp_path / "b" / "run" / "checkpoints" / "last.pt", weights_only=False)["card"]
    assert card["training"]["init_from"] == str(last)  # the model card says where it started
    # statistics not taken from the checkpoint are gathered on this run's data, as in a new run
    fresh = Trainer(_cfg(tmp_path / "c", 4, *small, f"data.train_manifest={new}", f"trainer.init_from={last}",
                         "trainer.init_exclude=[frontend]"), tmp_path / "c" / "run")
    count = fresh.model.frontend.stats_count
    assert count.item() > 0 and not torch.equal(count, saved["model"]["frontend.stats_count"])


def test_fine_tuning_refuses_other_model_settings_and_text_the_vocabulary_cannot_spell(tmp_path):
    from speechkit.data.errors import DataError
    from speechkit.rundir import RunDirError

    first = Trainer(_cfg(tmp_path / "a", 2, "encoder.hidden_size=8", "trainer.max_steps=1"), tmp_path / "a" / "run")
    first.fit()
    last = tmp_path / "a" / "run" / "checkpoints" / "last.pt"
    with pytest.raises(RunDirError, match=r"encoder.hidden_size: 8 in the checkpoint, 12 now"):
        Trainer(_cfg(tmp_path / "b", 2, "encoder.hidden_size=12", f"trainer.init_from={last}"), tmp_path / "b" / "run")
    rows = [dict(r, text="bin blue qu'il") for r in sample_rows("test", 2)]  # an apostrophe GRID never has
    (tmp_path / "c").mkdir()
    new = write_manifest(tmp_path / "c" / "new.jsonl", rows)
    with pytest.raises(DataError, match=r"(?s)new.jsonl:1: .*\"'\".*checkpoint's vocabulary \(trainer.init_from\)"):
        Trainer(_cfg(tmp_path / "c", 2, "encoder.hidden_size=8", f"trainer.init_from={last}",
                     f"data.train_manifest={new}"), tmp_path / "c" / "run")


def test_a_run_saved_before_fine_tuning_existed_still_resumes(tmp_path):
    from speechkit.rundir import check_resume_config

    cfg = _cfg(tmp_path, 2, "encoder.hidden_size=8")
    saved = OmegaConf.to_container(cfg, resolve=True)
    del saved["trainer"]["init_from"]  # the key came later: a checkpoint written before has none
    del saved["trainer"]["ema_decay"], saved["data"]["sortagrad"]  # likewise, at their defaults now
    del saved["aligner"], saved["inter_ctc"]  # the whole groups came later (inter_ctc.layers: a list, [] by default)
    del saved["trainer"]["stop_at_wer"]
    check_resume_config(cfg, {"config": saved}, tmp_path / "last.pt")  # no refusal
    # a stopping rule, like early_stop_patience: a resumed run may set one
    check_resume_config(_cfg(tmp_path, 2, "encoder.hidden_size=8", "trainer.stop_at_wer=0.05"), {"config": saved},
                        tmp_path / "last.pt")
    from speechkit.rundir import RunDirError

    averaged = _cfg(tmp_path, 2, "encoder.hidden_size=8", "trainer.ema_decay=0.9")  # not how the old run trained
    with pytest.raises(RunDirError, match="trainer.ema_decay"):
        check_resume_config(averaged, {"config": saved}, tmp_path / "last.pt")
    aligned = _cfg(tmp_path, 2, "encoder.hidden_size=8", "aligner.weight=0.3")
    with pytest.raises(RunDirError, match="aligner.weight"):
        check_resume_config(aligned, {"config": saved}, tmp_path / "last.pt")
    inner = _cfg(tmp_path, 2, "encoder.hidden_size=8", "inter_ctc.layers=[1]")
    with pytest.raises(RunDirError, match="inter_ctc.layers"):
        check_resume_config(inner, {"config": saved}, tmp_path / "last.pt")


def test_fine_tuning_with_a_new_vocabulary_takes_every_weight_but_the_excluded_head(tmp_path):
    from speechkit.rundir import RunDirError

    first = Trainer(_cfg(tmp_path / "a", 4, "encoder.hidden_size=8", "trainer.max_steps=1"), tmp_path / "a" / "run")
    first.fit()
    last = tmp_path / "a" / "run" / "checkpoints" / "last.pt"
    saved = torch.load(last, weights_only=False)
    rows = [dict(r, text="bin blue") for r in sample_rows("test", 4)]  # its own, smaller vocabulary
    (tmp_path / "b").mkdir()
    new = write_manifest(tmp_path / "b" / "new.jsonl", rows)
    common = ("encoder.hidden_size=8", f"data.train_manifest={new}", f"data.dev_manifest={new}",
              f"trainer.init_from={last}", "tokenizer.lowercase=true")  # a tokenizer setting the checkpoint lacks
    with pytest.raises(RunDirError, match=r"tokenizer.lowercase"):  # the vocabulary is the checkpoint's …
        Trainer(_cfg(tmp_path / "b", 4, *common), tmp_path / "b" / "run")
    tuned = Trainer(_cfg(tmp_path / "b", 4, *common, "trainer.init_exclude=[head]"), tmp_path / "b" / "run")
    assert tuned.tokenizer.tokens[1:] == sorted(set("bin blue"))  # … unless the head is new: fitted here
    for name, value in tuned.model.state_dict().items():
        if name.startswith("head."):
            assert value.shape[0] == len(tuned.tokenizer) < saved["model"][name].shape[0], name
        else:
            assert torch.equal(value, saved["model"][name]), name
    with pytest.raises(RunDirError, match=r"'hed' names none of the checkpoint's weights \(its parts: .*head"):
        Trainer(_cfg(tmp_path / "b", 4, *common, "trainer.init_exclude=[hed]"), tmp_path / "b" / "run")


def test_several_training_manifests_are_joined_in_order(tmp_path):
    # two corpora in their own folders, the second with paths relative to its manifest: trained together,
    # each example still naming its own file and line; the model card lists both manifests
    import shutil

    from speechkit.rundir import check_resume_config

    (tmp_path / "a").mkdir()
    first = write_manifest(tmp_path / "a" / "train.jsonl", sample_rows("train", 3))
    rows = sample_rows("train", 5)[3:]
    (tmp_path / "b" / "audio").mkdir(parents=True)
    for r in rows:
        src = r["audio_filepath"]
        r["audio_filepath"] = f"audio/{src.rsplit('/', 1)[-1]}"
        shutil.copy(src, tmp_path / "b" / r["audio_filepath"])
    second = write_manifest(tmp_path / "b" / "train.jsonl", rows)
    cfg = _cfg(tmp_path, 2, f"data.train_manifest=[{first},{second}]", "encoder.hidden_size=8",
               "data.batch_size=5", "trainer.max_steps=1")
    trainer = Trainer(cfg, tmp_path / "run")
    assert len(trainer.train_examples) == 5
    assert [ex.where for ex in trainer.train_examples] == [
        *(f"{first}:{n}" for n in (1, 2, 3)), *(f"{second}:{n}" for n in (1, 2))]
    assert trainer.train_examples[4].path == tmp_path / "b" / rows[1]["audio_filepath"]
    trainer.fit()
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert saved["card"]["data"]["train"]["manifest"] == [str(first), str(second)]
    assert saved["card"]["data"]["train"]["utterances"] == 5
    from speechkit.info import format_card

    assert f"train  {first} + {second}  (5 utterances" in format_card(saved["card"], "last.pt")
    check_resume_config(cfg, saved, tmp_path / "last.pt")  # the same list: no refusal

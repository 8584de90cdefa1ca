"""Training batches as features: the raw augmentations and the frontend in the loader (data.FrontendCollate)."""

from __future__ import annotations

import pytest
import torch

from speechkit.data.dataset import FrontendCollate, collate
from speechkit.data.sampler import EpochBatches
from speechkit.trainer import Trainer
from tests.test_trainer import _cfg  # the trainer tests' config: tiny model, CPU, no workers


def _trainer(tmp_path, *overrides) -> Trainer:
    return Trainer(
        _cfg(tmp_path, 8, "encoder.hidden_size=8", "data.batch_size=4", *overrides), tmp_path / "run"
    )


def test_loader_features_are_the_models_own_frontend_of_the_same_batch(tmp_path):
    trainer = _trainer(tmp_path, "augment=none", "data.frontend_in_workers=true")
    assert trainer.loader_stage == "features"
    batches = [[0, 1, 2, 3]]
    feats = next(iter(trainer.train_loader(EpochBatches(batches), 0)))
    raw = next(iter(trainer._loader(trainer.train_set, EpochBatches(batches))))
    assert feats.stage == "features" and raw.stage == "raw"
    want, want_lengths = trainer.model.frontend(raw.x, raw.lengths)
    assert torch.equal(feats.lengths, want_lengths)
    torch.testing.assert_close(feats.x, want, atol=1e-5, rtol=1e-5)
    trainer.model.eval()  # no feature stage runs in eval mode: the same log-probs either way
    with torch.no_grad():
        a, a_len = trainer.model(feats.x, feats.lengths, stage="features")
        b, b_len = trainer.model(raw.x, raw.lengths)
    assert torch.equal(a_len, b_len)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_a_batchs_random_draws_depend_on_the_seed_and_its_examples_alone(tmp_path):
    trainer = _trainer(tmp_path, "augment=[speed,specaugment]", "augment.speed.factors=[0.8,1.25]")
    m = trainer.model
    items = [trainer.train_set[i] for i in range(4)]

    def features(seed):
        return FrontendCollate(m.augment, m.frontend, seed)(items)

    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = features(5)
    assert torch.equal(torch.get_rng_state(), state)  # the process's own stream is left as it was
    torch.manual_seed(99)
    b = features(5)
    assert torch.equal(a.lengths, b.lengths)
    torch.testing.assert_close(a.x, b.x, atol=1e-5, rtol=1e-5)
    # speed perturbation changes lengths: another seed draws other factors for these four utterances
    others = [features(seed).lengths for seed in range(6, 12)]
    assert any(not torch.equal(a.lengths, lengths) for lengths in others)
    raw = collate(items)
    _, plain = m.frontend(raw.x, raw.lengths)  # and speed was applied: not every draw leaves all at 1.0
    assert any(not torch.equal(plain, lengths) for lengths in [a.lengths, *others])


def test_a_loader_worker_draws_what_the_main_process_draws(tmp_path):
    trainer = _trainer(tmp_path, "augment=[speed,specaugment]", "data.frontend_in_workers=true")
    batches = [[0, 1, 2, 3], [4, 5, 6, 7]]
    here = list(trainer.train_loader(EpochBatches(batches), 3))
    trainer.cfg.data.num_workers = 1
    there = list(trainer.train_loader(EpochBatches(batches), 3))
    for a, b in zip(here, there, strict=True):
        assert a.stage == b.stage == "features" and a.indices == b.indices
        assert torch.equal(a.lengths, b.lengths)
        torch.testing.assert_close(a.x, b.x, atol=1e-5, rtol=1e-5)


def test_auto_runs_the_frontend_in_workers_on_a_cpu_with_workers_only(tmp_path):
    assert _trainer(tmp_path / "a").loader_stage == "raw"  # no workers: in the step
    assert _trainer(tmp_path / "b", "data.num_workers=2").loader_stage == "features"
    assert _trainer(tmp_path / "c", "data.num_workers=2", "data.frontend_in_workers=false").loader_stage == "raw"


def give_the_frontend_a_weight(monkeypatch) -> None:
    """Every model built from here on has a trainable weight, ``scale``, in its frontend."""
    from speechkit.pipeline import CTCModel

    real = CTCModel.from_config.__func__

    def with_weight(cls, *args, **kwargs):
        model = real(cls, *args, **kwargs)
        model.frontend.register_parameter("scale", torch.nn.Parameter(torch.ones(1)))
        return model

    monkeypatch.setattr(CTCModel, "from_config", classmethod(with_weight))


def test_a_trainable_frontend_stays_in_the_model_and_unknown_settings_are_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="data.frontend_in_workers='maybe': use auto, true or false"):
        _trainer(tmp_path / "a", "data.frontend_in_workers=maybe")
    give_the_frontend_a_weight(monkeypatch)
    assert _trainer(tmp_path / "b", "data.num_workers=2", "augment=specaugment").loader_stage == "raw"
    with pytest.raises(ValueError, match="trainable weights"):
        _trainer(tmp_path / "c", "data.frontend_in_workers=true")
    # the raw augmentations, which have none, still run in the workers; the frontend in the step
    trainer = _trainer(tmp_path / "d", "data.num_workers=2", "augment=[speed,specaugment]")
    assert trainer.loader_stage == "augmented"
    trainer.cfg.data.num_workers = 0  # the same draws in the main process (test above)
    batch = next(iter(trainer.train_loader(EpochBatches([[0, 1, 2, 3]]), 0)))
    assert batch.stage == "augmented" and batch.x.dim() == 2  # waveforms, perturbed
    items = [trainer.train_set[i] for i in range(4)]
    want = FrontendCollate(trainer.model.augment, trainer.model.frontend, hash((trainer.tcfg.seed, 0, 0)))(items)
    trainer.model.eval()  # the frontend of the augmented batch: the features the loader would have made
    with torch.no_grad():
        feats, lengths = trainer.model.frontend(batch.x, batch.lengths)
    assert torch.equal(lengths, want.lengths)
    torch.testing.assert_close(feats, want.x, atol=1e-5, rtol=1e-5)


def test_training_on_loader_features_learns(tmp_path):
    trainer = _trainer(
        tmp_path,
        "augment=[gain,specaugment]",
        "data.frontend_in_workers=true",
        "trainer.max_steps=4",
        "trainer.eval_every_epochs=100",
        "trainer.warmup_steps=1",
    )
    trainer.fit()
    assert trainer.state.step == 4
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in trainer.state.losses)

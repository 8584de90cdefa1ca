"""data.feature_cache: the frontend's output of every training utterance computed once, before the first step."""

from __future__ import annotations

import pytest
import torch

from speechkit.data.dataset import ManifestDataset, Skipped
from speechkit.data.sampler import EpochBatches
from tests.conftest import sample_rows, write_manifest
from tests.test_frontend_in_workers import _trainer, give_the_frontend_a_weight

# float16 keeps 11 significant bits: rounding ≤ 2^-11 of a value; twice that for the batch composition's own
# float32 noise (another batch, another summation order), still far below any real difference
FLOAT16_RELATIVE = 2.0**-10


def test_cached_batches_are_the_frontends_output_of_the_same_examples(tmp_path):
    trainer = _trainer(tmp_path, "augment=specaugment", "data.feature_cache=true")
    assert trainer.loader_stage == "cached"
    batches = [[0, 1, 2, 3], [7, 5]]
    raw_set = ManifestDataset(trainer.train_examples, trainer.model.frontend.load, trainer.tokenizer)
    raw_loader = trainer._loader(raw_set, EpochBatches(batches))
    for cached, raw in zip(trainer.train_loader(EpochBatches(batches), 0), raw_loader, strict=True):
        assert cached.stage == "features" and cached.indices == raw.indices
        trainer.model.frontend.eval()
        with torch.no_grad():
            want, frames = trainer.model.frontend(raw.x, raw.lengths)
        assert torch.equal(cached.lengths, frames)
        assert torch.equal(cached.targets, raw.targets) and torch.equal(
            cached.target_lengths, raw.target_lengths
        )
        assert float((cached.x - want).abs().max()) <= FLOAT16_RELATIVE * float(want.abs().max())


def test_training_on_the_cache_learns_and_its_feature_stages_still_run(tmp_path):
    trainer = _trainer(tmp_path, "augment=specaugment", "data.feature_cache=true", "trainer.max_steps=4",
                       "trainer.eval_every_epochs=100", "trainer.warmup_steps=1")  # fmt: skip
    trainer.fit()
    assert trainer.state.step == 4
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in trainer.state.losses)
    batch = next(iter(trainer.train_loader(EpochBatches([[0, 1, 2, 3]]), 0)))
    trainer.model.train()
    with torch.no_grad():  # SpecAugment masks the cached features in training, a fresh draw each time
        a, _ = trainer.model(batch.x, batch.lengths, stage="features")
        b, _ = trainer.model(batch.x, batch.lengths, stage="features")
    assert not torch.equal(a, b)


def test_a_bad_example_stays_a_counted_skip(tmp_path):
    rows = sample_rows("train", 8)
    rows[3]["audio_filepath"] = str(tmp_path / "missing.wav")
    manifest = write_manifest(tmp_path / "bad.jsonl", rows)
    trainer = _trainer(tmp_path, "augment=none", "data.feature_cache=true", "data.on_error=skip",
                       f"data.train_manifest={manifest}")  # fmt: skip
    assert isinstance(trainer.train_set[3], Skipped) and "missing.wav" in trainer.train_set[3].reason
    batch = next(iter(trainer.train_loader(EpochBatches([[2, 3, 4]]), 0)))
    assert batch.indices == [2, 4] and [s.index for s in batch.skipped] == [3]


def test_raw_augmentations_and_trainable_frontends_are_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"data.feature_cache=true keeps the frontend's output of the unaugmented "
                                         r"audio, but speed must run before the frontend every epoch"):  # fmt: skip
        _trainer(tmp_path / "a", "augment=[speed,specaugment]", "data.feature_cache=true")
    give_the_frontend_a_weight(monkeypatch)
    with pytest.raises(
        ValueError, match=r"data.feature_cache=true: the \w+ frontend has trainable weights \(scale\)"
    ):
        _trainer(tmp_path / "b", "augment=none", "data.feature_cache=true")

"""Every recipe under conf/recipe composes, and its reference run says what ``speechkit-train`` compares with."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from speechkit.config import CONF_DIR, store_schemas

RECIPES = sorted(p.stem for p in (CONF_DIR / "recipe").glob("*.yaml"))


def _compose(recipe: str, *overrides: str):
    store_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[f"recipe={recipe}", *overrides])


@pytest.mark.parametrize("recipe", RECIPES)
def test_each_recipe_composes_with_a_complete_reference(recipe):
    cfg = _compose(recipe)
    assert cfg.run_name == recipe
    ref = cfg.get("reference")
    if ref is not None:  # what the end-of-run line quotes: a step count, a dev WER, where it is reported
        assert isinstance(ref.steps, int) and ref.steps > 0 and 0 <= ref.dev_wer < 1 and ref.source
        if ref.get("minutes"):  # a wall-clock recipe: its reference is at the recipe's own budget
            assert ref.minutes == cfg.trainer.max_minutes


def test_the_10_minute_recipe_is_asr_grid_on_the_clock_with_the_cheaper_settings():
    base, fast = _compose("asr_grid"), _compose("asr_grid_10min")
    assert fast.data.root == base.data.root and fast.frontend.name == base.frontend.name == "fbank"
    assert (fast.frontend.n_mels, fast.encoder.hidden_size, fast.aligner.weight) == (40, 192, 0.0)
    assert fast.augment.specaugment.freq_masks < base.augment.specaugment.freq_masks
    assert fast.augment.specaugment.time_masks < base.augment.specaugment.time_masks
    assert fast.inter_ctc.weight > 0 and fast.trainer.max_minutes == 10 and fast.trainer.max_steps > 10 * base.trainer.max_steps
    # the same share of the bands masked as asr_grid's 15 of 80
    assert fast.augment.specaugment.freq_width / 40 == pytest.approx(base.augment.specaugment.freq_width / 80, abs=0.02)

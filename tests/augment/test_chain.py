"""The augment chain: order, the raw/feature split around the frontend, Hydra's list syntax, old configs."""

from __future__ import annotations

import logging

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from speechkit.augment.chain import AugmentChain, stage_nodes
from speechkit.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_payload,
    read_checkpoint,
    save_checkpoint,
)
from speechkit.config import CONF_DIR, _check_overrides, store_schemas
from speechkit.pipeline import CTCModel
from speechkit.registry import describe
from speechkit.rundir import RunDirError, check_resume_config
from tests.conftest import sample_rows, write_manifest

TOKENS = ["<blank>", " ", "a", "b"]
SMALL_MODEL = ("encoder.hidden_size=8", "encoder.num_layers=1", "encoder.subsample=1")
SMALL_REVERB = ("augment.reverb.n_rirs=2", "augment.reverb.rt60_max=0.3", "augment.reverb.prob=1.0")


def _compose(*overrides: str, search: str | None = None):
    store_schemas()
    extra = [f"hydra.searchpath=[file://{search}]"] if search else []
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[*SMALL_MODEL, *extra, *overrides])


class Logged(nn.Module):
    """A stage that records its name and the rank of what it was given, and adds 1."""

    def __init__(self, name: str, raw: bool, log: list) -> None:
        super().__init__()
        self.plugin_name, self.raw, self.log = name, raw, log

    def forward(self, x, lengths):
        self.log.append((self.plugin_name, x.dim()))
        return x + 1, lengths


class Frontend(nn.Module):
    output_dim = 3

    def __init__(self, log: list) -> None:
        super().__init__()
        self.log = log

    def forward(self, x, lengths):
        self.log.append(("frontend", x.dim()))
        return x[..., None].expand(-1, -1, 3), lengths


class Encoder(nn.Module):
    output_dim = 3

    def forward(self, x, lengths):
        return x, lengths


def test_raw_stages_run_in_order_before_the_frontend_and_feature_stages_after_it_in_training_only():
    calls: list = []
    chain = AugmentChain(
        [Logged("speed", True, calls), Logged("reverb", True, calls), Logged("specaugment", False, calls)]
    )
    model = CTCModel(Frontend(calls), chain, Encoder(), len(TOKENS)).train()
    model(torch.zeros(2, 5), torch.tensor([5, 3]))
    assert calls == [("speed", 2), ("reverb", 2), ("frontend", 2), ("specaugment", 3)]
    assert chain.summary == "speed → reverb → specaugment" and chain.n_raw == 2
    calls.clear()
    model.eval()(torch.zeros(2, 5), torch.tensor([5, 3]))
    assert calls == [("frontend", 2)]


def test_a_raw_stage_after_a_feature_stage_is_an_error_naming_the_order():
    with pytest.raises(
        ValueError,
        match=r"'speed' works on the raw batch.*after 'specaugment'.*"
        r"augment=\[speed,specaugment\]",
    ):
        AugmentChain.from_config({"specaugment": {"name": "specaugment"}, "speed": {"name": "speed"}}, 16000)


def test_a_list_composes_in_order_with_per_stage_overrides_and_builds_the_chain():
    cfg = _compose(
        "augment=[speed,reverb,specaugment]",
        "augment.speed.factors=[0.8,1.2]",
        "augment.specaugment.time_masks=3",
        "augment.reverb.prob=0.25",
    )
    assert list(cfg.augment) == ["speed", "reverb", "specaugment"]
    model = CTCModel.from_config(cfg, len(TOKENS))
    speed, reverb, spec = model.augment.stages
    assert model.augment.names == ["speed", "reverb", "specaugment"] and model.augment.n_raw == 2
    assert speed.cfg.factors == [0.8, 1.2] and reverb.cfg.prob == 0.25 and spec.cfg.time_masks == 3
    assert speed.sample_rate == reverb.sample_rate == cfg.frontend.sample_rate  # from the frontend
    assert not any(k.startswith("augment.") for k in model.state_dict())  # nothing of theirs is saved


def test_a_recipe_chooses_a_list_with_override_and_sets_a_stage(tmp_path):
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "chained.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n"
        "  - override /augment: [speed, specaugment]\n"
        "augment:\n"
        "  speed:\n"
        "    factors: [0.95, 1.05]\n"
    )
    cfg = _compose("recipe=chained", search=str(tmp_path))
    assert list(cfg.augment) == ["speed", "specaugment"] and cfg.augment.speed.factors == [0.95, 1.05]
    # the command line replaces the recipe's list; the recipe's speed settings are then left unused
    cfg = _compose("recipe=chained", "augment=[specaugment]", search=str(tmp_path))
    assert list(stage_nodes(cfg.augment)) == ["specaugment"]


def test_a_single_choice_composes_and_builds_as_before():
    model = CTCModel.from_config(_compose(), len(TOKENS))  # conf/config.yaml: augment: specaugment
    assert model.augment.names == ["specaugment"] and model.augment.n_raw == 0
    cfg = _compose("augment=specaugment", "augment.specaugment.time_masks=5")
    assert CTCModel.from_config(cfg, len(TOKENS)).augment.stages[0].cfg.time_masks == 5
    assert CTCModel.from_config(_compose("augment=none"), len(TOKENS)).augment.names == ["none"]
    empty = CTCModel.from_config(_compose("augment=[]"), len(TOKENS)).augment
    x = torch.randn(2, 4, 3)
    assert empty.names == [] and empty.after_frontend(x, torch.tensor([4, 2]))[0] is x


def test_the_option_check_names_a_bad_element_of_a_list_and_a_repeated_one():
    store_schemas()
    with pytest.raises(
        SystemExit, match=r"unknown augment 'revrb' in \[speed,revrb\]; valid choices: .*reverb"
    ):
        _check_overrides("config", ["augment=[speed,revrb]"])
    with pytest.raises(SystemExit, match=r"augment 'gain' is chosen twice in \[gain,noise,gain\]"):
        _check_overrides("config", ["augment=[gain,noise,gain]"])
    with pytest.raises(SystemExit, match=r"unknown augment 'specaugmnt'; valid"):
        _check_overrides("config", ["augment=specaugmnt"])
    _check_overrides("config", ["augment=[speed,specaugment]", "augment.speed.factors=[0.9,1.1]"])  # passes


def test_settings_of_a_stage_not_chosen_are_ignored_with_a_warning(caplog):
    node = OmegaConf.create({"speed": {"factors": [1.0]}, "gain": {"name": "gain", "prob": 1.0}})
    with caplog.at_level(logging.WARNING, logger="speechkit.augment.chain"):
        chain = AugmentChain.from_config(node, sample_rate=8000)
    assert chain.names == ["gain"] and chain.stages[0].sample_rate == 8000
    assert "augment.speed is set but it is not in the chain ['gain']" in caplog.text


def test_a_waveform_stage_with_a_frontend_without_a_sample_rate_is_an_error():
    with pytest.raises(
        ValueError, match="'speed' works on audio waveforms, but the frontend has no sample rate"
    ):
        AugmentChain.from_config({"speed": {"name": "speed"}}, sample_rate=None)


def test_plugins_listing_says_augment_takes_a_list():
    text = describe("augment")
    assert text.splitlines()[0].startswith("augment:  (one, or a list run in order: augment=[a,b]")
    for name in ("speed", "reverb", "telephone", "gain", "noise", "silence", "specaugment"):
        assert f"\n  {name} " in text


def _old_style_checkpoint(tmp_path, augment: dict):
    """A checkpoint whose config has one augment node, ``augment: {name: …}``, as before chains."""
    cfg = _compose()
    torch.manual_seed(0)
    model = CTCModel.from_config(cfg, len(TOKENS))
    config = OmegaConf.to_container(cfg, resolve=True)
    config["augment"] = augment
    path = tmp_path / "old.pt"
    save_checkpoint(path, model_payload(config, TOKENS, model))
    return path, config


def test_a_checkpoint_written_before_chains_loads_and_resumes_with_the_same_single_choice(tmp_path):
    spec = dict(_compose().augment.specaugment)
    path, _ = _old_style_checkpoint(tmp_path, spec)  # {name: specaugment, freq_masks: 2, …}
    ckpt = read_checkpoint(path)  # check_plugin reads the old form
    pipe = load_checkpoint(path)
    assert pipe.model.augment.names == ["specaugment"]
    check_resume_config(_compose(), ckpt, path)  # augment=specaugment now: the same run
    with pytest.raises(RunDirError, match=r"augment\.speed\.factors: '\(absent\)' in the checkpoint"):
        check_resume_config(_compose("augment=[speed,specaugment]"), ckpt, path)


def test_a_checkpoint_naming_an_augment_not_installed_names_it_in_either_form(tmp_path):
    path, _ = _old_style_checkpoint(tmp_path, {"name": "their_augment"})
    with pytest.raises(CheckpointError, match="augment plugin 'their_augment', which is not installed"):
        read_checkpoint(path)
    path, _ = _old_style_checkpoint(
        tmp_path, {"speed": {"name": "speed"}, "theirs": {"name": "their_augment"}}
    )
    with pytest.raises(CheckpointError, match="augment plugin 'their_augment', which is not installed"):
        read_checkpoint(path)


def test_three_training_steps_with_speed_reverb_and_specaugment(tmp_path):
    from speechkit.trainer import Trainer

    train = write_manifest(tmp_path / "train.jsonl", sample_rows("train", 4))
    cfg = _compose(
        f"data.train_manifest={train}",
        f"data.dev_manifest={train}",
        "data.num_workers=0",
        "data.batch_size=2",
        "trainer.max_steps=3",
        "trainer.device=cpu",
        "trainer.seed=3",
        "augment=[speed,reverb,specaugment]",
        *SMALL_REVERB,
    )
    trainer = Trainer(cfg, tmp_path / "run")
    seen = []
    first = trainer.model.augment.stages[0]
    first.register_forward_hook(lambda m, args, out: seen.append((args[1].tolist(), out[1].tolist())))
    metrics = trainer.fit()
    assert trainer.state.step == 3 and metrics["dev_wer"] >= 0
    assert len(seen) == 3 and any(before != after for before, after in seen)  # speed changed some lengths
    pipe = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert pipe.model.augment.names == ["speed", "reverb", "specaugment"]


def test_a_run_saved_before_a_plugin_setting_existed_resumes_when_the_setting_is_at_its_default(tmp_path):
    """encoder.lookahead and frontend.online_prior_s came after runs that must still resume."""
    path, config = _old_style_checkpoint(tmp_path, dict(_compose().augment.specaugment))
    ckpt = read_checkpoint(path)
    del ckpt["config"]["encoder"]["lookahead"], ckpt["config"]["frontend"]["online_prior_s"]
    check_resume_config(_compose(), ckpt, path)  # absent there, the default here: the same run
    with pytest.raises(RunDirError, match=r"encoder\.lookahead: '\(absent\)' in the checkpoint, 2 now"):
        check_resume_config(_compose("encoder.lookahead=2"), ckpt, path)
    with pytest.raises(RunDirError, match=r"augment\.speed"):  # a stage the run did not have still differs
        check_resume_config(_compose("augment=[speed,specaugment]"), ckpt, path)

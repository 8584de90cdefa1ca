from dataclasses import dataclass

import pytest
from hydra.core.config_store import ConfigStore

from speechkit import build
from speechkit.registry import PluginError, describe, register, registry


def test_build_passes_config_and_context_to_the_plugin():
    enc = build("encoder", "blstm", hidden_size=32, num_layers=1, input_size=10)
    assert enc.cfg.hidden_size == 32 and enc.output_dim == 64


def test_build_takes_a_config_node_as_a_dictconfig_a_dict_or_a_dataclass_with_context_beside_it():
    from omegaconf import OmegaConf

    from speechkit.encoders.rnn import RNNConfig

    node = {"name": "blstm", "hidden_size": 24, "num_layers": 1}
    for given in (node, OmegaConf.create(node)):
        enc = build("encoder", given, input_size=10)
        assert enc.cfg.hidden_size == 24 and enc.cfg.num_layers == 1 and enc.output_dim == 48
    resolved = build("encoder", OmegaConf.create({"h": 12, "enc": {"name": "blstm", "hidden_size": "${h}"}}).enc,
                     input_size=4)
    assert resolved.cfg.hidden_size == 12  # interpolations resolved
    structured = registry("encoder").get("blstm").node(hidden_size=8)
    assert build("encoder", structured, input_size=4).output_dim == 16
    with pytest.raises(PluginError, match="no plugin name"):
        build("encoder", RNNConfig(), input_size=4)  # a bare parameter dataclass has no name


def test_unknown_plugin_name_lists_the_valid_choices():
    with pytest.raises(PluginError, match=r"unknown encoder plugin 'blstmm'; valid choices: .*blstm"):
        build("encoder", "blstmm", input_size=3)


def test_unknown_parameter_lists_the_valid_parameters():
    with pytest.raises(PluginError, match=r"no parameter 'hiden_size'.*valid parameters: .*hidden_size"):
        build("encoder", "blstm", hiden_size=3, input_size=3)


def test_registering_stores_the_config_in_hydras_config_store_with_its_name():
    node = ConfigStore.instance().load("encoder/blstm.yaml").node
    assert node.name == "blstm" and node.hidden_size == 256


def test_two_classes_under_one_name_is_an_error():
    @dataclass
    class Cfg:
        x: int = 1

    @register("augment", "test_dup_plugin", Cfg)
    class A:
        def __init__(self, cfg):
            self.cfg = cfg

    with pytest.raises(PluginError, match="registered twice"):

        @register("augment", "test_dup_plugin", Cfg)
        class B:
            def __init__(self, cfg):
                pass

    assert build("augment", "test_dup_plugin", x=5).cfg.x == 5
    del registry("augment").plugins["test_dup_plugin"]


def test_name_field_is_reserved():
    @dataclass
    class Cfg:
        name: str = "x"

    with pytest.raises(PluginError, match="reserved"):
        register("augment", "test_reserved", Cfg)(type("C", (), {}))


def test_describe_lists_every_kind_with_parameters_and_defaults():
    text = describe()
    for kind in ("frontend:", "encoder:", "decoder:", "loss:", "augment:", "tokenizer:", "lm:"):
        assert kind in text
    assert "hidden_size: int = 256" in text and "greedy" in text

import os
import pickle

import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir

from speechkit import load_checkpoint
from speechkit.checkpoint import CheckpointError, model_payload, read_checkpoint, save_checkpoint
from speechkit.config import CONF_DIR, store_schemas
from speechkit.pipeline import CTCModel

TOKENS = ["<blank>", " ", "a", "b"]


def _config(*overrides):
    store_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=["encoder.hidden_size=8", "encoder.num_layers=1", *overrides])


@pytest.fixture
def ckpt(tmp_path):
    cfg = _config()
    torch.manual_seed(0)
    model = CTCModel.from_config(cfg, len(TOKENS))
    path = tmp_path / "model.pt"
    save_checkpoint(path, model_payload(cfg, TOKENS, model))
    return path, model


def test_a_checkpoint_alone_rebuilds_the_model_and_transcribes(ckpt, tmp_path):
    path, model = ckpt
    pipe = load_checkpoint(path)
    x = torch.randn(2, 8000)
    lengths = torch.tensor([8000, 5000])
    expected, _ = model.eval()(x, lengths)
    got, _ = pipe.log_probs(x, lengths)
    assert torch.allclose(got, expected)
    sf.write(tmp_path / "a.wav", x[0].numpy() * 0.1, 16000)
    (transcript,) = pipe.transcribe([tmp_path / "a.wav"])
    assert set(transcript.text) <= set("ab ")


def test_save_is_atomic_and_leaves_no_temporary_files(ckpt):
    path, _ = ckpt
    assert os.listdir(path.parent) == ["model.pt"]


def test_truncated_checkpoint_is_a_clear_error(ckpt):
    path, _ = ckpt
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="model.pt: truncated or corrupt"):
        read_checkpoint(path)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/speechkit-pwned",))


def test_a_checkpoint_carrying_pickled_code_is_refused_not_run(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "speechkit-checkpoint", "payload": Evil()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(path)
    assert not os.path.exists("/tmp/speechkit-pwned")


def test_incompatible_format_version_says_which_versions(ckpt):
    path, _ = ckpt
    data = torch.load(path, weights_only=True)
    data["format_version"] = 99
    save_checkpoint(path, data)  # re-sealed: its checksums match the edit
    with pytest.raises(CheckpointError, match="format version 99.*reads versions 1, 2"):
        read_checkpoint(path)


def test_checkpoint_from_a_plugin_not_installed_names_it(ckpt):
    path, _ = ckpt
    data = torch.load(path, weights_only=True)
    data["config"]["frontend"]["name"] = "their_frontend"
    save_checkpoint(path, data)  # re-sealed: its checksums match the edit
    with pytest.raises(CheckpointError, match="frontend plugin 'their_frontend', which is not installed"):
        read_checkpoint(path)


def test_weights_that_do_not_fit_the_config_are_a_clear_error(ckpt):
    path, _ = ckpt
    data = torch.load(path, weights_only=True)
    data["config"]["encoder"]["hidden_size"] = 16
    save_checkpoint(path, data)  # re-sealed: its checksums match the edit
    with pytest.raises(CheckpointError, match="do not fit.*size mismatch"):
        load_checkpoint(path)


def test_non_finite_weights_are_never_written(tmp_path):
    cfg = _config()
    model = CTCModel.from_config(cfg, len(TOKENS))
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="head.weight"):
        model_payload(cfg, TOKENS, model)


def test_an_unwritable_run_directory_fails_before_training(tmp_path):
    from speechkit.checkpoint import CheckpointError, check_writable

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(CheckpointError, match="not writable.*hydra.run.dir"):
        check_writable(blocker / "run" / "checkpoints", need_bytes=1)
    with pytest.raises(CheckpointError, match="MiB free, but this run's checkpoints need"):
        check_writable(tmp_path / "ok", need_bytes=2**62)
    check_writable(tmp_path / "ok", need_bytes=1)  # and a fine folder passes


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno
    import os

    from speechkit.checkpoint import CheckpointError, save_checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": torch.tensor(1)})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(CheckpointError, match=r"No space left.*MiB free.*the previous checkpoint is untouched"):
        save_checkpoint(path, {"step": torch.tensor(2)})
    monkeypatch.undo()
    assert int(torch.load(path, weights_only=True)["step"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind

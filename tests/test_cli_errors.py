"""The command line's answer to a mistake: the usage line, one ``error:`` line, exit status 2, no traceback
(speechkit/config.py run_hydra); ``--help`` without importing torch."""

from __future__ import annotations

import os
import re
import sys
import textwrap

import pytest
import torch

from speechkit.config import CONF_DIR, USAGE, USER_ERROR_STATUS, user_error
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

RECIPES = sorted(p.stem for p in (CONF_DIR / "recipe").glob("*.yaml"))
COMMANDS = {"speechkit-train": "config", "speechkit-eval": "eval", "speechkit-transcribe": "transcribe",
            "speechkit-export": "export", "speechkit-validate": "validate"}


def the_error(p, command: str) -> str:
    """The one ``error:`` line of a command stopped by a user's mistake (after checking the rest)."""
    assert p.returncode == USER_ERROR_STATUS, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, p.stderr
    assert f"usage: {USAGE[COMMANDS[command]]}" in p.stderr.splitlines()
    return errors[0]


def without_torch(command: str, *args: str):
    """Run ``command`` (its module, as run_cli does) in a process that reports at exit whether torch was imported."""
    module = {"speechkit-train": "speechkit.train", "speechkit-eval": "speechkit.eval",
              "speechkit-transcribe": "speechkit.transcribe"}[command]
    code = textwrap.dedent(f"""
        import atexit, runpy, sys
        atexit.register(lambda: print("torch imported:", "torch" in sys.modules, file=sys.stderr))
        sys.argv = [{command!r}, *{list(args)!r}]
        runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
    """)
    return run_cli(sys.executable, "-c", code, check=False)


# ----------------------------------------------------------------------------- 1. a misspelt recipe


def test_an_unknown_recipe_is_one_error_line_naming_the_recipes_there_are():
    p = run_cli("speechkit-train", "recipe=asr_gird", check=False)
    line = the_error(p, "speechkit-train")
    assert "'asr_gird'" in line and all(r in line for r in RECIPES), line
    assert "is not set" not in p.stderr  # stopped before training started without a recipe


def test_an_unknown_recipe_in_a_sweep_is_named_before_any_job_runs():
    p = run_cli("speechkit-train", "-m", "recipe=demo,asr_gird", check=False)
    assert "'asr_gird'" in the_error(p, "speechkit-train")


def test_a_recipe_in_a_folder_of_hydra_searchpath_is_found(tmp_path):
    (tmp_path / "conf" / "recipe").mkdir(parents=True)
    (tmp_path / "conf" / "recipe" / "mine.yaml").write_text(
        "# @package _global_\ndata:\n  train_manifest: /nonexistent/train.jsonl\n")
    p = run_cli("speechkit-train", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "recipe=mine",
                f"hydra.run.dir={tmp_path / 'run'}", check=False)
    # the recipe was used: training looked for its manifest (a DataError, one line)
    assert "/nonexistent/train.jsonl: manifest not found" in the_error(p, "speechkit-train")


# ----------------------------------------------------------------------------- 2. one line, not a traceback


@pytest.mark.parametrize("command, args, missing", [
    ("speechkit-transcribe", [], ["checkpoint", "input"]),
    ("speechkit-transcribe", ["input=a.wav"], ["checkpoint"]),
    ("speechkit-eval", ["data.test_manifest=test.jsonl"], ["checkpoint"]),
    ("speechkit-export", ["checkpoint=best.pt"], ["out"]),
])
def test_a_missing_mandatory_value_is_the_usage_line_and_one_error_line(command, args, missing):
    p = run_cli(command, *args, check=False)
    line = the_error(p, command)
    assert "MissingMandatoryValue" not in p.stderr
    assert all(f"{k}=" in line for k in missing) and ("input=" in line) == ("input" in missing), line


def test_a_bare_transcribe_answers_without_importing_torch():
    p = without_torch("speechkit-transcribe")
    assert "checkpoint" in the_error(p, "speechkit-transcribe")
    assert "torch imported: False" in p.stderr


def test_an_unknown_plugin_inside_the_config_is_one_error_line(tmp_path):
    p = run_cli("speechkit-train", "recipe=demo", "encoder.name=blstmm", "data.num_workers=0",
                f"hydra.run.dir={tmp_path}", check=False)
    line = the_error(p, "speechkit-train")
    assert "unknown encoder plugin 'blstmm'" in line and "blstm," in line


def test_an_unknown_plugin_option_and_an_unparsable_override_are_one_error_line():
    line = the_error(run_cli("speechkit-train", "encoder=blstmm", check=False), "speechkit-train")
    assert "'blstmm'" in line and "blstm," in line
    line = the_error(run_cli("speechkit-train", "encoder.hidden_size", check=False), "speechkit-train")
    assert "encoder.hidden_size" in line


def test_a_known_key_with_a_value_of_the_wrong_type_is_not_called_unknown():
    line = the_error(run_cli("speechkit-train", "recipe=demo", "trainer.max_steps=abc", check=False), "speechkit-train")
    assert line.startswith("error: trainer.max_steps=abc:") and "Integer" in line, line
    assert "unknown" not in line and "a value of its type" in line


def test_a_setting_speechkit_rejects_is_one_error_line(tmp_path):
    p = run_cli("speechkit-train", f"hydra.run.dir={tmp_path}", check=False)  # no recipe, no manifest
    assert "data.train_manifest is not set" in the_error(p, "speechkit-train")


@pytest.mark.parametrize("mistake", ["trainer.ema_decay=1.5", "data.root=/no_such_folder"])
def test_a_mistake_leaves_no_new_run_directory_and_an_old_one_as_it_was(tmp_path, mistake):
    new = tmp_path / "new"
    p = run_cli("speechkit-train", "recipe=demo", mistake, f"hydra.run.dir={new}", check=False)
    the_error(p, "speechkit-train")
    assert not new.exists()  # no config, log or lock of a run that never started
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.yaml").write_text("the run before\n")
    p = run_cli("speechkit-train", "recipe=demo", mistake, f"hydra.run.dir={old}", check=False)
    the_error(p, "speechkit-train")
    assert (old / "config.yaml").read_text() == "the run before\n"
    assert not (old / ".hydra").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA device")
def test_device_cuda_without_a_gpu_is_one_error_line(tmp_path):
    p = run_cli("speechkit-train", "recipe=demo", "trainer.device=cuda", "data.num_workers=0",
                f"hydra.run.dir={tmp_path}", check=False)
    assert "no CUDA device" in the_error(p, "speechkit-train")


def test_a_missing_checkpoint_file_is_one_error_line(tmp_path):
    p = run_cli("speechkit-transcribe", f"checkpoint={tmp_path / 'best.pt'}", "input=a.wav",
                f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert "best.pt: checkpoint not found" in the_error(p, "speechkit-transcribe")


@pytest.mark.parametrize("debug", [["--debug"], []])
def test_debug_or_hydra_full_error_shows_the_traceback(tmp_path, debug):
    env = None if debug else {**os.environ, "HYDRA_FULL_ERROR": "1"}
    p = run_cli("speechkit-train", *debug, f"hydra.run.dir={tmp_path}", env=env, check=False)
    assert p.returncode == 1 and "Traceback" in p.stderr, p.stderr
    assert "ValueError: data.train_manifest is not set" in p.stderr
    assert "unrecognized arguments" not in p.stderr  # --debug is not passed on to Hydra


BUGGY_TASK = '''
import sys

from speechkit.config import run_hydra


def task(cfg):
    return {}["no such key"]  # a bug, not the user's mistake


if __name__ == "__main__":
    run_hydra(task, "export")
'''


def test_an_unexpected_exception_keeps_its_traceback(tmp_path):
    script = tmp_path / "buggy.py"
    script.write_text(BUGGY_TASK)
    p = run_cli(sys.executable, str(script), "checkpoint=a.pt", "out=b.pt", f"hydra.run.dir={tmp_path}",
                check=False)
    assert p.returncode == 1 and "Traceback" in p.stderr and "KeyError: 'no such key'" in p.stderr, p.stderr
    assert not any(line.startswith("error:") for line in p.stderr.splitlines())


def test_user_error_tells_speechkits_own_messages_from_bugs():
    from speechkit.data.dataset import ManifestDataset
    from speechkit.registry import registry

    with pytest.raises(ValueError) as raised:  # raised by a ``raise`` statement of speechkit
        ManifestDataset([], None, None, on_error="ignore")
    assert user_error(raised.value) == "data.on_error='ignore': use raise or skip"
    with pytest.raises(LookupError) as raised:
        registry("encoder").get("blstmm")
    assert user_error(raised.value).startswith("unknown encoder plugin 'blstmm'")
    with pytest.raises(ValueError) as raised:  # a failing operation, here and in a library: a bug
        int("x")
    assert user_error(raised.value) is None
    with pytest.raises(RuntimeError) as raised:
        torch.zeros(2, 3) @ torch.zeros(2, 3)
    assert user_error(raised.value) is None
    assert user_error(KeyError("k")) is None


# ----------------------------------------------------------------------------- 3. --help without torch


@pytest.mark.parametrize("command", ["speechkit-train", "speechkit-eval", "speechkit-transcribe"])
def test_help_is_printed_by_a_process_that_never_imports_torch(command):
    p = without_torch(command, "--help")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"usage: {USAGE[COMMANDS[command]]}\n")
    assert "torch imported: False" in p.stderr
    assert "--debug" in p.stdout and f"exit status: 0 done; {USER_ERROR_STATUS}" in p.stdout


def test_train_help_lists_the_recipes_and_the_trainer_settings():
    p = run_cli("speechkit-train", "-h")
    assert all(r in p.stdout for r in RECIPES)
    assert "trainer.max_epochs=20" in p.stdout and "data.batch_size=16" in p.stdout
    # a list's default is its factory's, not dataclasses' placeholder
    assert "trainer.init_exclude=[] " in p.stdout and "inter_ctc.layers=[] " in p.stdout and "MISSING" not in p.stdout


# ----------------------------------------------------------------------------- 4. a value out of range, a wrong path


@pytest.mark.parametrize("mistake", [
    "trainer.lr=-1",  # torch's "Invalid learning rate" traceback
    "trainer.lr=0",  # trained, learning nothing
    "trainer.max_steps=-5",  # exit 0 without a step or a checkpoint
    "trainer.max_epochs=0",  # likewise
    "trainer.grad_clip=0",  # every update clipped to nothing
    "trainer.warmup_steps=-1",
    "trainer.min_lr_ratio=1.5",  # a schedule that rises
    "trainer.lr_decay=step",  # a decay there is not
    "trainer.eval_every_epochs=0",  # a ZeroDivisionError after the first epoch
    "data.num_workers=-1",  # torch's DataLoader traceback
    "data.batch_size=-2",  # the whole training set in one batch
])  # fmt: skip
def test_a_trainer_or_data_setting_out_of_range_is_refused_naming_it(mistake):
    from speechkit.trainer import check_settings
    from tests.test_cli_dataroot import composed

    with pytest.raises(ValueError, match=f"^{re.escape(mistake)}(\\.0)?: use "):  # a float setting reads -1.0
        check_settings(composed("recipe=demo", mistake))


@pytest.mark.parametrize("encoder", ["blstm", "bgru", "elman", "tcn"])
@pytest.mark.parametrize("mistake", ["hidden_size=0", "num_layers=0", "dropout=2"])
def test_an_encoder_size_out_of_range_is_refused_naming_the_setting(encoder, mistake):
    from speechkit.registry import build

    key, value = mistake.split("=")  # torch's refusal named neither the setting nor the fix
    with pytest.raises(ValueError, match=f"^encoder.{mistake}(\\.0)?: use "):
        build("encoder", encoder, input_size=10, **{key: float(value) if key == "dropout" else int(value)})


def test_an_unknown_device_is_refused_with_the_usual_answers():
    from speechkit.pipeline import resolve_device

    with pytest.raises(RuntimeError, match="device 'gpu' is not a device torch knows: use auto, cpu, cuda"):
        resolve_device("gpu")  # torch's message lists twenty device types


def test_a_setting_out_of_range_stops_train_with_one_error_line_before_a_run_directory_is_made(tmp_path):
    p = run_cli("speechkit-train", "recipe=demo", "trainer.lr=-1", "data.num_workers=0", "trainer.max_steps=2",
                f"hydra.run.dir={tmp_path / 'run'}", check=False)  # fmt: skip
    assert the_error(p, "speechkit-train").startswith("error: trainer.lr=-1.0: use a positive learning rate")
    assert not (tmp_path / "run").exists()


def test_a_batch_size_of_0_without_batch_seconds_is_refused_naming_batch_seconds(tmp_path):
    p = run_cli("speechkit-train", "recipe=demo", "data.batch_size=0", "data.bucket=false", "data.num_workers=0",
                "trainer.max_steps=2", f"hydra.run.dir={tmp_path / 'run'}", check=False)  # fmt: skip
    assert "data.batch_seconds > 0" in the_error(p, "speechkit-train")  # was: range() arg 3 must not be zero


def test_a_folder_given_as_a_manifest_is_called_a_folder_and_its_manifests_named(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    p = run_cli("speechkit-train", "recipe=demo", f"data.train_manifest={tmp_path}", "data.num_workers=0",
                f"hydra.run.dir={tmp_path / 'run'}", check=False)  # fmt: skip
    line = the_error(p, "speechkit-train")
    assert f"{tmp_path}: a folder, not a manifest file" in line and "train.jsonl" in line, line


def test_eval_and_transcribe_refuse_a_batch_size_of_0_and_an_unknown_device(tiny_run, tmp_path):
    ckpt, test = tiny_run / "run" / "checkpoints" / "best.pt", tiny_run / "test.jsonl"
    for command, args, said in [
        ("speechkit-eval", [f"data.test_manifest={test}", "data.batch_size=0"], "error: data.batch_size=0:"),
        ("speechkit-eval", [f"data.test_manifest={test}", "device=gpu"], "error: device 'gpu' is not a"),
        ("speechkit-transcribe", [f"input={test}", "batch_size=0"], "error: batch_size=0:"),
    ]:
        p = run_cli(command, f"checkpoint={ckpt}", *args, f"hydra.run.dir={tmp_path}", check=False)
        assert the_error(p, command).startswith(said), p.stderr


def test_transcribe_to_a_folder_is_refused_before_decoding(tiny_run, tmp_path):
    p = run_cli("speechkit-transcribe", f"checkpoint={tiny_run / 'run' / 'checkpoints' / 'best.pt'}",
                f"input={tiny_run / 'test.jsonl'}", f"output={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}",
                check=False)  # fmt: skip
    assert f"error: output={tmp_path}: is a folder" in the_error(p, "speechkit-transcribe")
    assert "transcribe:" not in p.stderr  # no progress bar: refused before the first input was decoded


def test_an_lm_file_given_as_decoder_lm_is_answered_with_the_setting_for_a_file(tiny_run, tmp_path):
    p = run_cli("speechkit-transcribe", f"checkpoint={tiny_run / 'run' / 'checkpoints' / 'best.pt'}",
                f"input={tiny_run / 'test.jsonl'}", "decoder=beam", "decoder.lm=word3.arpa",
                f"hydra.run.dir={tmp_path}", check=False)  # fmt: skip
    assert "pass decoder.lm=ngram decoder.lm.path=word3.arpa" in the_error(p, "speechkit-transcribe")


def test_export_to_a_folder_or_a_path_that_cannot_be_made_is_one_error_line(tiny_run, tmp_path):
    (tmp_path / "a_file").write_text("")
    ckpt = tiny_run / "run" / "checkpoints" / "best.pt"
    for out, said in [(tmp_path, "is a folder"), (tmp_path / "a_file" / "m.pt", "cannot make its folder")]:
        p = run_cli("speechkit-export", f"checkpoint={ckpt}", f"out={out}", f"hydra.run.dir={tmp_path / 'run'}",
                    check=False)  # fmt: skip
        assert the_error(p, "speechkit-export").startswith(f"error: out={out}: {said}"), p.stderr


def test_export_of_a_missing_checkpoint_leaves_no_folder_behind(tmp_path):
    from speechkit.checkpoint import CheckpointError
    from speechkit.export import export

    out = tmp_path / "new" / "deeper" / "m.onnx"
    with pytest.raises((CheckpointError, ValueError)):
        export(tmp_path / "missing.pt", out, "onnx")
    assert not (tmp_path / "new").exists()

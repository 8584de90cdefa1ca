"""A recipe's data from any folder (speechkit/config.py ``resolve_data_root``): the current folder, then
``$SPEECHKIT_DATA``, then the checkout; the run's saved config names it absolutely; one ``error:`` line when
it is nowhere. And ``--help`` of speechkit-export and speechkit-validate without torch.

The commands run in this process (``run_in_process``): a subprocess that imports torch costs seconds."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from speechkit import config
from speechkit.config import CONF_DIR, DATA_ENV, USAGE, USER_ERROR_STATUS, resolve_data_root, store_schemas
from tests.conftest import REPO, SAMPLES, error_line, sample_rows, write_manifest

pytestmark = pytest.mark.slow


def run_in_process(
    main: Callable[[], None], *args: str, cwd: Path, monkeypatch, capsys
) -> tuple[int, str, str]:
    """Run a command's ``main`` here as its console script would, from ``cwd``: (exit status, stdout, stderr).

    Hydra's global state and the logging it configures are put back afterwards."""
    from hydra.core.global_hydra import GlobalHydra

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [main.__module__, *args])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    status = 0
    try:
        main()
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)
    out = capsys.readouterr()
    return status, out.out, out.err


def composed(*overrides: str):
    """speechkit-train's config with ``overrides``, composed as the command composes it."""
    from hydra import compose, initialize_config_dir

    store_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """A folder outside the checkout as the current folder, and no ``$SPEECHKIT_DATA``."""
    monkeypatch.delenv(DATA_ENV, raising=False)
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def a_data_folder(parent: Path, name: str, n: int = 2) -> Path:
    """``parent/name/{train,dev,test}.jsonl``: ``n`` sample utterances each (absolute audio paths)."""
    folder = parent / name
    folder.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        write_manifest(folder / f"{split}.jsonl", sample_rows("test", n))
    return folder


# ----------------------------------------------------------------------------- where the root is found


def test_a_recipe_root_is_found_in_the_checkout_from_another_folder(elsewhere):
    cfg = composed("recipe=demo")
    assert resolve_data_root(cfg) == SAMPLES
    assert cfg.data.train_manifest == str(SAMPLES / "train.jsonl")  # the interpolation follows the root
    assert cfg.data.test_manifest == str(SAMPLES / "test.jsonl")


def test_speechkit_data_comes_before_the_checkout_and_the_current_folder_before_both(
    elsewhere, tmp_path, monkeypatch
):
    store = tmp_path / "store"
    a_data_folder(store, "samples/grid")
    monkeypatch.setenv(DATA_ENV, str(store))
    cfg = composed("recipe=demo")
    assert resolve_data_root(cfg) == store / "samples" / "grid"

    a_data_folder(elsewhere, "samples/grid")
    cfg = composed("recipe=demo")
    assert resolve_data_root(cfg) == elsewhere / "samples" / "grid"


def test_an_absolute_root_and_manifests_given_directly_are_left_as_they_are(elsewhere):
    cfg = composed("recipe=demo", f"data.root={SAMPLES}")
    assert resolve_data_root(cfg) == SAMPLES
    cfg = composed("data.train_manifest=train.jsonl")  # no recipe: data=default, no manifest uses data.root
    assert resolve_data_root(cfg) is None
    assert cfg.data.root == "data" and cfg.data.train_manifest == "train.jsonl"


def test_a_root_found_nowhere_is_one_error_line_naming_the_places_and_the_prepare_script(
    elsewhere, tmp_path, monkeypatch, capsys
):
    from speechkit.train import main

    checkout = tmp_path / "checkout"  # the checkout's recipes, none of its data
    checkout.mkdir()
    (checkout / "recipes").symlink_to(REPO / "recipes")
    monkeypatch.setattr(config, "CHECKOUT_DIR", checkout)
    status, _, err = run_in_process(
        main, "recipe=lips_grid", cwd=elsewhere, monkeypatch=monkeypatch, capsys=capsys
    )
    assert status == USER_ERROR_STATUS
    assert f"usage: {USAGE['config']}" in err.splitlines()
    line = error_line(err)
    assert "data.root=data/lips_grid" in line
    for place in (elsewhere / "data/lips_grid", f"${DATA_ENV} (not set)", checkout / "data/lips_grid"):
        assert str(place) in line, line
    assert f"{DATA_ENV}=DIR" in line
    assert f"python {checkout}/recipes/lips_grid/prepare.py --out data/lips_grid" in line


def test_a_corpus_missing_under_a_found_root_is_one_error_line_with_its_prepare_command(
    elsewhere, tmp_path, monkeypatch, capsys
):
    # asr_grid_mix_codes reads two corpora under data.root=data: the root exists here, mix6's corpus does not
    from speechkit.train import main

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "recipes").symlink_to(REPO / "recipes")
    monkeypatch.setattr(config, "CHECKOUT_DIR", checkout)
    (elsewhere / "data").mkdir()
    status, _, err = run_in_process(
        main, "recipe=asr_grid_mix_codes", cwd=elsewhere, monkeypatch=monkeypatch, capsys=capsys
    )
    assert status == USER_ERROR_STATUS
    line = error_line(err)
    assert f"{elsewhere / 'data/asr_grid_mix6/train.jsonl'}: manifest not found (data.train_manifest" in line, line
    assert f"python {checkout}/recipes/asr_grid/prepare.py --preset mix6 --out data/asr_grid_mix6" in line, line


# ----------------------------------------------------------------------------- what the commands do with it


def test_validate_from_another_folder_reads_the_checkouts_recipe_data(elsewhere, monkeypatch, capsys):
    from speechkit.validate import main

    status, out, _ = run_in_process(main, "recipe=demo", "data.train_manifest=null", "data.dev_manifest=null",
                                    "data.num_workers=0", "progress=false", f"hydra.run.dir={elsewhere / 'run'}",
                                    cwd=elsewhere, monkeypatch=monkeypatch, capsys=capsys)  # fmt: skip
    assert status == 0, out
    assert f"test  {SAMPLES / 'test.jsonl'}: 16 entries, 16 loaded, 0 with errors" in out


def test_the_run_saves_its_data_paths_absolute(tiny_run):
    # the tiny run trains the demo recipe on its own train and dev manifests: its test set is data.root's
    saved = OmegaConf.load(tiny_run / "run" / "config.yaml")
    assert saved.data.root == str(SAMPLES)
    assert saved.data.test_manifest == str(SAMPLES / "test.jsonl")


def test_eval_from_another_folder_takes_the_checkpoints_test_set_or_a_data_folder(
    tiny_run, elsewhere, monkeypatch, capsys
):
    from speechkit.eval import main

    ckpt = f"checkpoint={tiny_run / 'run' / 'checkpoints' / 'best.pt'}"
    small = ["device=cpu", "progress=false", "data.batch_size=16"]
    status, _, err = run_in_process(main, ckpt, *small, f"hydra.run.dir={elsewhere / 'saved'}",
                                    cwd=elsewhere, monkeypatch=monkeypatch, capsys=capsys)  # fmt: skip
    assert status == 0, err
    metrics = json.loads((elsewhere / "saved" / "metrics.json").read_text())
    assert metrics["manifest"] == str(SAMPLES / "test.jsonl") and metrics["num_utterances"] == 16

    a_data_folder(elsewhere, "mine", n=3)
    status, _, err = run_in_process(main, ckpt, *small, "data=folder", "data.root=mine",
                                    f"hydra.run.dir={elsewhere / 'folder'}",
                                    cwd=elsewhere, monkeypatch=monkeypatch, capsys=capsys)  # fmt: skip
    assert status == 0, err
    metrics = json.loads((elsewhere / "folder" / "metrics.json").read_text())
    assert metrics["manifest"] == str(elsewhere / "mine" / "test.jsonl") and metrics["num_utterances"] == 3


# ----------------------------------------------------------------------------- --help without torch


@pytest.mark.parametrize("module", ["speechkit.export", "speechkit.validate"])
def test_help_answers_without_importing_torch(module):
    code = (f"import sys; from {module} import main; sys.argv = ['x', '--help']; main(); "
            "print('torch imported:', 'torch' in sys.modules)")  # fmt: skip
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: speechkit-") and "torch imported: False" in p.stdout

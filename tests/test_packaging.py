"""The Hydra configs live in the checkout's top-level conf/ and ship in the wheel as the package
speechkit.conf: an editable install and a built wheel both find every YAML file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from speechkit.config import CONF_DIR
from tests.conftest import REPO

# Printed by a fresh interpreter: where speechkit comes from, CONF_DIR, and where the import
# system puts the package speechkit.conf (half a second).
WHERE = """
import importlib.resources, speechkit
from speechkit.config import CONF_DIR
print(speechkit.__file__)
print(CONF_DIR)
print(importlib.resources.files("speechkit.conf"))
"""
# Then the demo recipe's train manifest, composed by Hydra from CONF_DIR (imports torch: seconds).
COMPOSE = """
from hydra import compose, initialize_config_dir
from speechkit.config import store_schemas
from speechkit.registry import load_plugins
load_plugins()
store_schemas()
with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
    print(compose("config", overrides=["recipe=demo"]).data.train_manifest)
"""


def _yamls(root: Path) -> list[str]:
    """Every YAML file under ``root``, as sorted paths relative to it."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.yaml"))


def _probe(code: str, cwd: Path, env: dict | None = None) -> list[str]:
    p = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


def test_conf_dir_holds_every_yaml_of_the_checkouts_conf():
    assert _yamls(REPO / "conf"), "no YAML files in conf/"
    assert "recipe/demo.yaml" in _yamls(REPO / "conf")
    assert _yamls(CONF_DIR) == _yamls(REPO / "conf")
    import speechkit

    if Path(speechkit.__file__).resolve().parent == REPO / "speechkit":  # this checkout's package
        assert CONF_DIR == REPO / "conf"


def test_pyproject_lists_every_package_and_config_folder():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools_cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools_cfg["package-dir"] == {"speechkit.conf": "conf"}
    code = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "speechkit").rglob("__init__.py")}
    conf = {".".join(("speechkit", *p.parent.relative_to(REPO).parts)) for p in (REPO / "conf").rglob("*.yaml")}
    assert sorted(setuptools_cfg["packages"]) == sorted(code | conf | {"speechkit.conf"})


def test_editable_install_reads_the_checkouts_conf_from_any_directory(tmp_path):
    p = subprocess.run([sys.executable, "-c", "import speechkit; print(speechkit.__file__)"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0 or Path(p.stdout.strip()).resolve().parent != REPO / "speechkit":
        pytest.skip("speechkit is not installed from this checkout (pip install -e .)")
    _, conf_dir, imported = _probe(WHERE, tmp_path)
    assert Path(conf_dir) == Path(imported) == REPO / "conf"


def _copy_checkout(dest: Path) -> None:
    """The files git would commit (tracked, and untracked ones it does not ignore) copied to ``dest``:
    a build there leaves no build/ or *.egg-info in the checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=REPO, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot tell which files to build from")
    for name in filter(None, listed.decode().split("\0")):
        src = REPO / name
        if src.is_file():  # tracked files deleted in the work tree are listed too
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


@pytest.mark.slow
def test_wheel_ships_every_yaml_as_speechkit_conf_and_reads_it(tmp_path):
    src, out, site = tmp_path / "src", tmp_path / "wheel", tmp_path / "site"
    _copy_checkout(src)
    # No build isolation: the installed setuptools builds it, with no download.
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = out.glob("speechkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"speechkit/conf/{name}" for name in _yamls(REPO / "conf")}
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    assert "speechkit/conf/__init__.py" in names
    assert not any(n.startswith("conf/") for n in names)  # only under speechkit/

    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of any editable install of this checkout
    package, conf_dir, imported, train_manifest = _probe(WHERE + COMPOSE, tmp_path, env)
    assert Path(package).parent == site / "speechkit"
    assert Path(conf_dir) == Path(imported) == site / "speechkit" / "conf"
    assert _yamls(Path(conf_dir)) == _yamls(REPO / "conf")
    assert train_manifest == "samples/grid/train.jsonl"

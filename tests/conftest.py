"""Shared fixtures: the speech samples shipped in samples/grid, and small manifests made from them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from speechkit.data.manifest import write_manifest  # noqa: F401  (the tests' manifest writer)
from speechkit.registry import load_plugins

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples" / "grid"

# Command-line tests run the checkout's own package, whatever `pip install -e` points the
# console scripts at: `speechkit-train …` becomes `python -m speechkit.train …`.
MODULES = {"speechkit-train": "speechkit.train", "speechkit-eval": "speechkit.eval",
           "speechkit-transcribe": "speechkit.transcribe", "speechkit-plugins": "speechkit.plugins",
           "speechkit-export": "speechkit.export", "speechkit-validate": "speechkit.validate"}

load_plugins()
# Property tests draw the same examples on every run and every machine (a CI failure reproduces
# anywhere); HYPOTHESIS_PROFILE=explore draws new ones, for a deeper search by hand.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
# trainer.precision=auto trains in bf16 on CPUs with bf16 instructions: the suite trains in fp32 on every CPU
# (its figures and tolerances the same everywhere; subprocesses inherit it). The bf16 tests ask for bf16.
os.environ.setdefault("SPEECHKIT_CPU_PRECISION", "fp32")
torch.set_num_threads(int(os.environ.get("SPEECHKIT_TEST_THREADS", "1")))  # tiny models: 1 is fastest, and immune to a busy CPU


def run_cli(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command; a speechkit console name runs as ``python -m`` on the checkout's own package
    (whatever the installed console scripts point at). ``check``: fail with its output unless it exits 0."""
    if args[0] in MODULES:
        args = (sys.executable, "-m", MODULES[args[0]], *args[1:])
    p = subprocess.run(list(args), capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def sample_rows(split: str, n: int | None = None) -> list[dict]:
    """Rows of a samples/grid manifest with absolute paths, so they can be rewritten anywhere."""
    rows = [json.loads(line) for line in (SAMPLES / f"{split}.jsonl").read_text().splitlines() if line.strip()]
    for r in rows:
        r["audio_filepath"] = str(SAMPLES / r["audio_filepath"])
    return rows[:n] if n else rows


@pytest.fixture
def samples() -> Path:
    return SAMPLES


@pytest.fixture(autouse=True)
def _ieee_floats():
    """The trainer flushes denormals to zero (a process-wide CPU setting, for speed); put IEEE floats
    back after each test, so later tests in the same worker (hypothesis' float strategies) see them."""
    yield
    torch.set_flush_denormal(False)


def error_line(stderr: str) -> str:
    """The one ``error:`` line a command printed for a user's mistake (after its usage line), with no
    traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One tiny trained run shared by the command-line tests (each worker trains it once): MFCC 20,
    a 1-layer BiLSTM of 32, 3 steps on 16 grid utterances; ``train.jsonl``, ``test.jsonl`` (4) and
    ``run/`` (checkpoints, config). Copy it (:func:`copy_of_tiny_run`) before writing next to it."""
    tmp = tmp_path_factory.mktemp("tiny_run")
    train = write_manifest(tmp / "train.jsonl", sample_rows("train", 16))
    test = write_manifest(tmp / "test.jsonl", sample_rows("test", 4))
    run_cli("speechkit-train", "recipe=demo", f"data.train_manifest={train}", f"data.dev_manifest={test}",
            "trainer.max_steps=3", "frontend=mfcc", "frontend.n_mfcc=20", "encoder.hidden_size=32",
            "encoder.num_layers=1", "data.num_workers=0", "data.batch_size=8", "trainer.device=cpu",
            f"hydra.run.dir={tmp / 'run'}")  # fmt: skip
    return tmp


def copy_of_tiny_run(tiny_run: Path, tmp_path_factory, name: str) -> Path:
    """A module's own copy of the shared tiny run, to write files beside it."""
    import shutil

    dest = tmp_path_factory.mktemp(name) / "tiny"
    shutil.copytree(tiny_run, dest)
    return dest

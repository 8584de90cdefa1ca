"""Shared fixtures: the speech samples shipped in samples/grid, and small manifests made from them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
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
    (whatever the installed console scripts point at), forked from a warm interpreter where it can be
    (tests/zygote.py). ``check``: fail with its output unless it exits 0."""
    if args[0] in MODULES and _Zygote.fits(env):
        p = _Zygote.get().run(MODULES[args[0]], list(args[1:]), env, timeout=600)
    else:
        if args[0] in MODULES:
            args = (sys.executable, "-m", MODULES[args[0]], *args[1:])
        p = subprocess.run(list(args), capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


class _Zygote:
    """This worker's warm interpreter (tests/zygote.py), started at the first command that can use it."""

    _one: _Zygote | None = None
    #: Environment variables read when a command runs, not when it imports (pytest's own, naming the
    #: current test, are read by no command): a request may change them.
    RUNTIME_ENV = ("SPEECHKIT_", "HYDRA_", "PYTEST_")

    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.zygote"], cwd=REPO, env=self.env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.answers = b""  # read from the zygote, not yet taken as lines
        if self._line(timeout=300) != "ready":
            raise RuntimeError(f"tests/zygote.py did not start (exit {self.proc.wait()})")

    @classmethod
    def get(cls) -> _Zygote:
        """The zygote, started again when it has stopped or when this worker's environment has changed
        since (a library sets a variable when a test imports it: torch's inductor its cache folder)."""
        one = cls._one
        if one is None or one.proc.poll() is not None or not cls._same(one.env, os.environ):
            if one is not None:
                one.close()
            cls._one = cls()
        return cls._one

    def close(self) -> None:
        self.proc.stdin.close()  # the zygote exits at the end of its requests
        self.proc.wait(timeout=60)

    @classmethod
    def fits(cls, env: dict | None) -> bool:
        """Whether a command with environment ``env`` (None: this worker's) can fork from the zygote: on
        Linux (fork after importing torch is safe there), unless SPEECHKIT_TEST_FRESH=1, with an environment
        that differs from this worker's only in RUNTIME_ENV."""
        if sys.platform != "linux" or os.environ.get("SPEECHKIT_TEST_FRESH") == "1":
            return False
        return env is None or cls._same(env, os.environ)

    @classmethod
    def _same(cls, a: Mapping[str, str], b: Mapping[str, str]) -> bool:
        """Whether environments ``a`` and ``b`` differ only in RUNTIME_ENV."""
        return all(k.startswith(cls.RUNTIME_ENV) for k in a.keys() | b.keys() if a.get(k) != b.get(k))

    def run(self, module: str, args: list[str], env: dict | None, timeout: float) -> subprocess.CompletedProcess:
        import signal
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {"module": module, "args": args, "env": dict(os.environ if env is None else env),
                       "cwd": str(REPO), "stdout": str(out), "stderr": str(err)}
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            pid = int(self._line(timeout=60))
            try:
                status = int(self._line(timeout))
            except subprocess.TimeoutExpired:
                os.killpg(pid, signal.SIGKILL)
                self._line(timeout=60)
                raise
            return subprocess.CompletedProcess([sys.executable, "-m", module, *args], status,
                                               out.read_text(errors="replace"), err.read_text(errors="replace"))

    def _line(self, timeout: float) -> str:
        """The zygote's next answer line, waiting at most ``timeout`` seconds for it."""
        import select
        import time

        end = time.monotonic() + timeout
        while b"\n" not in self.answers:
            if not select.select([self.proc.stdout], [], [], max(0.0, end - time.monotonic()))[0]:
                raise subprocess.TimeoutExpired(["tests/zygote.py"], timeout)
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"tests/zygote.py stopped (exit {self.proc.wait()})")
            self.answers += chunk
        line, self.answers = self.answers.split(b"\n", 1)
        return line.decode()


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

"""The command line as users call it, through subprocess: train, eval, transcribe, plugins."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest

from tests.conftest import copy_of_tiny_run, run_cli, sample_rows, write_manifest

pytestmark = pytest.mark.slow

SMALL = ["encoder.hidden_size=32", "encoder.num_layers=1", "data.num_workers=0", "data.batch_size=8",
         "trainer.device=cpu"]


@pytest.fixture(scope="module")
def trained(tiny_run, tmp_path_factory):
    return copy_of_tiny_run(tiny_run, tmp_path_factory, "cli")


def test_train_writes_the_run_directory(trained):
    run_dir = trained / "run"
    for name in (".hydra/config.yaml", "config.yaml", "train.log", "checkpoints/last.pt", "checkpoints/best.pt",
                 "training.png", "metrics.json"):
        assert (run_dir / name).exists(), name
    assert "n_mfcc: 20" in (run_dir / "config.yaml").read_text()


def test_eval_prints_wer_and_writes_metrics(trained):
    p = run_cli("speechkit-eval", f"checkpoint={trained / 'run/checkpoints/best.pt'}",
            f"data.test_manifest={trained / 'test.jsonl'}", f"hydra.run.dir={trained / 'eval'}", "progress=false")
    assert "WER" in p.stdout and "CER" in p.stdout
    metrics = json.loads((trained / "eval" / "metrics.json").read_text())
    assert metrics["num_utterances"] == 4 and 0 <= metrics["cer"] and metrics["wer"] >= 0


def test_transcribe_prints_the_text_of_one_file_and_writes_a_manifests_predictions(trained):
    wav = sample_rows("test", 1)[0]["audio_filepath"]
    p = run_cli("speechkit-transcribe", f"checkpoint={trained / 'run/checkpoints/best.pt'}", f"input={wav}")
    assert p.stdout.strip() == "" or set(p.stdout.strip()) <= set("abcdefghijklmnopqrstuvwxyz ")
    out = trained / "preds.jsonl"
    run_cli("speechkit-transcribe", f"checkpoint={trained / 'run/checkpoints/best.pt'}",
        f"input={trained / 'test.jsonl'}", f"output={out}", "words=true")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    refs = [r["text"] for r in sample_rows("test", 4)]
    assert [r["text"] for r in rows] == refs and all("pred_text" in r and "words" in r for r in rows)


def test_eval_on_text_the_model_cannot_spell_names_the_manifest_line(trained):
    rows = sample_rows("test", 2)
    rows[1]["text"] = "bin blüe at c five please"
    bad = write_manifest(trained / "bad.jsonl", rows)
    p = run_cli("speechkit-eval", f"checkpoint={trained / 'run/checkpoints/best.pt'}", f"data.test_manifest={bad}",
            f"hydra.run.dir={trained / 'eval_bad'}", check=False)
    assert p.returncode != 0 and f"{bad}:2: characters 'ü'" in p.stderr


def test_unknown_plugin_fails_at_once_naming_the_choices():
    p = run_cli("speechkit-train", "encoder=blstmm", check=False)
    assert p.returncode != 0 and "blstmm" in p.stderr and "blstm" in p.stderr.split("blstmm", 1)[1]


def test_misspelt_key_fails_at_once_naming_the_valid_keys():
    p = run_cli("speechkit-train", "recipe=asr_grid", "encoder.hiden_size=3", check=False)
    assert p.returncode != 0 and "encoder.hiden_size" in p.stderr and "hidden_size" in p.stderr


def test_bad_checkpoint_is_a_one_line_error(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    p = run_cli("speechkit-transcribe", f"checkpoint={bad}", "input=x.wav", check=False)
    assert p.returncode != 0 and "x.pt: truncated or corrupt" in p.stderr


PLUGIN = '''
"""A third-party frontend: the waveform cut into 20 ms frames."""
from dataclasses import dataclass

from speechkit import register
from speechkit.frontends import Frontend, load_audio


@dataclass
class RawFramesConfig:
    frame_ms: float = 20.0


@register("frontend", "my_frontend", RawFramesConfig)
class RawFrames(Frontend):
    """Raw waveform in non-overlapping frames."""

    modality, extensions = "audio", (".wav", ".flac")

    def __init__(self, cfg):
        super().__init__()
        self.n = int(16 * cfg.frame_ms)  # samples per frame at 16 kHz
        self.output_dim, self.frame_shift_s = self.n, cfg.frame_ms / 1000

    def load(self, path):
        return load_audio(path, 16000)

    def output_lengths(self, lengths):
        return lengths // self.n

    def forward(self, x, lengths):
        T = x.shape[1] // self.n
        return x[:, : T * self.n].reshape(len(x), T, self.n), self.output_lengths(lengths)
'''


def test_a_third_party_package_adds_a_frontend_through_its_entry_point(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sk_test_plugin").mkdir(parents=True)
    (pkg / "sk_test_plugin" / "__init__.py").write_text(PLUGIN)
    (pkg / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "sk-test-plugin"
        version = "0.0.1"
        [project.entry-points."speechkit.plugins"]
        my_frontend = "sk_test_plugin"
    '''))
    site = tmp_path / "site"
    run_cli(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
        "--target", str(site), str(pkg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    listing = run_cli("speechkit-plugins", env=env).stdout
    assert "my_frontend" in listing and "frame_ms: float = 20.0" in listing
    train = write_manifest(tmp_path / "train.jsonl", sample_rows("train", 8))
    run_cli("speechkit-train", f"data.train_manifest={train}", "frontend=my_frontend", "frontend.frame_ms=10",
        "trainer.max_steps=2", *SMALL, f"hydra.run.dir={tmp_path / 'run'}", env=env)
    assert "name: my_frontend" in (tmp_path / "run" / "config.yaml").read_text()
    assert "my_frontend" not in run_cli("speechkit-plugins").stdout  # uninstalled: gone, speechkit unchanged

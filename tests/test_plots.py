"""Plots: training curves, and one PNG per input (input, features, posteriorgram with the alignment)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from speechkit.checkpoint import model_payload, save_checkpoint
from speechkit.config import CONF_DIR, store_schemas
from speechkit.decoders.base import Hypothesis
from speechkit.pipeline import CTCModel
from speechkit.plots import plot_training, plot_utterance
from tests.conftest import run_cli, sample_rows, write_manifest

TOKENS = ["<blank>", " ", "a", "b"]


def _open_png(path):
    with Image.open(path) as img:
        img.verify()  # a complete, uncorrupted PNG
    with Image.open(path) as img:
        return img.format, img.size, np.asarray(img.convert("L"))


def _posteriors(T: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(T, len(TOKENS)))
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


HYP = Hypothesis(
    "ab a",
    -3.0,
    tokens=[2, 3, 1, 2],
    token_frames=[2, 5, 8, 12],
    words=[("ab", 0.06, 0.18), ("a", 0.36, 0.39)],
)


@pytest.mark.parametrize(
    "modality, raw, extra",
    [
        ("audio", np.sin(np.arange(8000) / 9.0).astype(np.float32), {"sample_rate": 16000}),
        ("image", np.random.default_rng(0).random((200, 32)).astype(np.float32), {}),
        ("video", np.random.default_rng(0).random((30, 3, 50, 100)).astype(np.float32), {"fps": 25.0}),
        ("video", np.random.default_rng(0).random((30, 1, 50, 100)).astype(np.float32), {"fps": 25.0}),
    ],
)
def test_plot_utterance_writes_a_readable_png_of_sensible_size(tmp_path, modality, raw, extra):
    path = tmp_path / f"{modality}.png"
    plot_utterance(
        path,
        raw,
        modality,
        np.random.default_rng(1).normal(size=(48, 13)),
        _posteriors(16),
        TOKENS,
        HYP,
        feat_shift_s=0.01,
        out_shift_s=0.03,
        title="x",
        **extra,
    )
    fmt, (w, h), gray = _open_png(path)
    assert fmt == "PNG" and 800 <= w <= 2000 and 600 <= h <= 1500
    assert gray.std() > 10  # not a blank canvas


def test_plot_utterance_without_a_frame_rate_or_hypothesis_still_draws(tmp_path):
    path = tmp_path / "line.png"
    plot_utterance(path, np.zeros((64, 32), np.float32), "image", np.ones((16, 96)), _posteriors(16), TOKENS)
    assert _open_png(path)[0] == "PNG"


def test_plot_training_draws_loss_and_error_curves(tmp_path):
    path = tmp_path / "training.png"
    history = [
        {"epoch": e, "step": 10 * e, "dev_loss": 2.0 / e, "dev_wer": 0.5 / e, "dev_cer": 0.2 / e}
        for e in (1, 2, 3)
    ]
    plot_training([(s, 3.0 / s) for s in range(1, 31)], history, path)
    fmt, (w, h), gray = _open_png(path)
    assert fmt == "PNG" and (w, h) == (1100, 400) and gray.std() > 10


@pytest.mark.slow
def test_transcribe_with_plot_writes_one_png_per_input(tmp_path):
    store_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["encoder.hidden_size=8", "encoder.num_layers=1", "frontend=mfcc"])
    torch.manual_seed(0)
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, model_payload(cfg, TOKENS, CTCModel.from_config(cfg, len(TOKENS))))
    rows = sample_rows("test", 3)
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    p = run_cli("speechkit-transcribe", f"checkpoint={ckpt}", f"input={manifest}", "plot=true",
                f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert p.returncode == 0, p.stderr
    pngs = sorted((tmp_path / "run" / "plots").glob("*.png"))
    assert len(pngs) == 3
    for png in pngs:
        fmt, (w, h), _ = _open_png(png)
        assert fmt == "PNG" and w >= 800 and h >= 600

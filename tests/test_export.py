"""speechkit-export: TorchScript and ONNX models that give PyTorch's log-probs on new batch shapes."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from speechkit.checkpoint import model_payload, save_checkpoint
from speechkit.config import CONF_DIR, store_schemas
from speechkit.export import FORMATS, export, run_exported
from speechkit.pipeline import CTCModel
from tests.conftest import run_cli

TOKENS = ["<blank>", " ", "a", "b", "c"]
TOLERANCE = 1e-4  # max |exported − PyTorch| log-prob: float32 rounding (ONNX's DFT-matrix spectrum included)


def _checkpoint(tmp_path, *overrides):
    store_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["encoder.hidden_size=16", "encoder.num_layers=2", *overrides])
    torch.manual_seed(0)
    model = CTCModel.from_config(cfg, len(TOKENS)).eval()
    if getattr(model.frontend, "uses_dataset_stats", False):  # normalize=global or online
        model.frontend.update_stats(*_two_lengths(model, (16000, 9000)))
    path = tmp_path / "model.pt"
    save_checkpoint(path, model_payload(cfg, TOKENS, model))
    return path, model


def _two_lengths(model, lengths=(20800, 13123)):
    """Two waveforms of different lengths (neither the export's example lengths) in one padded batch."""
    torch.manual_seed(1)
    x = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        x[i, :n] = 0.3 * torch.sin(torch.arange(n) * (0.05 + 0.03 * i)) + 0.05 * torch.randn(n)
    return x, torch.tensor(lengths)


def _valid_max_diff(got, want, lengths):
    valid = torch.arange(want.shape[1])[None, :] < lengths[:, None]
    return float((got - want).abs().amax(-1)[valid].max())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "frontend,normalize",
    [
        ("mfcc", "utterance"),
        ("fbank", "utterance"),
        ("fbank", "speech"),
        ("fbank", "online"),
        ("mfcc", "online"),
    ],
)
def test_exported_audio_model_matches_pytorch_on_a_batch_of_two_lengths(tmp_path, fmt, frontend, normalize):
    path, model = _checkpoint(
        tmp_path,
        f"frontend={frontend}",
        f"frontend.normalize={normalize}",
        "encoder=blstm",
        "encoder.subsample=3",
    )
    out = tmp_path / ("model.onnx" if fmt == "onnx" else "model.ts")
    info = export(path, out, fmt)
    x, lengths = _two_lengths(model)
    x[0, :4000] = 0  # a quarter second of digital silence: normalize=speech leaves those frames out
    with torch.no_grad():
        want, want_lens = model(x, lengths)
    got, got_lens = run_exported(out, fmt, x, lengths)
    assert got.shape == want.shape and got_lens.tolist() == want_lens.tolist() == [43, 27]
    assert _valid_max_diff(got, want, want_lens) < TOLERANCE
    assert info["max_abs_diff"] < TOLERANCE
    # a third batch size and another length: the batch and time axes are dynamic
    x3, l3 = _two_lengths(model, (9000, 30011, 4000))
    with torch.no_grad():
        want3, want_l3 = model(x3, l3)
    got3, got_l3 = run_exported(out, fmt, x3, l3)
    assert got3.shape == want3.shape and got_l3.tolist() == want_l3.tolist()
    assert _valid_max_diff(got3, want3, want_l3) < TOLERANCE


@pytest.mark.parametrize("fmt", FORMATS)
def test_streaming_model_with_online_normalisation_and_lookahead_exports(tmp_path, fmt):
    """The asr_grid_stream kind of model: unidirectional, causal normalisation, stacking look-ahead."""
    path, model = _checkpoint(
        tmp_path, "frontend=fbank", "frontend.normalize=online", "encoder=lstm", "encoder.subsample=4",
        "encoder.lookahead=3",
    )  # fmt: skip
    out = tmp_path / f"stream.{fmt}"
    export(path, out, fmt)
    for lengths in ((20800, 13123), (9000, 30011, 4000)):
        x, n = _two_lengths(model, lengths)
        with torch.no_grad():
            want, want_lens = model(x, n)
        got, got_lens = run_exported(out, fmt, x, n)
        assert got.shape == want.shape and got_lens.tolist() == want_lens.tolist()
        assert _valid_max_diff(got, want, want_lens) < TOLERANCE


def test_sidecar_json_holds_the_vocabulary_and_frontend_parameters(tmp_path):
    path, _ = _checkpoint(tmp_path, "frontend=mfcc", "frontend.n_mfcc=20")
    export(path, tmp_path / "m.onnx", "onnx")
    info = json.loads((tmp_path / "m.json").read_text())
    assert info["tokens"] == TOKENS and info["blank"] == 0
    fe = info["frontend"]
    assert fe["name"] == "mfcc" and fe["params"]["n_mfcc"] == 20 and fe["output_dim"] == 60
    assert (fe["win_length"], fe["hop_length"], fe["n_fft"]) == (400, 160, 512)
    assert info["frame_shift_s"] == pytest.approx(0.01 * info["encoder_subsampling"])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("subsampling", [[], ["encoder.subsample=4", "encoder.subsample_mode=conv2d",
                                              "encoder.subsample_channels=4"]], ids=["none", "conv2d"])
def test_features_input_exports_encoder_and_head_only(tmp_path, fmt, subsampling):
    path, model = _checkpoint(tmp_path, "frontend=fbank", "frontend.n_mels=24", "encoder=elman", *subsampling)
    out = tmp_path / f"f.{fmt}"
    export(path, out, fmt, input="features")
    torch.manual_seed(2)
    feats, frames = torch.randn(2, 77, 24), torch.tensor([77, 40])
    with torch.no_grad():
        hidden, lens = model.encoder(feats, frames)
        want = model.head(hidden).log_softmax(-1)
    got, got_lens = run_exported(out, fmt, feats, frames)
    assert got_lens.tolist() == lens.tolist()
    assert _valid_max_diff(got, want, lens) < TOLERANCE


@pytest.mark.parametrize("fmt,input", [("onnx", "raw"), ("torchscript", "features")])
def test_a_self_conditioned_model_exports_with_its_conditioning(tmp_path, fmt, input):
    """``inter_ctc.self_condition``: the conditioning is part of inference, so the exported graph (rebuilt from
    the checkpoint) must give the model's own log-probs, whole or from features; the plain stack's differ."""
    path, model = _checkpoint(tmp_path, "frontend=fbank", "frontend.n_mels=24", "encoder=blstm",
                              "inter_ctc.weight=0.3", "inter_ctc.self_condition=true")  # fmt: skip
    assert model.condition is not None
    out = tmp_path / f"sc.{fmt}"
    export(path, out, fmt, input=input)
    x, lengths = _two_lengths(model)
    with torch.no_grad():
        if input == "features":
            x, lengths = model.frontend(x, lengths)
        want, want_lens = model(x, lengths, stage="features" if input == "features" else "raw")
        if input == "features":
            hidden, _ = model.encoder(x, lengths)
            assert _valid_max_diff(model.head(hidden).log_softmax(-1), want, want_lens) > 1e-3
    got, got_lens = run_exported(out, fmt, x, lengths)
    assert got_lens.tolist() == want_lens.tolist()
    assert _valid_max_diff(got, want, want_lens) < TOLERANCE


def test_text_line_model_exports_to_onnx(tmp_path):
    path, model = _checkpoint(tmp_path, "frontend=ocr_line")
    out = tmp_path / "ocr.onnx"
    export(path, out, "onnx")
    x = torch.rand(2, 200, 32)
    lengths = torch.tensor([200, 123])
    x[1, 123:] = 0
    with torch.no_grad():
        want, want_lens = model(x, lengths)
    got, got_lens = run_exported(out, "onnx", x, lengths)
    assert got_lens.tolist() == want_lens.tolist() == [50, 30]
    assert _valid_max_diff(got, want, want_lens) < TOLERANCE


@pytest.mark.slow
def test_export_command_writes_model_and_json(tmp_path):
    path, _ = _checkpoint(tmp_path, "frontend=mfcc")
    out = tmp_path / "cli.onnx"
    p = run_cli("speechkit-export", f"checkpoint={path}", "format=onnx", f"out={out}",
                f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert p.returncode == 0, p.stderr
    assert out.stat().st_size > 10_000 and (tmp_path / "cli.json").exists()
    assert "max |exported − PyTorch| log-prob" in p.stdout


def test_export_command_rejects_an_unknown_format(tmp_path):
    path, _ = _checkpoint(tmp_path)
    p = run_cli("speechkit-export", f"checkpoint={path}", "format=tflite", f"out={tmp_path / 'x'}",
                f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert p.returncode != 0 and "format='tflite'" in p.stderr and "torchscript, onnx" in p.stderr

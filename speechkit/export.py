"""``speechkit-export checkpoint=PATH format=torchscript|onnx out=FILE``: a trained model for use
outside speechkit.

The exported graph is frontend → encoder → head in evaluation mode (no augmentation):

- inputs ``x`` — the padded raw batch as the frontend takes it (audio ``(B, N)`` samples at the
  frontend's rate, full scale 1; text lines ``(B, W, H)`` ink; clips ``(B, T, C, H, W)``) — and
  ``lengths`` ``(B,)`` int64, the valid samples (columns, frames) of each row;
- outputs ``log_probs`` ``(B, T', V)`` (log-softmax over the vocabulary, id 0 the CTC blank) and
  ``out_lengths`` ``(B,)`` int64, the valid frames of each row;
- batch and time axes are dynamic.

With ``input=features`` the frontend is left out: ``x`` is then the features ``(B, T, F)`` the
frontend would compute and ``lengths`` their frames (for a frontend a runtime cannot run, or a
feature pipeline of one's own). Beside the model, ``<out without suffix>.json`` holds what decoding
needs outside speechkit: the vocabulary, the blank id, the frontend's parameters (window, hop and
FFT size in samples, mel settings, normalisation), seconds per output frame, and the tensor names.

How each format is made (torch 2.14): TorchScript by tracing (shape arithmetic, packed sequences
and the FFT are recorded, so other batch sizes and lengths run the same code). ONNX by the
TorchScript-based exporter (``dynamo=False``, opset 17), whose LSTM conversion handles packed
sequences; it has no real-FFT op, so the audio frontends compute their spectrum as a windowed DFT
matrix product for the export (:meth:`~speechkit.frontends.audio._AudioFrontend.use_dft_matrix`,
the same numbers within float32 rounding). The export checks itself: the exported model is run on
a batch of two lengths it was not traced with and compared with PyTorch.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported when work starts, so --help answers at once
    from torch import Tensor, nn

log = logging.getLogger("speechkit.export")

FORMATS = ("torchscript", "onnx")
INPUTS = ("raw", "features")
INPUT_NAMES = ["x", "lengths"]
OUTPUT_NAMES = ["log_probs", "out_lengths"]
VERIFY_TOLERANCE = 1e-3  # max |exported − PyTorch| log-prob on valid frames accepted by verify()


@functools.cache
def _features_to_log_probs() -> type[nn.Module]:
    """The class ``FeaturesToLogProbs``, defined on first use: a module-level ``nn.Module`` subclass
    would import torch with this module, and ``speechkit-export --help`` needs none."""
    from torch import nn

    class FeaturesToLogProbs(nn.Module):
        """The model without its frontend: features ``(B, T, F)``, frames ``(B,)`` → log-probs, frames."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.encoder, self.head = model.encoder, model.head
            self.condition, self.layers = getattr(model, "condition", None), getattr(model, "inter_layers", ())

        def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
            from speechkit.pipeline import encode

            hidden, lengths, _ = encode(self.encoder, self.head, self.condition, self.layers, x, lengths)
            return self.head(hidden).log_softmax(dim=-1), lengths

    return FeaturesToLogProbs


def export_module(model: nn.Module, input: str = "raw") -> nn.Module:
    """The module to export, in eval mode: the whole model (``raw``) or encoder + head (``features``)."""
    if input not in INPUTS:
        raise ValueError(f"input={input!r}: use one of {', '.join(INPUTS)}")
    model = model.eval()
    return model if input == "raw" else _features_to_log_probs()(model).eval()


def example_inputs(
    model: nn.Module, input: str = "raw", lengths: tuple[int, ...] = (2, 3)
) -> tuple[Tensor, Tensor]:
    """A padded batch of random inputs for ``model``, rows ``lengths[i]`` (× a unit: 1 s of audio,
    64 columns of a text line, 25 video frames) long, and their lengths."""
    import torch

    from speechkit.functional import mask_padding

    torch.manual_seed(0)
    fe = model.frontend
    if input == "features":
        frames = [50 * n for n in lengths]
        x = torch.randn(len(frames), max(frames), fe.output_dim)
        return x, torch.tensor(frames)
    if fe.modality == "audio":
        n = [fe.cfg.sample_rate * k // 2 for k in lengths]  # half-seconds
        x = 0.1 * torch.randn(len(n), max(n))
    elif fe.modality == "image":
        n = [64 * k for k in lengths]
        x = torch.rand(len(n), max(n), fe.cfg.height)
    elif fe.modality == "video":
        n = [10 * k for k in lengths]
        x = torch.rand(len(n), max(n), fe.in_channels, fe.cfg.height, fe.cfg.width)
    else:
        raise ValueError(f"no example input for modality {fe.modality!r}; use input=features")
    lens = torch.tensor(n)
    return mask_padding(x, lens), lens


def _frontend_info(model: nn.Module, params: dict[str, Any]) -> dict[str, Any]:
    """The frontend's configured parameters plus the derived sizes a reimplementation needs."""
    fe = model.frontend
    info: dict[str, Any] = {
        "name": params.get("name"),
        "modality": fe.modality,
        "output_dim": fe.output_dim,
        "params": params,
    }
    for key in ("win_length", "hop_length", "n_fft"):  # audio: samples
        if hasattr(fe, key):
            info[key] = getattr(fe, key)
    if fe.modality == "audio":
        info["framing"] = "snip_edges: frame t covers samples [t*hop, t*hop+win), T = 1 + (N - win) // hop"
        info["window"] = "periodic hann of win samples, zero-padded to n_fft"
    return info


def sidecar(model: nn.Module, tokens: list[str], fmt: str, input: str, config: dict) -> dict[str, Any]:
    """What a user needs to decode the exported model's output outside speechkit."""
    fe = model.frontend
    x_shape = {
        "audio": "(batch, samples)",
        "image": "(batch, width, height)",
        "video": "(batch, frames, channels, height, width)",
    }.get(fe.modality, "(batch, time, ...)")
    return {
        "format": fmt,
        "input": input,
        "inputs": {
            "x": "(batch, time, features)" if input == "features" else x_shape,
            "lengths": "(batch,) int64 valid time steps of each row",
        },
        "outputs": {
            "log_probs": "(batch, frames, vocab) float32 log-softmax",
            "out_lengths": "(batch,) int64 valid frames of each row",
        },
        "tokens": list(tokens),
        "blank": 0,
        "frame_shift_s": model.frame_shift_s,  # seconds per output frame (None for text lines)
        "encoder_subsampling": getattr(model.encoder, "subsampling", 1),
        "frontend": _frontend_info(model, dict(config.get("frontend") or {})),
        "decoding": "greedy CTC: argmax per frame, merge repeats, drop blanks (id 0)",
        "config": config,
    }


def _check_out(out: Path) -> None:
    """Refuse, before the checkpoint is read, an ``out`` that is a folder or whose folder cannot be made;
    nothing is made yet (a checkpoint that fails to load leaves no empty folder behind)."""
    if out.is_dir():
        raise ValueError(f"out={out}: is a folder; give a file name in it (e.g. out={out / 'model.pt'})")
    base = out.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        what = "is not a folder" if not base.is_dir() else "is not writable"
        raise ValueError(f"out={out}: cannot make its folder ({base} {what}); choose a writable path")


def _make_folder(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"out={out}: cannot make its folder ({e.strerror or e}); choose a writable path") from None


def export(
    checkpoint: str | Path, out: str | Path, fmt: str = "torchscript", input: str = "raw", opset: int = 17
) -> dict[str, Any]:
    """Export the model of ``checkpoint`` to ``out`` (``fmt`` torchscript or onnx) and write its
    sidecar JSON beside it; verify it against PyTorch. Returns the sidecar dict with ``max_abs_diff``."""
    import torch

    from speechkit.checkpoint import build_from_checkpoint, read_checkpoint

    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}: use one of {', '.join(FORMATS)}")
    out = Path(out)
    _check_out(out)
    ckpt = read_checkpoint(checkpoint)
    model, tokenizer, _ = build_from_checkpoint(ckpt, checkpoint)
    _make_folder(out)
    module = export_module(model, input)
    info = sidecar(model, tokenizer.tokens, fmt, input, ckpt["config"])
    example = example_inputs(model, input)
    if fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            # tracer notes on shape arithmetic (recorded, and verified below); torch.jit's deprecation notice
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(module, example, check_trace=False)
            torch.jit.save(traced, str(out), _extra_files={"speechkit.json": json.dumps(info)})
    else:
        _export_onnx(model, module, example, out, input, opset)
    info["max_abs_diff"] = verify(module, out, fmt, model, input)
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _export_onnx(
    model: nn.Module, module: nn.Module, example: tuple, out: Path, input: str, opset: int
) -> None:
    import torch

    uses_fft = input == "raw" and hasattr(model.frontend, "use_dft_matrix")
    if uses_fft:
        model.frontend.use_dft_matrix(True)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's and the deprecation notice of dynamo=False
            torch.onnx.export(
                module,
                example,
                str(out),
                input_names=INPUT_NAMES,
                output_names=OUTPUT_NAMES,
                dynamic_axes={
                    "x": {0: "batch", 1: "time"},
                    "lengths": {0: "batch"},
                    "log_probs": {0: "batch", 1: "frames"},
                    "out_lengths": {0: "batch"},
                },
                opset_version=opset,
                dynamo=False,
            )
    except Exception as e:  # the exporter's own errors are long; say what to try
        raise RuntimeError(
            f"ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
            "try input=features (export without the frontend) or format=torchscript"
        ) from e
    finally:
        if uses_fft:
            model.frontend.use_dft_matrix(False)


def run_exported(path: str | Path, fmt: str, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Run an exported model file on one batch: TorchScript in torch, ONNX in onnxruntime (CPU)."""
    import torch

    if fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            lp, lens = torch.jit.load(str(path))(x, lengths)
        return lp, lens
    try:
        import onnxruntime as ort
    except ImportError:
        raise SystemExit("error: running ONNX models needs onnxruntime: pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    lp, lens = session.run(OUTPUT_NAMES, {"x": x.numpy(), "lengths": lengths.numpy()})
    return torch.from_numpy(lp), torch.from_numpy(lens)


def verify(module: nn.Module, path: str | Path, fmt: str, model: nn.Module, input: str) -> float:
    """Max |exported − PyTorch| log-prob over valid frames on a batch the export was not traced with
    (rows of 3.5 and 2 units); raise if lengths differ or the difference passes VERIFY_TOLERANCE."""
    import torch

    from speechkit.functional import lengths_mask

    x, lengths = example_inputs(model, input, lengths=(7, 4))
    with torch.no_grad():
        want, want_lens = module(x, lengths)
    got, got_lens = run_exported(path, fmt, x, lengths)
    if got.shape != want.shape or not torch.equal(got_lens.long(), want_lens.long()):
        raise RuntimeError(
            f"exported {fmt} model disagrees with PyTorch on shapes: {tuple(got.shape)} "
            f"{got_lens.tolist()} vs {tuple(want.shape)} {want_lens.tolist()}"
        )
    valid = lengths_mask(want_lens, want.shape[1])
    diff = float((got - want).abs().amax(-1)[valid].max()) if valid.any() else 0.0
    if diff > VERIFY_TOLERANCE:
        raise RuntimeError(f"exported {fmt} model differs from PyTorch by {diff:.2e} (> {VERIFY_TOLERANCE})")
    return diff


def task(cfg) -> None:
    import torch

    from speechkit.checkpoint import CheckpointError

    torch.set_grad_enabled(False)
    try:
        info = export(cfg.checkpoint, cfg.out, cfg.format, cfg.input, cfg.opset)
    except (CheckpointError, ValueError, RuntimeError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"exported {cfg.format} ({cfg.input} input): {cfg.out}")
    print(f"vocabulary and frontend parameters: {Path(cfg.out).with_suffix('.json')}")
    print(f"max |exported − PyTorch| log-prob: {info['max_abs_diff']:.2e}")


def main() -> None:
    from speechkit.config import run_hydra

    run_hydra(task, "export")


if __name__ == "__main__":
    main()

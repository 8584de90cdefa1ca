"""Checkpoints: everything needed to rebuild the pipeline (resolved config, vocabulary, weights)
plus the trainer's state for resuming, written atomically and loaded without unpickling code.

A checkpoint is a ``torch.save`` file of plain containers and tensors only, so it loads with
``torch.load(weights_only=True)``: a file carrying pickled code is refused, not run.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from speechkit.registry import PluginError, registry

log = logging.getLogger(__name__)

FORMAT = "speechkit-checkpoint"
FORMAT_VERSION = 1  # bump when the layout below changes incompatibly
MODEL_KINDS = ("frontend", "augment", "encoder")  # stages whose weights live in the checkpoint


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file, the problem and the fix."""

    def __init__(self, path: str | Path, problem: str, fix: str = "") -> None:
        self.path = str(path)
        super().__init__(f"{path}: {problem}" + (f" — {fix}" if fix else ""))


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, fsync, rename.

    A crash at any moment leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise CheckpointError(path, f"cannot write a checkpoint here ({e.strerror or e})",
                              "choose a writable run directory (hydra.run.dir=…)") from e
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError | RuntimeError) and not isinstance(e, CheckpointError):
            free = shutil.disk_usage(path.parent).free / 2**20
            raise CheckpointError(
                path, f"writing the checkpoint failed ({e}); {free:.0f} MiB free on that disk",
                "the previous checkpoint is untouched; free some space or move the run (hydra.run.dir=…)",
            ) from e
        raise


def check_writable(folder: str | Path, need_bytes: int) -> None:
    """Fail now, not hours into training, if ``folder`` cannot take ``need_bytes`` of checkpoints.

    Writes, fsyncs and removes a probe file, then compares the free space with ``need_bytes``.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        os.unlink(probe)
    except OSError as e:
        raise CheckpointError(folder, f"the run directory is not writable ({e.strerror or e})",
                              "choose another one with hydra.run.dir=PATH") from e
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise CheckpointError(
            folder, f"{free / 2**20:.0f} MiB free, but this run's checkpoints need about "
            f"{need_bytes / 2**20:.0f} MiB (last, previous last and best)",
            "free some space or move the run (hydra.run.dir=…)",
        )


def model_payload(config: Any, tokens: list[str], model: torch.nn.Module, metrics: dict | None = None) -> dict[str, Any]:
    """The part of a checkpoint that rebuilds the pipeline: resolved config, vocabulary, weights.

    Raises ``FloatingPointError`` rather than write non-finite weights.
    """
    import speechkit

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise FloatingPointError(f"refusing to write a checkpoint with non-finite weights in {', '.join(bad[:5])}")
    if not isinstance(config, dict):
        config = OmegaConf.to_container(config, resolve=True)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "speechkit_version": speechkit.__version__,
        "config": config,
        "tokens": list(tokens),
        "model": state,
        "metrics": dict(metrics or {}),
    }


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint file; raise :class:`CheckpointError` saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file", "pass checkpoint=<run dir>/checkpoints/best.pt")
    if not zipfile.is_zipfile(path):  # every torch.save file since torch 1.6 is a zip archive
        raise CheckpointError(
            path, "truncated or corrupt (not a torch checkpoint archive)",
            "use another checkpoint (checkpoints/last.pt or best.pt of the run)",
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        detail = str(e).split("Weights only load failed.")[-1].strip().splitlines()[0][:200]
        raise CheckpointError(
            path,
            f"refused: the file holds pickled objects that are not plain data ({detail})",
            "only load checkpoints written by speechkit from sources you trust",
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(
            path, f"truncated or corrupt ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
            "use another checkpoint (checkpoints/last.pt or best.pt of the run)",
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(path, "not a speechkit checkpoint", "pass a file written by speechkit-train")
    version = ckpt.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            path,
            f"checkpoint format version {version} (written by speechkit {ckpt.get('speechkit_version')}), "
            f"but this speechkit reads version {FORMAT_VERSION}",
            "use the speechkit version that wrote it, or retrain",
        )
    cfg = ckpt.get("config", {})
    for kind in MODEL_KINDS:
        name = (cfg.get(kind) or {}).get("name")
        try:
            registry(kind).get(name)
        except PluginError:
            raise CheckpointError(
                path,
                f"built with {kind} plugin {name!r}, which is not installed here "
                f"(installed: {', '.join(registry(kind).names())})",
                "install the package that provides it",
            ) from None
    return ckpt


def build_from_checkpoint(ckpt: dict[str, Any], path: str | Path = "<checkpoint>"):
    """(model, tokenizer, config) rebuilt from a validated checkpoint dict."""
    from speechkit.data.tokenizer import CharTokenizer  # noqa: F401  (registers the tokenizer)
    from speechkit.pipeline import CTCModel, _params
    from speechkit.registry import build

    cfg = OmegaConf.create(ckpt["config"])
    tokenizer = build("tokenizer", **_params(cfg.tokenizer), tokens=ckpt["tokens"])
    model = CTCModel.from_config(cfg, len(tokenizer))
    try:
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as e:  # shapes differ
        raise CheckpointError(
            path,
            f"its weights do not fit the model its config describes ({str(e).splitlines()[-1].strip()})",
            "it was written by a different plugin version or set; retrain or use the matching speechkit",
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            path,
            "its weights do not fit the model its config describes "
            f"(missing: {', '.join(missing[:5]) or 'none'}; unexpected: {', '.join(unexpected[:5]) or 'none'})",
            "it was written by a different plugin version or set; retrain or use the matching speechkit",
        )
    return model, tokenizer, cfg


def load_checkpoint(
    path: str | Path, decoder: Any = None, device: str = "cpu", batch_size: int = 16
):
    """A ready :class:`~speechkit.pipeline.Pipeline` from a checkpoint file alone.

    ``decoder``: a config dict (``{"name": "beam", "beam_size": 16}``), a built decoder, or None
    for the decoder the model was trained with.
    """
    from speechkit.pipeline import Pipeline, resolve_device

    ckpt = read_checkpoint(path)
    model, tokenizer, cfg = build_from_checkpoint(ckpt, path)
    pipe = Pipeline(model, tokenizer, cfg, device=resolve_device(device), batch_size=batch_size)
    if decoder is not None:
        pipe.set_decoder(decoder)
    return pipe

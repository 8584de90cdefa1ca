"""Checkpoints: everything needed to rebuild the pipeline (resolved config, vocabulary, weights)
plus the trainer's state for resuming, written atomically and loaded without unpickling code.

A checkpoint is a ``torch.save`` file of plain containers and tensors only, so it loads with
``torch.load(weights_only=True)``: a file carrying pickled code is refused, not run. It carries
the SHA-256 of every tensor and of the rest of its data (config, vocabulary, trainer state), so a
flipped bit is found at load and the damaged tensor named; resume then falls back to
``last.prev.pt``. The config it carries is data: loading never resolves an interpolation in it.

A checkpoint may carry a model card (``"card"``, plain data: speechkit/info.py builds and shows it);
:func:`update_card` rewrites it in place. Files written before cards have none and load as before.
Every reader here also takes an ``https://`` URL or an ``hf://`` path, fetched once into a local cache
(speechkit/hub.py); a cached copy that fails the checks below is deleted, so the next load fetches it again.

Why not safetensors for the weights: it has no checksum either (a flipped bit loads silently),
and ``weights_only`` loading already runs no code; one self-checking file is simpler to copy
than weights plus a JSON sidecar.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from speechkit.augment.chain import stage_nodes
from speechkit.hub import HubError, fetch, forget, is_remote
from speechkit.registry import PluginError, registry

log = logging.getLogger(__name__)

FORMAT = "speechkit-checkpoint"
FORMAT_VERSION = 2  # bump when the layout below changes incompatibly; 2 added "checksums"
READS_VERSIONS = (1, 2)  # version 1 files (no checksums) load with a warning
MODEL_KINDS = ("frontend", "augment", "encoder")  # stages whose weights live in the checkpoint


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file, the problem and the fix."""

    def __init__(self, path: str | Path, problem: str, fix: str = "") -> None:
        self.path, self.problem, self.fix = str(path), problem, fix
        super().__init__(f"{path}: {problem}" + (f" — {fix}" if fix else ""))


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, fsync, rename.

    A crash at any moment leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    payload = {**payload, "checksums": checksums(payload)}
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
            free = shutil.disk_usage(path.parent).free
            raise CheckpointError(
                path, f"writing the checkpoint failed ({e}); {_size(free)} free on that disk",
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
            folder, f"{_size(free)} free, but this run's checkpoints need about "
            f"{_size(need_bytes, up=True)} (last, previous last and best)",
            "free some space or move the run (hydra.run.dir=…)",
        )


def _size(n: int, up: bool = False) -> str:
    """Bytes for people: MiB with one decimal (rounded up with ``up``, for what is needed), and the
    exact count when that would read as 0.0 or hide the difference."""
    mib = n / 2**20
    shown = (math.ceil(mib * 10) if up else math.floor(mib * 10)) / 10
    return f"{shown:.1f} MiB ({n:,} bytes)" if mib < 10 else f"{shown:.1f} MiB"


def _tensors(obj: Any, where: str = "") -> Any:
    """Yield ``(key path, tensor)`` for every tensor inside nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        yield where, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{where}/{k}" if where else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{where}/{i}")


def _tensor_digest(t: torch.Tensor) -> str:
    raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)  # the bytes, whatever the dtype
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()


def _data_digest(payload: dict[str, Any]) -> str:
    """SHA-256 of everything but the tensors (config, vocabulary, counters), as canonical JSON."""
    def strip(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return "<tensor>"
        if isinstance(obj, dict):
            return {str(k): strip(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [strip(v) for v in obj]
        return obj

    rest = strip({k: v for k, v in payload.items() if k != "checksums"})
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=repr).encode()).hexdigest()


def checksums(payload: dict[str, Any]) -> dict[str, Any]:
    """The integrity record a checkpoint carries: SHA-256 of each tensor by key path, and of the rest."""
    return {"tensors": {k: _tensor_digest(t) for k, t in _tensors(payload) if not k.startswith("checksums")},
            "data": _data_digest(payload)}


def verify(ckpt: dict[str, Any], path: str | Path) -> None:
    """Raise :class:`CheckpointError` naming the first tensor (or the data) whose checksum differs."""
    record = ckpt.get("checksums")
    if not isinstance(record, dict):
        raise CheckpointError(path, "its checksums are missing", "use another checkpoint (last.prev.pt or best.pt)")
    expected = record.get("tensors", {})
    found = {k: t for k, t in _tensors(ckpt) if not k.startswith("checksums")}
    damaged = [k for k in sorted(expected.keys() | found.keys())
               if k not in found or k not in expected or _tensor_digest(found[k]) != expected[k]]
    if damaged:
        raise CheckpointError(
            path, f"damaged: tensor {damaged[0]} does not match its checksum"
            + (f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""),
            "the file was altered after it was written; use another checkpoint (last.prev.pt or best.pt)",
        )
    if record.get("data") != _data_digest(ckpt):
        raise CheckpointError(path, "damaged: its config, vocabulary or trainer state does not match its checksum",
                              "the file was altered after it was written; use another checkpoint")


def model_payload(
    config: Any,
    tokens: list[str],
    model: torch.nn.Module,
    metrics: dict | None = None,
    tokenizer_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The part of a checkpoint that rebuilds the pipeline: resolved config, vocabulary, weights.

    ``tokenizer_state``: what the tokenizer needs besides its tokens (``saved_state(tokenizer)``: the
    ``bpe`` tokenizer's sentencepiece model as a uint8 tensor), kept under ``"tokenizer_state"`` and
    checksummed like the weights; None (``char``, ``phone``) writes no such entry.
    Raises ``FloatingPointError`` rather than write non-finite weights.
    """
    import speechkit

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise FloatingPointError(f"refusing to write a checkpoint with non-finite weights in {', '.join(bad[:5])}")
    if not isinstance(config, dict):
        config = OmegaConf.to_container(config, resolve=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "speechkit_version": speechkit.__version__,
        "config": config,
        "tokens": list(tokens),
        "model": state,
        "metrics": dict(metrics or {}),
    }
    if tokenizer_state is not None:
        payload["tokenizer_state"] = dict(tokenizer_state)
    return payload


def under(key: str, prefixes: Sequence[str]) -> bool:
    """Whether the dotted ``key`` is one of ``prefixes`` or lies under one (``head.bias`` under ``head``)."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def load_weights(model: torch.nn.Module, state: dict[str, Any], exclude: Sequence[str] = ()) -> None:
    """``state`` into ``model``, but the weights under the dotted prefixes ``exclude`` (``head``), which keep
    the model's own; every other weight must be there with its shape. ``RuntimeError`` saying which are not."""
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if not under(k, exclude)},
                                                strict=False)
    missing = [k for k in missing if not under(k, exclude)]
    if missing or unexpected:
        raise RuntimeError(f"missing: {', '.join(missing[:5]) or 'none'}; unexpected: {', '.join(unexpected[:5]) or 'none'}")


def tokenizer_context(ckpt: dict[str, Any]) -> dict[str, Any]:
    """What rebuilds a checkpoint's tokenizer besides its config: ``tokens``, and ``state`` when saved."""
    context = {"tokens": ckpt["tokens"]}
    if ckpt.get("tokenizer_state") is not None:
        context["state"] = ckpt["tokenizer_state"]
    return context


def local_file(source: str | Path) -> Path:
    """The local file a checkpoint source names: a path itself; an ``https://``/``http://`` URL or an
    ``hf://`` path its downloaded copy (speechkit/hub.py, fetched once); :class:`CheckpointError` when
    the download fails."""
    try:
        return fetch(source)
    except HubError as e:
        raise CheckpointError(e.source, e.problem, e.fix) from None


def load_plain(path: str | Path, map_location: str | torch.device = "cpu", what: str = "checkpoint",
               missing_fix: str = "pass checkpoint=<run dir>/checkpoints/best.pt",
               other_fix: str = "use another checkpoint (checkpoints/last.pt or best.pt of the run)") -> Any:
    """A file written by :func:`save_checkpoint` (a model checkpoint or a char LM), loaded without
    running code, its checksums verified when it carries them; :class:`CheckpointError` naming the
    file (and ``missing_fix`` or ``other_fix``) for a missing, truncated, corrupt, unsafe or damaged one.

    ``path`` may be a URL or an hf:// path (:func:`local_file`); a downloaded copy that fails these
    checks is deleted from the cache, and the error names the source."""
    if is_remote(path):
        local = local_file(path)
        try:
            return load_plain(local, map_location, what, missing_fix, other_fix)
        except CheckpointError as e:
            forget(str(path))
            raise CheckpointError(path, f"{e.problem} (its downloaded copy was deleted: the next load "
                                  "fetches it again)", e.fix) from None
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, f"{what} not found", missing_fix)
    if not zipfile.is_zipfile(path):  # every torch.save file since torch 1.6 is a zip archive
        raise CheckpointError(path, "truncated or corrupt (not a torch checkpoint archive)", other_fix)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            path,
            f"refused: the file holds pickled objects that are not plain data ({_unpickling_detail(e)})",
            "only load checkpoints written by speechkit from sources you trust",
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(
            path, f"truncated or corrupt ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
            other_fix,
        ) from None
    if isinstance(ckpt, dict) and "checksums" in ckpt:
        verify(ckpt, path)
    return ckpt


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint file; raise :class:`CheckpointError` saying what is wrong."""
    ckpt = load_plain(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(path, "not a speechkit checkpoint", "pass a file written by speechkit-train")
    version = ckpt.get("format_version")
    if version not in READS_VERSIONS:
        raise CheckpointError(
            path,
            f"checkpoint format version {version} (written by speechkit {ckpt.get('speechkit_version')}), "
            f"but this speechkit reads versions {', '.join(map(str, READS_VERSIONS))}",
            "use the speechkit version that wrote it, or retrain",
        )
    if version >= 2 and "checksums" not in ckpt:
        raise CheckpointError(path, "its checksums are missing", "use another checkpoint (last.prev.pt or best.pt)")
    if version < 2:
        log.warning("%s: format version %d carries no checksums; damage to it cannot be detected", path, version)
    cfg = ckpt.get("config")
    if not isinstance(cfg, dict) or not isinstance(ckpt.get("tokens"), list) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(path, "not a speechkit checkpoint (no config, tokens or weights)",
                              "pass a file written by speechkit-train")
    if not isinstance(ckpt.get("tokenizer_state", {}), dict):
        raise CheckpointError(
            path, "its tokenizer_state is not a mapping", "pass a file written by speechkit"
        )
    if not isinstance(ckpt.get("card", {}), dict):
        raise CheckpointError(path, "its model card is not a mapping", "pass a file written by speechkit")
    for kind in (*MODEL_KINDS, "tokenizer"):
        for node in stage_nodes(cfg.get(kind)).values() if kind == "augment" else [cfg.get(kind)]:
            check_plugin(path, kind, node)
    return ckpt


def update_card(
    path: str | Path, make: Callable[[dict[str, Any]], dict[str, Any]], weights: dict[str, torch.Tensor] | None = None
) -> dict[str, Any]:
    """Rewrite the model card of the checkpoint file at ``path`` in place; return the new card.

    ``make(checkpoint)`` returns the new card (speechkit/info.py). The file is read with its checksums
    verified — damage is refused, never sealed again — and written back atomically (:func:`save_checkpoint`)
    with fresh checksums, the rest unchanged (a version-1 file becomes version 2 by gaining them), all under
    a file lock beside it (``.NAME.lock``, empty, left in place as lock files must be), so a sweep's jobs do
    not lose each other's updates. ``weights``: the state dict that was evaluated; a file whose weights
    differ (rewritten meanwhile by a training run's new ``best.pt``) is refused, not given another model's
    results.
    """
    from filelock import FileLock

    if is_remote(path):
        raise CheckpointError(path, "the card of a downloaded checkpoint cannot be updated",
                              "update a local copy of it (pass its path)")
    path = Path(path)
    try:
        lock = FileLock(str(path.with_name(f".{path.name}.lock")))
        lock.acquire()
    except OSError as e:
        raise CheckpointError(path, f"cannot update its card: its folder is not writable ({e.strerror or e})",
                              "copy it somewhere writable first") from None
    try:
        ckpt = read_checkpoint(path)
        if weights is not None:
            saved = ckpt["model"]
            if saved.keys() != weights.keys() or not all(
                torch.equal(saved[k], weights[k].detach().cpu()) for k in saved
            ):
                raise CheckpointError(
                    path, "its weights are no longer the ones just evaluated (was it rewritten meanwhile, "
                    "by a training run?); its card was left as it was", "evaluate it again",
                )
        card = make(ckpt)
        rest = {k: v for k, v in ckpt.items() if k != "checksums"}
        save_checkpoint(path, {**rest, "format_version": FORMAT_VERSION, "card": card})
    finally:
        lock.release()
    return card


def check_plugin(path: str | Path, kind: str, node: Any, fix: str = "install the package that provides it") -> None:
    """Raise :class:`CheckpointError` when the checkpoint at ``path`` names a ``kind`` plugin not installed."""
    name = node.get("name") if isinstance(node, dict) else None
    try:
        registry(kind).get(name)
    except PluginError:
        raise CheckpointError(
            path,
            f"built with {kind} plugin {name!r}, which is not installed here "
            f"(installed: {', '.join(registry(kind).names())})",
            fix,
        ) from None


def _unpickling_detail(e: pickle.UnpicklingError) -> str:
    """The sentence of torch's weights-only refusal that names what was refused, whole."""
    text = str(e).split("Weights only load failed.")[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:  # e.g. "Unsupported global: GLOBAL posix.system was not an allowed global by default."
        if "GLOBAL" in line or "Unsupported" in line:
            return line.rstrip(".")
    return lines[0].rstrip(".") if lines else type(e).__name__


def config_as_data(config: dict[str, Any]) -> DictConfig:
    """A checkpoint's config as an OmegaConf node that resolves nothing it carries: every ``${``
    is escaped, so ``${oc.env:HOME}`` stays that text instead of reading the environment."""
    def escape(obj: Any) -> Any:
        if isinstance(obj, str):
            return obj.replace("${", "\\${")
        if isinstance(obj, dict):
            return {k: escape(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [escape(v) for v in obj]
        return obj

    return OmegaConf.create(escape(config))


_REBUILDING: ContextVar[bool] = ContextVar("speechkit_rebuilding", default=False)


@contextmanager
def weights_from_checkpoint() -> Iterator[None]:
    """Plugins built inside are about to receive a checkpoint's weights (:func:`build_from_checkpoint`)."""
    token = _REBUILDING.set(True)
    try:
        yield
    finally:
        _REBUILDING.reset(token)


def rebuilding() -> bool:
    """Whether a plugin is being built for a checkpoint's weights: one whose weights come from outside
    (a pretrained frontend, frontends/speech_embedding.py) need not find them on this machine then."""
    return _REBUILDING.get()


def build_from_checkpoint(ckpt: dict[str, Any], path: str | Path = "<checkpoint>"):
    """(model, tokenizer, config) rebuilt from a validated checkpoint dict."""
    from speechkit.data.tokenizer import CharTokenizer  # noqa: F401  (registers the tokenizer)
    from speechkit.pipeline import CTCModel
    from speechkit.registry import build

    cfg = config_as_data(ckpt["config"])
    try:
        tokenizer = build("tokenizer", cfg.tokenizer, **tokenizer_context(ckpt))
    except ValueError as e:  # a bpe tokenizer without its saved model, or tokens that do not match it
        raise CheckpointError(
            path, f"its tokenizer cannot be rebuilt: {e}", "use another checkpoint"
        ) from None
    with weights_from_checkpoint():
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

    ``path``: a local file, an ``https://``/``http://`` URL (``#sha256=<hex>`` pins its digest) or an
    ``hf://owner/repo/path/file.pt[@revision]`` path, fetched once into ``$XDG_CACHE_HOME/speechkit/hub``
    (speechkit/hub.py).
    ``decoder``: a config dict (``{"name": "beam", "beam_size": 16}``), a built decoder, or None
    for the decoder the model was trained with.
    """
    from speechkit.pipeline import Pipeline, resolve_device

    ckpt = read_checkpoint(path)
    model, tokenizer, cfg = build_from_checkpoint(ckpt, path)
    if decoder is None:  # the saved decoder: its plugins (and its LM's) must be installed here
        saved = cfg.get("decoder") or {"name": "greedy"}
        fix = "install the package that provides it, or choose another decoder (decoder=greedy)"
        check_plugin(path, "decoder", OmegaConf.to_container(saved, resolve=True), fix)
        if isinstance(saved.get("lm"), DictConfig) and saved.lm.get("name"):
            check_plugin(path, "lm", OmegaConf.to_container(saved.lm, resolve=True), fix)
    pipe = Pipeline(model, tokenizer, cfg, decoder=decoder, device=resolve_device(device), batch_size=batch_size)
    if ckpt.get("timing_shift") is not None:  # the model's word-time calibration (Pipeline.calibrate_timing)
        pipe.timing_shift = tuple(float(v) for v in ckpt["timing_shift"])
    return pipe

"""A training run directory: one run at a time holds it, a resumed run must be the run that was
saved, and nothing is written into it before both are known.

``speechkit-train`` calls, in this order: :func:`lock` (a second run on the same directory fails
at once, naming the holder), :func:`find_resume` and :func:`check_resume_config` when
``trainer.resume=true`` (a changed model is refused with the list of changes), :func:`find_init` when
not resuming and ``trainer.init_from`` names a checkpoint to fine-tune (its weights must fit the model),
then builds the Trainer (which checks every setting), and only then :func:`write_configs`
(``config.yaml`` and ``.hydra/``). When the attempt fails before its first step, :func:`undo_new`
takes away what it made in a directory :func:`is_new` found new.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from speechkit.checkpoint import MODEL_KINDS, CheckpointError, load_weights, read_checkpoint, under
from speechkit.registry import KINDS, PluginError, registry

log = logging.getLogger(__name__)

LOCK_NAME = ".speechkit.lock"  # held (flock) while a run uses the directory; gone when it ends
OWNER_NAME = ".speechkit.lock.owner"  # JSON {pid, host, started} of the holder, for the message

# Keys a resumed run may change: budgets, logging, I/O and hardware. Anything else (the model,
# the tokenizer, the data, the optimiser and its schedule, the seed) would make the resumed run
# another run than the one saved; trainer.resume_force=true accepts it anyway.
SAFE_ON_RESUME = (
    "trainer.resume", "trainer.resume_force", "trainer.max_minutes", "trainer.max_epochs", "trainer.max_steps",
    "trainer.threads", "trainer.device", "trainer.log_every_steps", "trainer.save_every_steps",
    "trainer.eval_every_epochs", "trainer.eval_every_steps", "trainer.early_stop_patience", "trainer.stop_at_wer",
    "trainer.max_nonfinite_in_row",
    "trainer.logger", "data.num_workers", "data.on_error", "decoder", "run_name", "card", "reference",
    "trainer.init_from", "trainer.init_exclude",  # read only when a run starts: a resumed fine-tune has its last.pt
)


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked; the message says why and what to do."""


# ----------------------------------------------------------------------------- lock


@contextmanager
def lock(run_dir: str | Path) -> Iterator[None]:
    """Hold ``run_dir`` exclusively for the ``with`` block (an OS file lock, released even on SIGKILL).

    Raises :class:`RunDirError` at once, naming the holder's PID and host, when another run holds it.
    """
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    held = FileLock(str(run_dir / LOCK_NAME), timeout=0)
    try:
        held.acquire()
    except Timeout:
        raise RunDirError(
            f"{run_dir}: another training run is using this run directory ({_owner(run_dir)}); "
            "wait for it to end, stop it, or choose another directory with hydra.run.dir=PATH"
        ) from None
    owner = run_dir / OWNER_NAME
    owner.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
    try:
        yield
    finally:
        owner.unlink(missing_ok=True)
        held.release()


def is_new(run_dir: str | Path) -> set[str] | None:
    """When ``run_dir`` is missing or holds only the empty log Hydra opened for this start (a directory
    this attempt made), the names it holds now; else None. See :func:`undo_new`."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return set()
    entries = list(run_dir.iterdir())
    if len(entries) <= 1 and all(p.is_file() and p.suffix == ".log" and p.stat().st_size == 0 for p in entries):
        return {p.name for p in entries}
    return None


def undo_new(run_dir: str | Path, before: set[str], keep: tuple[str, ...] = ()) -> None:
    """Take away what a failed attempt made in the directory :func:`is_new` found new (``before``: the
    names it held then, Hydra's log of this start among them), then the directory itself if that leaves
    it empty and it is not the current one. Names in ``keep`` stay (the lock, taken away after its release)."""
    run_dir = Path(run_dir)
    for p in run_dir.iterdir() if run_dir.is_dir() else ():
        if p.name in keep:
            continue
        if p.name in before and not (p.is_file() and p.suffix == ".log"):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    try:
        if run_dir.resolve() != Path.cwd().resolve():
            run_dir.rmdir()  # only when empty: not while a kept lock is in it
    except OSError:
        pass


def _owner(run_dir: Path) -> str:
    try:
        o = json.loads((run_dir / OWNER_NAME).read_text())
        return f"PID {o['pid']} on host {o['host']}, started {o['started']}"
    except (OSError, ValueError, KeyError, TypeError):  # the holder has not written it yet
        return "its PID and host are not recorded yet"


# ----------------------------------------------------------------------------- resume


def find_resume(ckpt_dir: str | Path) -> tuple[dict[str, Any], Path] | None:
    """The newest usable resume checkpoint of a run and its path: ``last.pt``, or ``last.prev.pt``
    when ``last.pt`` is missing (killed between two renames) or damaged. None when there is none."""
    ckpt_dir = Path(ckpt_dir)
    last, prev = ckpt_dir / "last.pt", ckpt_dir / "last.prev.pt"
    if not last.exists() and not prev.exists():
        log.warning("trainer.resume=true but %s does not exist: starting a new run", last)
        return None
    if last.exists():
        try:
            return read_checkpoint(last), last
        except CheckpointError as e:
            if not prev.exists():
                raise
            log.error("%s; falling back to the previous checkpoint %s", e, prev)
    return read_checkpoint(prev), prev


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, current value)`` for every dotted key whose value differs, except the
    keys of :data:`SAFE_ON_RESUME` (and keys under them). A key only one side has differs too."""
    a, b = _flatten(saved), _flatten(current)
    missing = object()
    diffs = []
    for key in sorted(a.keys() | b.keys()):
        if under(key, SAFE_ON_RESUME):
            continue
        old, new = a.get(key, missing), b.get(key, missing)
        if old != new:
            diffs.append((key, "(absent)" if old is missing else old, "(absent)" if new is missing else new))
    return diffs


def _augment_as_chain(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its ``augment`` node as the stages it chooses (speechkit/augment/chain.py), so a
    checkpoint written before chains (``augment: {name: specaugment, …}``) equals ``augment=specaugment``."""
    from speechkit.augment.chain import stage_nodes

    return {**config, "augment": stage_nodes(config.get("augment"))} if isinstance(config, dict) else config


def check_resume_config(cfg: DictConfig, ckpt: dict[str, Any], path: str | Path) -> None:
    """Refuse to resume from ``path`` when ``cfg`` defines another run than the checkpoint's config.

    ``trainer.resume_force=true`` turns the refusal into a warning listing the same changes.
    """
    current = OmegaConf.to_container(cfg, resolve=True)
    saved, now = _augment_as_chain(ckpt.get("config", {})), _augment_as_chain(current)
    diffs = config_differences(saved, now)
    diffs = [(k, old, new) for k, old, new in diffs if not _same_data_path(k, old, new)]
    diffs = [(k, old, new) for k, old, new in diffs if not _new_setting_at_default(k, old, new, saved, now)]
    if not diffs:
        return
    listed = "\n".join(f"  {k}: {old!r} in the checkpoint, {new!r} now" for k, old, new in diffs)
    if cfg.trainer.get("resume_force", False):
        log.warning("resuming from %s with a changed config (trainer.resume_force=true):\n%s", path, listed)
        return
    raise RunDirError(
        f"{path}: cannot resume: {len(diffs)} setting(s) differ from the run that wrote this checkpoint:\n{listed}\n"
        "resume with the run's own settings (they are in its config.yaml), start a new run in another "
        "directory, or pass trainer.resume_force=true to continue anyway "
        f"(safe to change: {', '.join(s for s in SAFE_ON_RESUME if s != 'trainer.resume')})"
    )


# What a checkpoint's weights and tokens are defined by: a run that starts from them must describe the
# same. The stages with weights (checkpoint.MODEL_KINDS) but the augmentations, which have none, so they
# may change with the data, loss, optimiser and decoder when fine-tuning.
MODEL_SETTINGS = (*(k for k in MODEL_KINDS if k != "augment"), "tokenizer")


def find_init(cfg: DictConfig) -> tuple[dict[str, Any], str] | None:
    """The checkpoint ``trainer.init_from`` names, read and checked against ``cfg``'s model settings
    (:data:`MODEL_SETTINGS`), as ``(checkpoint, source)``; None when it names none.
    :class:`~speechkit.checkpoint.CheckpointError` for a file that is not a readable checkpoint,
    :class:`RunDirError` listing the settings that differ. The weights are loaded into the model ``cfg``
    describes here, on the CPU, so that a checkpoint that cannot start the run is refused before the run
    directory is written to. ``trainer.init_exclude`` names weights not taken (dotted prefixes); with
    ``head`` among them the vocabulary is this run's own, so the tokenizer settings may differ too."""
    from speechkit.hub import is_remote
    from speechkit.pipeline import CTCModel

    source = cfg.trainer.get("init_from")
    if not source:
        return None
    if not is_remote(source) and not Path(source).expanduser().is_file():
        raise CheckpointError(source, "trainer.init_from: checkpoint not found",
                              "pass trainer.init_from=<run dir>/checkpoints/best.pt")
    try:
        ckpt = read_checkpoint(source)
    except CheckpointError as e:
        raise CheckpointError(e.path, f"trainer.init_from: {e.problem}", e.fix) from None
    exclude = list(cfg.trainer.get("init_exclude") or [])
    parts = sorted({k.split(".")[0] for k in ckpt["model"]})
    for prefix in exclude:
        if not any(under(k, [prefix]) for k in ckpt["model"]):
            raise RunDirError(f"{source}: trainer.init_exclude: {prefix!r} names none of the checkpoint's weights "
                              f"(its parts: {', '.join(parts)}; a dotted prefix such as head or encoder.rnn)")
    settings = [k for k in MODEL_SETTINGS if not (k == "tokenizer" and "head" in exclude)]
    current = OmegaConf.to_container(cfg, resolve=True)
    old = {k: ckpt["config"].get(k) for k in settings}
    new = {k: current.get(k) for k in settings}
    diffs = [(k, a, b) for k, a, b in config_differences(old, new) if not _new_setting_at_default(k, a, b, old, new)]
    if diffs:
        listed = "\n".join(f"  {k}: {a!r} in the checkpoint, {b!r} now" for k, a, b in diffs)
        raise RunDirError(
            f"{source}: trainer.init_from: {len(diffs)} model setting(s) differ from the checkpoint's, so its "
            f"weights do not fit this model:\n{listed}\n"
            "set them as the checkpoint has them (its run directory's config.yaml holds them all; the recipe "
            "it was trained with sets them), or train from scratch without trainer.init_from"
        )
    try:
        load_weights(CTCModel.from_config(cfg, len(ckpt["tokens"])), ckpt["model"], exclude + fresh_aligner(cfg, ckpt))
    except RuntimeError as e:  # the settings match, so: written by another version of a plugin
        raise CheckpointError(source, f"trainer.init_from: its weights do not fit this model "
                              f"({str(e).splitlines()[-1].strip()})",
                              "train from scratch, or with the speechkit version that wrote it") from None
    return ckpt, str(source)


def fresh_aligner(cfg: DictConfig, ckpt: dict[str, Any]) -> list[str]:
    """``["aligner"]`` when a fine-tune cannot take the checkpoint's aligner weights (speechkit/aligner.py):
    it has none, this run has none, its shape differs (``context_ms``, ``channels``), or the vocabulary is
    new (``head`` in ``trainer.init_exclude``: the aligner's output layer is sized by it); the run's own
    aligner then starts afresh (or the checkpoint's is left out). Else none: a fine-tune keeps its aligner."""
    shape = ("context_ms", "channels")
    now = cfg.get("aligner") or {}
    before = (ckpt.get("config") or {}).get("aligner") or {}
    has = any(k.startswith("aligner.") for k in ckpt["model"])
    same = all(now.get(k) == before.get(k) for k in shape)
    new_vocabulary = "head" in list(cfg.trainer.get("init_exclude") or [])
    return [] if has and (now.get("weight") or 0) > 0 and same and not new_vocabulary else ["aligner"]


def _node(config: Any, path: list[str]) -> Any:
    for part in path:
        config = config.get(part) if isinstance(config, dict) else None
    return config


def _new_setting_at_default(key: str, old: Any, new: Any, saved: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether ``key`` is a setting of a plugin the checkpoint's run had too, or of ``data`` or ``trainer``,
    added since (absent in the checkpoint) and at its default now: how the old code behaved
    (``encoder.lookahead: 0``, ``trainer.ema_decay: 0``)."""
    if old != "(absent)":
        return False
    *path, field = key.split(".")
    from speechkit.config import _SCHEMAS, field_default

    schema = _SCHEMAS.get(path[0]) if len(path) == 1 else None  # data.*, trainer.*
    if schema is None:
        node, before = _node(current, path), _node(saved, path)
        name = node.get("name") if isinstance(node, dict) else None
        if not path or not isinstance(name, str) or not isinstance(before, dict) or before.get("name") != name:
            return False
        kind = path[-1] if path[-1] in KINDS else path[0]  # decoder.lm.order: lm; augment.vtlp.low: augment
        try:
            schema = registry(kind).get(name).config
        except PluginError:
            return False
    default = {f.name: field_default(f) for f in dataclasses.fields(schema)}.get(field, dataclasses.MISSING)
    return default is not dataclasses.MISSING and default == new


def _same_data_path(key: str, old: Any, new: Any) -> bool:
    """Whether ``data.root`` or a ``data.*_manifest`` differs only in spelling: a run saved before data
    paths were made absolute (a relative ``samples/grid``) resumed by one that resolves it."""
    if not (key == "data.root" or (key.startswith("data.") and key.endswith("_manifest"))):
        return False
    if isinstance(old, list) and isinstance(new, list):  # several manifests: each the same
        return len(old) == len(new) and all(_same_data_path(key, a, b) for a, b in zip(old, new))
    if not (isinstance(old, str) and isinstance(new, str)):
        return False
    return Path(old).expanduser().resolve() == Path(new).expanduser().resolve()


# ----------------------------------------------------------------------------- configs


def write_configs(run_dir: str | Path, cfg: DictConfig) -> None:
    """``config.yaml`` (resolved, for people) and Hydra's ``.hydra/`` record of the run
    (the composed config, Hydra's own config, the command-line overrides)."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(run_dir)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.instance().cfg
    out = run_dir / ".hydra"
    out.mkdir(exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml")
    OmegaConf.save(hydra_cfg, out / "hydra.yaml")
    OmegaConf.save(hydra_cfg.hydra.overrides.task, out / "overrides.yaml")

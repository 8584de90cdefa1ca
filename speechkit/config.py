"""Typed configs of the non-plugin parts (data, trainer) and the Hydra entry-point wrapper.

The stage groups (frontend, augment, encoder, …) are filled by the registry; this module stores
``data`` and ``trainer`` schemas and runs Hydra so that a misspelt key or an unknown plugin
fails at once with a message naming the valid choices.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore

# The Hydra configs, the package speechkit.conf: speechkit/conf/ inside an installed wheel; in a checkout
# (an editable install, or the source tree on sys.path) the top-level conf/ that pyproject.toml maps to it.
# Found beside this file rather than imported, so a checkout reads its own conf/ whichever checkout
# `pip install -e` points at (tests/test_packaging.py checks both agree with the import system).
_PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = _PACKAGE_DIR / "conf"
if not (CONF_DIR / "config.yaml").is_file():
    CONF_DIR = _PACKAGE_DIR.parent / "conf"


@dataclass
class DataConfig:
    root: str = "data"  # folder the recipe's manifests live in (interpolated by recipes)
    train_manifest: str | None = None
    dev_manifest: str | None = None
    test_manifest: str | None = None
    batch_size: int = 16  # examples per batch (the cap, with batch_seconds)
    batch_seconds: float = 0.0  # > 0: batches hold up to this many padded seconds (longest × count)
    bucket: bool = True  # group examples of similar duration (manifest "duration") into batches
    num_workers: int = 2  # loader processes (0 = load in the main process)
    on_error: str = "raise"  # raise | skip: what a bad example does (skip counts and logs it)


@dataclass
class TrainerConfig:
    max_epochs: int = 20
    max_steps: int = 0  # optimiser steps; 0 = max_epochs × batches per epoch
    max_minutes: float = 0.0  # wall-clock training budget; 0 = none (the LR schedule still uses max_steps)
    lr: float = 2e-3  # peak learning rate (AdamW)
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 300  # linear warm-up from 0, then cosine decay to min_lr_ratio × lr
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0  # max global gradient L2 norm
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA when supported, else fp16; fp32 on CPU) | fp32 | fp16 | bf16
    threads: int = 0  # torch intra-op threads on CPU; 0 = torch's default
    resume: bool = False  # continue from <run dir>/checkpoints/last.pt (the same config; see rundir.py)
    resume_force: bool = False  # resume even when the config differs from the checkpoint's (listed in the log)
    save_every_steps: int = 0  # also save last.pt every N steps (0 = at epoch ends only)
    eval_every_epochs: int = 1
    early_stop_patience: int = 0  # stop after N evaluations without a better dev WER (0 = never)
    log_every_steps: int = 50
    global_stats_batches: int = 50  # batches read to estimate global normalisation statistics
    max_nonfinite_in_row: int = 20  # updates skipped for a NaN/inf loss or gradient, in a row, before training stops
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower, bit-for-bit reruns)
    logger: str = "none"  # none | tensorboard: also write metrics to <run dir>/tensorboard (speechkit/loggers.py)


def store_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(group="data", name="default", node=DataConfig)
    cs.store(group="trainer", name="default", node=TrainerConfig)


# Nested plugin groups a user writes with a dot: ``decoder.lm=ngram`` selects the ``decoder/lm``
# group's option, which Hydra spells ``+decoder/lm=ngram``.
_NESTED_GROUP = re.compile(r"^(?P<key>[a-z_]+\.[a-z_]+)=(?P<value>[A-Za-z_][\w-]*)$")


def _rewrite_nested_groups(args: list[str]) -> list[str]:
    from speechkit.registry import EXTRA_GROUPS

    nested = {g.replace("/", ".") for groups in EXTRA_GROUPS.values() for g in groups}
    out = []
    for a in args:
        m = _NESTED_GROUP.match(a)
        if m and m.group("key") in nested and m.group("value") not in ("null", "None"):
            out.append(f"+{m.group('key').replace('.', '/')}={m.group('value')}")
        else:
            out.append(a)
    return out


def _check_overrides(config_name: str, overrides: list[str]) -> None:
    """Compose once before Hydra runs, so a bad key is reported with the keys that are valid."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError

    if any(a in ("-m", "--multirun", "--help", "-h", "--hydra-help", "--info", "-c", "--cfg") for a in sys.argv[1:]):
        return
    plain = [o for o in overrides if not o.startswith("hydra.") and not o.startswith("hydra/")]
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            compose(config_name, overrides=plain)
    except ConfigCompositionException as e:
        cause = e.__cause__
        msg = str(e)
        if isinstance(cause, ConfigKeyError) or getattr(cause, "full_key", None):
            key = getattr(cause, "full_key", None) or ""
            m = re.search(r"override '([^']+)'", msg) or re.search(r"Key '([^']+)'", msg)
            bad = key or (m.group(1) if m else "")
            parent = bad.rsplit(".", 1)[0] if "." in bad else ""
            rest = [o for o in plain if not o.split("=", 1)[0].lstrip("+~").startswith(bad)]
            valid = ""
            try:
                with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
                    cfg = compose(config_name, overrides=rest)
                node = OmegaConf.select(cfg, parent) if parent else cfg
                if node is not None and OmegaConf.is_dict(node):
                    valid = ", ".join(str(k) for k in node.keys())
            except Exception:  # the message below is still better than none
                pass
            where = f"'{parent}'" if parent else "the top level"
            sys.exit(
                f"error: unknown config key '{bad}'."
                + (f" Valid keys of {where}: {valid}" if valid else "")
                + f"\n(from: {msg.splitlines()[0]})"
            )
        sys.exit("error: " + msg.split("\nConfig search path:")[0].strip())


def _torchrun_overrides(args: list[str]) -> list[str]:
    """Under torchrun every process runs Hydra: give them one run directory, and one writer.

    The default run directory has a time stamp, which processes started a second apart would
    not share; torchrun's rendezvous id (``--rdzv-id``, or the one ``--standalone`` draws) names
    the run instead. Ranks other than 0 write no ``.hydra/`` copy and no log file.
    """
    from speechkit import distributed

    if not distributed.launched():
        return []
    extra = []
    if not any(a.startswith("hydra.run.dir=") for a in args):
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
        if run_id == "none":
            sys.exit("error: under torchrun pass hydra.run.dir=PATH (one directory for every process), "
                     "or give torchrun --rdzv-id=NAME (or --standalone) to name the run")
        extra.append(f"hydra.run.dir=runs/${{run_name}}/torchrun-{run_id}")
    if not distributed.is_main():
        extra += ["hydra.output_subdir=null", "hydra/job_logging=disabled"]
    return extra


def run_hydra(task: Callable, config_name: str, save_hydra_dir: bool = True) -> None:
    """Run ``task(cfg)`` as a Hydra app over speechkit's packaged configs.

    Plugins (built-in and from entry points) are registered first, so their configs are in
    Hydra's ConfigStore when it composes. ``save_hydra_dir=False``: Hydra writes no ``.hydra/``
    before the task runs (the task writes it once it may use the directory: speechkit/rundir.py).
    """
    import hydra

    from speechkit.registry import load_plugins

    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    load_plugins()
    store_schemas()
    sys.argv = [sys.argv[0], *_rewrite_nested_groups(sys.argv[1:]), *_torchrun_overrides(sys.argv[1:])]
    if not save_hydra_dir and "hydra.output_subdir=null" not in sys.argv:
        sys.argv.append("hydra.output_subdir=null")
    overrides = [a for a in sys.argv[1:] if not a.startswith("-")]
    _check_overrides(config_name, overrides)
    main = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task)
    main()

"""Typed configs of the non-plugin parts (data, trainer, aligner, inter_ctc) and the Hydra entry-point wrapper.

The stage groups (frontend, augment, encoder, …) are filled by the registry; this module stores
``data``, ``trainer``, ``aligner`` and ``inter_ctc`` schemas and runs Hydra so that a misspelt key, an unknown plugin or recipe
fails at once with a message naming the valid choices.

Every command (train, eval, transcribe, export, validate) answers the same way: exit status 0 when
done; 2 for a mistake in the command or its inputs, with the command's usage line and one ``error:``
line on stderr and no traceback (``--debug`` or ``HYDRA_FULL_ERROR=1`` shows it); speechkit-validate
exits 1 when the corpus has errors. ``-h``/``--help`` loads no plugin, so torch is not imported.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.config_store import ConfigStore

# The Hydra configs, the package speechkit.conf: speechkit/conf/ inside an installed wheel; in a checkout
# (an editable install, or the source tree on sys.path) the top-level conf/ that pyproject.toml maps to it.
# Found beside this file rather than imported, so a checkout reads its own conf/ whichever checkout
# `pip install -e` points at (tests/test_packaging.py checks both agree with the import system).
_PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = _PACKAGE_DIR / "conf"
if not (CONF_DIR / "config.yaml").is_file():
    CONF_DIR = _PACKAGE_DIR.parent / "conf"
# The checkout speechkit runs from (the folder holding conf/, samples/, recipes/); None in an installed wheel.
CHECKOUT_DIR: Path | None = CONF_DIR.parent if CONF_DIR.parent != _PACKAGE_DIR else None
# A folder laid out like a checkout's data (DATA/data/asr_grid, DATA/samples/grid): a relative data.root is
# looked for there when the current folder lacks it.
DATA_ENV = "SPEECHKIT_DATA"


@dataclass
class DataConfig:
    root: str = "data"  # folder of a recipe's manifests; relative: in the current folder, $SPEECHKIT_DATA or the checkout
    train_manifest: Any = None  # a path, or a list of paths joined in order (corpora trained together)
    dev_manifest: Any = None  # likewise; dev WER is over all of them
    test_manifest: str | None = None
    batch_size: int = 16  # examples per batch (the cap, with batch_seconds)
    batch_seconds: float = 0.0  # > 0: batches hold up to this many padded seconds (longest × count; images: line heights)
    bucket: bool = True  # group examples of similar length (manifest "duration"; images: "width" / "height") into batches
    sortagrad: bool = False  # first epoch shortest utterances first (DeepSpeech 2's curriculum); needs lengths (duration, or an image's width / height)
    num_workers: int = 2  # loader processes (0 = load in the main process)
    # auto: in training on a CPU with loader workers, the raw augmentations and the frontend run in the workers,
    # beside the step (data.FrontendCollate; the raw augmentations alone where the frontend has trainable weights)
    # | true (also without workers or on a GPU; refused for a trainable frontend) | false: in the model
    frontend_in_workers: Any = "auto"
    # true: the frontend's output of every training utterance is computed once, before the first step, and kept in
    # memory (float16); batches come from it and only the feature augmentations run each epoch (no raw ones, and
    # no frontend with trainable weights: both are refused). For a costly frozen frontend (speech_embedding)
    feature_cache: bool = False
    # > 0: the first that-many epochs train on spans of 1 to word_spans_max consecutive words, cut from each example
    # by its manifest's word times ("words": [[word, start_s, end_s], …]): lipreading's curriculum against CTC's
    # blank plateau (data/spans.py); examples without word times, later epochs and dev are whole; audio and video
    # (images have no time to cut), manifests only (lhotse cuts carry no word times)
    word_spans_epochs: int = 0
    word_spans_max: int = 3  # words in a span: 1 to this many, uniform
    on_error: str = "raise"  # raise | skip: what a bad example does (skip counts and logs it)
    format: str = "manifest"  # manifest (JSON lines) | lhotse (a CutSet: cuts.jsonl[.gz] or a Shar folder)


@dataclass
class TrainerConfig:
    max_epochs: int = 20
    max_steps: int = 0  # optimiser steps; 0 = max_epochs × batches per epoch
    max_minutes: float = 0.0  # wall-clock training budget; 0 = none (the LR schedule still uses max_steps)
    lr: float = 2e-3  # peak learning rate (AdamW)
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 300  # linear warm-up from 0, then decay (lr_decay) to min_lr_ratio × lr
    min_lr_ratio: float = 0.05
    lr_decay: str = "cosine"  # cosine | linear: the shape of the decay from lr to min_lr_ratio × lr over the run
    grad_clip: float = 5.0  # max global gradient L2 norm
    ema_decay: float = 0.0  # > 0 (e.g. 0.999): also average the weights (EMA) as training goes; dev evaluation and best.pt use the average, last.pt keeps both
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (GPU: bf16 where supported, else fp16; CPU: bf16 with AMX/AVX-512 BF16, else fp32) | fp32 | fp16 | bf16
    threads: str = "auto"  # torch intra-op threads: auto (cores per process, less what loader workers need; a long
    # CPU run times its first steps at 1, 2, 4 … threads and keeps one > 5 % faster) | N | 0 (torch's default)
    resume: bool = False  # continue from <run dir>/checkpoints/last.pt (the same config; see rundir.py)
    resume_force: bool = False  # resume even when the config differs from the checkpoint's (listed in the log)
    init_from: str | None = None  # fine-tune: a checkpoint (path, URL, hf://) whose weights and tokenizer start the run; optimiser and schedule start afresh
    init_exclude: list[str] = field(default_factory=list)  # weights not taken from init_from (e.g. [head]: a new vocabulary, fitted on this run's text)
    save_every_steps: int = 0  # also save last.pt every N steps (0 = at epoch ends only)
    eval_every_epochs: int = 1
    eval_every_steps: int = 0  # also evaluate on dev every N optimiser steps inside epochs (0 = at epoch ends only); the time taken is not training time
    early_stop_patience: int = 0  # stop after N evaluations without a better dev WER (0 = never)
    stop_at_wer: float | None = None  # stop at the first evaluation whose dev WER is at or below this (e.g. 0.05): the time to a target accuracy
    log_every_steps: int = 50
    global_stats_batches: int = 50  # batches read to estimate global normalisation statistics
    max_nonfinite_in_row: int = 20  # updates skipped for a NaN/inf loss or gradient, in a row, before training stops
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower, bit-for-bit reruns)
    logger: str = "none"  # none | tensorboard: also write metrics to <run dir>/tensorboard (speechkit/loggers.py)


@dataclass
class AlignerConfig:
    weight: float = 0.0  # > 0 (e.g. 0.3): train a short-sighted CTC head beside the main one (its loss × weight added); word times are read off it (speechkit/aligner.py)
    context_ms: float = 80.0  # ms of features on each side of an output frame that the aligner sees, in whole output frames, at least one (40: too little to tell letters apart)
    channels: int = 128  # width of its convolutions


@dataclass
class InterCTCConfig:
    weight: float = 0.0  # > 0 (e.g. 0.3): also a CTC loss on inner layers' outputs through the same head, × weight added (intermediate CTC, Lee & Watanabe 2021); training only, no new weights
    layers: list[int] = field(default_factory=list)  # layers (1 = the first) whose outputs get it; empty: the middle one, (num_layers + 1) // 2; each below num_layers
    self_condition: bool = False  # true: each such layer's posteriors, projected back, are added to its output before the next layer, in training and inference (self-conditioned CTC, Nozaki & Komatsu 2021; one V × H projection); needs weight > 0


def data_root_places(root: str) -> list[tuple[str, Path | None]]:
    """Where a relative ``data.root`` is looked for, in order, as (place, folder); folder None where the place
    does not exist (``$SPEECHKIT_DATA`` unset, no checkout)."""
    env = os.environ.get(DATA_ENV)
    return [
        ("the current folder", Path.cwd() / root),
        (f"${DATA_ENV}", Path(env).expanduser() / root if env else None),
        ("the checkout", CHECKOUT_DIR / root if CHECKOUT_DIR else None),
    ]


# A command that makes a recipe's data, as its prepare.py or README.md shows it: ``python recipes/NAME/prepare.py …
# --out ROOT`` or ``speechkit-prepare … out=ROOT``.
_MAKES_DATA = r"(?:python3? (recipes/\w+/prepare\.py)|speechkit-prepare)\b[^\n`]*?(?:--out |out=){root}(?=[\s`]|$)"


def _prepare_hint(root: str) -> str:
    """How to make ``root``: the command a recipe's prepare.py or README.md of the checkout shows for it."""
    if CHECKOUT_DIR is not None:
        makes = re.compile(_MAKES_DATA.format(root=re.escape(root)))
        recipes = CHECKOUT_DIR / "recipes"
        for doc in [*sorted(recipes.glob("*/prepare.py")), *sorted(recipes.glob("*/README.md"))]:
            m = makes.search(doc.read_text(encoding="utf-8"))
            if m:
                command = m.group(0).replace(m.group(1), str(CHECKOUT_DIR / m.group(1)), 1) if m.group(1) else m.group(0)
                return f"make the data with: {command}" + (f" ({doc})" if doc.name == "README.md" else "")
    return "the recipe's README.md (recipes/NAME/ in speechkit's source) says how to make it"


def resolve_data_root(cfg: Any, uses: tuple[str, ...] = ("train_manifest", "dev_manifest", "test_manifest")) -> Path | None:
    """Make ``data.root`` absolute when a manifest is given through it (``data=folder``, as every recipe
    chooses), so a recipe's data is found from any folder and the run's saved config names it wherever it is
    read again (eval, resume). Returns the root, or None when no manifest goes through it. A root that is
    not found is an error only when a manifest the command ``uses`` goes through it (training with explicit
    train and dev manifests needs no root for the test one).

    A relative root is looked for in the current folder, then ``$SPEECHKIT_DATA``, then the checkout's root;
    the first that exists is taken and logged. None existing is one ``error:`` line (a SystemExit) naming the
    places tried, what to set, and the recipe script that makes the data.
    """
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(cfg.data, resolve=False)
    through = [k for k in ("train_manifest", "dev_manifest", "test_manifest") if "${data.root}" in str(raw.get(k) or "")]
    if not through:
        return None
    root = Path(str(cfg.data.root)).expanduser()
    place, path = "as given", root
    if not root.is_absolute():
        places = data_root_places(str(root))
        found = [(p, f) for p, f in places if f is not None and f.is_dir()]
        if not found and not set(through) & set(uses):
            return None  # only manifests this command does not read go through it: leave it as it is
        if not found:
            tried = "; ".join(f"{p} ({f or 'not set'})" for p, f in places)
            raise SystemExit(
                f"error: data.root={root} is a folder in none of: {tried}. Pass data.root=DIR, or set "
                f"{DATA_ENV}=DIR to a folder holding {root}/; {_prepare_hint(str(root))}"
            )
        place, path = found[0][0], found[0][1].resolve()
    cfg.data.root = str(path)
    logging.getLogger("speechkit.data").info("data.root: %s (%s)", path, place)
    from speechkit.data.manifest import manifest_list

    for key in (k for k in through if k in uses):  # a corpus the root lacks: the command that makes it
        for manifest in map(Path, manifest_list(cfg.data[key])):
            if not manifest.exists() and manifest.parent.is_relative_to(path):
                folder = manifest.parent.relative_to(path)
                named = str(root) if folder == Path() else f"{root}/{folder.as_posix()}"
                raise SystemExit(f"error: {manifest}: manifest not found (data.{key}, under data.root={path}); "
                                 f"{_prepare_hint(named)}")
    return path


def store_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(group="data", name="default", node=DataConfig)
    cs.store(group="trainer", name="default", node=TrainerConfig)
    cs.store(group="aligner", name="default", node=AlignerConfig)
    cs.store(group="inter_ctc", name="default", node=InterCTCConfig)


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
    """Compose once before Hydra runs, so a bad key or option is one ``error:`` line naming the valid ones.

    A config group's option is checked against the options there are before composing: Hydra skips an
    unknown option of an optional group (``optional recipe: null``) without a word, so ``recipe=asr_gird``
    would otherwise train with no recipe at all.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, ValidationError

    if any(a in ("--hydra-help", "--info", "-c", "--cfg") for a in sys.argv[1:]):
        return
    sweep = any(a in ("-m", "--multirun") for a in sys.argv[1:])  # sweeps do not compose: options only
    # hydra.searchpath (more config folders, their recipes) counts; Hydra's other settings do not
    search = [o for o in overrides if o.startswith("hydra.searchpath=")]
    plain = [o for o in overrides if not o.startswith("hydra.") and not o.startswith("hydra/")]
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            _check_group_options(config_name, plain, search)
            if not sweep:
                compose(config_name, overrides=plain + search)
    except ConfigCompositionException as e:
        if _debug():
            raise
        cause = e.__cause__
        msg = str(e)
        key = getattr(cause, "full_key", None) or ""
        if isinstance(cause, ValidationError) and not isinstance(cause, ConfigKeyError):  # a known key, wrong value
            given = next((o for o in plain if o.split("=", 1)[0].lstrip("+~") == key), key)
            sys.exit(f"error: {given}: {str(cause.msg).splitlines()[0]} — give {key or 'the key'} a value of its type")
        if isinstance(cause, ConfigKeyError) or key:
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
            hint = ""
            if parent == "augment":  # a chain: each stage's parameters sit under its name
                hint = (f" Augment parameters are augment.STAGE.KEY (e.g. augment.specaugment.{bad.split('.')[-1]}=…)"
                        " for a stage the run chooses (augment=[…]).")
            sys.exit(
                f"error: unknown config key '{bad}'."
                + (f" Valid keys of {where}: {valid}." if valid else "")
                + hint
                + f"\n(from: {msg.splitlines()[0]})"
            )
        sys.exit("error: " + _one_line(msg.split("\nConfig search path:")[0]))
    except HydraException as e:  # an override Hydra cannot parse (``key`` without ``=``, bad quoting)
        if _debug():
            raise
        sys.exit("error: " + _one_line(str(e).split("\nSee https://")[0]))


def _check_group_options(config_name: str, overrides: list[str], search: list[str]) -> None:
    """``group=option`` names an option of that group (a file in conf/GROUP/ or in a folder of
    ``hydra.searchpath``, or a stored plugin config); ``group=[a,b]`` (several options of one group,
    ``augment=[speed,specaugment]``) names each at most once.

    Runs inside an initialised Hydra (its config loader sees conf/ and the ConfigStore)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep

    loader = GlobalHydra.instance().config_loader()
    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_delete() or o.package is not None:
            continue
        value = o.value()
        jobs = value.list if isinstance(value, ChoiceSweep) else [value]  # a sweep ``a,b``: one value per job
        if not all(isinstance(v, str) for job in jobs for v in _as_list(job)):  # null, numbers: Hydra judges
            continue
        options = loader.get_group_options(o.key_or_group, config_name=config_name, overrides=search)
        if not options:  # a key, not a config group
            continue
        for job in jobs:
            error = _bad_choice(o.key_or_group, job, options)
            if error:
                sys.exit(error)


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _bad_choice(group: str, choice: str | list[str], options: list[str]) -> str | None:
    """The ``error:`` line for a choice of config group ``group``'s options (one, or a list), or None."""
    name = group.replace("/", ".")
    where = f" in [{','.join(choice)}]" if isinstance(choice, list) else ""
    for v in _as_list(choice):
        if v not in options:
            there = f" (no conf/{group}/{v}.yaml)" if (CONF_DIR / group).is_dir() else ""
            return f"error: unknown {name} '{v}'{where}{there}; valid choices: {', '.join(options)}"
    twice = next((v for i, v in enumerate(_as_list(choice)) if v in choice[:i]), None)
    return f"error: {name} '{twice}' is chosen twice{where}; choose each option once" if twice else None


def _one_line(text: str) -> str:
    """Hydra's multi-line messages (``Available options in 'encoder':`` and a tabbed list) as one line."""
    text = re.sub(r"\s*\n\s*\n\s*", "; ", text.strip())
    text = re.sub(r":\s*\n\s*", ": ", text)
    return re.sub(r"\s*\n\s*", ", ", text)


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


# ----------------------------------------------------------------------------- the commands


#: Each command's usage line, by the name of its primary config.
USAGE: dict[str, str] = {
    "config": "speechkit-train recipe=NAME | data.train_manifest=PATH [key=value …]",
    "eval": "speechkit-eval checkpoint=PATH data.test_manifest=PATH [decoder=NAME] [key=value …]",
    "transcribe": "speechkit-transcribe checkpoint=PATH input=FILE|FOLDER|MANIFEST [key=value …]",
    "export": "speechkit-export checkpoint=PATH out=FILE [format=torchscript|onnx] [key=value …]",
    "validate": "speechkit-validate recipe=NAME | data.train_manifest=PATH [vocab=FILE|CHECKPOINT] [key=value …]",
}

#: Exit status of a command stopped by the user's mistake (the usage line, then one ``error:`` line).
USER_ERROR_STATUS = 2

#: Exceptions that are the user's mistake wherever they are raised, as (module, name): looked up in
#: sys.modules, so checking for them imports nothing (an exception of a type never imported cannot occur).
_USER_ERRORS = (
    ("omegaconf.errors", "MissingMandatoryValue"),  # a ``???`` value the command line did not give
    ("speechkit.registry", "PluginError"),  # an unknown plugin name or parameter, a broken plugin package
    ("speechkit.data.errors", "DataError"),  # a manifest line or media file that cannot be used
    ("speechkit.checkpoint", "CheckpointError"),  # a checkpoint that is missing, corrupt or does not fit
    ("speechkit.rundir", "RunDirError"),  # a run directory that is busy, or resumed with another config
)

_HELP_FLAGS = ("-h", "--help")


def _debug() -> bool:
    """``--debug`` or ``HYDRA_FULL_ERROR=1``: errors keep their full traceback."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _raised_by_speechkit(e: BaseException) -> bool:
    """True when ``e`` comes from a ``raise`` statement in speechkit's own code (a message written for the
    user, such as ``data.train_manifest is not set``), not from a library or a failing operation."""
    import linecache

    tb = e.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    path = Path(tb.tb_frame.f_code.co_filename).resolve()
    return _PACKAGE_DIR in path.parents and linecache.getline(str(path), tb.tb_lineno).lstrip().startswith("raise")


def user_error(e: BaseException) -> str | None:
    """The one-line message of an exception that is the user's mistake, or None for anything else
    (a bug keeps its traceback).

    The user's mistakes: the types of ``_USER_ERRORS``, and a ValueError or RuntimeError that speechkit
    raises itself (an invalid setting such as ``trainer.precision=fp8``, ``device=cuda`` with no GPU).
    """
    known = tuple(getattr(sys.modules[m], n) for m, n in _USER_ERRORS if m in sys.modules)
    if isinstance(e, known):
        full_key = getattr(e, "full_key", None)
        if type(e).__name__ == "MissingMandatoryValue" and full_key:
            return f"{full_key} is not set (a mandatory value): pass {full_key}=…"
    elif not (isinstance(e, ValueError | RuntimeError) and _raised_by_speechkit(e)):
        return None
    msg = str(e)
    if "Original Traceback" in msg:  # re-raised from a DataLoader worker: its message is the last line
        msg = msg.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return " ".join(line.strip() for line in msg.splitlines() if line.strip())


def _guard(task: Callable) -> Callable:
    """``task`` with the user's mistakes turned into ``SystemExit("error: …")`` inside the Hydra job, before
    Hydra's own report (``Error executing job`` and a traceback) sees them. Anything else propagates."""

    @functools.wraps(task)  # Hydra names the job (and its log file) after the wrapped function's module
    def guarded(cfg: Any) -> Any:
        try:
            return task(cfg)
        except Exception as e:
            message = None if _debug() else user_error(e)
            if message is None:
                raise
            raise SystemExit(f"error: {message}") from None

    return guarded


def _missing_values(config_name: str, args: list[str]) -> list[str]:
    """The ``???`` keys of the command's own config file that ``args`` does not set (read from the YAML:
    no plugin loaded, no composition). Empty when a flag changes what is composed (``--cfg``, ``-cn``…)."""
    from omegaconf import OmegaConf

    path = CONF_DIR / f"{config_name}.yaml"
    if not path.is_file() or any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        return []
    cfg = OmegaConf.load(path)
    given = {a.split("=", 1)[0].lstrip("+~") for a in args}
    return [k for k in cfg if k not in given and OmegaConf.is_missing(cfg, k)]


def _fail(usage: str, message: str) -> NoReturn:
    print(f"usage: {usage}", file=sys.stderr)
    print(message, file=sys.stderr)
    sys.exit(USER_ERROR_STATUS)


def run_hydra(task: Callable, config_name: str, save_hydra_dir: bool = True) -> None:
    """Run ``task(cfg)`` as a Hydra app over speechkit's packaged configs.

    Plugins (built-in and from entry points) are registered first, so their configs are in
    Hydra's ConfigStore when it composes. ``save_hydra_dir=False``: Hydra writes no ``.hydra/``
    before the task runs (the task writes it once it may use the directory: speechkit/rundir.py).

    ``-h``/``--help`` prints the command's help without loading any plugin (nor torch). A mistake of the
    user's — a misspelt key, option or recipe, a missing mandatory value, an unusable input or checkpoint,
    an invalid setting (:func:`user_error`) — prints the usage line and one ``error:`` line on stderr and
    exits with status 2 (``USER_ERROR_STATUS``); ``--debug`` (removed before Hydra sees the arguments) or
    ``HYDRA_FULL_ERROR=1`` shows the full traceback instead. Any other exception keeps its traceback.
    """
    usage = USAGE.get(config_name, f"{Path(sys.argv[0]).name} [key=value …]")
    if "--debug" in sys.argv[1:]:
        sys.argv = [sys.argv[0], *(a for a in sys.argv[1:] if a != "--debug")]
        os.environ["HYDRA_FULL_ERROR"] = "1"
    if any(a in _HELP_FLAGS for a in sys.argv[1:]):
        print(command_help(task, config_name, usage))
        return
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    try:
        missing = _missing_values(config_name, sys.argv[1:])
        if missing:
            sys.exit(f"error: missing mandatory value{'s' if len(missing) > 1 else ''} "
                     f"{', '.join(missing)}: pass {' '.join(k + '=…' for k in missing)}")
        _run_hydra(task, config_name, save_hydra_dir)
    except SystemExit as e:  # every ``error:`` exit, here or in the task, the same way
        if isinstance(e.code, str) and e.code.startswith("error:"):
            _fail(usage, e.code)
        raise


def _run_hydra(task: Callable, config_name: str, save_hydra_dir: bool) -> None:
    import hydra

    from speechkit.registry import PluginError, load_plugins

    try:
        load_plugins()
    except PluginError as e:  # a third-party plugin package that fails to import
        if _debug():
            raise
        sys.exit(f"error: {e}")
    store_schemas()
    args = _rewrite_nested_groups(sys.argv[1:])
    extra = _torchrun_overrides(sys.argv[1:])
    if not save_hydra_dir and "hydra.output_subdir=null" not in args:
        extra.append("hydra.output_subdir=null")
    # beside the user's overrides: Hydra's parser takes them as one run of words (``recipe=demo --cfg job``)
    at = next((i for i, a in enumerate(args) if "=" in a and not a.startswith("-")), len(args))
    sys.argv = [sys.argv[0], *args[:at], *extra, *args[at:]]
    overrides = [a for a in sys.argv[1:] if not a.startswith("-")]
    _check_overrides(config_name, overrides)
    main = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(_guard(task))
    main()


# ----------------------------------------------------------------------------- --help


_SCHEMAS = {"data": DataConfig, "trainer": TrainerConfig, "aligner": AlignerConfig, "inter_ctc": InterCTCConfig}


def _defaults(config_name: str) -> list[tuple[str, str | None]]:
    """(group, default option) of a config file's defaults list, configs it includes followed."""
    from omegaconf import OmegaConf

    out: list[tuple[str, str | None]] = []
    for entry in OmegaConf.load(CONF_DIR / f"{config_name}.yaml").get("defaults", []):
        if isinstance(entry, str):
            if entry != "_self_" and (CONF_DIR / f"{entry}.yaml").is_file():
                out += _defaults(entry)
            continue
        for key, value in entry.items():
            out.append((str(key).split()[-1].lstrip("/"), value))
    return out


def _group_line(group: str, default: str | None) -> str:
    from hydra.core.config_store import ConfigStore

    from speechkit.registry import EXTRA_GROUPS, KINDS

    key = f"  {group}=NAME".ljust(24)
    if group in KINDS.values():  # plugins are not loaded for --help: name the command that lists them
        nested = [g.replace("/", ".") for gs in EXTRA_GROUPS.values() for g in gs if g.startswith(group + "/")]
        return key + f"a plugin (default: {default})" + "".join(f"; {n}=NAME" for n in nested)
    options = {p.stem for p in (CONF_DIR / group).glob("*.yaml")}
    try:
        options |= {n.removesuffix(".yaml") for n in ConfigStore.instance().list(group)}
    except OSError:  # no stored config in that group
        pass
    return key + ", ".join(sorted(options)) + f" (default: {default or 'none'})"


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return "[" + ",".join(_yaml_value(v) for v in value) + "]"
    return str(value)


def field_default(f: Any) -> Any:
    """A config dataclass field's default value: a list's from its factory; ``dataclasses.MISSING`` for none."""
    import dataclasses

    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _schema_lines(group: str, schema: type) -> list[str]:
    """``group.key=default  comment`` for each field of a config dataclass (the comment from its source)."""
    import dataclasses
    import inspect

    comments = dict(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.*)$", inspect.getsource(schema), re.M))
    return [
        (f"  {group}.{f.name}={_yaml_value(field_default(f))}".ljust(36) + f"  {comments.get(f.name, '')}").rstrip()
        for f in dataclasses.fields(schema)
    ]


def _settings_lines(config_name: str) -> list[str]:
    """The command's own settings: its config file's lines but the usage comment, defaults and hydra."""
    out, keep = [], False
    for line in (CONF_DIR / f"{config_name}.yaml").read_text().splitlines():
        top = re.match(r"([A-Za-z_]\w*):", line)
        if top:
            keep = top.group(1) not in ("defaults", "hydra")
        if keep and line.strip():
            out.append("  " + line)
    return out


def command_help(task: Callable, config_name: str, usage: str) -> str:
    """``--help``: usage, what the command does, its config groups and settings (no plugin is loaded)."""
    doc = (getattr(sys.modules.get(task.__module__), "__doc__", None) or "").strip()
    lines = [f"usage: {usage}", ""]
    if doc:
        lines += [doc, ""]
    store_schemas()
    groups = _defaults(config_name)
    if groups:
        lines += ["config groups (GROUP=NAME; speechkit-plugins lists the plugins and their parameters):",
                  *(_group_line(g, d) for g, d in groups), ""]
    settings = _settings_lines(config_name)
    if settings:
        lines += [f"settings (conf/{config_name}.yaml; KEY=VALUE):", *settings, ""]
    for group, _ in groups:
        if group in _SCHEMAS:
            lines += [f"{group} settings ({group}.KEY=VALUE):", *_schema_lines(group, _SCHEMAS[group]), ""]
    lines += [
        "options:",
        "  -h, --help            this help",
        "  --debug               show the full traceback of an error (as HYDRA_FULL_ERROR=1 does)",
        "  --cfg job             print the composed config (every key, plugins' included) and exit",
        "  --hydra-help          Hydra's own options: multirun (-m), sweeps, the config search path",
        "",
        f"exit status: 0 done; {USER_ERROR_STATUS} a mistake in the command or its inputs (the usage line and one "
        "'error:' line on stderr)" + ("; 1 the corpus has errors (listed in the report)" if config_name == "validate"
                                      else ""),
    ]
    return "\n".join(lines)

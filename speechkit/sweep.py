"""Sweeps (``speechkit-train -m …``, ``speechkit-eval -m …``): an answer at the end, and decoder sweeps that
run the acoustic model once.

:class:`SweepSummary` is a Hydra callback (``hydra.callbacks.summary`` in conf/config.yaml and conf/eval.yaml).
Each job of a multirun leaves ``sweep_job.json`` in its directory (its overrides and the task's return value:
dev WER for training, test WER for eval); when the sweep ends, one table of every job's overrides and metrics
(its ``metrics.json``) and the best job (lowest return value) is printed and written as ``sweep.csv`` and
``sweep.md`` in the sweep directory. It reads the records from the job directories rather than from memory,
so it works as well for launchers that run the jobs in other processes or on other machines (submitit).

:class:`LogProbCache` keeps the model's log-probabilities of a manifest, batch by batch, in
``<sweep dir>/.logprobs/<key>/``, so jobs 2…N of a decoder sweep (``decoder.alpha=0.2,0.5,0.8``) only decode.
The key is a hash of everything the log-probs depend on (:func:`logprob_key`): the checkpoint file's bytes, the
manifest's bytes, each media file's size and modification time, the device, batch size and versions; a
changed checkpoint or manifest is a miss. The cache lives in the sweep directory, not in ``~/.cache``: its
entries are only worth keeping for one sweep over one checkpoint, a sweep directory is shared by the jobs of
a cluster launcher where a home cache may not be, and the end of the sweep is a natural moment to delete it
(``SweepSummary`` does), so it never grows across runs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from hydra.experimental.callback import Callback

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from torch import Tensor

    from speechkit.decoders.timing import EnergyLevels

log = logging.getLogger(__name__)

JOB_RECORD = "sweep_job.json"  # in each job's directory: its overrides and the task's return value
LOGPROB_DIR = ".logprobs"  # in the sweep directory: cached log-probs, deleted when the sweep ends


# ----------------------------------------------------------------------------- the summary


class SweepSummary(Callback):
    """When a multirun ends: every job's overrides and metrics and the best job, printed and written to
    ``sweep.csv`` and ``sweep.md`` in the sweep directory; the sweep's log-prob cache is deleted.

    ``objective``: the name of the metric the task returns (``dev_wer``, ``wer``); lower is better.
    """

    def __init__(self, objective: str = "objective") -> None:
        self.objective = objective

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN or os.environ.get("RANK", "0") != "0":  # one writer per job
            return
        done = job_return.status == JobStatus.COMPLETED
        record = {
            "job": int(config.hydra.job.num),
            "overrides": list(job_return.overrides or []),
            "status": job_return.status.name,
            "objective": _number(job_return.return_value) if done else None,
        }
        _write_atomic(Path(config.hydra.runtime.output_dir) / JOB_RECORD, json.dumps(record) + "\n")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        shutil.rmtree(sweep_dir / LOGPROB_DIR, ignore_errors=True)
        jobs = read_jobs(sweep_dir)
        if not jobs:
            log.warning("no job of the sweep left a %s in %s: no summary", JOB_RECORD, sweep_dir)
            return
        table = summary_table(jobs, self.objective)
        (sweep_dir / "sweep.csv").write_text(table.csv)
        (sweep_dir / "sweep.md").write_text(table.markdown)
        print(f"\nsweep of {len(jobs)} jobs ({sweep_dir}):\n{table.markdown}", end="")
        print(f"table: {sweep_dir / 'sweep.csv'}, {sweep_dir / 'sweep.md'}")


class Job(NamedTuple):
    """One job of a sweep, as its directory records it."""

    num: int
    overrides: dict[str, str]  # key=value of the command line and the sweep, in order
    objective: float | None  # the task's return value (None: the job failed or returned nothing numeric)
    metrics: dict[str, int | float]  # the numbers of its metrics.json


class Table(NamedTuple):
    """A sweep's summary: the text of ``sweep.csv`` and ``sweep.md``, and the best job."""

    csv: str
    markdown: str
    best: Job | None


def read_jobs(sweep_dir: Path) -> list[Job]:
    """The jobs of ``sweep_dir`` (each ``<job dir>/sweep_job.json``, with ``metrics.json`` beside it), by number."""
    jobs = []
    for record_path in sweep_dir.glob(f"*/{JOB_RECORD}"):
        record = json.loads(record_path.read_text())
        metrics_path = record_path.parent / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        numbers = {k: v for k, v in metrics.items() if _number(v) is not None}
        overrides = dict(o.lstrip("+~").split("=", 1) if "=" in o else (o, "") for o in record["overrides"])
        jobs.append(Job(record["job"], overrides, record["objective"], numbers))
    return sorted(jobs, key=lambda j: j.num)


def best_job(jobs: Sequence[Job]) -> Job | None:
    """The job with the lowest finite objective (the first of equals); None when no job has one."""
    scored = [j for j in jobs if j.objective is not None and math.isfinite(j.objective)]
    return min(scored, key=lambda j: j.objective) if scored else None


def summary_table(jobs: Sequence[Job], objective: str = "objective") -> Table:
    """``jobs`` as CSV (every override key and metric a column, ``best`` 1 on the best row) and as a Markdown
    table of the overrides that differ between jobs (the common ones listed above it) and the metrics."""
    keys = _ordered(k for j in jobs for k in j.overrides)
    varying = [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]
    common = [f"{k}={jobs[0].overrides[k]}" for k in keys if k not in varying]
    metric_keys = [k for k in _ordered(k for j in jobs for k in j.metrics) if k != objective]
    best = best_job(jobs)

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["job", *keys, objective, *metric_keys, "best"])
    for j in jobs:
        values = [j.objective, *(j.metrics.get(k) for k in metric_keys)]  # full precision
        writer.writerow([j.num, *(j.overrides.get(k, "") for k in keys), *("" if v is None else v for v in values),
                         int(j is best)])  # fmt: skip

    header = ["job", *varying, objective, *metric_keys]
    rows = [[str(j.num), *(j.overrides.get(k, "") for k in varying), _cell(j.objective),
             *(_cell(j.metrics.get(k)) for k in metric_keys)] for j in jobs]  # fmt: skip
    lines = [f"common overrides: {' '.join(common)}", ""] if common else []
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    if best is None:
        lines += ["", f"best: none (no job returned a finite {objective})"]
    else:
        setting = " ".join(f"{k}={best.overrides[k]}" for k in varying if k in best.overrides)
        lines += [
            "",
            f"best: job {best.num}{': ' + setting if setting else ''} ({objective} {_cell(best.objective)})",
        ]
    return Table(out.getvalue(), "\n".join(lines) + "\n", best)


def _ordered(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _number(value: Any) -> float | None:
    """``value`` as a float when it is one number (an int, float, 0-d tensor or NumPy scalar; not a bool)."""
    if isinstance(value, bool) or not (isinstance(value, int | float) or hasattr(value, "item")):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):  # a tensor of several numbers
        return None


def _cell(value: float | None) -> str:
    """A table cell: integers as they are, other numbers to 4 decimals, nothing for None."""
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the log-prob cache


class LogProbBatch(NamedTuple):
    """One batch of model output, as a decoder takes it."""

    indices: list[int]  # dataset index of each row
    log_probs: Tensor | None  # (B, T', V) log-softmax; None for a batch with no usable example
    lengths: Tensor | None  # (B,) valid frames of each row
    levels: list[EnergyLevels] | None = None  # each audio row's energy (word times snap to it), or None
    aligner: Tensor | None = None  # (B, T', V) the aligner's log-softmax (word times are read off it), or None


def sweep_cache_dir() -> Path | None:
    """``<sweep dir>/.logprobs`` inside a multirun's job, else None (a single run has nothing to share)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(str(HydraConfig.get().sweep.dir)).absolute() / LOGPROB_DIR


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


CACHE_FORMAT = 3  # what an entry holds: 3 = log-probs, lengths, each audio row's energy levels, the aligner's log-probs


def logprob_key(
    checkpoint: str | Path, manifest: str | Path, media: Iterable[str | Path], **settings: Any
) -> str:
    """A hash of what a manifest's log-probs depend on: the checkpoint's bytes (its weights, frontend and
    encoder config), the manifest's bytes, each media file's resolved path, size and modification time, the
    speechkit and torch versions and ``settings`` (device, batch size: padding can change the last bits)."""
    import torch

    from speechkit import __version__

    stats = []
    for p in media:
        try:
            st = os.stat(p)
            stats.append((os.path.realpath(p), st.st_size, st.st_mtime_ns))
        except OSError:  # a missing file: loading it is the error, named with its manifest line
            stats.append((os.path.realpath(p), None, None))
    parts = {
        "checkpoint": _file_sha256(Path(checkpoint)),
        "manifest": _file_sha256(Path(manifest)),
        "media": hashlib.sha256(json.dumps(stats).encode()).hexdigest(),
        "versions": [__version__, torch.__version__],
        "format": CACHE_FORMAT,
        "settings": {k: str(v) for k, v in sorted(settings.items())},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


class LogProbCache:
    """The log-probs of one manifest under one checkpoint: ``folder/<key>/`` holds them batch by batch
    (``000000.pt``, …, read with ``weights_only``), complete or not at all — batches are written to a
    temporary folder renamed into place after the last, so a job that stops midway, or two jobs that miss at
    once, never leave a partial entry."""

    def __init__(self, folder: str | Path, key: str) -> None:
        self.entry = Path(folder) / key

    @property
    def hit(self) -> bool:
        return self.entry.is_dir()

    def read(self, device: Any = "cpu") -> Iterator[LogProbBatch]:
        """The stored batches, in order, their tensors on ``device`` (where the model would have left them)."""
        import torch

        from speechkit.decoders.timing import EnergyLevels

        for path in sorted(self.entry.glob("*.pt")):
            b = torch.load(path, map_location="cpu", weights_only=True)
            lp, lengths = b["log_probs"], b["lengths"]
            levels = None
            if b.get("levels") is not None:  # none for images and videos
                sr = b["sample_rate"]
                levels = [EnergyLevels(t.numpy(), sr, n) for t, n in zip(b["levels"], b["num_samples"])]
            aligner = b.get("aligner")
            yield LogProbBatch(b["indices"], None if lp is None else lp.to(device),
                               None if lengths is None else lengths.to(device), levels,
                               None if aligner is None else aligner.to(device))  # fmt: skip

    def write(self, batches: Iterable[LogProbBatch]) -> Iterator[LogProbBatch]:
        """``batches`` passed through, each stored on the way; the entry appears once all are stored."""
        import torch

        self.entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.entry.with_name(f"{self.entry.name}.tmp-{uuid.uuid4().hex}")
        tmp.mkdir()
        try:
            for i, b in enumerate(batches):
                entry = {"indices": list(b.indices),
                         "log_probs": None if b.log_probs is None else b.log_probs.detach().cpu(),
                         "lengths": None if b.lengths is None else b.lengths.detach().cpu(),
                         "aligner": None if b.aligner is None else b.aligner.detach().cpu()}  # fmt: skip
                if b.levels:
                    entry.update(levels=[torch.from_numpy(lv.level_db) for lv in b.levels],
                                 num_samples=[lv.num_samples for lv in b.levels],
                                 sample_rate=b.levels[0].sample_rate)  # fmt: skip
                torch.save(entry, tmp / f"{i:06d}.pt")
                yield b
            try:
                os.rename(tmp, self.entry)
            except OSError:  # another job stored the same entry first: theirs is as good
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def cached(
    cache: LogProbCache | None, compute: Callable[[], Iterable[LogProbBatch]], device: Any
) -> tuple[Iterable[LogProbBatch], str]:
    """The log-prob batches from ``cache`` when it holds them, else ``compute()``'s (stored in ``cache``), and
    which: ``hit``, ``miss`` or ``off`` (no cache)."""
    if cache is None:
        return compute(), "off"
    if cache.hit:
        log.info("log-probs from the cache, the model is not run: %s", cache.entry)
        return cache.read(device), "hit"
    return cache.write(compute()), "miss"

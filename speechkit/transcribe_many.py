"""Transcription of a folder or a manifest by one process or each of torchrun's: ``transcribe_many``
(speechkit-transcribe's path for many inputs; the command and its options are in transcribe.py).

The inputs not yet in the part files (speechkit/shards.py) are shared among the processes by duration and
transcribed ``batch_size`` at a time into each process's part file; rank 0 follows the others' files for
its progress bar, then merges every part into the output in input order with the report of skipped inputs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from speechkit.transcribe import STDIN, _finish, _one_line, _row, _speed, _transcribe, write_plots


def join(cfg: DictConfig):
    """This process's :class:`~speechkit.shards.Group` (alone, or one of torchrun's) and its device: under
    torchrun on CUDA, GPU ``LOCAL_RANK``. What one process of several cannot do is an error here."""
    from speechkit import distributed
    from speechkit.shards import Group

    if not distributed.launched():
        return Group(), cfg.device
    source = Path(str(cfg.input))
    if (
        cfg.get("streaming")
        or str(cfg.input) == STDIN
        or not (source.is_dir() or source.suffix in (".jsonl", ".json"))
    ):
        raise SystemExit(
            f"error: input={cfg.input}: several processes (torchrun) share a folder or a manifest; "
            "run one process for one file or a stream"
        )
    if not cfg.output:
        raise SystemExit(
            "error: several processes (torchrun) write their parts beside the output: give output=PATH "
            "(the same for every process)"
        )
    if cfg.plot:
        raise SystemExit("error: plot=true draws in one process; run without torchrun to plot")
    import torch

    from speechkit.pipeline import resolve_device

    group = Group.join()
    device = cfg.device
    try:
        if resolve_device(str(device)).type == "cuda":
            if group.local_rank >= torch.cuda.device_count():
                raise SystemExit(
                    f"error: rank {group.rank}: LOCAL_RANK={group.local_rank} but this node has "
                    f"{torch.cuda.device_count()} GPU(s); start at most one process per GPU (--nproc-per-node)"
                )
            device = f"cuda:{group.local_rank}"
    except RuntimeError as e:
        raise SystemExit(f"error: device={device}: {e}") from None
    return group, device


def _input_id(x) -> str:
    """What names an input in the fingerprint of the part files: a file's path; a manifest line's
    place, file and fields."""
    if isinstance(x, str | Path):
        return str(x)
    return json.dumps([x.where, str(x.path), x.text, x.duration, list(x.fields)], default=str)


def _weight(x) -> float:
    """An input's share of the work, for balancing the processes: its manifest duration, else its size
    in bytes (a stat, not a read; the files of one run are mostly in one format)."""
    duration = getattr(x, "duration", None)
    if duration:
        return float(duration)
    try:
        return float(Path(getattr(x, "path", x)).stat().st_size)
    except OSError:  # missing: it will be skipped, or be the error
        return 0.0


def _record(i: int, x, result, nbest: int) -> dict:
    """The part-file line of input ``i``: its row, or (on_error=skip) why it was skipped."""
    from speechkit.data.dataset import Skipped

    if isinstance(result, Skipped):
        return {
            "i": i,
            "key": getattr(x, "line", i),
            "skipped": _row(result.where, getattr(x, "path", x), result.reason),
        }
    return {"i": i, "row": result.to_dict(nbest=nbest)}


class _Bar:
    """The progress bar of a run over many inputs (rank 0's, counting every rank's records): files/s,
    and the real-time factor so far (wall-clock seconds per second of input)."""

    def __init__(self, total: int, done: int, show: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total, initial=done, desc="transcribe", unit="file", disable=not show, mininterval=1.0
        )
        self.t0, self.durations, self.audio_s = time.perf_counter(), [], 0.0

    def add(self, record: dict) -> None:
        if "row" in record:
            self.durations.append(record["row"].get("duration"))
            self.audio_s += self.durations[-1] or 0.0
        if self.audio_s:
            self.bar.set_postfix_str(
                f"RTF {(time.perf_counter() - self.t0) / self.audio_s:.4f}", refresh=False
            )
        self.bar.update(1)

    def close(self) -> float:
        self.bar.close()
        return time.perf_counter() - self.t0


def transcribe_many(pipe, cfg: DictConfig, group, inputs: list, problems: list[tuple[int, dict]]) -> None:
    """A folder or a manifest, by one process or by each of torchrun's (speechkit/shards.py): the inputs not
    in the part files yet, shared by duration, transcribed ``batch_size`` at a time into this process's part
    file; rank 0 then merges them into the output in input order with the report of skipped inputs."""
    from hydra.core.hydra_config import HydraConfig

    from speechkit import shards
    from speechkit.data.errors import DataError

    out = Path(cfg.output) if cfg.output else Path(HydraConfig.get().runtime.output_dir) / "predictions.jsonl"
    folder = shards.parts_dir(out)
    settings = {  # what changes a row; not batch_size, device or the number of processes
        "decoder": OmegaConf.to_container(cfg.decoder, resolve=True),
        "nbest": cfg.nbest,
        "long_form": OmegaConf.to_container(cfg.long_form, resolve=True) if cfg.get("long_form") else None,
    }
    fp = shards.fingerprint([_input_id(x) for x in inputs], str(cfg.checkpoint), settings)
    if group.main:
        if not cfg.get("resume", True):
            shards.remove(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SystemExit(f"error: output={out}: cannot make {folder} beside it ({e.strerror})") from None
    group.barrier()
    try:
        parts = shards.read_parts(folder, fp, len(inputs))
    except shards.PartsError as e:
        raise SystemExit(_one_line(f"error: {e}")) from None
    group.barrier()  # every process has read the parts before any writes to them
    done = parts.done
    todo = [i for i in range(len(inputs)) if i not in done]
    mine = [
        i
        for i, r in zip(todo, shards.share([_weight(inputs[i]) for i in todo], group.world))
        if r == group.rank
    ]
    if group.main and done:
        print(
            f"resuming from {folder}: {len(done)} of {len(inputs)} input(s) done, {len(todo)} to go",
            file=sys.stderr,
        )
    bar = _Bar(len(inputs), len(done), cfg.progress and group.main)
    writer = shards.PartWriter(folder / f"rank{group.rank}.jsonl", fp)
    tail = shards.Tail(folder, parts.ends, skip=writer.path)  # rank 0: the others' lines, for bar and merge
    waiting, plotted, written = set(todo) - set(mine), [], 0

    try:
        for start in range(0, len(mine), cfg.batch_size):
            chunk = mine[start : start + cfg.batch_size]
            results = _transcribe(pipe, [inputs[i] for i in chunk], cfg, False, progress=False)
            records = [_record(i, inputs[i], r, cfg.nbest) for i, r in zip(chunk, results)]
            writer.write(records)
            written += sum("row" in r for r in records)
            for record in records:
                bar.add(record)
            if cfg.plot:
                plotted += [(inputs[i], r) for i, r, rec in zip(chunk, results, records) if "row" in rec]
            if group.main:
                shards.wait_for(tail, waiting, bar.add, block=False)
    except (DataError, SystemExit):  # on_error=raise, or a setting refused: what is written stays for a rerun
        writer.close()
        bar.close()
        if group.world == 1 and not done and not written:
            shards.remove(folder)
        elif group.world == 1:
            print(f"kept {len(done) + written} transcript(s) in {folder}: the same command resumes from them",
                  file=sys.stderr)  # fmt: skip
        else:
            print(
                f"the transcripts so far stay in {folder}: the same command resumes from them",
                file=sys.stderr,
            )
        raise
    writer.close()
    if not group.main:
        return group.leave()
    shards.wait_for(tail, waiting, bar.add)
    seconds = bar.close()
    try:
        records = shards.read_parts(folder, fp, len(inputs)).records
    except shards.PartsError as e:
        raise SystemExit(_one_line(f"error: {e}")) from None
    missing = [i for i in range(len(inputs)) if i not in records]
    if missing:
        first = getattr(inputs[missing[0]], "where", inputs[missing[0]])
        raise SystemExit(f"error: {folder}: {len(missing)} input(s) have no line (the first: {first}); rerun")
    rows = [records[i]["row"] for i in range(len(inputs)) if "row" in records[i]]
    skipped = sorted(
        problems + [(r["key"], r["skipped"]) for r in records.values() if "skipped" in r], key=lambda s: s[0]
    )
    for _, row in skipped:
        print(f"skipped {row['where']}: {row['reason']}", file=sys.stderr)
    if plotted:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        pngs = write_plots(pipe, [x for x, _ in plotted], [t.nbest for _, t in plotted], run_dir / "plots")
        print(
            f"plot{'s' if len(pngs) > 1 else ''}: {pngs[0] if len(pngs) == 1 else run_dir / 'plots'}",
            file=sys.stderr,
        )
    _finish(out, rows, skipped, cfg, False)
    shards.remove(folder)
    print(_speed(bar.durations, seconds, pipe.model.frontend.modality, group.world), file=sys.stderr)
    group.leave()

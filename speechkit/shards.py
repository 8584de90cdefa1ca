"""Many inputs, many processes: the part files of a resumable ``speechkit-transcribe`` run.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set) each process takes a contiguous share
of the inputs not yet transcribed, balanced by duration (:func:`share`), and appends its results to its
own part file, ``<output>.parts/rank<R>.jsonl``, a chunk at a time, flushed as it goes. Rank 0 follows
the others' part files (:class:`Tail`) for its progress bar, and when every input has a line it merges
them into the one output, in input order, and removes the folder. A single process does the same with
one part file, so a run that was killed resumes in either case.

A part file is JSON lines: a header ``{"speechkit_parts": 1, "fingerprint": {...}}``, then one line per
input, ``{"i": INDEX, "row": {...}}`` (the output row) or ``{"i": INDEX, "key": LINE, "skipped":
{where, path, reason}}`` (``on_error=skip``; ``key`` orders the report: the manifest line, a folder's
file index). On resume the lines already there are kept and a half-written last line (the process
killed mid-write) is dropped; skipped inputs are tried again (a file fixed since then is transcribed).
The fingerprint (:func:`fingerprint`) names the inputs, the checkpoint and the settings that change a
row (decoder, nbest, long form); parts with another one are refused with :class:`PartsError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PARTS_VERSION = 1  # the "speechkit_parts" value in each part file's header
HASH_BLOCK = 1 << 20  # bytes of the checkpoint read at a time for its hash (1 MiB)
POLL_S = 0.2  # seconds between looks at the other ranks' part files while rank 0 waits


class PartsError(Exception):
    """Part files that cannot be resumed from: the message says which file, what and what to do."""


def parts_dir(output: Path) -> Path:
    """``<output>.parts``: the folder of the part files beside ``output``."""
    return output.with_name(output.name + ".parts")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(input_ids: Sequence[str], checkpoint: str, settings: dict) -> dict:
    """What a part file's rows depend on: ``inputs`` (the number of them, and a hash of their ids in
    order), ``checkpoint`` (a hash of the file's bytes; of the name for a URL) and ``settings`` (a hash of
    the decoder, nbest and long-form settings). Each a short hex string, compared as they are."""
    path = Path(checkpoint)
    if path.is_file():
        h = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(HASH_BLOCK):
                h.update(block)
        ckpt = h.hexdigest()[:16]
    else:
        ckpt = _digest(checkpoint)
    return {
        "inputs": len(input_ids),
        "inputs_hash": _digest("\n".join(input_ids)),
        "checkpoint": ckpt,
        "settings": _digest(json.dumps(settings, sort_keys=True, default=str)),
    }


WHAT = {"inputs": "inputs", "inputs_hash": "inputs", "checkpoint": "checkpoint", "settings": "settings"}


@dataclass
class Parts:
    """What the part files hold: ``records`` (input index → its line's record, a transcript's row
    preferred to a skipped report), and for each file the offset just past its last whole line."""

    records: dict[int, dict] = field(default_factory=dict)
    ends: dict[Path, int] = field(default_factory=dict)

    @property
    def done(self) -> set[int]:
        """Indices of the inputs transcribed already (skipped ones are tried again)."""
        return {i for i, r in self.records.items() if "row" in r}

    def add(self, record: dict) -> None:
        i = record["i"]
        if "row" in record or i not in self.records:
            self.records[i] = record


def _header(fp: dict) -> bytes:
    return (json.dumps({"speechkit_parts": PARTS_VERSION, "fingerprint": fp}) + "\n").encode()


def _lines(data: bytes) -> tuple[list[bytes], int]:
    """The whole lines of ``data`` and the offset past the last one (a half-written tail left out)."""
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), end


def read_parts(folder: Path, fp: dict, total: int) -> Parts:
    """Every record of the part files ``folder/rank*.jsonl``, checked against the fingerprint ``fp``.

    A file whose header has another fingerprint, or a line that is not one of ours (a half-written
    last line is dropped, not an error), raises :class:`PartsError`."""
    parts = Parts()
    redo = "pass resume=false to start over (the part files are deleted), or give another output="
    for path in sorted(folder.glob("rank*.jsonl")):
        lines, parts.ends[path] = _lines(path.read_bytes())
        if not lines:  # empty, or killed while writing the header
            continue
        try:
            header = json.loads(lines[0])
            theirs = header["fingerprint"] if header.get("speechkit_parts") == PARTS_VERSION else None
        except (ValueError, TypeError, KeyError, AttributeError):
            theirs = None
        if not isinstance(theirs, dict):
            raise PartsError(f"{path}:1: not a speechkit part file header; {redo}")
        differs = list(dict.fromkeys(WHAT[k] for k in fp if theirs.get(k) != fp[k]))  # in WHAT's order
        if differs:
            what = ", ".join(differs[:-1]) + " and " + differs[-1] if len(differs) > 1 else differs[0]
            raise PartsError(
                f"{path}: written for different {what} from this run's "
                f"({theirs.get('inputs')} inputs there, {fp['inputs']} here); {redo}"
            )
        for n, line in enumerate(lines[1:], start=2):
            try:
                record = json.loads(line)
                ok = (
                    isinstance(record, dict)
                    and 0 <= record["i"] < total
                    and ("row" in record or "skipped" in record)
                )
            except (ValueError, TypeError, KeyError):
                ok = False
            if not ok:
                raise PartsError(f"{path}:{n}: not a part file line (input index and row); {redo}")
            parts.add(record)
    return parts


class PartWriter:
    """Appends records to one rank's part file, flushed after each batch of them. An existing file with
    a header is continued (a half-written last line cut off first); a new or empty one gets the header."""

    def __init__(self, path: Path, fp: dict) -> None:
        self.path = path
        data = path.read_bytes() if path.exists() else b""
        lines, end = _lines(data)
        self.f = path.open("r+b" if path.exists() else "wb")
        if lines:
            self.f.truncate(end)  # a line cut short when the last run was killed
            self.f.seek(end)
        else:
            self.f.truncate(0)
            self.f.write(_header(fp))
            self.f.flush()

    def write(self, records: Iterable[dict]) -> None:
        self.f.write(b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode() for r in records))
        self.f.flush()

    def close(self) -> None:
        self.f.close()


class Tail:
    """Follows the part files of a folder from given offsets (:attr:`Parts.ends`), for the records the
    other ranks add while this one works: :meth:`poll` returns those that arrived since the last call."""

    def __init__(self, folder: Path, ends: dict[Path, int], skip: Path | None = None) -> None:
        self.folder, self.ends, self.skip = folder, dict(ends), skip

    def poll(self) -> list[dict]:
        new = []
        for path in sorted(self.folder.glob("rank*.jsonl")):
            if path == self.skip:
                continue
            start = self.ends.get(path, 0)
            with path.open("rb") as f:
                f.seek(start)
                lines, end = _lines(f.read())
            self.ends[path] = start + end
            for line in lines:
                record = json.loads(line)
                if "i" in record:  # not the header of a file begun since
                    new.append(record)
        return new


def share(weights: Sequence[float], world: int) -> list[int]:
    """The rank of each item when ``world`` processes take contiguous runs of items of about equal total
    weight (seconds of audio, bytes): item ``j`` goes to rank ``⌊W · (Σ_{k<j} w_k + w_j/2) / Σ w⌋``;
    equal shares of the count when the weights are all zero."""
    if world <= 1:
        return [0] * len(weights)
    if sum(weights) <= 0:
        weights = [1.0] * len(weights)
    total, ranks, before = float(sum(weights)), [], 0.0
    for w in weights:
        ranks.append(min(world - 1, int(world * (before + w / 2) / total)))
        before += w
    return ranks


@dataclass
class Group:
    """This process's place among the ``torchrun`` processes (``world == 1``: alone). ``barrier`` waits
    for all of them (a gloo process group: a few bytes, whatever device decodes)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def join(cls) -> Group:
        """Join the process group when launched by torchrun (or a multi-task submitit job)."""
        from speechkit import distributed

        if not distributed.launched():
            return cls()
        import torch.distributed as dist

        group = cls(int(os.environ["WORLD_SIZE"]), distributed.rank(), int(os.environ.get("LOCAL_RANK", 0)))
        if not dist.is_initialized():
            dist.init_process_group(backend="gloo")
        return group

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def leave(self) -> None:
        if self.world > 1:
            from speechkit import distributed

            distributed.shutdown()


def wait_for(tail: Tail, missing: set[int], on_record, block: bool = True, poll_s: float = POLL_S) -> None:
    """Call ``on_record`` with each new record of an index in ``missing`` (removed from it) that the other
    ranks' part files hold; ``block``: until none is missing. A rank that dies takes the others down with
    it under torchrun, so the wait ends."""
    while True:
        for record in tail.poll():
            if record["i"] in missing:
                missing.discard(record["i"])
                on_record(record)
        if not missing or not block:
            return
        time.sleep(poll_s)


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)

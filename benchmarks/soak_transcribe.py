"""Soak test: transcribe many short files in one process; memory must stay flat, throughput steady.

    python benchmarks/soak_transcribe.py --checkpoint runs/asr_grid/reversed20/checkpoints/best.pt \
        --manifest data/asr_grid/test.jsonl --files 10000

The manifest's audio files are cycled (each pass reads them from disk again) until ``--files``
have been transcribed with ``Pipeline.transcribe`` in calls of ``--chunk`` files, as an
application would. After every 1 000 files it prints files/s of that stretch, the current RSS
and the peak RSS (VmHWM); at the end, whether RSS grew more than 5 % from 1 000 files to the end.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident set size in MiB, from /proc/self/status."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--chunk", type=int, default=100, help="files per transcribe() call")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from speechkit import load_checkpoint

    manifest = Path(a.manifest)
    paths = [manifest.parent / json.loads(line)["audio_filepath"] for line in manifest.read_text().splitlines() if line.strip()]
    pipe = load_checkpoint(a.checkpoint, batch_size=32)
    done, t0, t_mark, rows = 0, time.perf_counter(), time.perf_counter(), []
    print("| files | files/s (last 1 000) | RSS MiB | peak RSS MiB |")
    print("| ---: | ---: | ---: | ---: |")
    while done < a.files:
        batch = [paths[(done + i) % len(paths)] for i in range(min(a.chunk, a.files - done))]
        texts = pipe.transcribe(batch)
        assert len(texts) == len(batch)
        before = done
        done += len(batch)
        if done // 1000 > before // 1000:
            now = time.perf_counter()
            rss, peak = rss_mib()
            rows.append((done, 1000 / (now - t_mark), rss, peak))
            t_mark = now
            print(f"| {done} | {rows[-1][1]:.0f} | {rss:.0f} | {peak:.0f} |", flush=True)
    total = time.perf_counter() - t0
    first, last = rows[0], rows[-1]
    growth = (last[2] - first[2]) / first[2]
    print(f"{done} files in {total:.0f} s ({done / total:.0f} files/s); RSS {first[2]:.0f} MiB at {first[0]} files, "
          f"{last[2]:.0f} MiB at {last[0]} ({100 * growth:+.1f} %); peak {last[3]:.0f} MiB: "
          + ("flat" if growth < 0.05 else "GROWING"))


if __name__ == "__main__":
    main()

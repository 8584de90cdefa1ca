"""Throughput of ``speechkit-transcribe`` on a manifest with 1 and with N processes (``torchrun
--standalone --nproc-per-node=N``, one thread each: ``OMP_NUM_THREADS=1``), end to end as a user runs it.

For each process count, best of ``--repeats`` runs of the command (a fresh output each time, so no
resume): ``transcribe s`` is the command's own figure (from the first input to the merged output:
reading the files, features, encoder, greedy decoding, part files, merge), ``command s`` the whole
command with Python and torch start-up and the checkpoint load. files/s and the real-time factor
(RTF = seconds / seconds of audio) are from ``transcribe s``. The outputs of every process count
are checked to hold the same texts in the same order.

    python benchmarks/transcribe_shards.py --processes 1 2 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEED = re.compile(r"real-time factor [\d.]+: ([\d.]+) s of \w+ in ([\d.]+) s")


def run(processes: int, args, out: Path) -> tuple[float, float, float, list[str]]:
    """One run: (audio s, transcribe s, command s, the output's texts)."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    cmd = [*launcher, "-m", "speechkit.transcribe", f"checkpoint={args.checkpoint}", f"input={args.manifest}",
           f"output={out}", "device=cpu", f"batch_size={args.batch_size}", "progress=false",
           f"hydra.run.dir={out.parent / 'run'}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    audio, seconds = map(float, SPEED.search(p.stderr).groups())
    texts = [json.loads(line)["pred_text"] for line in out.read_text().splitlines()]
    return audio, seconds, wall, texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/asr_grid/mix/checkpoints/best.pt")
    ap.add_argument("--manifest", default="data/asr_grid/test.jsonl")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    rows, outputs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.processes:
            runs = []
            for r in range(args.repeats):
                out = Path(tmp) / f"p{n}_{r}" / "preds.jsonl"
                runs.append(run(n, args, out))
                print(
                    f"{n} process(es), run {r + 1}: transcribe {runs[-1][1]:.2f} s, command {runs[-1][2]:.2f} s"
                )
            audio, seconds, wall, texts = min(runs, key=lambda x: x[1])
            outputs[n] = texts
            rows.append((n, len(texts), audio, seconds, min(x[2] for x in runs), [x[1] for x in runs]))
    first = outputs[args.processes[0]]
    same = all(t == first for t in outputs.values())
    print(f"\n{Path(args.manifest)}: {rows[0][1]} files, {rows[0][2]:.0f} s of audio; same texts in the same "
          f"order for every process count: {same}\n")  # fmt: skip
    print("| processes | transcribe s (runs) | files/s | RTF | × real time | command s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, files, audio, seconds, wall, all_runs in rows:
        runs = ", ".join(f"{s:.2f}" for s in all_runs)
        print(f"| {n} | {seconds:.2f} ({runs}) | {files / seconds:.0f} | {seconds / audio:.4f} | "
              f"{audio / seconds:.0f} | {wall:.1f} |")  # fmt: skip
    if not same:
        raise SystemExit("error: the outputs differ between process counts")


if __name__ == "__main__":
    main()

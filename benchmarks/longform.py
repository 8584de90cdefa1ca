"""Long-form transcription (speechkit/longform.py): the two voice activity detectors compared, WER of the
long-form path against the per-utterance path on the same words, and real-time factor and peak memory
(RSS) against the file's length.

- ``vad``: samples/grid utterances without added noise, trimmed to their speech (the 10-ms frames within
  40 dB of the loudest), laid end to end with pauses of 0.4-2 s, under white noise at -60 and -50 dBFS
  and under pink noise at -50 dBFS whose level jumps ±6 dB every 0.25 s; for each VAD: the boundary
  error against the known layout (mean, 95th percentile, worst, share within 50 ms), utterances missed or
  split, regions found in the pauses, and CPU seconds per hour of audio (one thread, VAD alone).
- ``wer``: the 32 dev + test utterances (voices unseen in training), whole files, laid end to end three
  times with different pauses (0.5-2 s) under -60 dBFS white noise; WER of their joined words, per
  utterance (each file alone) and long-form (``energy``, ``silero``, and the utterances' own extents as
  segments).
- ``scale``: 1, 10 and 60 minutes of all 272 samples/grid utterances with pauses of 0.3-1.5 s, written
  as FLAC; each length transcribed in a fresh process (``--one``) by the long-form path and, up to 10
  minutes, by the whole-file path (``long_form.enabled=false``): wall and CPU seconds, RTF, the RSS
  after loading the model and warming up, and its peak while transcribing (sampled every 10 ms).

    python benchmarks/longform.py --checkpoint runs/demo/latest/checkpoints/best.pt
    python benchmarks/longform.py --only vad
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples" / "grid"
RATE = 16000  # Hz
FRAME = 160  # samples per 10-ms frame


def rows(*splits: str) -> list[dict]:
    out = []
    for split in splits:
        for line in (SAMPLES / f"{split}.jsonl").read_text().splitlines():
            r = json.loads(line)
            r["audio_filepath"] = str(SAMPLES / r["audio_filepath"])
            out.append(r)
    return out


def read(path: str) -> np.ndarray:
    return sf.read(path, dtype="float32")[0]


def trimmed(x: np.ndarray) -> np.ndarray:
    f = x[: len(x) // FRAME * FRAME].reshape(-1, FRAME)
    e = 10 * np.log10((f**2).mean(1) + 1e-10)
    on = np.flatnonzero(e > e.max() - 40)
    return x[on[0] * FRAME : (on[-1] + 1) * FRAME]


def lay_out(utts: list[np.ndarray], rng, lo: float, hi: float) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A pause, then each utterance followed by a pause of ``lo``-``hi`` s; each utterance's samples."""
    parts, truth, pos = [], [], 0
    for u in [None, *utts]:
        if u is not None:
            parts.append(u)
            truth.append((pos, pos + len(u)))
            pos += len(u)
        gap = np.zeros(round(rng.uniform(lo, hi) * RATE), np.float32)
        parts.append(gap)
        pos += len(gap)
    return np.concatenate(parts), truth


def noise(n: int, kind: str, db: float, rng) -> np.ndarray:
    z = rng.normal(0, 1, n)
    if kind == "pink-jumping":
        from scipy.signal import lfilter

        z = lfilter(
            [0.049922035, -0.095993537, 0.050612699, -0.004408786],
            [1, -2.494956002, 2.017265875, -0.522189400],
            z,
        )  # 1/f (Kellet's filter)
        steps = 10 ** (rng.uniform(-6, 6, n // 4000 + 2) / 20)  # a new level every 0.25 s
        z = z * np.interp(np.arange(n), np.arange(len(steps)) * 4000, steps)
    return (z / np.sqrt((z**2).mean()) * 10 ** (db / 20)).astype(np.float32)


def vad_regions(x: np.ndarray, vad: str) -> tuple[list[tuple[int, int]], float]:
    from speechkit.longform import LongFormConfig, SegmentStream

    cfg = LongFormConfig(vad=vad, pad_s=0.0)
    blocks = (torch.from_numpy(x[i : i + 10 * RATE]) for i in range(0, len(x), 10 * RATE))
    t0 = time.process_time()
    found = [(s.start, s.end) for s in SegmentStream(blocks, cfg, RATE)]
    return found, time.process_time() - t0


def boundary_scores(found, truth) -> dict:
    errors, missed, split = [], 0, 0
    for a, b in truth:
        hits = [(s, e) for s, e in found if e > a and s < b]
        if not hits:
            missed += 1
            continue
        split += len(hits) > 1
        errors += [abs(hits[0][0] - a) / RATE * 1000, abs(hits[-1][1] - b) / RATE * 1000]
    extra = sum(1 for s, e in found if not any(e > a and s < b for a, b in truth))
    err = np.array(errors)
    return {
        "mean_ms": err.mean(),
        "p95_ms": np.percentile(err, 95),
        "max_ms": err.max(),
        "within_50ms": (err <= 50).mean(),
        "missed": missed,
        "split": split,
        "extra": extra,
    }


def bench_vad(vads: list[str]) -> None:
    clean = [
        trimmed(x) for x in map(read, (r["audio_filepath"] for r in rows("train"))) if x[0] == x[-1] == 0
    ]
    rng = np.random.default_rng(0)
    x, truth = lay_out([clean[i] for i in rng.integers(len(clean), size=150)], rng, 0.4, 2.0)
    hours = len(x) / RATE / 3600
    print(f"\n## VAD: {len(truth)} utterances, {len(x) / RATE:.0f} s\n")
    print(
        "| noise | VAD | mean ms | p95 ms | worst ms | within 50 ms | missed | split | extra | CPU s / hour |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, db in (("white", -60), ("white", -50), ("pink-jumping", -50)):
        y = x + noise(len(x), kind, db, np.random.default_rng(1))
        for vad in vads:
            found, cpu = vad_regions(y, vad)
            s = boundary_scores(found, truth)
            print(
                f"| {kind} {db} dBFS | {vad} | {s['mean_ms']:.1f} | {s['p95_ms']:.1f} | {s['max_ms']:.0f} | "
                f"{100 * s['within_50ms']:.1f} % | {s['missed']} | {s['split']} | {s['extra']} | {cpu / hours:.2f} |"
            )


def wer(pipe, refs: list[str], hyps: list[str]) -> float:
    from speechkit.metrics import error_counts

    c = error_counts([" ".join(refs)], [" ".join(h for h in hyps if h)])
    return 100 * c["word_errors"] / c["words"]


def bench_wer(pipe, vads: list[str]) -> None:
    rs = rows("dev", "test")
    files = [r["audio_filepath"] for r in rs]
    refs = [pipe.tokenizer.clean(r["text"]) for r in rs]
    per_utt = [t.text for t in pipe.transcribe(files)]
    scores = {"per utterance (each file alone)": [], "long-form, segments = the utterances": []}
    scores.update({f"long-form, vad={v}": [] for v in vads})
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(3):
            rng = np.random.default_rng(10 + seed)
            x, truth = lay_out([read(f) for f in files], rng, 0.5, 2.0)
            x = x + noise(len(x), "white", -60, rng)
            path = Path(tmp) / f"long{seed}.flac"
            sf.write(path, x, RATE)
            scores["per utterance (each file alone)"].append(wer(pipe, refs, per_utt))
            given = [(a / RATE, b / RATE) for a, b in truth]
            scores["long-form, segments = the utterances"].append(
                wer(pipe, refs, [pipe.transcribe_long(path, segments=given).text])
            )
            for v in vads:
                scores[f"long-form, vad={v}"].append(
                    wer(pipe, refs, [pipe.transcribe_long(path, {"vad": v}).text])
                )
    words = sum(len(r.split()) for r in refs)
    print(f"\n## WER: {len(files)} utterances × 3 layouts, {words} words each\n")
    print("| path | WER % (mean of 3) | per layout |")
    print("| --- | ---: | --- |")
    for name, s in scores.items():
        print(f"| {name} | {np.mean(s):.2f} | {', '.join(f'{w:.2f}' for w in s)} |")


def write_long(path: Path, minutes: float) -> None:
    utts = [read(r["audio_filepath"]) for r in rows("train", "dev", "test")]
    rng = np.random.default_rng(int(minutes * 100))
    with sf.SoundFile(path, "w", RATE, 1) as f:
        written = 0
        while written < minutes * 60 * RATE:
            x, _ = lay_out([utts[i] for i in rng.permutation(len(utts))[:60]], rng, 0.3, 1.5)
            x = (x + noise(len(x), "white", -60, rng))[: round(minutes * 60 * RATE) - written]
            f.write(x)
            written += len(x)


def rss_mb() -> float:
    """This process's resident memory now (VmRSS), in MiB."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


def one(args) -> None:
    """In a fresh process: transcribe ``args.one`` and print one JSON line of timings and memory (the RSS
    before, and its peak while transcribing, sampled every 10 ms by a thread)."""
    import threading

    from speechkit.checkpoint import load_checkpoint

    torch.set_num_threads(args.threads)
    pipe = load_checkpoint(
        args.checkpoint, decoder={"name": "greedy"}, device="cpu", batch_size=args.batch_size
    )
    warm = rows("test")[0]["audio_filepath"]
    pipe.transcribe(warm)
    pipe.transcribe_long(warm, {"vad": args.vad})
    base = peak = rss_mb()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.01):
            peak = max(peak, rss_mb())

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0, c0 = time.perf_counter(), time.process_time()
    if args.whole:
        text = pipe.transcribe(args.one).text
    else:
        text = pipe.transcribe_long(args.one, {"vad": args.vad}).text
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    done.set()
    sampler.join()
    peak = max(peak, rss_mb())
    seconds = sf.info(args.one).duration
    print(
        json.dumps(
            {
                "audio_s": seconds,
                "wall_s": wall,
                "cpu_s": cpu,
                "rtf": wall / seconds,
                "base_mb": base,
                "peak_mb": peak,
                "words": len(text.split()),
            }
        )
    )


def bench_scale(args, vads: list[str]) -> None:
    print(f"\n## Scale: {args.threads} thread(s), batch {args.batch_size}\n")
    print("| audio | path | wall s | CPU s | RTF | RSS before MiB | peak RSS MiB | growth MiB | words |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            path = Path(tmp) / f"{minutes:g}min.flac"
            write_long(path, minutes)
            runs = [(f"long-form, vad={v}", ["--vad", v]) for v in vads]
            if minutes <= 10:
                runs.append(("whole file (long_form.enabled=false)", ["--whole"]))
            for name, extra in runs:
                cmd = [
                    sys.executable,
                    __file__,
                    "--one",
                    str(path),
                    "--checkpoint",
                    args.checkpoint,
                    "--threads",
                    str(args.threads),
                    "--batch-size",
                    str(args.batch_size),
                    *extra,
                ]
                p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                if p.returncode:
                    print(f"| {minutes:g} min | {name} | failed: {p.stderr.strip().splitlines()[-1]} |")
                    continue
                r = json.loads(p.stdout.strip().splitlines()[-1])
                print(
                    f"| {minutes:g} min | {name} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['rtf']:.4f} | "
                    f"{r['base_mb']:.0f} | {r['peak_mb']:.0f} | {r['peak_mb'] - r['base_mb']:.0f} | {r['words']} |",
                    flush=True,
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = REPO / "runs/demo/latest/checkpoints/best.pt"
    ap.add_argument("--checkpoint", default=str(default) if default.exists() else None)
    ap.add_argument("--only", choices=["vad", "wer", "scale"], action="append")
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--vad", default="energy", help=argparse.SUPPRESS)
    ap.add_argument("--whole", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one(args)
    torch.set_num_threads(args.threads)
    try:
        import silero_vad  # noqa: F401

        vads = ["energy", "silero"]
    except ImportError:
        vads = ["energy"]
        print("silero-vad is not installed: its rows are left out (pip install silero-vad)", file=sys.stderr)
    parts = args.only or ["vad", "wer", "scale"]
    if "vad" in parts:
        bench_vad(vads)
    if ("wer" in parts or "scale" in parts) and not args.checkpoint:
        ap.error(
            "--checkpoint: give a trained checkpoint (runs/demo/latest/checkpoints/best.pt is not there)"
        )
    if "wer" in parts:
        from speechkit.checkpoint import load_checkpoint

        pipe = load_checkpoint(
            args.checkpoint, decoder={"name": "greedy"}, device="cpu", batch_size=args.batch_size
        )
        bench_wer(pipe, vads)
    if "scale" in parts:
        bench_scale(args, vads)


if __name__ == "__main__":
    main()

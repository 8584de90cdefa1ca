"""Real-time factor of transcription on the CPU, end to end from files to text: reading and decoding
the audio files, features, encoder, greedy CTC decoding — ``Pipeline.transcribe`` as
``speechkit-transcribe`` runs it. RTF = compute seconds / audio seconds (lower is faster; 0.01 =
100× faster than real time). Best of ``--repeats`` passes over the same files, after one warm-up.

    python benchmarks/transcribe_rtf.py --threads 1
    python benchmarks/transcribe_rtf.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import soundfile as sf
import torch

from speechkit.checkpoint import load_checkpoint
from speechkit.data.manifest import read_manifest
from speechkit.metrics import error_counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/asr_grid/main/checkpoints/best.pt")
    ap.add_argument("--manifest", default="data/asr_grid/test.jsonl")
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    pipe = load_checkpoint(
        args.checkpoint, decoder={"name": "greedy"}, device="cpu", batch_size=args.batch_size
    )
    examples = read_manifest(args.manifest, "audio")[: args.files]
    files = [ex.path for ex in examples]
    audio_s = sum(sf.info(str(f)).duration for f in files)
    texts = pipe.transcribe(files[: args.batch_size])  # warm-up (allocator, oneDNN kernels)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        texts = [t.text for t in pipe.transcribe(files)]
        times.append(time.perf_counter() - t0)
    best = min(times)
    c = error_counts([pipe.tokenizer.clean(ex.text) for ex in examples], texts)
    print(
        f"{len(files)} files, {audio_s:.0f} s of audio, {args.threads} thread(s), batch {args.batch_size}: "
        f"best {best:.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)}) → RTF {best / audio_s:.4f} "
        f"({audio_s / best:.0f}× real time); WER {100 * c['word_errors'] / max(c['words'], 1):.2f} %"
    )


if __name__ == "__main__":
    main()

"""Speed of ``frontend=speech_embedding`` against openWakeWord's own way of computing the same embedding.

openWakeWord runs its two ONNX models in onnxruntime: the log-mel model over the audio, then the
embedding model on every 76-frame window (one every 4 mel frames for a 40 ms hop), so each mel frame
goes through the convolutions 19 times. speechkit's frontend runs the same weights in torch over a
whole padded batch at once (speechkit/frontends/speech_embedding.py). Both on one thread, the same
utterances (16 kHz, loaded once); only the computation is timed, best of ``--repeats``. Every row
also reports the max |difference| from onnxruntime's values (and their largest magnitude).

    pip install onnx && pip install --no-deps openwakeword==0.5.1
    python benchmarks/speech_embedding_bench.py --manifest data/asr_grid_12k/test.jsonl
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pretrained_embedding as pe  # noqa: E402  (beside this script)
from features_bench import best_of  # noqa: E402  (beside this script)

from speechkit.data.dataset import pad_time_first  # noqa: E402
from speechkit.data.manifest import read_manifest  # noqa: E402
from speechkit.frontends.audio_io import load_audio  # noqa: E402
from speechkit.registry import build, load_plugins  # noqa: E402


def onnxruntime_embeddings(waves: list[np.ndarray]) -> Callable[[], list[np.ndarray]]:
    """openWakeWord's computation, one utterance at a time (pretrained_embedding.py's ``embedding``: the
    mel model, then every 76-frame window in one call), on one thread."""
    pe._init()
    return lambda: [pe.embedding(w) for w in waves]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", default="data/asr_grid_12k/test.jsonl")
    ap.add_argument("--files", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_plugins()
    examples = read_manifest(args.manifest)[: args.files]
    waves = [load_audio(ex.path, 16000) for ex in examples]
    seconds = sum(w.shape[0] for w in waves) / 16000
    print(f"{len(waves)} utterances, {seconds:.1f} s of audio, 1 thread")
    ref_run = onnxruntime_embeddings([w.numpy() for w in waves])
    ref = ref_run()
    t = best_of(ref_run, args.repeats)
    print(f"| openWakeWord's way (onnxruntime, windows of 76 mel frames, 40 ms) | {seconds / t:.0f}× | 0 |")
    for hop in (40, 80):
        fe = build("frontend", "speech_embedding", hop_ms=hop, normalize="none").eval()
        batches = [
            pad_time_first(waves[i : i + args.batch_size]) for i in range(0, len(waves), args.batch_size)
        ]

        def run(fe=fe, batches=batches) -> list[torch.Tensor]:
            with torch.no_grad():
                return [fe(x, n) for x, n in batches]

        outs = run()
        t = best_of(run, args.repeats)
        diff = 0.0
        if hop == 40:
            rows = [(f, n) for feats, frames in outs for f, n in zip(feats, frames.tolist())]
            diff = max(float(np.abs(f[:n].numpy() - r).max()) for (f, n), r in zip(rows, ref))
        peak = max(float(np.abs(r).max()) for r in ref)
        row = f"| speechkit, whole utterances, batches of {args.batch_size} ({hop} ms) | {seconds / t:.0f}× |"
        print(f"{row} {diff:.1e} (values up to {peak:.0f}) |" if hop == 40 else f"{row} – |")


if __name__ == "__main__":
    main()

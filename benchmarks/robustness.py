"""How a model's WER moves with silence around the speech and with its level (issue 14).

Every utterance of ``--manifest`` is decoded greedy under each condition (the same transformation of
its samples at the model's rate, batch by batch through ``Pipeline.transcribe``):

- ``clean``: as recorded;
- ``silence 0.3 s``: 0.3 s of digital silence (zeros) before and after;
- ``silence 1 s + 0.5 s, −55 dBFS floor``: 1 s before and 0.5 s after, and white noise of RMS −55 dB
  re full scale (σ = 10^(−55/20)) under the whole file, seeded per utterance;
- ``+20 dB`` and ``−20 dB``: the samples times 10 and 0.1 in float, not clipped (peaks past ±1 are
  fed as they are: a float pipeline's level, not a file's);
- ``+20 dB clipped``: times 10, clipped to ±1, as a file written at that gain would hold it.

``--normalize speech|utterance`` swaps the frontend's normalisation at test time (the trained
weights unchanged); ``global`` needs training-set statistics, so it is neither given nor taken.

    python benchmarks/robustness.py --checkpoint runs/asr_grid/mix/checkpoints/best.pt \\
        --manifest data/asr_grid_mix/test.jsonl [--normalize speech] [--limit N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from speechkit.metrics import wer_cer

NOISE_DBFS = -55.0  # dB re full scale: RMS of the white-noise floor
SWAPPABLE = ("utterance", "speech")  # per-utterance normalisations a model can be switched between


def pad(x: np.ndarray, before: int, after: int) -> np.ndarray:
    """``x`` with ``before`` and ``after`` samples of digital silence."""
    return np.concatenate([np.zeros(before, x.dtype), x, np.zeros(after, x.dtype)])


def conditions(sample_rate: int) -> dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]]:
    """Name → transformation of one utterance's float32 samples (full scale 1) at ``sample_rate``."""
    sr = sample_rate

    def floor(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        y = pad(x, sr, sr // 2)
        return y + (10 ** (NOISE_DBFS / 20) * rng.standard_normal(len(y))).astype(np.float32)

    return {
        "clean": lambda x, rng: x,
        "silence 0.3 s": lambda x, rng: pad(x, round(0.3 * sr), round(0.3 * sr)),
        f"silence 1 s + 0.5 s, {NOISE_DBFS:.0f} dBFS floor".replace("-", "−"): floor,
        "+20 dB (float, unclipped)": lambda x, rng: x * np.float32(10),
        "−20 dB": lambda x, rng: x * np.float32(0.1),
        "+20 dB clipped to ±1": lambda x, rng: np.clip(x * np.float32(10), -1, 1),
    }


def swap_normalize(pipe, mode: str) -> None:
    """Set the pipeline's frontend normalisation to ``mode``, the weights unchanged. ``SystemExit``
    unless the trained one and ``mode`` are both per-utterance (``SWAPPABLE``)."""
    fe = pipe.model.frontend
    trained = getattr(getattr(fe, "cfg", None), "normalize", None)
    if trained not in SWAPPABLE or mode not in SWAPPABLE:
        raise SystemExit(
            f"error: --normalize {mode}: a test-time swap is only between {' and '.join(SWAPPABLE)} (global "
            f"needs training-set statistics, none another scale); this model was trained with normalize={trained!r}"
        )
    fe.cfg = dataclasses.replace(fe.cfg, normalize=mode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument(
        "--manifest", type=Path, required=True, help="JSONL: audio_filepath (relative to it), text"
    )
    ap.add_argument(
        "--normalize", choices=["utterance", "speech", "global", "none"], help="swap at test time"
    )
    ap.add_argument("--limit", type=int, help="first N utterances")
    ap.add_argument("--seed", type=int, default=0, help="of the noise floor")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", type=Path, help="write the figures here too")
    a = ap.parse_args()

    import torch

    from speechkit import load_checkpoint

    torch.set_num_threads(1)
    pipe = load_checkpoint(a.checkpoint, decoder={"name": "greedy"}, batch_size=a.batch_size)
    trained = pipe.model.frontend.cfg.normalize
    if a.normalize:
        swap_normalize(pipe, a.normalize)
    sr = pipe.model.frontend.cfg.sample_rate
    rows = [json.loads(line) for line in a.manifest.read_text().splitlines() if line.strip()][: a.limit]
    audio = [pipe.load(a.manifest.parent / r["audio_filepath"]).numpy() for r in rows]
    refs = [pipe.tokenizer.clean(r["text"]) for r in rows]
    figures = {}
    for name, transform in conditions(sr).items():
        start = time.perf_counter()
        inputs = [transform(x, np.random.default_rng([a.seed, i])) for i, x in enumerate(audio)]
        hyps = [t.text for t in pipe.transcribe(inputs, sample_rate=sr)]
        wer, cer = wer_cer(refs, hyps)
        figures[name] = {"wer": wer, "cer": cer, "seconds": time.perf_counter() - start}
        print(f"{name}: WER {100 * wer:.1f} %, CER {100 * cer:.1f} % ({figures[name]['seconds']:.0f} s)")
    used = pipe.model.frontend.cfg.normalize
    print(f"\n{a.checkpoint} on {a.manifest} ({len(rows)} utterances), greedy, normalize={used}"
          + (f" (trained with {trained})" if used != trained else ""))  # fmt: skip
    print("| condition | WER % | CER % |\n| --- | ---: | ---: |")
    for name, f in figures.items():
        print(f"| {name} | {100 * f['wer']:.1f} | {100 * f['cer']:.1f} |")
    if a.json:
        a.json.write_text(
            json.dumps({"normalize": used, "trained": trained, "figures": figures}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()

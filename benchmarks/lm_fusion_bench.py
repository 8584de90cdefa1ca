"""Beam-search decoding time with no LM, a char n-gram and a char RNN, on stored posteriors.

The acoustic model runs once (benchmarks/dump_posteriors.py); this times the decoder alone, batch
by batch, so the figures are the cost of the search and of the LM, not of the features::

    python benchmarks/dump_posteriors.py --checkpoint runs/asr_grid/main/checkpoints/best.pt \
        --manifest data/asr_grid/test.jsonl --limit 500 --out /tmp/grid_test_all.pt
    OMP_NUM_THREADS=1 python benchmarks/lm_fusion_bench.py --posteriors /tmp/grid_test_all.pt \
        --lm ngram:data/asr_grid/char6.arpa:0.5:0.5 --lm char_rnn:runs/char_lm/grid_lm/lm.pt:0.5:1.0

``--lm NAME:PATH:ALPHA:BETA`` adds a row (an ``lm`` plugin with its file and fusion weights).
"""

from __future__ import annotations

import argparse
import time

import torch

from speechkit.metrics import error_counts
from speechkit.registry import build, load_plugins


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--posteriors", required=True, help="a file written by dump_posteriors.py")
    ap.add_argument("--lm", action="append", default=[], help="NAME:PATH:ALPHA:BETA (repeatable)")
    ap.add_argument("--beam", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument(
        "--repeats", type=int, default=2, help="time each decoder this many times, keep the fastest"
    )
    a = ap.parse_args()
    load_plugins()
    torch.set_num_threads(1)
    post = torch.load(a.posteriors, weights_only=True)
    lp, lengths, tokens, refs = post["log_probs"], post["lengths"], post["tokens"], post["refs"]
    rows = [("none", {})]
    for spec in a.lm:
        name, path, alpha, beta = spec.split(":")
        lm = build("lm", name, path=path)
        rows.append(
            (f"{name} ({path}) α {alpha} β {beta}", dict(lm=lm, alpha=float(alpha), beta=float(beta)))
        )
    n = len(refs)
    print(f"{n} utterances, {int(lengths.sum())} frames, beam {a.beam}, batch {a.batch}, 1 thread")
    print("| LM | WER | ms per utterance | ms per 100 frames |")
    print("| --- | ---: | ---: | ---: |")
    for label, kw in rows:
        dec = build("decoder", "beam", tokens=tokens, beam_size=a.beam, **kw)
        best, hyps = float("inf"), []
        for _ in range(a.repeats):
            t0, hyps = time.perf_counter(), []
            for i in range(0, n, a.batch):
                T = int(lengths[i : i + a.batch].max())
                hyps += [h[0].text for h in dec(lp[i : i + a.batch, :T], lengths[i : i + a.batch])]
            best = min(best, time.perf_counter() - t0)
        c = error_counts(refs, hyps)
        print(
            f"| {label} | {100 * c['word_errors'] / c['words']:.2f} % | {1000 * best / n:.1f} | "
            f"{1e5 * best / int(lengths.sum()):.2f} |"
        )


if __name__ == "__main__":
    main()

"""Where the beam decoder's time goes: input checks, search, exact rescoring and the rest (text,
timestamps), in milliseconds per utterance, best of ``--repeats``, one thread, process CPU time.

    python benchmarks/decode_profile.py --posteriors /tmp/grid_test_posteriors.pt

``--posteriors``: a ``.pt`` dict with ``log_probs`` ``(B, T, V)``, ``lengths`` and ``tokens``
(``benchmarks/dump_posteriors.py`` writes one).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechkit.decoders.beam import BeamConfig, BeamDecoder  # noqa: E402
from speechkit.decoders.ctc_score import rescore_exact  # noqa: E402


def best_ms_per_utt(repeats: int, batch: int, fn: Callable[..., object], *args: object) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn(*args)
        best = min(best, time.process_time() - t0)
    return 1000 * best / batch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--posteriors", required=True)
    p.add_argument("--beams", type=int, nargs="+", default=[4, 16, 64])
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    d = torch.load(a.posteriors, weights_only=False)
    lp, lengths, tokens = d["log_probs"].float(), d["lengths"].long(), list(d["tokens"])
    B = lp.shape[0]
    frames = float(lengths.float().mean())
    print(f"# {a.posteriors}: {B} utterances, {frames:.0f} frames on average")
    print(
        "| beam | pruning | total | checks | search | rescoring | text, timestamps | search ns / hypothesis / frame |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for k in a.beams:
        for name, kw in (("none", {}), ("pyctcdecode's", {"token_min_logp": -5.0, "beam_threshold": 10.0})):
            dec = BeamDecoder(BeamConfig(beam_size=k, **kw), tokens)
            dec(lp, lengths)  # warm-up (and the one-off compilation)
            res = dec.search(lp, lengths)
            r = (a.repeats, B)
            total = best_ms_per_utt(*r, dec, lp, lengths)
            checks = best_ms_per_utt(*r, dec.check_inputs, lp, lengths)
            search = best_ms_per_utt(*r, dec.search, lp, lengths)
            rescore = best_ms_per_utt(*r, rescore_exact, lp, lengths, res, True)  # compiled: CPU, engine=auto
            rest = max(total - checks - search - rescore, 0.0)
            per = 1e6 * search / frames / k
            print(
                f"| {k} | {name} | {total:.3f} | {checks:.3f} | {search:.3f} | {rescore:.3f} | {rest:.3f} | {per:.0f} |"
            )


if __name__ == "__main__":
    main()

"""Packed sequences vs per-layer reversal within lengths, for torch's fused LSTM/GRU on this CPU.

    python benchmarks/rnn_impl_bench.py                 # blstm, 2 layers × 256, batch 16, T = 60/150/300
    python benchmarks/rnn_impl_bench.py --encoder bgru --layers 3

Times one forward + backward pass (training mode, loss ``mean(y²)``) of the same encoder with
``impl=packed`` and ``impl=reversed`` (speechkit/encoders/rnn.py), alternating, best of
``--repeats``; lengths drawn between T/2 and T. Also checks that both give the same outputs.
"""

from __future__ import annotations

import argparse
import time

import torch

from speechkit import build


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="blstm")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--features", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--frames", type=int, nargs="+", default=[60, 150, 300])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    enc = build("encoder", a.encoder, hidden_size=a.hidden, num_layers=a.layers, dropout=0.0,
                input_size=a.features).train()
    print(f"# {a.encoder} {a.layers} × {a.hidden}, batch {a.batch}, torch threads {a.threads}")
    print("| frames | packed ms | reversed ms | speed-up | max |Δ output| |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for T in a.frames:
        x = torch.randn(a.batch, T, a.features, requires_grad=True)
        lengths = torch.randint(T // 2, T + 1, (a.batch,))
        lengths[0] = T
        best, outs = {}, {}
        for _ in range(a.repeats):
            for impl in ("packed", "reversed"):
                enc.cfg.impl = impl
                t = time.perf_counter()
                y, _ = enc(x, lengths)
                y.pow(2).mean().backward()
                best[impl] = min(best.get(impl, float("inf")), time.perf_counter() - t)
                outs[impl] = y.detach()
        diff = (outs["packed"] - outs["reversed"]).abs().max().item()
        print(f"| {T} | {1000 * best['packed']:.0f} | {1000 * best['reversed']:.0f} | "
              f"{best['packed'] / best['reversed']:.2f}× | {diff:.1e} |")


if __name__ == "__main__":
    main()

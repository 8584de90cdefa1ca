"""Packed sequences vs per-layer reversal within lengths, for torch's fused LSTM/GRU on this CPU.

    python benchmarks/rnn_impl_bench.py                 # blstm, 2 layers × 256, batch 16, T = 60/150/300
    python benchmarks/rnn_impl_bench.py --encoder bgru --layers 3
    python benchmarks/rnn_impl_bench.py --bf16 --hidden 192 --layers 3 --features 160 --batch 32 --frames 55

Times one forward + backward pass (training mode, loss ``mean(y²)``) of the same encoder with
``impl=packed``, ``impl=reversed`` and ``impl=parallel`` (the reversed form with each layer's two
directions on two threads; speechkit/encoders/rnn.py), alternating, best of ``--repeats``; lengths
drawn between T/2 and T; ``--bf16`` under CPU autocast, as training on a bf16 CPU runs. Also checks
that the three give the same outputs.
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
    p.add_argument("--bf16", action="store_true", help="under torch.autocast('cpu', bfloat16)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    enc = build("encoder", a.encoder, hidden_size=a.hidden, num_layers=a.layers, dropout=0.0,
                input_size=a.features).train()
    impls = ("packed", "reversed", "parallel")
    print(f"# {a.encoder} {a.layers} × {a.hidden}, batch {a.batch}, torch threads {a.threads}"
          f"{', bf16 autocast' if a.bf16 else ''}")
    print("| frames | packed ms | reversed ms | parallel ms | reversed ÷ packed | parallel ÷ reversed | max |Δ output| |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for T in a.frames:
        x = torch.randn(a.batch, T, a.features, requires_grad=True)
        lengths = torch.randint(T // 2, T + 1, (a.batch,))
        lengths[0] = T
        best, outs = {}, {}
        for _ in range(a.repeats):
            for impl in impls:
                enc.cfg.impl = impl
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
                    y, _ = enc(x, lengths)
                y.float().pow(2).mean().backward()
                best[impl] = min(best.get(impl, float("inf")), time.perf_counter() - t)
                outs[impl] = y.detach()
        diff = max((outs[i].float() - outs["reversed"].float()).abs().max().item() for i in impls)
        ms = " | ".join(f"{1000 * best[i]:.0f}" for i in impls)
        print(f"| {T} | {ms} | {best['packed'] / best['reversed']:.2f}× | "
              f"{best['reversed'] / best['parallel']:.2f}× | {diff:.1e} |")


if __name__ == "__main__":
    main()

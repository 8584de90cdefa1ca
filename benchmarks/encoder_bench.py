"""Forward+backward time per batch of every encoder, against torch.nn.LSTM.

    python benchmarks/encoder_bench.py                              # CPU, TorchScript recurrences
    python benchmarks/encoder_bench.py --backends script eager      # and the same loops in Python
    python benchmarks/encoder_bench.py --device cuda

Every encoder: hidden 256 per direction, 3 layers, bidirectional where it applies,
one batch of 16 × 300 frames × 80 features, training mode. The encoders are timed in
interleaved rounds (each round times each encoder once) so that a busy machine slows
them all alike; the table gives the median of the rounds, and the ratio to the median
of torch.nn.LSTM (3 layers, bidirectional, same sizes).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from speechkit import build
from speechkit.encoders import cells

ENCODERS = ["blstm", "bgru", "elman", "jordan", "lstm_peephole", "lstm_coupled", "tcn"]


class TorchLSTM(torch.nn.Module):
    """The reference: torch.nn.LSTM on the padded batch, as the encoders are called."""

    def __init__(self, features: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(features, hidden, layers, bidirectional=True, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lstm(x)[0], lengths


def make(name: str, hidden: int, layers: int, features: int) -> torch.nn.Module:
    if name == "torch.nn.LSTM":
        return TorchLSTM(features, hidden, layers)
    params = {"hidden_size": hidden, "num_layers": layers}
    if name in ("elman", "jordan", "lstm_peephole", "lstm_coupled"):
        params["bidirectional"] = True
    return build("encoder", name, input_size=features, **params)


def step(enc, x: torch.Tensor, lengths: torch.Tensor) -> None:
    y, _ = enc(x, lengths)
    y.square().mean().backward()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoders", nargs="+", default=ENCODERS)
    ap.add_argument(
        "--backends",
        nargs="+",
        default=["script"],
        choices=cells.BACKENDS,
        help="how the custom cells run their loops; each is timed (interleaved) as its own row",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--features", type=int, default=80)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    x = torch.randn(args.batch, args.frames, args.features, device=dev)
    lengths = torch.full((args.batch,), args.frames, dtype=torch.long, device=dev)
    rows = []  # (label, encoder, recurrence backend)
    for n in ["torch.nn.LSTM", *args.encoders]:
        enc = make(n, args.hidden, args.layers, args.features).to(dev).train()
        if n in cells.LOOPS:
            rows += [(n if len(args.backends) == 1 else f"{n} ({b})", enc, b) for b in args.backends]
        else:
            rows.append((n, enc, "script"))
    warm, times = {}, {label: [] for label, _, _ in rows}
    for label, enc, backend in rows:
        cells.set_backend(backend)
        t0 = time.perf_counter()
        for _ in range(2):  # TorchScript profiles on its first calls; torch.compile compiles
            step(enc, x, lengths)
        warm[label] = time.perf_counter() - t0
    for _ in range(args.rounds):
        for label, enc, backend in rows:
            cells.set_backend(backend)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step(enc, x, lengths)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times[label].append(time.perf_counter() - t0)
    base = statistics.median(times["torch.nn.LSTM"])
    print(
        f"device {args.device}, threads {torch.get_num_threads()}, recurrence {'/'.join(args.backends)}, "
        f"batch {args.batch} x {args.frames} frames x {args.features} features, hidden {args.hidden}, "
        f"{args.layers} layers, {args.rounds} rounds"
    )
    print("| encoder | ms / fwd+bwd (median) | min | × torch.nn.LSTM | warm-up s (2 calls) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, _, _ in rows:
        med = statistics.median(times[label])
        print(
            f"| {label} | {med * 1e3:.0f} | {min(times[label]) * 1e3:.0f} | {med / base:.2f} | {warm[label]:.1f} |"
        )


if __name__ == "__main__":
    main()

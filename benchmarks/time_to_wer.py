"""Time to accuracy: dev WER (or CER, ``--metric cer``) after 2, 5, 10 and 20 minutes of training, for several runs.

    python benchmarks/time_to_wer.py --out runs/lev \\
        "fp32=runs/asr_grid/steps" "bf16=runs/lev/bf16_a@3.9" "bf16 + 4x stacking=runs/lev/bf16_sub4@5.1"

Each ``NAME=RUN_DIR`` (the name may hold an ``=`` of its own: ``"encoder.dropout=0=runs/x"``) reads the dev evaluations (step, minutes, dev WER) the trainer keeps in
``RUN_DIR/checkpoints/last.pt``: at epoch ends, and every ``trainer.eval_every_steps`` steps. The minutes are the run's own wall clock, unless ``@RATE`` gives a
steps-per-second rate measured apart (``benchmarks/train_throughput.py`` on an idle machine): then a
step count is turned into minutes at that rate, so runs that shared a busy machine are compared as
they would run alone. WER at a time between two evaluations is interpolated linearly in steps; a
run's LR schedule follows its own step count, so a run cut at 10 minutes would end a little better
than its curve at 10 minutes shows (the schedule had not decayed yet). Prints a Markdown table and
writes ``time_to_wer.png`` into ``--out``, where runs whose names differ only in a trailing ``, seed N``
share a colour and one legend entry.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import torch

MINUTES = (2, 5, 10, 20)


def curve(run_dir: Path, rate: float | None, metric: str = "wer") -> tuple[np.ndarray, np.ndarray]:
    """``(minutes, dev WER or CER)`` of a run's evaluations, starting at (0, 1)."""
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    history = [h for h in ckpt["trainer"]["state"]["history"] if f"dev_{metric}" in h]
    minutes = [h["step"] / rate / 60 if rate else h["minutes"] for h in history]
    return np.array([0.0, *minutes]), np.array([1.0, *(h[f"dev_{metric}"] for h in history)])


def setting_of(name: str) -> str:
    """A run's name without its trailing ``, seed N``: the setting it shares with its other seeds."""
    return re.sub(r",?\s*seed\s*\S+$", "", name) or name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="NAME=RUN_DIR[@STEPS_PER_SECOND]")
    p.add_argument("--out", type=Path, default=Path("."))
    p.add_argument("--metric", choices=("wer", "cer"), default="wer", help="dev WER (speech) or CER (text lines)")
    a = p.parse_args()
    curves = {}
    for spec in a.runs:
        # the name ends at the first "=" after which a run folder follows: names and paths may hold one
        splits = [(spec[:i], *spec[i + 1 :].partition("@")[::2]) for i, c in enumerate(spec) if c == "="]
        found = [(n, w, r) for n, w, r in splits if n and (Path(w) / "checkpoints" / "last.pt").is_file()]
        if not found:
            p.error(f"{spec!r}: give NAME=RUN_DIR[@STEPS_PER_SECOND], a run folder holding checkpoints/last.pt")
        name, where, rate = found[0]
        curves[name] = (*curve(Path(where), float(rate) if rate else None, a.metric), bool(rate))
    print("| run | minutes from | " + " | ".join(f"{m} min" for m in MINUTES) + " | at the end |")
    print("| --- | --- | " + " | ".join("---:" for _ in MINUTES) + " | ---: |")
    for name, (t, wer, rated) in curves.items():
        cells = [f"{100 * np.interp(m, t, wer):.1f} %" if m <= t[-1] else "—" for m in MINUTES]
        source = "steps ÷ idle rate" if rated else "its wall clock"
        print(f"| {name} | {source} | " + " | ".join(cells) + f" | {100 * wer[-1]:.2f} % ({t[-1]:.1f} min) |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    groups = {}  # runs of one setting (names that differ only in a trailing ", seed N") share a colour
    for name in curves:
        groups.setdefault(setting_of(name), []).append(name)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (setting, names) in enumerate(groups.items()):
        for j, name in enumerate(names):
            t, wer, _ = curves[name]
            label = (f"{setting} ({len(names)} seeds)" if len(names) > 1 else name) if j == 0 else None
            ax.plot(t, 100 * wer, marker="o", markersize=3, lw=1.2, alpha=0.8, color=colours[i % len(colours)],
                    label=label)
    end = max(t[-1] for t, _, _ in curves.values())
    ax.set(xlabel="training minutes", ylabel=f"dev {a.metric.upper()} (%)", yscale="log", title="time to accuracy",
           xlim=(0, end * 1.03))
    for m in MINUTES:
        if m <= end:
            ax.axvline(m, color="0.85", lw=0.8, zorder=0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    a.out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(a.out / "time_to_wer.png", dpi=120)
    print(f"plot: {a.out / 'time_to_wer.png'}")


if __name__ == "__main__":
    main()

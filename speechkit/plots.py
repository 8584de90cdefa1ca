"""Plots people would rather see than read, written as PNG files into the run directory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_training(losses: Sequence[tuple[int, float]], history: Sequence[dict[str, float]], path: str | Path) -> None:
    """Training loss by step (left) and dev WER/CER by epoch (right)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if losses:
        steps, values = zip(*losses)
        ax1.plot(steps, values, label="train loss (CTC, per token)")
    dev = [h for h in history if "dev_loss" in h]
    if dev:
        ax1.plot([h["step"] for h in dev], [h["dev_loss"] for h in dev], "o-", label="dev loss")
        ax2.plot([h["epoch"] for h in dev], [100 * h["dev_wer"] for h in dev], "o-", label="dev WER")
        ax2.plot([h["epoch"] for h in dev], [100 * h["dev_cer"] for h in dev], "s-", label="dev CER")
    ax1.set(xlabel="step", ylabel="loss", yscale="log", title="loss")
    ax2.set(xlabel="epoch", ylabel="error rate (%)", title="dev error rates (greedy)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

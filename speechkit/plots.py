"""Plots people would rather see than read, written as PNG files into the run directory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_training(
    losses: Sequence[tuple[int, float]], history: Sequence[dict[str, float]], path: str | Path
) -> None:
    """Training loss by step (left) and dev WER/CER by step (right; epoch ends marked above it when the
    dev set was also measured inside epochs, ``trainer.eval_every_steps``)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if losses:
        steps, values = zip(*losses)
        ax1.plot(steps, values, label="train loss (CTC, per token)")
    dev = [h for h in history if "dev_loss" in h]
    if dev:
        ax1.plot([h["step"] for h in dev], [h["dev_loss"] for h in dev], "o-", label="dev loss")
        ax2.plot([h["step"] for h in dev], [100 * h["dev_wer"] for h in dev], "o-", label="dev WER")
        ax2.plot([h["step"] for h in dev], [100 * h["dev_cer"] for h in dev], "s-", label="dev CER")
        ends: dict[int, int] = {}  # epochs completed → the step its epoch ended at (every epoch end is a row)
        for h in history:
            if h["epoch"]:
                ends.setdefault(h["epoch"], h["step"])
        if len(dev) > len(ends):
            top = ax2.secondary_xaxis("top")
            top.set_xticks(list(ends.values()), labels=[str(e) for e in ends])
            top.set_xlabel("epochs completed")
    ax1.set(xlabel="step", ylabel="loss", yscale="log", title="loss")
    ax2.set(xlabel="step", ylabel="error rate (%)", title="dev error rates (greedy)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- one utterance

BLANK_LABEL = "∅"  # how the CTC blank is labelled on posteriorgrams


def _time_axis(n: int, shift_s: float | None) -> tuple[np.ndarray, str]:
    """Edges of ``n`` frames in seconds (or frame numbers when ``shift_s`` is None), and the axis label."""
    if shift_s:
        return np.arange(n + 1) * shift_s, "time (s)"
    return np.arange(n + 1, dtype=float), "frame"


def plot_waveform(ax, wave: np.ndarray, sample_rate: int) -> None:
    """A waveform ``(samples,)`` against seconds."""
    t = np.arange(len(wave)) / sample_rate
    ax.plot(t, wave, lw=0.5, color="tab:blue")
    ax.set(xlim=(0, max(t[-1], 1e-3) if len(t) else 1), ylabel="amplitude", title="waveform")


def plot_text_line(ax, ink: np.ndarray) -> None:
    """A text line as the model reads it: ink ``(width, height)`` (1 = black)."""
    ax.imshow(ink.T, cmap="gray_r", aspect="auto", vmin=0, vmax=1, interpolation="nearest")
    ax.set(ylabel="row (px)", title=f"text line ({ink.shape[0]} × {ink.shape[1]} px, as the model reads it)")


def plot_lip_frames(ax, frames: np.ndarray, fps: float, count: int = 10) -> None:
    """A strip of ``count`` evenly spaced frames of a clip ``(T, C, H, W)`` in [0, 1], labelled in seconds."""
    T = frames.shape[0]
    picks = np.unique(np.linspace(0, T - 1, min(count, T)).round().astype(int))
    tiles = [frames[i].transpose(1, 2, 0) for i in picks]  # (H, W, C)
    strip = np.concatenate(tiles, axis=1)
    gray = strip.shape[-1] == 1
    ax.imshow(strip[..., 0] if gray else strip.clip(0, 1), cmap="gray" if gray else None, aspect="equal")
    W = frames.shape[-1]
    ax.set_xticks([(k + 0.5) * W for k in range(len(picks))], [f"{i / fps:.2f}s" for i in picks])
    ax.set_yticks([])
    ax.set_title(f"mouth frames ({len(picks)} of {T} at {fps:g} fps)")


def plot_features(ax, feats: np.ndarray, shift_s: float | None, title: str) -> None:
    """Features ``(T, F)`` as an image: time across, feature index up."""
    edges, label = _time_axis(feats.shape[0], shift_s)
    mesh = ax.pcolormesh(edges, np.arange(feats.shape[1] + 1), feats.T, shading="flat", cmap="magma")
    ax.figure.colorbar(mesh, ax=ax, pad=0.01)
    ax.set(xlabel=label, ylabel="feature", title=title)


def plot_posteriorgram(
    ax,
    log_probs: np.ndarray,
    tokens: Sequence[str],
    shift_s: float | None,
    token_frames: Sequence[int] = (),
    token_ids: Sequence[int] = (),
    words: Sequence[tuple[str, float, float]] = (),
    text: str = "",
) -> None:
    """CTC posteriors ``(T, V)`` as an image (token up, time across) with the decoded alignment over it:
    a marker at the frame each token is emitted, and each word's span shaded and labelled above."""
    probs = np.exp(log_probs)
    edges, label = _time_axis(probs.shape[0], shift_s)
    scale = shift_s or 1.0
    ax.pcolormesh(edges, np.arange(probs.shape[1] + 1), probs.T, shading="flat", cmap="Greys", vmin=0, vmax=1)
    names = [BLANK_LABEL if i == 0 else ("␣" if t == " " else t) for i, t in enumerate(tokens)]
    ax.set_yticks(np.arange(len(names)) + 0.5, names, fontsize=6)
    for tok, fr in zip(token_ids, token_frames):
        ax.plot((fr + 0.5) * scale, tok + 0.5, "o", ms=3, color="tab:red")
    for k, (word, start, end) in enumerate(words):
        ax.axvspan(start, end, color=("tab:orange", "tab:cyan")[k % 2], alpha=0.15, lw=0)
        ax.text(
            (start + end) / 2, len(names) + 0.3, word, ha="center", va="bottom", fontsize=8, clip_on=False
        )
    ax.set(xlabel=label, ylabel="token", ylim=(0, len(names)))
    ax.set_title(f"CTC posteriors and alignment: “{text}”", pad=14)


def plot_utterance(
    path: str | Path,
    raw: np.ndarray,
    modality: str,
    feats: np.ndarray,
    log_probs: np.ndarray,
    tokens: Sequence[str],
    hyp=None,
    feat_shift_s: float | None = None,
    out_shift_s: float | None = None,
    sample_rate: int | None = None,
    fps: float | None = None,
    title: str = "",
) -> None:
    """One input as a PNG of three panels: the input (waveform, text line or lip frames), its features,
    and the posteriorgram with the decoded text aligned (``hyp``: a :class:`Hypothesis`, or None)."""
    fig, axes = plt.subplots(3, 1, figsize=(12, 9), gridspec_kw={"height_ratios": [1, 1.3, 1.8]})
    if modality == "audio":
        plot_waveform(axes[0], raw, sample_rate or 16000)
    elif modality == "image":
        plot_text_line(axes[0], raw)
    elif modality == "video":
        plot_lip_frames(axes[0], raw, fps or 25.0)
    else:
        axes[0].set_axis_off()
    plot_features(axes[1], feats, feat_shift_s, f"frontend features ({feats.shape[1]} per frame)")
    plot_posteriorgram(
        axes[2],
        log_probs,
        tokens,
        out_shift_s,
        token_frames=hyp.token_frames if hyp is not None else (),
        token_ids=hyp.tokens if hyp is not None else (),
        words=hyp.words if hyp is not None else (),
        text=hyp.text if hyp is not None else "",
    )
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

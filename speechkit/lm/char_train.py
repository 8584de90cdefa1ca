"""``speechkit-train-lm text=FILE valid=FILE out=DIR``: train a character RNN LM with truncated BPTT;
``speechkit-sample checkpoint=DIR/lm.pt prime="KING LEAR:"``: write text with it.

Training: the text is cut into ``streams`` equal parallel streams (a ``(streams, N)`` grid of
ids); each step takes the next ``unroll`` characters of every stream, predicts each following
character, and carries the recurrent state into the next step, detached, so gradients span one
unroll while the state spans the whole text. Adam, gradient-norm clipping, a warm-up then cosine
learning rate over ``steps`` or ``minutes``; validation bits per character (the held-out text run
as one stream, state carried) every ``eval_every`` steps and at the end; ``lm.pt`` (the model
alone rebuilds from it), ``bpc.png`` and ``history.json`` in ``out``. ``resume=true`` continues
from ``out/lm.pt`` (model, optimiser, step, position in the text; the carried state restarts).

Arguments are ``key=value`` pairs, like the other speechkit commands.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from speechkit.lm.char_rnn import CharRNN, Vocabulary, detach_state, load_lm, save_lm


@dataclass
class TrainLMConfig:
    text: str = ""  # training text (UTF-8)
    valid: str = ""  # held-out text for bits per character
    out: str = "runs/char_lm"
    embed: int = 64
    hidden: int = 512
    layers: int = 2
    cell: str = "lstm"
    dropout: float = 0.1
    streams: int = 32  # parallel streams (the batch)
    unroll: int = 128  # characters per truncated-BPTT step
    lr: float = 2e-3
    warmup: int = 100
    clip: float = 1.0
    steps: int = 0  # optimiser steps (0: until `minutes`)
    minutes: float = 10.0  # wall-clock budget (0: until `steps`)
    eval_every: int = 200
    seed: int = 0
    threads: int = 0
    resume: bool = False


@dataclass
class SampleConfig:
    checkpoint: str = ""
    prime: str = "\n"
    length: int = 500
    temperature: float = 0.8
    top_k: int = 0  # sample among the k most likely characters (0: all)
    seed: int = 0


def parse_args(cls, argv: list[str]):
    """``key=value`` pairs → the dataclass ``cls``; a clear message for unknown keys or bad values."""
    kinds = {f.name: f.type for f in fields(cls)}
    values = {}
    for a in argv:
        key, eq, value = a.partition("=")
        if not eq or key not in kinds:
            sys.exit(f"error: expected key=value with key one of {', '.join(kinds)}; got {a!r}")
        kind = kinds[key]
        try:
            if kind == "bool":
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                values[key] = value.lower() in ("true", "1")
            else:
                values[key] = {"int": int, "float": float}.get(kind, str)(value)
        except ValueError:
            sys.exit(f"error: {key}={value!r} is not a valid {kind}")
    return cls(**values)


def read_text(path: str, what: str) -> str:
    """A UTF-8 text file; a clear error names a missing, empty or non-UTF-8 one (with the byte offset)."""
    p = Path(path)
    if not path:
        sys.exit(f"error: {what}=FILE is required")
    if not p.is_file():
        sys.exit(f"error: {what}={path}: file not found")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        sys.exit(f"error: {p}:{line}: not UTF-8 (byte {e.start}: {data[e.start:e.start + 1]!r}); convert it "
                 "(e.g. iconv -t utf-8)")
    if not text.strip():
        sys.exit(f"error: {p}: the text is empty")
    return text


@torch.no_grad()
def bits_per_char(model: CharRNN, ids: torch.Tensor, chunk: int = 512) -> float:
    """Bits per character of ``ids`` as one stream, the state carried from chunk to chunk."""
    model.eval()
    state, total, n = None, 0.0, 0
    x = torch.cat([torch.zeros(1, dtype=torch.long), ids])  # starts after a line boundary
    for i in range(0, len(x) - 1, chunk):
        inp, tgt = x[i : i + chunk][None], x[i + 1 : i + chunk + 1][None]
        inp = inp[:, : tgt.shape[1]]
        logits, state = model(inp, state)
        total += float(nn.functional.cross_entropy(logits[0], tgt[0], reduction="sum"))
        n += tgt.shape[1]
    model.train()
    return total / max(n, 1) / math.log(2)


def train(cfg: TrainLMConfig) -> dict:
    from tqdm import tqdm

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.steps <= 0 and cfg.minutes <= 0:
        sys.exit("error: give steps=N or minutes=M (or both): training needs an end")
    text = read_text(cfg.text, "text")
    valid = read_text(cfg.valid, "valid") if cfg.valid else ""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    ckpt_path = out / "lm.pt"
    if cfg.resume and ckpt_path.exists():
        model, vocab, ckpt = load_lm(ckpt_path)
        model.train()
        start_step, pos, history = ckpt["step"], ckpt["position"], ckpt["history"]
    else:
        vocab = Vocabulary.from_text(text)
        model = CharRNN(len(vocab), cfg.embed, cfg.hidden, cfg.layers, cfg.cell, cfg.dropout)
        start_step, pos, history, ckpt = 0, 0, [], None
    ids = vocab.encode(text)
    per_stream = (len(ids) - 1) // cfg.streams
    if per_stream < 2:
        sys.exit(f"error: {cfg.text}: {len(ids)} characters are too few for {cfg.streams} streams")
    grid = ids[: cfg.streams * per_stream + 1]
    inputs, targets = grid[:-1].view(cfg.streams, per_stream), grid[1:].view(cfg.streams, per_stream)
    valid_ids = vocab.encode(valid) if valid else None
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    if ckpt is not None and "optimizer" in ckpt:
        opt.load_state_dict(ckpt["optimizer"])
    n_params = sum(p.numel() for p in model.parameters())
    print(f"char LM: {len(vocab)} symbols, {n_params / 1e6:.2f} M parameters, {len(ids):,} training characters "
          f"in {cfg.streams} streams of {per_stream:,}")
    total = cfg.steps or 10**9
    budget = 60 * cfg.minutes if cfg.minutes > 0 else float("inf")
    state = None
    t0 = time.monotonic()
    bar = tqdm(total=cfg.steps or None, initial=start_step, unit="step", mininterval=2.0, dynamic_ncols=True)
    step, losses = start_step, []

    def evaluate() -> None:
        row = {"step": step, "minutes": (time.monotonic() - t0) / 60,
               "train_bpc": sum(losses) / max(len(losses), 1) / math.log(2)}
        if valid_ids is not None:
            row["valid_bpc"] = bits_per_char(model, valid_ids)
        history.append(row)
        losses.clear()
        save_lm(ckpt_path, model, vocab, {"step": step, "position": pos, "history": history,
                                          "optimizer": opt.state_dict(), "train_config": asdict(cfg)})
        plot(history, out / "bpc.png")
        bar.write("step {step}: train {train_bpc:.3f} bpc".format(**row)
                  + (f", valid {row['valid_bpc']:.3f} bpc" if "valid_bpc" in row else ""))

    while step < total and time.monotonic() - t0 < budget:
        if pos + 1 >= per_stream:
            pos, state = 0, None  # a new pass over the text
        x, y = inputs[:, pos : pos + cfg.unroll], targets[:, pos : pos + cfg.unroll]
        progress = step / total if cfg.steps else (time.monotonic() - t0) / budget
        lr = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1)) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
        for g in opt.param_groups:
            g["lr"] = lr
        logits, state = model(x, state)
        state = detach_state(state)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        losses.append(float(loss))
        pos += x.shape[1]
        step += 1
        bar.update(1)
        bar.set_postfix(bpc=f"{float(loss) / math.log(2):.3f}", lr=f"{lr:.1e}")
        if step % cfg.eval_every == 0:
            evaluate()
    if not history or history[-1]["step"] != step:
        evaluate()
    bar.close()
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    return history[-1]


def plot(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["train_bpc"] for h in history], label="train")
    if any("valid_bpc" in h for h in history):
        ax.plot(steps, [h.get("valid_bpc", float("nan")) for h in history], label="held out")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per character")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def sample(model: CharRNN, vocab: Vocabulary, prime: str, length: int, temperature: float = 1.0,
           top_k: int = 0, seed: int = 0) -> str:
    """``prime`` followed by ``length`` characters drawn from the model's softmax (temperature, top-k)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    g = torch.Generator().manual_seed(seed)
    ids = torch.cat([torch.zeros(1, dtype=torch.long), vocab.encode(prime)])  # after a line boundary
    logits, state = model(ids[None])
    last = logits[0, -1]
    out = []
    for _ in range(length):
        z = last / temperature
        z[1] = -math.inf  # never <unk>
        if top_k > 0:
            kth = z.topk(min(top_k, len(z))).values[-1]
            z = z.masked_fill(z < kth, -math.inf)
        c = int(torch.multinomial(z.softmax(-1), 1, generator=g))
        out.append(c)
        logits, state = model(torch.tensor([[c]]), state)
        last = logits[0, -1]
    return prime + vocab.decode(out)


def main_train() -> None:
    cfg = parse_args(TrainLMConfig, sys.argv[1:])
    row = train(cfg)
    print(json.dumps(row))


def main_sample() -> None:
    from speechkit.checkpoint import CheckpointError

    cfg = parse_args(SampleConfig, sys.argv[1:])
    if not cfg.checkpoint:
        sys.exit("error: checkpoint=PATH is required (a lm.pt written by speechkit-train-lm)")
    try:
        model, vocab, _ = load_lm(cfg.checkpoint)
    except CheckpointError as e:
        sys.exit(f"error: {e}")
    print(sample(model, vocab, cfg.prime.replace("\\n", "\n"), cfg.length, cfg.temperature, cfg.top_k, cfg.seed))


if __name__ == "__main__":
    main_train()

"""``speechkit-train-lm text=FILE valid=FILE out=DIR``: train a character RNN LM with truncated BPTT;
``speechkit-sample checkpoint=DIR/lm.pt prime="KING LEAR:"``: write text with it.

Training: the text is cut into ``streams`` equal parallel streams (a ``(streams, N)`` grid of
ids); each step takes the next ``unroll`` characters of every stream, predicts each following
character, and carries the recurrent state into the next step, detached, so gradients span one
unroll while the state spans the whole stream. An epoch ends when the streams are read to their
end; the state then restarts from zeros. Adam, gradient-norm clipping, a linear warm-up then
cosine learning rate over ``steps`` or ``minutes`` (whichever ends first).

Held-out bits per character (the ``valid`` text run as one stream, state carried) are measured
every ``eval_every`` steps, at the end of every epoch and at the end, and ``test`` (if given)
once at the end. Each measurement rewrites, in ``out``: ``lm.pt`` (atomic; model, vocabulary,
optimiser, position, carried state and RNG state: the model alone rebuilds from it with
:func:`~speechkit.lm.char_rnn.load_lm`), ``history.json`` and ``bpc.png``. ``resume=true``
continues from ``out/lm.pt``; a run resumed with ``steps=N`` ends with the weights an
uninterrupted run would have, and a ``minutes`` budget counts the time before the interruption.

Arguments are ``key=value`` pairs, spelt like the other speechkit commands' overrides, but parsed
against the dataclasses below rather than composed by Hydra: the LM trainer has no stage groups,
recipes or run-directory layout to compose, and a run is described by its ``out`` folder.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from speechkit.cli import run
from speechkit.lm.char_rnn import CharRNN, Vocabulary, detach_state, load_lm, map_state, save_lm
from speechkit.schedule import lr_factor

LN2 = math.log(2.0)  # nats → bits


@dataclass
class TrainLMConfig:
    text: str = ""  # training text (UTF-8)
    valid: str = ""  # held-out text: bits per character during training
    test: str = ""  # held-out text: bits per character once, at the end
    out: str = "runs/char_lm"  # run folder: lm.pt, history.json, bpc.png
    embed: int = 64  # character embedding size
    hidden: int = 512  # units per recurrent layer
    layers: int = 2
    cell: str = "lstm"  # lstm | gru
    dropout: float = 0.1  # between recurrent layers
    streams: int = 32  # parallel streams (the batch)
    unroll: int = 128  # characters per truncated-BPTT step
    lr: float = 2e-3  # Adam's peak learning rate
    warmup: int = 100  # steps of linear warm-up
    clip: float = 1.0  # gradient-norm clipping
    steps: int = 0  # optimiser steps (0: until `minutes`)
    minutes: float = 10.0  # wall-clock budget (0: until `steps`)
    eval_every: int = 200  # steps between held-out measurements
    seed: int = 0
    threads: int = 0  # torch CPU threads (0: torch's default)
    resume: bool = False  # continue from out/lm.pt


@dataclass
class SampleConfig:
    checkpoint: str = ""  # lm.pt written by speechkit-train-lm
    prime: str = "\n"  # text to start from ("\n" in it is a line break)
    length: int = 500  # characters to draw
    temperature: float = 0.8  # < 1 sharper, > 1 flatter than the model's distribution
    top_k: int = 0  # draw among the k most likely characters (0: all)
    seed: int = 0


class TextError(ValueError):
    """A training or held-out text that cannot be used; the message names the file (and line)."""


def parse_args(cls, argv: list[str]):
    """``key=value`` pairs → the dataclass ``cls``; a clear message for unknown keys or bad values."""
    kinds = {f.name: f.type for f in fields(cls)}
    values = {}
    for a in argv:
        if a == "--debug":  # speechkit.cli.run's, not a key
            continue
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


def read_text(path: str | Path, what: str = "text") -> str:
    """A UTF-8 text file; :class:`TextError` names a missing, empty or non-UTF-8 one (with the line)."""
    if not str(path):
        raise TextError(f"{what}=FILE is required")
    p = Path(path)
    if not p.is_file():
        raise TextError(f"{what}={path}: file not found")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise TextError(
            f"{p}:{line}: not UTF-8 (byte {data[e.start : e.start + 1]!r} at column {col}); "
            "convert the file, e.g. iconv -f latin1 -t utf-8"
        ) from None
    if not text.strip():
        raise TextError(f"{p}: the text is empty")
    return text


@torch.no_grad()
def boundary_state(model: CharRNN, ids: Tensor, context: int = 1000):
    """The state after the ``context`` characters of ``ids`` that end just before its last line boundary.

    A sentence-start state for scoring lines one at a time: in training the state is carried across
    lines, so the zero state is one the model rarely sees (on GRID sentences, starting from zeros
    costs 0.11 bits per character). ``None`` if ``ids`` holds no text before a boundary.
    """
    ends = (ids == 0).nonzero()
    end = int(ends[-1]) if len(ends) else len(ids)
    x = ids[max(0, end - context) : end]
    if len(x) == 0:
        return None
    was_training = model.training
    model.eval()
    _, state = model(x[None])
    model.train(was_training)
    return map_state(Tensor.clone, detach_state(state))


@torch.no_grad()
def bits_per_char(model: CharRNN, ids: Tensor, chunk: int = 512) -> float:
    """Bits per character of ``ids`` ``(N,)`` read as one stream after a line boundary, state carried."""
    was_training = model.training
    model.eval()
    state, total, n = model.initial_state(1), 0.0, 0
    x = torch.cat([torch.zeros(1, dtype=torch.long), ids])
    for i in range(0, len(x) - 1, chunk):
        tgt = x[i + 1 : i + chunk + 1][None]
        logits, state = model(x[i : i + tgt.shape[1]][None], state)
        total += float(nn.functional.cross_entropy(logits[0], tgt[0], reduction="sum"))
        n += tgt.shape[1]
    model.train(was_training)
    return total / max(n, 1) / LN2


def learning_rate(cfg: TrainLMConfig, step: int, progress: float) -> float:
    """The trainer's schedule (speechkit/schedule.py): linear warm-up over ``warmup`` steps, then
    cosine decay to 5 % of ``lr`` as ``progress`` goes 0 → 1."""
    return cfg.lr * lr_factor(progress, step, cfg.warmup, min_ratio=0.05)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def train(cfg: TrainLMConfig) -> dict:
    """Train (or resume) as ``cfg`` says; returns the last history row (step, epoch, minutes, bpc …)."""
    from tqdm import tqdm

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.steps <= 0 and cfg.minutes <= 0:
        raise ValueError("give steps=N or minutes=M (or both): training needs an end")
    text = read_text(cfg.text, "text")
    valid = read_text(cfg.valid, "valid") if cfg.valid else ""
    test = read_text(cfg.test, "test") if cfg.test else ""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "lm.pt"
    torch.manual_seed(cfg.seed)
    ckpt = None
    if cfg.resume and ckpt_path.exists():
        model, vocab, ckpt = load_lm(ckpt_path)
        model.train()
        if "optimizer" not in ckpt:
            raise ValueError(
                f"{ckpt_path}: holds no optimiser state to resume from; train afresh into another out="
            )
        step, pos, history = ckpt["step"], ckpt["position"], ckpt["history"]
        epoch, prior_seconds = ckpt.get("epoch", 0), ckpt.get("seconds", 0.0)  # older files lack them
        state = ckpt.get("carried_state")
        state = tuple(state) if isinstance(state, list) else state
        if "rng" in ckpt:
            torch.set_rng_state(ckpt["rng"])
        print(
            f"resuming {ckpt_path} at step {step} (epoch {epoch + 1}, {prior_seconds / 60:.1f} minutes done)"
        )
    else:
        if cfg.resume:
            print(f"resume=true but {ckpt_path} does not exist yet: starting afresh")
        vocab = Vocabulary.from_text(text)
        model = CharRNN(len(vocab), cfg.embed, cfg.hidden, cfg.layers, cfg.cell, cfg.dropout)
        step, epoch, pos, history, prior_seconds, state = 0, 0, 0, [], 0.0, None
    ids = vocab.encode(text)
    per_stream = (len(ids) - 1) // cfg.streams
    if per_stream < 2:
        raise TextError(f"{cfg.text}: {len(ids)} characters are too few for {cfg.streams} streams")
    grid = ids[: cfg.streams * per_stream + 1]  # stream s reads grid[s·N : (s+1)·N], predicting one ahead
    inputs, targets = grid[:-1].view(cfg.streams, per_stream), grid[1:].view(cfg.streams, per_stream)
    valid_ids = vocab.encode(valid) if valid else None
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"char LM: {len(vocab)} symbols, {n_params / 1e6:.2f} M parameters, {len(ids):,} training characters "
        f"in {cfg.streams} streams of {per_stream:,} (an epoch is {math.ceil(per_stream / cfg.unroll)} steps)"
    )

    max_steps = cfg.steps if cfg.steps > 0 else math.inf
    budget = 60 * cfg.minutes if cfg.minutes > 0 else math.inf
    t0, step0 = time.monotonic(), step

    def seconds() -> float:
        return prior_seconds + time.monotonic() - t0

    bar = tqdm(total=cfg.steps or None, initial=step, unit="step", mininterval=2.0, dynamic_ncols=True)
    losses: list[float] = []

    def evaluate(final: bool = False, extra: dict | None = None) -> dict:
        model.start_state = boundary_state(model, ids)  # before scoring: bits_per_char starts from it
        row = {"step": step, "epoch": epoch + pos / per_stream, "minutes": seconds() / 60}
        if losses:
            row["train_bpc"] = sum(losses) / len(losses) / LN2
        if valid_ids is not None:
            row["valid_bpc"] = bits_per_char(model, valid_ids)
        if final and test:
            row["test_bpc"] = bits_per_char(model, vocab.encode(test))
        row.update(extra or {})
        history.append(row)
        losses.clear()
        save_lm(
            ckpt_path,
            model,
            vocab,
            {
                "step": step,
                "epoch": epoch,
                "position": pos,
                "seconds": seconds(),
                "carried_state": None if state is None else map_state(Tensor.clone, state),
                "rng": torch.get_rng_state(),
                "history": history,
                "optimizer": opt.state_dict(),
                "train_config": asdict(cfg),
            },
        )
        _write_json(out / "history.json", history)
        plot(history, out / "bpc.png")
        msg = f"step {step} (epoch {row['epoch']:.2f}, {row['minutes']:.1f} min):"
        msg += "".join(f" {k[:-4]} {row[k]:.3f}" for k in ("train_bpc", "valid_bpc", "test_bpc") if k in row)
        bar.write(msg + " bits/char")
        return row

    while step < max_steps and seconds() < budget:
        x, y = inputs[:, pos : pos + cfg.unroll], targets[:, pos : pos + cfg.unroll]
        progress = max(step / max_steps, seconds() / budget)
        lr = learning_rate(cfg, step, progress)
        for g in opt.param_groups:
            g["lr"] = lr
        logits, state = model(x, state)
        state = detach_state(state)  # carried into the next chunk, but no gradient flows back into it
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        losses.append(loss.item())
        pos += x.shape[1]
        step += 1
        end_of_epoch = pos >= per_stream
        if end_of_epoch:  # every stream read to its end: start the next pass from zero state
            epoch, pos, state = epoch + 1, 0, None
        if budget < math.inf and step % 20 == 0:  # a time budget: estimate the total steps for the ETA
            rate = (step - step0) / max(time.monotonic() - t0, 1e-9)
            bar.total = int(min(max_steps, step + rate * max(budget - seconds(), 0.0)))
        bar.update(1)
        bar.set_postfix(bpc=f"{losses[-1] / LN2:.3f}", lr=f"{lr:.1e}", epoch=epoch + 1, refresh=False)
        if step % cfg.eval_every == 0 or end_of_epoch:
            evaluate()
    bar.close()
    if history and history[-1]["step"] == step:  # measured at this step already
        if not test:
            return history[-1]
        last = history.pop()  # measured again below, with the test text
        return evaluate(final=True, extra={k: last[k] for k in ("train_bpc",) if k in last})
    return evaluate(final=True)


def plot(history: list[dict], path: Path) -> None:
    """Training and held-out bits per character against steps → ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("train_bpc", "train"), ("valid_bpc", "held out")):
        pts = [(h["step"], h[key]) for h in history if key in h]
        if pts:
            ax.plot(*zip(*pts), marker=".", label=label)
    tests = [(h["step"], h["test_bpc"]) for h in history if "test_bpc" in h]
    if tests:
        ax.plot(*zip(*tests), "k*", label="test")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per character")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def sample(
    model: CharRNN,
    vocab: Vocabulary,
    prime: str,
    length: int,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
) -> str:
    """``prime`` followed by ``length`` characters drawn from ``softmax(logits / temperature)``.

    With ``top_k > 0`` only the ``top_k`` most likely characters can be drawn; ``<unk>`` never is.
    The draw uses its own generator seeded with ``seed``, so the text depends only on the arguments.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    model.eval()
    g = torch.Generator().manual_seed(seed)
    ids = torch.cat([torch.zeros(1, dtype=torch.long), vocab.encode(prime)])  # after a line boundary
    logits, state = model(ids[None], model.initial_state(1))
    last = logits[0, -1]
    out = []
    for _ in range(length):
        z = last.float() / temperature
        z[1] = -math.inf  # never <unk>
        if top_k > 0:
            kth = z.topk(min(top_k, len(z))).values[-1]
            z = z.masked_fill(z < kth, -math.inf)
        c = int(torch.multinomial(z.softmax(-1), 1, generator=g))
        out.append(c)
        logits, state = model(torch.tensor([[c]]), state)
        last = logits[0, -1]
    return prime + vocab.decode(out)


TRAIN_USAGE = "speechkit-train-lm text=FILE [valid=FILE] [test=FILE] [out=DIR] [key=value …]"
SAMPLE_USAGE = "speechkit-sample checkpoint=DIR/lm.pt [prime=TEXT] [length=N] [temperature=T] [key=value …]"


def command_help(usage: str, what: str, config: type) -> str:
    """``--help``: the usage line, what the command does, and each key with its default (as JSON) and comment."""
    from speechkit.registry import field_help

    helps = field_help(config)
    keys = [
        (f"  {f.name}={json.dumps(f.default)}".ljust(26) + helps.get(f.name, "")).rstrip()
        for f in fields(config)
    ]
    return "\n".join([f"usage: {usage}", "", what, "", "keys:", *keys])


def main_train(argv: list[str] | None = None) -> None:
    """``speechkit-train-lm``: a mistake is the usage line and one ``error:`` line (speechkit/cli.py)."""
    what = "Train a character RNN LM with truncated BPTT; out=DIR gets lm.pt, history.json and bpc.png."
    run(_train, TRAIN_USAGE, command_help(TRAIN_USAGE, what, TrainLMConfig), argv)


def _train(argv: list[str]) -> None:
    from speechkit.checkpoint import CheckpointError

    cfg = parse_args(TrainLMConfig, argv)
    try:
        row = train(cfg)
    except (TextError, CheckpointError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(json.dumps(row))


def main_sample(argv: list[str] | None = None) -> None:
    """``speechkit-sample``: a mistake is the usage line and one ``error:`` line (speechkit/cli.py)."""
    what = "Write text with a character LM trained by speechkit-train-lm."
    run(_sample, SAMPLE_USAGE, command_help(SAMPLE_USAGE, what, SampleConfig), argv)


def _sample(argv: list[str]) -> None:
    from speechkit.checkpoint import CheckpointError

    cfg = parse_args(SampleConfig, argv)
    if not cfg.checkpoint:
        sys.exit("error: checkpoint=PATH is required (a lm.pt written by speechkit-train-lm)")
    try:
        model, vocab, _ = load_lm(cfg.checkpoint)
        text = sample(
            model, vocab, cfg.prime.replace("\\n", "\n"), cfg.length, cfg.temperature, cfg.top_k, cfg.seed
        )
    except (CheckpointError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(text)


if __name__ == "__main__":
    main_train()

"""Character RNN language model: the network, its checkpoint, and the ``char_rnn`` LM plugin.

The network embeds characters, runs a stack of LSTM (or GRU) layers and predicts the next
character. Id 0 is the line boundary ``"\\n"`` (a sentence starts after it and ends with it,
so the same model scores lines for the decoder and continues running text when sampling: it
plays the part of both ``<s>`` and ``</s>`` of the n-gram LMs); id 1 is ``<unk>``. It is
trained by ``speechkit-train-lm`` (speechkit/lm/char_train.py) and written as a plain-data
checkpoint (``weights_only`` loading; no pickled code) from which the model alone rebuilds.

As a decoder LM (``decoder.lm=char_rnn decoder.lm.path=lm.pt``) it keeps, per hypothesis, the
recurrent state and the log-softmax of the next character, so :meth:`CharRNNLM.logprobs` is a
gather and :meth:`CharRNNLM.advance` one batched recurrent step over the hypotheses that emit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from speechkit.lm.base import LanguageModel
from speechkit.registry import register

BOUNDARY, UNK = "\n", "<unk>"  # ids 0 and 1 of every char-LM vocabulary
SENTENCE_MARKS = ("<s>", "</s>")  # the n-gram spellings of the boundary; index() maps them to id 0
FORMAT = "speechkit-char-lm"
VERSION = 1

RNNState = Tensor | tuple[Tensor, Tensor]  # GRU: h; LSTM: (h, c); each (layers, N, hidden)


class CharRNN(nn.Module):
    """Embedding → LSTM/GRU stack → linear over the vocabulary.

    LSTM, per layer: ``i, f, g, o = σ, σ, tanh, σ (W x + U h + b)``, ``c' = f c + i g``,
    ``h' = o tanh(c')``; the next-character distribution is ``softmax(W_out h')``.
    """

    def __init__(
        self,
        vocab_size: int,
        embed: int = 64,
        hidden: int = 256,
        layers: int = 2,
        cell: str = "lstm",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell={cell!r}: use lstm or gru")
        self.hparams = dict(
            vocab_size=vocab_size, embed=embed, hidden=hidden, layers=layers, cell=cell, dropout=dropout
        )
        self.embed = nn.Embedding(vocab_size, embed)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(embed, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.out = nn.Linear(hidden, vocab_size)
        # the state just before a line boundary, after real text (see char_train.boundary_state): where
        # training left the model at a sentence start; None: zeros, a state training rarely visits
        self.start_state: RNNState | None = None

    def initial_state(self, n: int, device: torch.device | str = "cpu") -> RNNState:
        """``n`` copies of :attr:`start_state` (zeros without one): the state to read a line boundary from."""
        if self.start_state is None:
            return self.zero_state(n, device)
        return map_state(lambda s: s.to(device).expand(-1, n, -1).contiguous(), self.start_state)

    def zero_state(self, n: int, device: torch.device | str = "cpu") -> RNNState:
        h = torch.zeros(self.hparams["layers"], n, self.hparams["hidden"], device=device)
        return (h, h.clone()) if self.hparams["cell"] == "lstm" else h

    def forward(self, ids: Tensor, state: RNNState | None = None) -> tuple[Tensor, RNNState]:
        """``ids`` ``(B, T)`` → logits ``(B, T, V)`` and the state after the last step."""
        y, state = self.rnn(self.embed(ids), state)
        return self.out(y), state


def map_state(fn, state: RNNState) -> RNNState:
    """``fn`` applied to every tensor of a recurrent state (``h``, or ``(h, c)``)."""
    return tuple(fn(s) for s in state) if isinstance(state, tuple) else fn(state)


def detach_state(state: RNNState) -> RNNState:
    return map_state(Tensor.detach, state)


class Vocabulary:
    """Characters ↔ ids: 0 the line boundary, 1 ``<unk>``, then the characters of the training text."""

    def __init__(self, symbols: Sequence[str]) -> None:
        if list(symbols[:2]) != [BOUNDARY, UNK]:
            raise ValueError("a char-LM vocabulary starts with the line boundary and <unk>")
        self.symbols = list(symbols)
        self.ids = {s: i for i, s in enumerate(self.symbols)}

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls([BOUNDARY, UNK, *sorted(set(text) - {BOUNDARY})])

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> Tensor:
        """``(len(text),)`` ids; a character outside the vocabulary is ``<unk>`` (1)."""
        get = self.ids.get
        return torch.tensor([get(c, 1) for c in text], dtype=torch.long)

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.symbols[i] if i != 1 else "?" for i in ids)


# --------------------------------------------------------------------------- checkpoints


def save_lm(path: str | Path, model: CharRNN, vocab: Vocabulary, extra: dict[str, Any] | None = None) -> None:
    """Write the model (hyperparameters, vocabulary, weights) and ``extra`` plain data, atomically."""
    from speechkit.checkpoint import save_checkpoint

    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise FloatingPointError(
            f"refusing to write a char LM with non-finite weights in {', '.join(bad[:5])}"
        )
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "hparams": dict(model.hparams),
        "vocab": vocab.symbols,
        "model": weights,
        "start_state": None
        if model.start_state is None
        else map_state(lambda s: s.detach().cpu(), model.start_state),
    }
    payload.update(extra or {})
    save_checkpoint(path, payload)


def load_lm(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[CharRNN, Vocabulary, dict[str, Any]]:
    """Rebuild a char LM from its checkpoint alone → (model in eval mode, vocabulary, the whole checkpoint).

    Raises :class:`~speechkit.checkpoint.CheckpointError` naming the file for a missing, truncated,
    corrupt, unsafe (pickled code) or foreign file.
    """
    from speechkit.checkpoint import CheckpointError, load_plain

    path = Path(path)
    ckpt = load_plain(path, what="char-LM checkpoint", missing_fix="train one with speechkit-train-lm", other_fix="train again or use another lm.pt")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(path, "not a char-LM checkpoint", "give a file written by speechkit-train-lm")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(
            path,
            f"format version {ckpt['version']} is newer than this speechkit's {VERSION}",
            "upgrade speechkit",
        )
    try:
        model = CharRNN(**ckpt["hparams"])
        model.load_state_dict(ckpt["model"])
        vocab = Vocabulary(ckpt["vocab"])
        start = ckpt.get("start_state")
        model.start_state = tuple(start) if isinstance(start, list) else start
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            path,
            f"damaged char-LM checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
            "train again or use another lm.pt",
        ) from None
    return model.to(device).eval(), vocab, ckpt


# --------------------------------------------------------------------------- the LM plugin


@dataclass
class CharRNNState:
    """Per-hypothesis state: the recurrent state and the distribution of the next character."""

    rnn: RNNState  # (layers, N, hidden) tensors, on the LM's device
    logp: Tensor  # (N, V) natural-log P(next char), on the decoder's device


@dataclass
class CharRNNConfig:
    path: str = "???"  # a checkpoint written by speechkit-train-lm (its lm.pt)
    device: str = "cpu"  # where the recurrent steps run; scores are handed back on the decoder's device


@register("lm", "char_rnn", CharRNNConfig)
class CharRNNLM(LanguageModel):
    """A character LSTM/GRU LM for beam-search fusion: batched, incremental, states cached per hypothesis."""

    unit = "char"

    def __init__(self, cfg: CharRNNConfig) -> None:
        if not cfg.path or cfg.path == "???":
            raise ValueError(
                "char_rnn lm: give a checkpoint written by speechkit-train-lm (decoder.lm.path=…/lm.pt)"
            )
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.model, self.chars, _ = load_lm(cfg.path, self.device)  # chars: the Vocabulary
        self.vocab = self.chars.symbols  # the protocol's list of units by id

    def index(self, symbols: Sequence[str]) -> Tensor:
        """LM ids of decoder symbols: ``<s>``/``</s>`` → the line boundary, unknown ones → ``<unk>``."""
        ids = self.chars.ids
        return torch.tensor([0 if s in SENTENCE_MARKS else ids.get(s, 1) for s in symbols], dtype=torch.long)

    @torch.no_grad()
    def _step(self, rnn: RNNState, ids: Tensor, out_device: torch.device) -> CharRNNState:
        """One recurrent step of ``(N,)`` ids from states ``rnn``."""
        logits, rnn = self.model(ids.to(self.device)[:, None], rnn)
        return CharRNNState(rnn, logits[:, 0].float().log_softmax(-1).to(out_device))

    def start(self, n: int, device: torch.device | str = "cpu") -> CharRNNState:
        boundary = torch.zeros(n, dtype=torch.long)  # a sentence starts after the line boundary
        return self._step(self.model.initial_state(n, self.device), boundary, torch.device(device))

    def logprobs(self, state: CharRNNState, ids: Tensor) -> Tensor:
        return state.logp.gather(1, ids.to(state.logp.device))

    def end_logprobs(self, state: CharRNNState) -> Tensor:
        return state.logp[:, 0]

    def select(self, state: CharRNNState, index: Tensor) -> CharRNNState:
        i = index.to(self.device)
        return CharRNNState(
            map_state(lambda s: s.index_select(1, i), state.rnn),
            state.logp.index_select(0, index.to(state.logp.device)),
        )

    def advance(self, state: CharRNNState, ids: Tensor, mask: Tensor) -> CharRNNState:
        rows = mask.nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            return state
        r = rows.to(self.device)
        sub = map_state(lambda s: s.index_select(1, r), state.rnn)
        new = self._step(
            sub, ids.index_select(0, rows.to(ids.device)), state.logp.device
        )  # emitting rows only
        if isinstance(state.rnn, tuple):
            rnn = tuple(s.index_copy(1, r, n) for s, n in zip(state.rnn, new.rnn))
        else:
            rnn = state.rnn.index_copy(1, r, new.rnn)
        return CharRNNState(rnn, state.logp.index_copy(0, rows.to(state.logp.device), new.logp))

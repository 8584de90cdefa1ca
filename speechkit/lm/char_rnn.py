"""Character RNN language model: the network, its checkpoint, and the ``char_rnn`` LM plugin.

The network embeds characters, runs a stack of LSTM (or GRU) layers and predicts the next
character. Id 0 is the line boundary ``"\\n"`` (a sentence starts after it and ends with it,
so the same model scores lines for the decoder and continues running text when sampling);
id 1 is ``<unk>``. It is trained by ``speechkit-train-lm`` (speechkit/lm/char_train.py) and
written as a plain-data checkpoint (``weights_only`` loading; no pickled code).

As a decoder LM (``decoder.lm=char_rnn decoder.lm.path=lm.pt``) it keeps, per hypothesis, the
recurrent state and the log-softmax of the next character, so :meth:`CharRNNLM.logprobs` is a
gather and :meth:`CharRNNLM.advance` one batched recurrent step over all hypotheses.
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

BOUNDARY, UNK = "\n", "<unk>"
FORMAT = "speechkit-char-lm"
VERSION = 1


class CharRNN(nn.Module):
    """Embedding → LSTM/GRU stack → linear over the vocabulary."""

    def __init__(self, vocab_size: int, embed: int = 64, hidden: int = 256, layers: int = 2,
                 cell: str = "lstm", dropout: float = 0.0) -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell={cell!r}: use lstm or gru")
        self.hparams = dict(vocab_size=vocab_size, embed=embed, hidden=hidden, layers=layers, cell=cell,
                            dropout=dropout)
        self.embed = nn.Embedding(vocab_size, embed)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(embed, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.out = nn.Linear(hidden, vocab_size)

    def zero_state(self, n: int, device: torch.device | str = "cpu") -> Any:
        h = torch.zeros(self.hparams["layers"], n, self.hparams["hidden"], device=device)
        return (h, h.clone()) if self.hparams["cell"] == "lstm" else h

    def forward(self, ids: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """``ids`` ``(B, T)`` → logits ``(B, T, V)`` and the state after the last step."""
        y, state = self.rnn(self.embed(ids), state)
        return self.out(y), state


def detach_state(state: Any) -> Any:
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


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
        get = self.ids.get
        return torch.tensor([get(c, 1) for c in text], dtype=torch.long)

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.symbols[i] if i != 1 else "?" for i in ids)


def save_lm(path: str | Path, model: CharRNN, vocab: Vocabulary, extra: dict[str, Any] | None = None) -> None:
    from speechkit.checkpoint import save_checkpoint

    payload = {"format": FORMAT, "version": VERSION, "hparams": dict(model.hparams), "vocab": vocab.symbols,
               "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    payload.update(extra or {})
    save_checkpoint(path, payload)


def load_lm(path: str | Path, device: str | torch.device = "cpu") -> tuple[CharRNN, Vocabulary, dict[str, Any]]:
    """Rebuild a char LM from its checkpoint alone; a clear error names a missing or foreign file."""
    from speechkit.checkpoint import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "char-LM checkpoint not found", "train one with speechkit-train-lm")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(path, f"cannot read it as a checkpoint ({type(e).__name__}: {e})",
                              "it is truncated, corrupt or not a speechkit char-LM checkpoint") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(path, "not a char-LM checkpoint", "give a file written by speechkit-train-lm")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(path, f"format version {ckpt['version']} is newer than this speechkit's {VERSION}",
                              "upgrade speechkit")
    model = CharRNN(**ckpt["hparams"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), Vocabulary(ckpt["vocab"]), ckpt


# --------------------------------------------------------------------------- the LM plugin


@dataclass
class CharRNNState:
    rnn: Any  # (h, c) or h: (layers, N, hidden)
    logp: Tensor  # (N, V) log P(next char)


@dataclass
class CharRNNConfig:
    path: str = "???"  # a checkpoint written by speechkit-train-lm
    device: str = "cpu"


@register("lm", "char_rnn", CharRNNConfig)
class CharRNNLM(LanguageModel):
    """A character LSTM/GRU LM for beam-search fusion: batched, incremental, states cached per hypothesis."""

    unit = "char"

    def __init__(self, cfg: CharRNNConfig) -> None:
        self.cfg = cfg
        self.model, self.vocab, _ = load_lm(cfg.path, cfg.device)
        self.device = torch.device(cfg.device)
        self.vocab_list = self.vocab.symbols

    def index(self, symbols: Sequence[str]) -> Tensor:
        return torch.tensor([self.vocab.ids.get(s, 1) for s in symbols], dtype=torch.long)

    @torch.no_grad()
    def _step(self, rnn_state: Any, ids: Tensor) -> CharRNNState:
        logits, rnn_state = self.model(ids.to(self.device)[:, None], rnn_state)
        return CharRNNState(rnn_state, logits[:, 0].float().log_softmax(-1))

    def start(self, n: int, device: torch.device | str = "cpu") -> CharRNNState:
        state = self._step(self.model.zero_state(n, self.device), torch.zeros(n, dtype=torch.long))
        return self._to(state, device)

    def _to(self, state: CharRNNState, device) -> CharRNNState:
        return state if torch.device(device) == self.device else CharRNNState(state.rnn, state.logp.to(device))

    def logprobs(self, state: CharRNNState, ids: Tensor) -> Tensor:
        return state.logp.gather(1, ids.to(state.logp.device))

    def end_logprobs(self, state: CharRNNState) -> Tensor:
        return state.logp[:, 0]

    def select(self, state: CharRNNState, index: Tensor) -> CharRNNState:
        i = index.to(self.device)
        rnn = tuple(s.index_select(1, i) for s in state.rnn) if isinstance(state.rnn, tuple) else state.rnn.index_select(1, i)
        return CharRNNState(rnn, state.logp.index_select(0, index.to(state.logp.device)))

    def advance(self, state: CharRNNState, ids: Tensor, mask: Tensor) -> CharRNNState:
        if not bool(mask.any()):
            return state
        rows = mask.nonzero(as_tuple=True)[0]
        r = rows.to(self.device)
        sub = tuple(s.index_select(1, r) for s in state.rnn) if isinstance(state.rnn, tuple) else state.rnn.index_select(1, r)
        new = self._step(sub, ids.index_select(0, rows.to(ids.device)))  # one step, only for the rows that emit
        if isinstance(state.rnn, tuple):
            rnn = tuple(s.index_copy(1, r, n) for s, n in zip(state.rnn, new.rnn))
        else:
            rnn = state.rnn.index_copy(1, r, new.rnn)
        logp = state.logp.index_copy(0, rows.to(state.logp.device), new.logp.to(state.logp.device))
        return CharRNNState(rnn, logp)

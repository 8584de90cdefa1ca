"""What every decoder returns, and the helpers that turn token paths into text and word times."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

BLANK = 0  # CTC blank id, everywhere in speechkit


@dataclass
class Hypothesis:
    """One decoded label sequence.

    ``score`` is the log-probability the search assigns (for ``greedy`` the best path's,
    for ``beam`` without an LM the CTC log-probability of the label sequence).
    ``token_frames[i]`` is the frame where token ``i`` is first emitted.
    ``words`` holds ``(word, start_s, end_s)``; with no frame rate known, times are in frames.
    """

    text: str
    score: float
    tokens: list[int] = field(default_factory=list)
    token_frames: list[int] = field(default_factory=list)
    words: list[tuple[str, float, float]] = field(default_factory=list)


def tokens_to_text(tokens: list[int], symbols: list[str]) -> str:
    """The text of a label sequence, with runs of white space collapsed and the ends trimmed."""
    return " ".join("".join(symbols[t] for t in tokens).split())


def word_spans(
    tokens: list[int],
    frames: list[int],
    symbols: list[str],
    frame_shift_s: float | None,
    end_frames: list[int] | None = None,
    space: str = " ",
) -> list[tuple[str, float, float]]:
    """Group tokens into words at ``space`` tokens: ``(word, start, end)`` in seconds (or frames).

    A word starts at the frame its first token is emitted and ends after the frame of its last
    token (``end_frames[i]`` when given: the last frame token ``i`` stays non-blank).
    """
    scale = frame_shift_s if frame_shift_s else 1.0
    words: list[tuple[str, float, float]] = []
    chars: list[str] = []
    start = end = 0
    for i, (tok, fr) in enumerate(zip(tokens, frames)):
        sym = symbols[tok]
        if sym == space:
            if chars:
                words.append(("".join(chars), start * scale, end * scale))
                chars = []
            continue
        if not chars:
            start = fr
        chars.append(sym)
        end = (end_frames[i] if end_frames is not None else fr) + 1
    if chars:
        words.append(("".join(chars), start * scale, end * scale))
    return words


class Decoder:
    """Base of decoder plugins: ``decoder(log_probs (B, T, V), lengths (B,))`` → n-best lists.

    Context every decoder takes: ``tokens`` (symbol of each id, id 0 the blank) and
    ``frame_shift_s`` (seconds per log-prob frame, after the encoder's subsampling).
    """

    def __init__(self, tokens: list[str], frame_shift_s: float | None = None) -> None:
        self.tokens = list(tokens)
        self.frame_shift_s = frame_shift_s

    def __call__(self, log_probs: Tensor, lengths: Tensor) -> list[list[Hypothesis]]:
        raise NotImplementedError

    def check_inputs(self, log_probs: Tensor, lengths: Tensor) -> Tensor:
        """Refuse inputs that would decode to garbage, naming what is wrong; returns ``lengths`` as long.

        ``log_probs`` ``(B, T, V)`` with ``V`` the number of tokens, no NaN (``-inf`` is fine: an
        impossible token); ``lengths`` ``(B,)`` integers in ``[0, T]``.
        """
        if log_probs.dim() != 3:
            raise ValueError(f"log_probs must be (batch, frames, tokens), got shape {tuple(log_probs.shape)}")
        B, T, V = log_probs.shape
        if V != len(self.tokens):
            raise ValueError(f"log_probs has {V} tokens per frame but the decoder has {len(self.tokens)}; "
                             "use the tokens of the model that made them")
        if lengths.shape != (B,) or lengths.is_floating_point() or lengths.is_complex():
            raise ValueError(f"lengths must be {B} integers (one per utterance), got {lengths.dtype} {tuple(lengths.shape)}")
        if B and (int(lengths.min()) < 0 or int(lengths.max()) > T):
            bad = int(((lengths < 0) | (lengths > T)).nonzero()[0, 0])
            raise ValueError(f"lengths[{bad}] = {int(lengths[bad])} is outside [0, {T}], the frames log_probs holds")
        if log_probs.is_floating_point() and B and T:
            peak = log_probs.amax(dim=-1)  # (B, T): NaN where a frame has NaN, -inf where every token is -inf
            if bool(torch.isnan(peak).any()):
                b, t = (int(i) for i in torch.isnan(peak).nonzero()[0])
                raise ValueError(f"log_probs has NaN (first at utterance {b}, frame {t}): the model's output is broken "
                                 "(check the checkpoint, or train with trainer.precision=fp32)")
            valid = torch.arange(T, device=log_probs.device)[None, :] < lengths.to(log_probs.device)[:, None]
            impossible = (peak == float("-inf")) & valid  # no token can be emitted
            if bool(impossible.any()):
                b, t = (int(i) for i in impossible.nonzero()[0])
                raise ValueError(f"log_probs is -inf for every token at utterance {b}, frame {t}: no label sequence "
                                 "is possible (pass log-softmax output, or shorten lengths to exclude padding)")
        return lengths.long()

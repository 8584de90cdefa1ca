"""What every decoder returns, and the helpers that turn per-frame token paths into tokens and text
(word times: timing.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from speechkit.functional import lengths_mask

log = logging.getLogger(__name__)

BLANK = 0  # CTC blank id, everywhere in speechkit


@dataclass
class Hypothesis:
    """One decoded label sequence.

    ``score`` is the log-probability the search assigns (for ``greedy`` the best path's,
    for ``beam`` without an LM the CTC log-probability of the label sequence).
    ``token_frames[i]`` is the frame where token ``i`` is first emitted.
    ``words`` holds ``(word, start_s, end_s)``; with no frame rate known, times are in frames. A
    decoder gives its tokens' frames as they are; ``Pipeline.annotate`` replaces them with times read
    by :class:`WordTiming` (stray spikes left out, offsets measured against true word boundaries,
    snapped to the audio's pauses).
    ``confidence`` (utterance) and ``word_confidences`` (one per word) are in ``[0, 1]``, from the
    posteriors (decoders/confidence.py); a decoder leaves them empty and ``Pipeline`` fills them.
    """

    text: str
    score: float
    tokens: list[int] = field(default_factory=list)
    token_frames: list[int] = field(default_factory=list)
    words: list[tuple[str, float, float]] = field(default_factory=list)
    confidence: float | None = None
    word_confidences: list[float] = field(default_factory=list)


@dataclass
class SearchResult:
    """Final hypotheses of a batch, best first: ``(B, N)`` scores and ``(T, B, N)`` per-frame paths."""

    scores: Tensor  # (B, N) fused log-probability, -inf for an empty slot
    ctc: Tensor  # (B, N) its CTC part: log-probability of the alignments the search kept
    emitted: Tensor  # (T, B, N) token appended at each frame, 0 where none
    nonblank: Tensor  # (T, B, N) whether the hypothesis' last token is (most likely) still on


def paths(emitted: Tensor, nonblank: Tensor) -> tuple[list[int], list[int], list[int], list[int]]:
    """The tokens of per-frame paths ``(T, B, N)``: flat lists of token, start frame and end frame, and
    ``offsets`` (``B · N + 1``): the tokens of path ``(b, n)`` are ``offsets[b·N + n] … offsets[b·N + n + 1] - 1``.

    ``emitted[t]`` is the token a path appends at frame ``t`` (0: none), which starts there; it ends at
    the last frame before the next token's start where ``nonblank`` (still on the token) holds, and at
    its start frame if there is none. Vectorised torch (on the CPU), so no decoder needs a compiler.
    """
    T, B, N = emitted.shape
    em = emitted.cpu().permute(1, 2, 0).reshape(B * N, T)  # one path a row
    on = nonblank.cpu().permute(1, 2, 0).reshape(B * N, T)
    is_tok = em > 0
    row, start = is_tok.nonzero(as_tuple=True)  # row-major: paths in order, each path's tokens in time order
    offsets = torch.zeros(B * N + 1, dtype=torch.long)
    torch.cumsum(is_tok.sum(1), 0, out=offsets[1:])
    nxt = torch.full_like(start, T)  # the next token's start on the same path (T: the path's end)
    followed = row[1:] == row[:-1]
    nxt[:-1][followed] = start[1:][followed]
    last_on = (on * torch.arange(1, T + 1)).cummax(1).values - 1  # (B·N, T): latest frame ≤ t still on, or -1
    end = torch.maximum(last_on[row, nxt - 1], start)
    return em[row, start].tolist(), start.tolist(), end.tolist(), offsets.tolist()


def tokens_to_text(tokens: list[int], symbols: list[str]) -> str:
    """The text of a label sequence, with runs of white space collapsed and the ends trimmed."""
    return " ".join("".join(symbols[t] for t in tokens).split())


def word_groups(tokens: Sequence[int], symbols: Sequence[str], space: str = " ") -> list[tuple[int, int]]:
    """The words of a label sequence as ``(first, last)`` token indices: runs of tokens other than ``space``.

    A token that starts with ``space`` and goes on (a subword ``" the"``, a phone ``" sil"``) ends the
    word before it and starts the next; for characters only ``space`` itself separates words.
    """
    groups: list[tuple[int, int]] = []
    first = None
    for i, tok in enumerate(tokens):
        if space and symbols[tok].startswith(space):
            if first is not None:
                groups.append((first, i - 1))
            first = i if len(symbols[tok]) > len(space) else None
        elif first is None:
            first = i
    if first is not None:
        groups.append((first, len(tokens) - 1))
    return groups


# |logsumexp over tokens| of a frame above this: not log-probabilities, normalised with a warning.
# float32 log_softmax rows sum to 1 within ~1e-6; bfloat16 ones within ~1.3e-2 (measured, V = 4 … 1000);
# a row within 0.05 holds 95–105 % of the probability mass, and its score is off by < 0.05 nats.
NORMALISED_TOL = 0.05


class Decoder:
    """Base of decoder plugins: ``decoder(log_probs (B, T, V), lengths (B,))`` → n-best lists.

    Context every decoder takes: ``tokens`` (the text each id writes, id 0 the blank; one that starts
    with a space starts a word: subwords, phones) and ``frame_shift_s`` (seconds per log-prob frame,
    after the encoder's subsampling).

    ``log_probs`` should be log-softmax output. Scores that are not (raw logits, log-probabilities
    plus a constant) are normalised by :meth:`check_inputs` (log-softmax over the tokens of each
    frame), with one warning per decoder, so scores are sums of log-probabilities (≤ 0 without an LM).
    """

    _warned_not_log_probs = False  # set on the instance after its first warning

    def __init__(self, tokens: list[str], frame_shift_s: float | None = None) -> None:
        self.tokens = list(tokens)
        self.frame_shift_s = frame_shift_s

    def __call__(self, log_probs: Tensor, lengths: Tensor) -> list[list[Hypothesis]]:
        raise NotImplementedError

    def check_inputs(self, log_probs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Refuse inputs that would decode to garbage, naming what is wrong; returns ``(log_probs, lengths)``.

        ``log_probs`` ``(B, T, V)`` with ``V`` the number of tokens, no NaN or +inf (``-inf`` is
        fine: an impossible token); ``lengths`` ``(B,)`` integers in ``[0, T]``, returned as long.

        A frame within its utterance's length whose tokens' probabilities do not sum to one
        (``|logsumexp| > NORMALISED_TOL``: raw logits, say) is normalised — ``log_softmax`` over
        the tokens — and the decoder logs a warning the first time; the returned ``log_probs`` is
        then a new tensor, otherwise the one passed in. Padding frames are left as they are.
        """
        if log_probs.dim() != 3:
            raise ValueError(f"log_probs must be (batch, frames, tokens), got shape {tuple(log_probs.shape)}")
        B, T, V = log_probs.shape
        if V != len(self.tokens):
            raise ValueError(
                f"log_probs has {V} tokens per frame but the decoder has {len(self.tokens)}; "
                "use the tokens of the model that made them"
            )
        if lengths.shape != (B,) or lengths.is_floating_point() or lengths.is_complex():
            raise ValueError(
                f"lengths must be {B} integers (one per utterance), "
                f"got {lengths.dtype} {tuple(lengths.shape)}"
            )
        if B and (int(lengths.min()) < 0 or int(lengths.max()) > T):
            bad = int(((lengths < 0) | (lengths > T)).nonzero()[0, 0])
            raise ValueError(
                f"lengths[{bad}] = {int(lengths[bad])} is outside [0, {T}], the frames log_probs holds"
            )
        if log_probs.is_floating_point() and B and T:
            peak = log_probs.amax(dim=-1)  # (B, T): NaN where a frame has NaN, -inf where every token is -inf
            if bool(torch.isnan(peak).any()):
                b, t = (int(i) for i in torch.isnan(peak).nonzero()[0])
                raise ValueError(
                    f"log_probs has NaN (first at utterance {b}, frame {t}): the model's output is broken "
                    "(check the checkpoint, or train with trainer.precision=fp32)"
                )
            if bool((peak == float("inf")).any()):
                b, t = (int(i) for i in (peak == float("inf")).nonzero()[0])
                raise ValueError(
                    f"log_probs has +inf (first at utterance {b}, frame {t}): a log-probability is "
                    "at most 0 (pass log_softmax output; check the checkpoint)"
                )
            valid = lengths_mask(lengths.to(log_probs.device), T)
            impossible = (peak == float("-inf")) & valid  # no token can be emitted
            if bool(impossible.any()):
                b, t = (int(i) for i in impossible.nonzero()[0])
                raise ValueError(
                    f"log_probs is -inf for every token at utterance {b}, frame {t}: no label sequence "
                    "is possible (pass log-softmax output, or shorten lengths to exclude padding)"
                )
            log_probs = self._normalise(log_probs, peak, valid)
        return log_probs, lengths.long()

    def _normalise(self, log_probs: Tensor, peak: Tensor, valid: Tensor) -> Tensor:
        """``log_probs`` with every valid frame whose ``|logsumexp|`` exceeds the tolerance log-softmaxed."""
        # logsumexp = peak + log Σ exp(x - peak), reusing the peak; peak is finite on every valid frame
        top = torch.where(valid, peak, 0.0).float()[..., None]
        lse = top[..., 0] + (log_probs.float() - top).exp().sum(dim=-1).log()  # (B, T)
        off = valid & (lse.abs() > NORMALISED_TOL)
        if not bool(off.any()):
            return log_probs
        if not self._warned_not_log_probs:
            self._warned_not_log_probs = True
            b, t = (int(i) for i in off.nonzero()[0])
            log.warning(
                "%s decoder: the input is not log-probabilities (%d frame(s); first at utterance %d, "
                "frame %d, logsumexp over tokens %.3g): normalised it; pass log_softmax output to avoid this",
                type(self).__name__,
                int(off.sum()),
                b,
                t,
                float(lse[b, t]),
            )
        return torch.where(off[..., None], log_probs - lse[..., None].to(log_probs.dtype), log_probs)

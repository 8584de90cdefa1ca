"""Greedy (best-path) CTC decoding: argmax per frame, merge repeats, drop blanks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from speechkit.decoders.base import BLANK, Decoder, Hypothesis, paths, tokens_to_text
from speechkit.decoders.timing import word_spans
from speechkit.functional import lengths_mask
from speechkit.registry import register


@dataclass
class GreedyConfig:
    pass


@register("decoder", "greedy", GreedyConfig)
class GreedyDecoder(Decoder):
    """Best path: the most likely token at every frame, repeats merged, blanks removed."""

    def __init__(self, cfg: GreedyConfig, tokens: list[str], frame_shift_s: float | None = None) -> None:
        super().__init__(tokens, frame_shift_s)
        self.cfg = cfg

    @torch.no_grad()
    def __call__(self, log_probs: Tensor, lengths: Tensor) -> list[list[Hypothesis]]:
        """``log_probs`` ``(B, T, V)``, ``lengths`` ``(B,)`` → one single-entry n-best list per utterance."""
        log_probs, lengths = self.check_inputs(log_probs, lengths)
        best, ids = log_probs.max(dim=-1)  # (B, T)
        T = ids.shape[1]
        lengths = lengths.to(ids.device)
        valid = lengths_mask(lengths, T)
        prev = torch.nn.functional.pad(ids, (1, 0), value=BLANK)[:, :-1]
        emit = valid & (ids != BLANK) & (ids != prev)  # first frame of each emitted token
        scores = torch.where(valid, best, 0.0).sum(dim=1)  # not best * valid: -inf in padding × 0 is NaN
        # tokens, first frames, last frames (a token stays on until the next emission or a blank)
        emitted = torch.where(emit, ids, 0).T[:, :, None]  # (T, B, 1)
        on = (valid & (ids != BLANK)).T[:, :, None]
        toks, starts, ends, offsets = paths(emitted, on)
        out = []
        for b, score in enumerate(scores.cpu().tolist()):
            lo, hi = offsets[b], offsets[b + 1]
            tk, fr = toks[lo:hi], starts[lo:hi]
            words = word_spans(tk, fr, self.tokens, self.frame_shift_s, end_frames=ends[lo:hi])
            out.append([Hypothesis(tokens_to_text(tk, self.tokens), score, tk, fr, words)])
        return out

"""Greedy (best-path) CTC decoding: argmax per frame, merge repeats, drop blanks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from speechkit.decoders.base import BLANK, Decoder, Hypothesis, tokens_to_text, word_spans
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
        lengths = self.check_inputs(log_probs, lengths)
        best, ids = log_probs.max(dim=-1)  # (B, T)
        B, T = ids.shape
        lengths = lengths.to(ids.device)
        valid = torch.arange(T, device=ids.device)[None, :] < lengths[:, None]
        prev = torch.nn.functional.pad(ids, (1, 0), value=BLANK)[:, :-1]
        emit = valid & (ids != BLANK) & (ids != prev)  # first frame of each emitted token
        # last frame each emitted token stays on: the run of equal ids starting at an emit
        nxt = torch.nn.functional.pad(ids, (0, 1), value=BLANK)[:, 1:]
        run_end = (
            valid
            & (ids != BLANK)
            & ((ids != nxt) | (torch.arange(T, device=ids.device)[None] == lengths[:, None] - 1))
        )
        scores = torch.where(valid, best, 0.0).sum(dim=1)  # not best * valid: -inf in padding × 0 is NaN
        ids_c, emit_c, end_c, scores_c = ids.cpu(), emit.cpu(), run_end.cpu(), scores.cpu()
        out = []
        for b in range(B):
            frames = emit_c[b].nonzero().squeeze(1).tolist()
            ends = end_c[b].nonzero().squeeze(1).tolist()
            toks = ids_c[b, frames].tolist()
            text = tokens_to_text(toks, self.tokens)
            words = word_spans(toks, frames, self.tokens, self.frame_shift_s, end_frames=ends)
            out.append([Hypothesis(text, float(scores_c[b]), toks, frames, words)])
        return out

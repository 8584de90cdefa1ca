"""CTC loss (Graves et al. 2006) over torch's implementation, blank id 0.

Utterances whose transcript cannot fit their frames — CTC needs one frame per label plus one
for each pair of equal neighbouring labels — are excluded from the loss, counted and reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from speechkit.registry import register


def min_ctc_frames(targets: Tensor, target_lengths: Tensor) -> Tensor:
    """Fewest frames CTC needs for each concatenated target: ``L + #(y_i == y_{i-1})`` → ``(B,)``."""
    if targets.numel() == 0:
        return target_lengths.clone()
    same = torch.zeros_like(targets, dtype=torch.bool)
    same[1:] = targets[1:] == targets[:-1]
    starts = torch.cumsum(target_lengths, 0) - target_lengths
    same[starts[target_lengths > 0]] = False  # the first label of an utterance repeats nothing
    utt = torch.repeat_interleave(torch.arange(len(target_lengths), device=targets.device), target_lengths)
    repeats = torch.zeros_like(target_lengths).index_add_(0, utt, same.long())
    return target_lengths + repeats


@dataclass
class CTCLossConfig:
    reduction: str = "mean"  # mean: per-utterance loss divided by its target length, then averaged; sum


@register("loss", "ctc", CTCLossConfig)
class CTCLoss(nn.Module):
    """CTC negative log-likelihood; returns ``(loss, number of utterances left out as too short)``."""

    def __init__(self, cfg: CTCLossConfig) -> None:
        super().__init__()
        if cfg.reduction not in ("mean", "sum"):
            raise ValueError(f"loss.reduction={cfg.reduction!r}: use mean or sum")
        self.cfg = cfg

    def forward(
        self, log_probs: Tensor, lengths: Tensor, targets: Tensor, target_lengths: Tensor
    ) -> tuple[Tensor, int]:
        """``log_probs`` ``(B, T, V)``, ``lengths`` ``(B,)``, ``targets`` ``(ΣL,)``, ``target_lengths`` ``(B,)``."""
        fits = min_ctc_frames(targets, target_lengths) <= lengths.to(target_lengths.device)
        fits &= target_lengths > 0
        n_bad = int((~fits).sum())
        per_utt = nn.functional.ctc_loss(
            log_probs.transpose(0, 1).float(),  # (T, B, V)
            targets,
            lengths,
            target_lengths,
            blank=0,
            reduction="none",
            zero_infinity=True,
        )
        per_utt = per_utt.masked_fill(~fits.to(per_utt.device), 0.0)
        n_good = max(int(fits.sum()), 1)
        if self.cfg.reduction == "mean":
            per_utt = per_utt / target_lengths.to(per_utt.device).clamp(min=1)
        loss = per_utt.sum() / (n_good if self.cfg.reduction == "mean" else 1)
        return loss, n_bad

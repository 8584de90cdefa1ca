"""A second CTC head that sees little context, trained beside the main one to place words in time.

A bidirectional encoder emits a token wherever it is sure of it, which need not be where its sound
is: the asr_grid models put a letter up to ±250 ms from its sound, by its place in the sentence, and
where differs from one model to the next (benchmarks/README.md, "Word timestamps"). The aligner is a
head whose outputs cannot do that: a few convolutions over the features, so an output frame sees
``context_ms`` on each side of itself and nothing further. Trained with CTC on the same targets
(``aligner.weight`` × its loss added to the main loss), it can only emit a token near its sound.
Word times are then read by aligning the main head's hypothesis to the aligner's posteriors
(``Pipeline.annotate``): the words are the main head's, their places the aligner's.

It reads the frontend's features before the feature augmentations (``CTCModel.forward``: a stretch
masked by SpecAugment would teach it to emit tokens it cannot hear; waveform augmentations it does
hear), stacks ``subsampling`` frames as the encoder does (same output frames), and pads every
convolution with the utterance's own first and last frames, not zeros (zeros would mark the file's
edges, and it would learn to put the first and last tokens there), so an utterance's outputs do not
depend on what it is batched with.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from speechkit.config import AlignerConfig
from speechkit.encoders.rnn import Subsample
from speechkit.functional import mask_padding


def aligner_config(node: Any) -> AlignerConfig | None:
    """The ``aligner`` node of a run's config as an :class:`AlignerConfig`; None where the config has none
    (a checkpoint saved before it existed) or its weight is 0 (no aligner)."""
    if node is None:
        return None
    names = {f.name for f in dataclasses.fields(AlignerConfig)}
    cfg = AlignerConfig(**{k: v for k, v in dict(node).items() if k in names})
    if cfg.weight < 0:
        raise ValueError(f"aligner.weight={cfg.weight}: use 0 (no aligner) or a positive weight such as 0.3")
    return cfg if cfg.weight > 0 else None


class AlignerHead(nn.Module):
    """Features ``(B, T, F)`` → log-probs ``(B, ceil(T / factor), V)``: stacked ``factor`` frames, then
    ``layers`` convolutions of 3 output frames with ReLU, then a linear layer. An output frame reads the
    input frames of ``layers`` output frames on each side of its own, and no others."""

    def __init__(
        self, input_size: int, factor: int, frame_shift_s: float | None, vocab_size: int, cfg: AlignerConfig
    ) -> None:
        super().__init__()
        if cfg.channels < 1 or cfg.context_ms < 0:
            raise ValueError(f"aligner.channels={cfg.channels}, aligner.context_ms={cfg.context_ms}: use "
                             "channels ≥ 1 and context_ms ≥ 0")  # fmt: skip
        shift_ms = 1000 * frame_shift_s if frame_shift_s else None  # per output frame
        self.layers = (
            max(1, round(cfg.context_ms / shift_ms)) if shift_ms else max(1, round(cfg.context_ms / 40))
        )
        self.subsample = Subsample(input_size, factor, "stack")
        width = self.subsample.output_dim
        self.convs = nn.ModuleList(
            nn.Conv1d(width if i == 0 else cfg.channels, cfg.channels, kernel_size=3)
            for i in range(self.layers)
        )
        self.out = nn.Linear(cfg.channels, vocab_size)

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        # Past either end, an utterance's own first and last frames repeat, not zeros: zeros would tell
        # the head where the file starts and ends, and it learns to put the first and last tokens there
        # whatever the audio says (measured: the first word 170 ms early, the last one's letters on the
        # file's last frame). So the last group of frames is completed with the last frame, and every
        # convolution is padded with its input's first and last frames.
        factor = self.subsample.factor
        B, T, F = feats.shape
        groups = -(-T // factor)
        x = _repeat_last(feats, lengths, groups * factor).reshape(B, groups, F * factor)
        lengths = self.subsample.output_lengths(lengths)
        for conv in self.convs:
            x = _repeat_last(x, lengths, groups)
            x = conv(nn.functional.pad(x.transpose(1, 2), (1, 1), mode="replicate")).transpose(1, 2).relu()
        return mask_padding(self.out(x).float().log_softmax(dim=-1), lengths), lengths


def _repeat_last(x: Tensor, lengths: Tensor, frames: int) -> Tensor:
    """``x`` ``(B, T, F)`` as ``(B, frames, F)``, every frame from an utterance's length on a copy of its last."""
    last = (lengths.to(x.device) - 1).clamp(min=0)[:, None]  # (B, 1)
    index = torch.minimum(torch.arange(frames, device=x.device)[None], last)  # (B, frames)
    return torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[2]))

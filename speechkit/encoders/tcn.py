"""Temporal convolutional encoder: a WaveNet-style stack of dilated 1-D convolutions.

Each residual block is a dilated convolution with a gated activation
``tanh(W_f * x) ⊙ σ(W_g * x)``, then a 1×1 convolution to a residual (added to the
block's input) and a skip output (summed over blocks, the encoder's output). Dilations
double from block to block (1, 2, 4, …) and restart every ``dilation_cycle`` blocks.

``causal`` convolutions see only the current and past frames; centred ones see as many
future frames as past ones. Padded frames are zeroed after every block, and the
convolutions zero-pad beyond the ends, so a valid frame sees exactly what it would see
if its utterance were alone in the batch.

A causal stack also streams (``stream_init``/``stream_step``): each block keeps the last
``(kernel_size - 1) · dilation`` frames of its input, the left context its next chunk's convolution
reads in place of the zero padding (zeros before the first chunk, as ``forward`` pads).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from speechkit.encoders.rnn import StreamState, Subsample, check_layers, not_streamable
from speechkit.functional import lengths_mask
from speechkit.registry import register


@dataclass
class TCNConfig:
    hidden_size: int = 256  # channels of the residual stream and the output
    num_layers: int = 8  # residual blocks
    kernel_size: int = 3  # taps per dilated convolution (odd when centred)
    dilation_cycle: int = 8  # dilations 1, 2, … 2^(cycle-1), then again from 1
    causal: bool = False  # True: frame t sees frames ≤ t only
    dropout: float = 0.1  # inside each block, before its 1×1 convolution
    subsample: int = 1  # time reduction factor before the convolutions (1 = none)
    subsample_mode: str = "stack"  # stack | conv | conv2d
    subsample_channels: int = 32  # feature maps of subsample_mode=conv2d


class _Block(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilation: int, causal: bool, dropout: float) -> None:
        super().__init__()
        span = (kernel_size - 1) * dilation  # frames of context this block adds
        self.pad = (span, 0) if causal else (span // 2, span // 2)
        self.span = span
        self.conv = nn.Conv1d(channels, 2 * channels, kernel_size, dilation=dilation)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Conv1d(channels, 2 * channels, 1)  # residual and skip

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` ``(B, C, T)``, ``mask`` ``(B, 1, T)`` → next residual stream, skip output."""
        y, skip = self.gated(nn.functional.pad(x, self.pad), x)
        return y * mask, skip

    def gated(self, context: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` ``(B, C, T)`` with the frames its convolution reads, ``context`` ``(B, C, span + T)``
        (padded, or a stream's past frames then ``x``) → ``x`` + residual, skip output (unmasked)."""
        f, g = self.conv(context).chunk(2, 1)
        z = self.dropout(torch.tanh(f) * torch.sigmoid(g))  # gated activation
        res, skip = self.out(z).chunk(2, 1)
        return x + res, skip


@register("encoder", "tcn", TCNConfig)
class TCN(nn.Module):
    """Dilated 1-D convolution stack (WaveNet style), causal or centred."""

    def __init__(self, cfg: TCNConfig, input_size: int) -> None:
        super().__init__()
        check_layers(cfg)
        if not cfg.causal and cfg.kernel_size % 2 == 0:
            raise ValueError(
                f"encoder 'tcn': a centred convolution needs an odd kernel_size, got {cfg.kernel_size}; "
                "use an odd kernel_size or causal=true"
            )
        if cfg.dilation_cycle < 1:
            raise ValueError(f"encoder 'tcn': dilation_cycle must be ≥ 1, got {cfg.dilation_cycle}")
        self.cfg = cfg
        self.sub = Subsample(input_size, cfg.subsample, cfg.subsample_mode, channels=cfg.subsample_channels)
        self.inp = nn.Conv1d(self.sub.output_dim, cfg.hidden_size, 1)
        dilations = [2 ** (i % cfg.dilation_cycle) for i in range(cfg.num_layers)]
        self.blocks = nn.ModuleList(
            _Block(cfg.hidden_size, cfg.kernel_size, d, cfg.causal, cfg.dropout) for d in dilations
        )
        self.head = nn.Conv1d(cfg.hidden_size, cfg.hidden_size, 1)
        self.output_dim = cfg.hidden_size
        self.subsampling = cfg.subsample  # output frames per input frame: 1 / subsampling
        span = sum((cfg.kernel_size - 1) * d for d in dilations)
        #: frames (after subsampling) one output frame depends on, and how many lie in its future
        self.receptive_field = span + 1
        self.lookahead = 0 if cfg.causal else span // 2

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return self.sub.output_lengths(lengths)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, T, F)``, ``(B,)`` → ``(B, T', H)``, ``(B,)`` with ``T' = ceil(T / subsample)``."""
        x, lengths = self.sub(x, lengths)
        T = x.size(1)
        mask = lengths_mask(lengths.to(x.device), T)[:, None]  # (B, 1, T)
        x = self.inp(x.transpose(1, 2) * mask) * mask  # (B, C, T)
        skips = 0
        for block in self.blocks:
            x, skip = block(x, mask)
            skips = skips + skip
        y = self.head(torch.relu(skips)) * mask
        return y.transpose(1, 2), lengths

    def stream_init(self, batch: int = 1) -> StreamState:
        """The state before a stream's first frame: per block ``(B, C, span)`` zeros (the left padding
        ``forward`` adds); ``ValueError`` for a centred stack, whose frames wait for future ones."""
        if not self.cfg.causal:
            raise not_streamable(
                "tcn",
                f"is centred (encoder.causal=false): each frame waits for {self.lookahead} future frames",
            )
        w = self.inp.weight
        return StreamState(None, [w.new_zeros(batch, self.cfg.hidden_size, b.span) for b in self.blocks])

    def stream_step(self, x: Tensor, state: StreamState, final: bool = False) -> tuple[Tensor, StreamState]:
        """The next chunk of a stream: frames ``(B, t, F)`` → outputs ``(B, t', H)``, the state after them.
        ``final``: the stream ends with this chunk (the last subsampling group is flushed). Eval mode."""
        x, rest = self.sub.stream(x, state.rest, final)
        if x.shape[1] == 0:
            return x.new_zeros(x.shape[0], 0, self.output_dim), StreamState(rest, state.carry)
        x = self.inp(x.transpose(1, 2))  # (B, C, t)
        skips, carry = 0, []
        for block, past in zip(self.blocks, state.carry):
            context = torch.cat([past, x], 2)  # (B, C, span + t)
            carry.append(context[:, :, context.shape[2] - block.span :])  # the next chunk's left context
            x, skip = block.gated(context, x)
            skips = skips + skip
        y = self.head(torch.relu(skips))
        return y.transpose(1, 2), StreamState(rest, carry)

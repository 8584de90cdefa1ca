"""Recurrent encoders: stacks of torch's fused LSTM/GRU layers, with optional subsampling.

Padding must never reach a valid frame. Two ways to run a stack keep it so, with the same
parameters (an ``nn.LSTM``/``nn.GRU``, so checkpoints load either way):

- ``packed``: torch's packed sequences — one call for the whole stack; cuDNN's way on GPU.
- ``reversed``: layer by layer, the forward direction over the padded batch (padding comes after
  every valid frame, so it cannot reach one) and the backward direction over each sequence
  reversed *within its length* (:func:`speechkit.functional.reverse_within_lengths`), then
  flipped back; padded outputs zeroed.
  On CPU this is 2–3× faster for training than ``packed``, whose backward pass allocates a
  zeroed copy of the packed input per time step (measured in benchmarks/README.md, "Encoders").
- ``parallel``: ``reversed`` with each layer's two directions at once, one on a second CPU thread,
  forward and backward (:class:`_TwoDirections`): the two are independent sequential chains of small
  matrix products, which one core runs one after the other and two cores side by side (1.27–1.37× the
  training steps per second of asr_grid_10min on two cores: benchmarks/README.md, "Time to accuracy").
  The same operations as ``reversed``, so the same outputs; on GPU it runs as ``packed``. ``auto``
  picks it on CPU where the process has twice the cores of its intra-op threads.

Streaming (speechkit/streaming.py): a unidirectional encoder also runs chunk by chunk,
``state = enc.stream_init(batch)``, then ``y, state = enc.stream_step(x, state)`` per chunk of frames
and ``final=True`` on the last, and its outputs equal ``forward``'s on the whole utterance. The state
is a :class:`StreamState`: the frames of an unfinished subsampling group and the encoder's own carry.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from speechkit.distributed import cores_per_process
from speechkit.functional import mask_padding, reverse_within_lengths
from speechkit.registry import register

#: what streaming takes, as its refusal says it
STREAMABLE = (
    "encoder=lstm|gru, elman|jordan|lstm_peephole|lstm_coupled with encoder.bidirectional=false, "
    "or tcn with encoder.causal=true"
)


def not_streamable(name: str, why: str) -> ValueError:
    """The error for streaming an encoder that looks at future frames: which one, why, what streams."""
    return ValueError(
        f"streaming needs a unidirectional encoder: {STREAMABLE}; this model's encoder {name!r} {why}"
    )


IMPLS = ("auto", "packed", "reversed", "parallel")

_pool: ThreadPoolExecutor | None = None  # the second direction's thread (impl=parallel), made on first use


def _second_thread() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speechkit-rnn")
    return _pool


def _forget_pool() -> None:  # a forked child has the executor but not its thread
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_pool)


def _tracing() -> bool:
    """Whether a tracer or compiler records this call: it records the calling thread's operations only."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling())


def _caller_threads(n: int) -> None:
    """Give this thread the caller's intra-op thread count: a thread keeps the count it first saw, and
    ``trainer.threads=auto`` changes the count as it times the first steps."""
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _run_direction(run: Callable[..., Tensor], inputs: Sequence[Tensor], grad: bool,
                   autocast: torch.dtype | None, threads: int) -> tuple[Tensor, list[Tensor]]:
    """``run(*inputs)`` on detached copies of the inputs, under the caller's autocast (thread-local state,
    so passed in); with ``grad``, its own graph from those leaves, for :class:`_TwoDirections`'s backward."""
    _caller_threads(threads)
    leaves = [t.detach().requires_grad_(t.requires_grad and grad) for t in inputs]
    with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=autocast or torch.bfloat16,
                                                      enabled=autocast is not None):
        return run(*leaves), leaves


def _input_grads(y: Tensor, leaves: list[Tensor], grad_y: Tensor, threads: int) -> list[Tensor | None]:
    _caller_threads(threads)
    want = [t for t in leaves if t.requires_grad]
    got = iter(torch.autograd.grad(y, want, grad_y, allow_unused=True) if want else ())
    return [next(got) if t.requires_grad else None for t in leaves]


class _TwoDirections(torch.autograd.Function):
    """A bidirectional layer's two directions side by side: ``run_b`` on the second thread while
    ``run_f`` runs on this one, in the forward pass and again in the backward pass, where each
    direction's own graph (built in its thread) is differentiated in that thread. Inputs: the
    ``n`` tensors of the first direction, then the second's."""

    @staticmethod
    def forward(ctx, run_f, run_b, n: int, *inputs: Tensor) -> tuple[Tensor, Tensor]:
        grad = any(ctx.needs_input_grad[3:])
        autocast = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        threads = torch.get_num_threads()
        second = _second_thread().submit(_run_direction, run_b, inputs[n:], grad, autocast, threads)
        y_f, leaves_f = _run_direction(run_f, inputs[:n], grad, autocast, threads)
        y_b, leaves_b = second.result()
        if grad:
            ctx.graphs = (y_f, leaves_f), (y_b, leaves_b)
        return y_f.detach(), y_b.detach()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_f: Tensor, grad_b: Tensor):
        (y_f, leaves_f), (y_b, leaves_b) = ctx.graphs
        del ctx.graphs
        threads = torch.get_num_threads()
        second = _second_thread().submit(_input_grads, y_b, leaves_b, grad_b, threads)
        grads_f = _input_grads(y_f, leaves_f, grad_f, threads)
        return (None, None, None, *grads_f, *second.result())


def check_layers(cfg: Any) -> None:
    """Refuse an encoder's ``hidden_size``, ``num_layers`` or ``dropout`` out of range, naming the setting
    (torch's own refusal names neither the setting nor what to use, and accepts ``dropout=1``)."""
    if cfg.hidden_size < 1:
        raise ValueError(f"encoder.hidden_size={cfg.hidden_size}: use a positive number of units")
    if cfg.num_layers < 1:
        raise ValueError(f"encoder.num_layers={cfg.num_layers}: use 1 or more layers")
    if not 0 <= cfg.dropout < 1:
        raise ValueError(f"encoder.dropout={cfg.dropout}: use a probability from 0 up to, not including, 1")


@dataclass
class StreamState:
    """What a streaming encoder carries from one chunk to the next (``stream_step``)."""

    rest: Tensor | None  # (B, r, F) frames of an unfinished subsampling group, r < factor; None: none
    carry: Any  # the encoder's own: recurrent state per layer, or a causal TCN's left context per block


class Subsample(nn.Module):
    """Reduce the frame rate by ``factor``: ``stack`` concatenates neighbouring frames,
    ``conv`` uses a strided 1-D convolution, ``conv2d`` two 2-D convolutions over time and frequency
    (``channels`` maps, ReLU; each halves the frequency axis, 3 bands a kernel, and the first takes
    2 frames of the group (its whole when ``factor`` is odd), the second the rest: local
    time-frequency patterns such as a consonant's burst, found wherever in the spectrum a voice puts
    them; ``F' = channels · ceil(ceil(F / 2) / 2)``). ``(B, T, F)`` → ``(B, ceil(T / factor), F')``.
    Each output frame reads the ``factor`` input frames of its group only, so streaming gives what
    ``forward`` gives.

    ``lookahead`` frames of right context: output frame ``k`` reads input frames
    ``[k·factor, (k + 1)·factor + lookahead)`` (stacked: ``F' = F·(factor + lookahead)``; conv: a kernel
    of ``factor + lookahead``), frames past the utterance's end being zeros, so a streamed output waits
    for ``lookahead`` more input frames (10 ms each at a 10 ms hop).
    """

    def __init__(self, input_size: int, factor: int, mode: str = "stack", lookahead: int = 0,
                 channels: int = 32) -> None:
        super().__init__()
        if mode not in ("stack", "conv", "conv2d"):
            raise ValueError(f"subsampling mode {mode!r} is not one of: stack, conv, conv2d")
        if factor < 1:
            raise ValueError(f"encoder.subsample={factor}: use 1 (none) or more input frames per output frame")
        if lookahead < 0:
            raise ValueError(f"encoder.lookahead={lookahead}: use 0 or a positive number of input frames")
        if mode == "conv2d" and lookahead:
            raise ValueError(f"encoder.lookahead={lookahead} with encoder.subsample_mode=conv2d: its output frames "
                             "read their own group only; use subsample_mode=stack or conv for a lookahead")
        if mode == "conv2d" and channels < 1:
            raise ValueError(f"encoder.subsample_channels={channels}: use a positive number of feature maps")
        self.factor, self.mode, self.lookahead = factor, mode, lookahead
        self.identity = factor == 1 and lookahead == 0 and mode != "conv2d"  # passes frames through unchanged
        width = factor + lookahead  # input frames one output frame reads
        if mode == "conv2d":
            first = 2 if factor % 2 == 0 else factor  # frames of a group each convolution takes
            self.conv2d = nn.Sequential(
                nn.Conv2d(1, channels, (first, 3), stride=(first, 2), padding=(0, 1)), nn.ReLU(),
                nn.Conv2d(channels, channels, (factor // first, 3), stride=(factor // first, 2), padding=(0, 1)),
                nn.ReLU(),
            )
            self.output_dim = channels * (((input_size + 1) // 2 + 1) // 2)
        elif mode == "conv" and width > 1:
            self.conv = nn.Conv1d(input_size, input_size, kernel_size=width, stride=factor)
            self.output_dim = input_size
        else:
            self.output_dim = input_size * width

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return torch.div(lengths + self.factor - 1, self.factor, rounding_mode="floor")

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if self.identity:
            return x, lengths
        T = x.shape[1]
        groups = (T + self.factor - 1) // self.factor
        pad = groups * self.factor + self.lookahead - T
        x = nn.functional.pad(mask_padding(x, lengths), (0, 0, 0, pad))  # padding frames become zeros
        return self._groups(x, groups), self.output_lengths(lengths)

    def _groups(self, x: Tensor, groups: int) -> Tensor:
        """``groups`` output frames of ``x`` ``(B, groups·factor + lookahead, F)``."""
        B, _, F = x.shape
        if self.mode == "conv2d":  # (B, 1, groups·factor, F) → (B, C, groups, F') → (B, groups, C·F')
            if B == 0 or groups == 0:
                return x.new_zeros(B, groups, self.output_dim)
            y = self.conv2d(x[:, None, : groups * self.factor])
            return y.permute(0, 2, 1, 3).reshape(B, groups, self.output_dim)
        if self.mode == "conv" and self.factor + self.lookahead > 1:
            return self.conv(x.transpose(1, 2)).transpose(1, 2)
        y = x[:, : groups * self.factor].reshape(B, groups, F * self.factor)
        if self.lookahead:  # the lookahead frames after each group: frames (k + 1)·factor + j
            ahead = [x[:, self.factor + j :: self.factor][:, :groups] for j in range(self.lookahead)]
            y = torch.cat([y, *ahead], dim=2)
        return y

    def stream(self, x: Tensor, rest: Tensor | None, final: bool = False) -> tuple[Tensor, Tensor | None]:
        """Subsample a stream chunk by chunk: ``x`` ``(B, t, F)`` the new frames, ``rest`` those held
        back from the last chunk → ``(B, t', F')`` output frames, the frames held back now. Only groups
        whose ``factor + lookahead`` frames have all arrived go out; with ``final`` the rest are
        zero-padded, as ``forward`` pads the end of an utterance, so the outputs equal ``forward``'s."""
        if self.identity:
            return x, None
        x = x if rest is None else torch.cat([rest, x], 1)
        B, T, F = x.shape
        groups = max(0, (T - self.lookahead) // self.factor)
        if final:
            groups = (T + self.factor - 1) // self.factor
            x = nn.functional.pad(x, (0, 0, 0, groups * self.factor + self.lookahead - T))
        if groups == 0:
            return x.new_zeros(B, 0, self.output_dim), x
        y = self._groups(x[:, : groups * self.factor + self.lookahead], groups)
        return y, x[:, groups * self.factor :]


@dataclass
class RNNConfig:
    hidden_size: int = 256  # units per direction
    num_layers: int = 3
    dropout: float = 0.1  # between layers
    subsample: int = 1  # time reduction factor before the recurrence (1 = none)
    subsample_mode: str = "stack"  # stack | conv | conv2d
    subsample_channels: int = 32  # feature maps of subsample_mode=conv2d
    lookahead: int = 0  # input frames of right context each subsampled frame also reads (10 ms each)
    impl: str = "auto"  # packed | reversed | parallel (reversed, the two directions on two CPU threads) |
    # auto (GPU: packed; CPU: parallel where this process has a core to spare, else reversed); same parameters
    forget_bias: float | None = None  # LSTM only: the forget gates' starting bias (None: torch's uniform init)


class _TorchRNN(nn.Module):
    """A stack of torch's fused RNN layers (cuDNN on GPU), packed or reversed within lengths."""

    rnn_cls: type[nn.RNNBase] = nn.LSTM
    bidirectional: bool = True

    def __init__(self, cfg: RNNConfig, input_size: int) -> None:
        super().__init__()
        check_layers(cfg)
        self.cfg = cfg
        self.sub = Subsample(input_size, cfg.subsample, cfg.subsample_mode, cfg.lookahead, cfg.subsample_channels)
        self.rnn = self.rnn_cls(
            self.sub.output_dim,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
            bidirectional=self.bidirectional,
            batch_first=True,
        )
        self.output_dim = cfg.hidden_size * (2 if self.bidirectional else 1)
        self.subsampling = cfg.subsample  # output frames per input frame: 1 / subsampling
        if getattr(cfg, "forget_bias", None) is not None:  # older checkpoints' configs lack it
            self._init_forget_bias(float(cfg.forget_bias))
        if cfg.impl not in IMPLS:
            raise ValueError(f"encoder.impl={cfg.impl!r}: use one of {', '.join(IMPLS)}")

    def _init_forget_bias(self, value: float) -> None:
        """Start every forget gate at bias ``value`` (Gers et al. 2000; Jozefowicz et al. 2015 found 1.0 helps
        an LSTM learn): torch's gate order is input, forget, cell, output, and the two bias vectors add, so
        ``bias_ih`` holds the value and ``bias_hh`` zero. Other weights keep torch's init."""
        if self.rnn_cls is not nn.LSTM:
            raise ValueError(f"encoder.forget_bias={value}: only LSTM encoders have forget gates; "
                             "leave it unset (null) for this encoder")
        H = self.rnn.hidden_size
        with torch.no_grad():
            for name, p in self.rnn.named_parameters():
                if name.startswith("bias_"):
                    p[H : 2 * H] = value if name.startswith("bias_ih") else 0.0

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return self.sub.output_lengths(lengths)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, T, F)``, ``(B,)`` → ``(B, T', H)``, ``(B,)`` with ``T' = ceil(T / subsample)``."""
        x, lengths = self.sub(x, lengths)
        impl = self.runs_as(x.device)
        if impl != "packed":
            return self._reversed(x, lengths, side_by_side=impl == "parallel")[0], lengths
        T = x.shape[1]
        packed = pack_padded_sequence(x, lengths.cpu().clamp(min=1), batch_first=True, enforce_sorted=False)
        y, _ = self.rnn(packed)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=T)
        return y, lengths

    @property
    def num_layers(self) -> int:
        return self.rnn.num_layers

    def runs_as(self, device: torch.device) -> str:
        """How a call on ``device`` runs the stack: ``packed`` on GPU (unless ``reversed`` is asked for),
        ``parallel`` for a bidirectional stack on CPU when asked, or under ``auto`` when this process has
        twice the cores of its intra-op threads (a core for the second direction), else ``reversed``."""
        impl = self.cfg.impl
        if device.type == "cuda":
            return "reversed" if impl == "reversed" else "packed"
        if impl == "auto":
            spare = cores_per_process() >= 2 * torch.get_num_threads()
            impl = "parallel" if spare else "reversed"
        if impl == "parallel" and (not self.bidirectional or _tracing()):
            return "reversed"
        return impl

    def forward_taps(
        self, x: Tensor, lengths: Tensor, layers: Sequence[int], condition: Callable[[Tensor], Tensor] | None = None
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """:meth:`forward`, and the outputs ``(B, T', H)`` of the inner ``layers`` (1 = the first), in that
        order (intermediate CTC: speechkit/pipeline.py). Layer by layer, as ``impl=reversed`` runs on any
        device (a packed stack is one call with no inner outputs); the same parameters and results.
        ``condition``: where given, each tapped output ``h`` goes on to the next layer as ``condition(h)``
        (self-conditioned CTC); the taps are the outputs before it."""
        x, lengths = self.sub(x, lengths)
        y, taps = self._reversed(x, lengths, layers, condition, side_by_side=self.runs_as(x.device) == "parallel")
        return y, lengths, taps

    def _reversed(
        self, x: Tensor, lengths: Tensor, taps: Sequence[int] = (), condition: Callable[[Tensor], Tensor] | None = None,
        side_by_side: bool = False,
    ) -> tuple[Tensor, list[Tensor]]:
        """The stack layer by layer: forward over the padded batch, backward over each sequence reversed;
        and the outputs of the ``taps`` layers (1 = the first), in that order, each passed on to the next
        layer through ``condition`` where one is given. ``side_by_side``: each layer's two directions at
        once (``impl=parallel``, as :meth:`runs_as` decides)."""
        rnn, tapped = self.rnn, {}
        step = torch.lstm if isinstance(rnn, nn.LSTM) else torch.gru
        h0 = x.new_zeros(1, x.shape[0], rnn.hidden_size)
        hx = (h0, h0) if isinstance(rnn, nn.LSTM) else h0
        training = self.training

        def forward_dir(inp: Tensor, *params: Tensor) -> Tensor:
            return step(inp, hx, list(params), True, 1, 0.0, training, False, True)[0]

        def backward_dir(inp: Tensor, *params: Tensor) -> Tensor:
            return reverse_within_lengths(forward_dir(reverse_within_lengths(inp, lengths), *params), lengths)

        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        for layer in range(rnn.num_layers):
            if layer > 0:
                x = nn.functional.dropout(x, rnn.dropout, self.training)
            params = [[getattr(rnn, f"{n}_l{layer}{suffix}") for n in names]
                      for suffix in (("", "_reverse") if self.bidirectional else ("",))]
            if side_by_side:
                outs = list(_TwoDirections.apply(forward_dir, backward_dir, 1 + len(params[0]),
                                                 x, *params[0], x, *params[1]))
            else:
                outs = [run(x, *p) for run, p in zip((forward_dir, backward_dir), params)]
            x = mask_padding(torch.cat(outs, 2) if len(outs) > 1 else outs[0], lengths)
            if layer + 1 in taps:
                tapped[layer + 1] = x
                if condition is not None:
                    x = mask_padding(condition(x), lengths)
        return x, [tapped[n] for n in taps]

    def stream_init(self, batch: int = 1) -> StreamState:
        """The state before a stream's first frame (zeros, as ``forward`` starts); ``ValueError`` for a
        bidirectional stack, whose every output waits for the utterance's end."""
        if self.bidirectional:
            raise not_streamable(getattr(self, "plugin_name", type(self).__name__), "is bidirectional")
        w = self.rnn.weight_hh_l0
        h = w.new_zeros(self.rnn.num_layers, batch, self.rnn.hidden_size)  # (layers, B, H)
        return StreamState(None, (h, h.clone()) if isinstance(self.rnn, nn.LSTM) else h)

    def stream_step(self, x: Tensor, state: StreamState, final: bool = False) -> tuple[Tensor, StreamState]:
        """The next chunk of a stream: frames ``(B, t, F)`` → outputs ``(B, t', H)``, the state after them.
        ``final``: the stream ends with this chunk (the last subsampling group is flushed). Eval mode."""
        x, rest = self.sub.stream(x, state.rest, final)
        if x.shape[1] == 0:
            return x.new_zeros(x.shape[0], 0, self.output_dim), StreamState(rest, state.carry)
        y, carry = self.rnn(x, state.carry)  # h_t, c_t carried over from the last chunk's final frame
        return y, StreamState(rest, carry)


@register("encoder", "blstm", RNNConfig)
class BLSTM(_TorchRNN):
    """Bidirectional LSTM stack (torch's fused kernels)."""

    rnn_cls, bidirectional = nn.LSTM, True


@register("encoder", "lstm", RNNConfig)
class LSTM(_TorchRNN):
    """Unidirectional LSTM stack (torch's fused kernels)."""

    rnn_cls, bidirectional = nn.LSTM, False


@register("encoder", "bgru", RNNConfig)
class BGRU(_TorchRNN):
    """Bidirectional GRU stack (torch's fused kernels)."""

    rnn_cls, bidirectional = nn.GRU, True


@register("encoder", "gru", RNNConfig)
class GRU(_TorchRNN):
    """Unidirectional GRU stack (torch's fused kernels)."""

    rnn_cls, bidirectional = nn.GRU, False

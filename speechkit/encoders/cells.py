"""Custom recurrent encoders: Elman, Jordan, peephole LSTM and coupled-gate LSTM.

Each layer computes its input projections for all frames in one matrix product
(``W_x x_t + b`` for every ``t``), then runs the recurrence: one fused step per frame
(one ``addmm`` for the recurrent product of all gates, then the gate nonlinearities),
inside a TorchScript loop. The backward pass is written out by hand (backpropagation
through time in a second TorchScript loop) so that autograd records one node per layer
instead of a dozen per frame, and the recurrent weight gradient ``sum_t da_t^T h_{t-1}`` is
hoisted out of the loop into one matrix product. ``benchmarks/README.md`` has the timings
of this against a plain Python loop and ``torch.compile``.

Tensors inside this module are time-major, ``(T, B, ·)``. Padding never reaches a valid
frame: the forward direction only looks back, and the backward direction reads each
sequence reversed within its own length (:func:`speechkit.functional.reverse_within_lengths`),
so it starts at that sequence's last valid frame; padded frames are zeroed at every layer's output.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from speechkit import functional as SF
from speechkit.encoders.rnn import RNNConfig, StreamState, Subsample, check_layers, not_streamable
from speechkit.registry import register

# --------------------------------------------------------------------------------------
# The recurrences. Each cell has a forward loop ``fwd(xw, params, relu) -> (y, saved)``
# and a backward loop ``bwd(dy, saved, params, relu) -> [dxw, *dparams]``; ``xw`` is the
# hoisted input projection ``W_x x_t + b`` of all frames, ``(T, B, G·H)``; ``y`` is ``(T, B, H)``.
# ``init`` (streaming, inference only: the backward assumes zeros) is the state before the first
# frame, as the loop carries it (``h``; Jordan's ``y``; ``h, c``); None: zeros.
# ``torch.addmm(xw[t], h, W.t())`` is ``W_x x_t + b + W h_{t-1}``, all gates in one product.
# --------------------------------------------------------------------------------------


def _elman_fwd(
    xw: Tensor, params: list[Tensor], relu: bool, init: list[Tensor] | None = None
) -> tuple[Tensor, list[Tensor]]:
    w_hh = params[0]  # (H, H)
    w = w_hh.t()
    h = xw.new_zeros(xw.size(1), w_hh.size(1)) if init is None else init[0]
    hs = torch.empty_like(xw)
    for t in range(xw.size(0)):
        a = torch.addmm(xw[t], h, w)  # a_t = W_x x_t + W_h h_{t-1} + b
        h = torch.relu(a) if relu else torch.tanh(a)  # h_t = act(a_t)
        hs[t] = h
    return hs, [hs]


def _elman_bwd(dy: Tensor, saved: list[Tensor], params: list[Tensor], relu: bool) -> list[Tensor]:
    hs, w_hh = saved[0], params[0]
    da = torch.empty_like(dy)
    dh = torch.zeros_like(dy[0])
    for t in range(dy.size(0) - 1, -1, -1):
        dh = dy[t] + dh  # from the output and from h_{t+1}
        h = hs[t]
        da[t] = dh * (h > 0).to(h.dtype) if relu else dh * (1 - h * h)  # act'(a_t)
        dh = torch.mm(da[t], w_hh)  # dL/dh_{t-1} = W_h^T da_t
    h_prev = torch.cat([torch.zeros_like(hs[:1]), hs[:-1]])
    dw = torch.mm(da.flatten(0, 1).t(), h_prev.flatten(0, 1))  # sum_t da_t h_{t-1}^T
    return [da, dw]


def _jordan_fwd(
    xw: Tensor, params: list[Tensor], relu: bool, init: list[Tensor] | None = None
) -> tuple[Tensor, list[Tensor]]:
    w_yh, w_hy, b_hy = params[0], params[1], params[2]  # feedback (H, H), output (H, H), (H,)
    u, v = w_yh.t(), w_hy.t()
    y = xw.new_zeros(xw.size(1), w_yh.size(1)) if init is None else init[0]
    hs, ys = torch.empty_like(xw), torch.empty_like(xw)
    for t in range(xw.size(0)):
        a = torch.addmm(xw[t], y, u)  # a_t = W_x x_t + U y_{t-1} + b   (output fed back)
        h = torch.relu(a) if relu else torch.tanh(a)  # h_t = act(a_t)
        y = torch.tanh(torch.addmm(b_hy, h, v))  # y_t = tanh(W_y h_t + b_y), the layer's output
        hs[t] = h
        ys[t] = y
    return ys, [hs, ys]


def _jordan_bwd(dy: Tensor, saved: list[Tensor], params: list[Tensor], relu: bool) -> list[Tensor]:
    hs, ys = saved[0], saved[1]
    w_yh, w_hy = params[0], params[1]
    dq, da = torch.empty_like(dy), torch.empty_like(dy)
    dyc = torch.zeros_like(dy[0])
    for t in range(dy.size(0) - 1, -1, -1):
        g = dy[t] + dyc  # from the output and from a_{t+1}
        y, h = ys[t], hs[t]
        dq[t] = g * (1 - y * y)  # through tanh of y_t
        dh = torch.mm(dq[t], w_hy)
        da[t] = dh * (h > 0).to(h.dtype) if relu else dh * (1 - h * h)
        dyc = torch.mm(da[t], w_yh)  # dL/dy_{t-1} = U^T da_t
    y_prev = torch.cat([torch.zeros_like(ys[:1]), ys[:-1]])
    dw_yh = torch.mm(da.flatten(0, 1).t(), y_prev.flatten(0, 1))
    dw_hy = torch.mm(dq.flatten(0, 1).t(), hs.flatten(0, 1))
    return [da, dw_yh, dw_hy, dq.sum((0, 1))]


def _peephole_fwd(
    xw: Tensor, params: list[Tensor], relu: bool, init: list[Tensor] | None = None
) -> tuple[Tensor, list[Tensor]]:
    w_hh, peep = params[0], params[1]  # (4H, H) in torch's gate order i, f, g, o; (3, H): p_i, p_f, p_o
    w = w_hh.t()
    T, B, H = xw.size(0), xw.size(1), w_hh.size(1)
    h, c = (xw.new_zeros(B, H), xw.new_zeros(B, H)) if init is None else (init[0], init[1])
    ys, cs, tcs = xw.new_empty(T, B, H), xw.new_empty(T, B, H), xw.new_empty(T, B, H)
    gates = torch.empty_like(xw)  # activated gates, written in place: no copies per frame
    for t in range(T):
        a = torch.addmm(xw[t], h, w, out=gates[t])  # W_x x_t + W_h h_{t-1} + b, all four gates
        i_f = a[:, : 2 * H].view(B, 2, H).addcmul_(peep[:2], c.unsqueeze(1)).sigmoid_()
        i, f = i_f[:, 0], i_f[:, 1]  # i_t, f_t = σ(a + p ⊙ c_{t-1}): input and forget gates peek at c_{t-1}
        g = a[:, 2 * H : 3 * H].tanh_()  # candidate c~_t = tanh(a_g)
        c = torch.addcmul(f * c, i, g, out=cs[t])  # c_t = f_t c_{t-1} + i_t c~_t
        o = a[:, 3 * H :].addcmul_(peep[2], c).sigmoid_()  # o_t = σ(a_o + p_o ⊙ c_t), peeks at the new c_t
        h = torch.mul(o, torch.tanh(c, out=tcs[t]), out=ys[t])  # h_t = o_t tanh(c_t)
    return ys, [ys, cs, tcs, gates]


def _peephole_bwd(dy: Tensor, saved: list[Tensor], params: list[Tensor], relu: bool) -> list[Tensor]:
    ys, cs, tcs, gates = saved[0], saved[1], saved[2], saved[3]
    w_hh, peep = params[0], params[1]
    p_i, p_f, p_o = peep[0], peep[1], peep[2]
    H = ys.size(2)
    da = torch.empty_like(gates)
    dh, dc = torch.zeros_like(dy[0]), torch.zeros_like(dy[0])
    zero = torch.zeros_like(dy[0])
    for t in range(dy.size(0) - 1, -1, -1):
        i, f, g, o = gates[t].chunk(4, 1)
        tc, c_prev = tcs[t], cs[t - 1] if t > 0 else zero
        dai, daf, dag, dao = da[t].chunk(4, 1)  # written in place through out=
        dh = dy[t] + dh  # from the output and from a_{t+1}
        torch.mul(dh * tc, o * (1 - o), out=dao)
        dc = dc + dh * o * (1 - tc * tc) + dao * p_o  # c_t feeds h_t, o_t and c_{t+1}
        torch.mul(dc * g, i * (1 - i), out=dai)
        torch.mul(dc * c_prev, f * (1 - f), out=daf)
        torch.mul(dc * i, 1 - g * g, out=dag)
        dc = torch.addcmul(dc * f, dai, p_i).addcmul_(daf, p_f)  # dL/dc_{t-1}
        dh = torch.mm(da[t], w_hh)  # dL/dh_{t-1} = W_h^T da_t
    h_prev = torch.cat([torch.zeros_like(ys[:1]), ys[:-1]])
    c_prev_all = torch.cat([torch.zeros_like(cs[:1]), cs[:-1]])
    dw = torch.mm(da.flatten(0, 1).t(), h_prev.flatten(0, 1))  # sum_t da_t h_{t-1}^T
    dpeep = torch.stack(
        [
            (da[:, :, :H] * c_prev_all).sum((0, 1)),
            (da[:, :, H : 2 * H] * c_prev_all).sum((0, 1)),
            (da[:, :, 3 * H :] * cs).sum((0, 1)),
        ]
    )
    return [da, dw, dpeep]


def _coupled_fwd(
    xw: Tensor, params: list[Tensor], relu: bool, init: list[Tensor] | None = None
) -> tuple[Tensor, list[Tensor]]:
    w_hh = params[0]  # (3H, H), gate order f, g, o
    w = w_hh.t()
    T, B, H = xw.size(0), xw.size(1), w_hh.size(1)
    h, c = (xw.new_zeros(B, H), xw.new_zeros(B, H)) if init is None else (init[0], init[1])
    ys, cs, tcs = xw.new_empty(T, B, H), xw.new_empty(T, B, H), xw.new_empty(T, B, H)
    gates = torch.empty_like(xw)  # activated gates, written in place: no copies per frame
    for t in range(T):
        a = torch.addmm(xw[t], h, w, out=gates[t])  # W_x x_t + W_h h_{t-1} + b, all three gates
        f = a[:, :H].sigmoid_()  # one gate forgets (f) and writes (1 - f)
        g = a[:, H : 2 * H].tanh_()  # candidate c~_t
        o = a[:, 2 * H :].sigmoid_()  # output gate
        c = torch.add(g, f * (c - g), out=cs[t])  # c_t = f_t c_{t-1} + (1 - f_t) c~_t
        h = torch.mul(o, torch.tanh(c, out=tcs[t]), out=ys[t])  # h_t = o_t tanh(c_t)
    return ys, [ys, cs, tcs, gates]


def _coupled_bwd(dy: Tensor, saved: list[Tensor], params: list[Tensor], relu: bool) -> list[Tensor]:
    ys, cs, tcs, gates = saved[0], saved[1], saved[2], saved[3]
    w_hh = params[0]
    da = torch.empty_like(gates)
    dh, dc = torch.zeros_like(dy[0]), torch.zeros_like(dy[0])
    zero = torch.zeros_like(dy[0])
    for t in range(dy.size(0) - 1, -1, -1):
        f, g, o = gates[t].chunk(3, 1)
        tc, c_prev = tcs[t], cs[t - 1] if t > 0 else zero
        daf, dag, dao = da[t].chunk(3, 1)  # written in place through out=
        dh = dy[t] + dh  # from the output and from a_{t+1}
        torch.mul(dh * tc, o * (1 - o), out=dao)
        dc = dc + dh * o * (1 - tc * tc)  # c_t feeds h_t and c_{t+1}
        torch.mul(dc * (c_prev - g), f * (1 - f), out=daf)
        torch.mul(dc * (1 - f), 1 - g * g, out=dag)
        dc = dc * f  # dL/dc_{t-1}
        dh = torch.mm(da[t], w_hh)  # dL/dh_{t-1} = W_h^T da_t
    h_prev = torch.cat([torch.zeros_like(ys[:1]), ys[:-1]])
    dw = torch.mm(da.flatten(0, 1).t(), h_prev.flatten(0, 1))  # sum_t da_t h_{t-1}^T
    return [da, dw]


#: cell name -> (forward loop, backward loop), as plain Python functions.
LOOPS = {
    "elman": (_elman_fwd, _elman_bwd),
    "jordan": (_jordan_fwd, _jordan_bwd),
    "lstm_peephole": (_peephole_fwd, _peephole_bwd),
    "lstm_coupled": (_coupled_fwd, _coupled_bwd),
}

BACKENDS = ("script", "eager", "compile")
_backend = "script"
_impl: dict[tuple[str, str], tuple] = {}  # (backend, cell) -> (forward loop, backward loop)


def set_backend(name: str) -> None:
    """Run the recurrences as TorchScript (``script``, the default), plain Python
    (``eager``), or ``torch.compile`` (``compile``: the loop is unrolled for each sequence
    length, so every new length recompiles; for benchmarking only). See benchmarks/README.md.
    """
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"recurrence backend {name!r} is not one of: {', '.join(BACKENDS)}")
    _backend = name


def _loops(cell: str) -> tuple:
    key = (_backend, cell)
    if key not in _impl:
        fwd, bwd = LOOPS[cell]
        if _backend == "script":
            # torch.jit.script is deprecated upstream, yet it is the fastest measured here
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                fwd, bwd = torch.jit.script(fwd), torch.jit.script(bwd)
        elif _backend == "compile":
            fwd, bwd = torch.compile(fwd, dynamic=False), torch.compile(bwd, dynamic=False)
        _impl[key] = (fwd, bwd)
    return _impl[key]


class Recurrence(torch.autograd.Function):
    """``y = recurrence(xw; params)`` for one layer and one direction, with the BPTT loop
    as its backward. ``xw``: ``(T, B, G·H)`` input projections; returns ``(T, B, H)``.
    """

    @staticmethod
    def forward(ctx, cell: str, relu: bool, xw: Tensor, *params: Tensor) -> Tensor:
        fwd, _ = _loops(cell)
        with torch.autocast(xw.device.type, enabled=False):
            y, saved = fwd(xw.contiguous(), list(params), relu)
        ctx.cell, ctx.relu, ctx.n_saved = cell, relu, len(saved)
        ctx.save_for_backward(*saved, *params)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        _, bwd = _loops(ctx.cell)
        tensors = ctx.saved_tensors
        saved, params = list(tensors[: ctx.n_saved]), list(tensors[ctx.n_saved :])
        with torch.autocast(dy.device.type, enabled=False):
            grads = bwd(dy.contiguous(), saved, params, ctx.relu)
        return (None, None, *grads)


def recurrence(cell: str, xw: Tensor, params: list[Tensor], relu: bool = False) -> Tensor:
    """Run ``cell`` over time-major input projections ``xw`` ``(T, B, G·H)`` → ``(T, B, H)``."""
    if torch.jit.is_tracing():  # export (speechkit/export.py): the scripted forward loop, recorded as a call
        fwd, _ = _loops(cell)
        return fwd(xw.contiguous(), list(params), relu)[0]
    return Recurrence.apply(cell, relu, xw, *params)


def reverse_index(lengths: Tensor, T: int) -> Tensor:
    """Time-major ``(T, B)`` :func:`speechkit.functional.reverse_index`: ``t → L_b − 1 − t`` for
    ``t < L_b``, else ``t``."""
    return SF.reverse_index(lengths, T).t()


# --------------------------------------------------------------------------------------
# Modules: one direction of one layer, and the stack.
# --------------------------------------------------------------------------------------


class _Direction(nn.Module):
    """The weights of one layer in one direction: ``weight_ih`` ``(G·H, in)``, ``bias``
    ``(G·H,)``, and the cell's recurrent parameters (``weight_hh`` …).
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int) -> None:
        super().__init__()
        H = hidden_size
        gates = {"elman": 1, "jordan": 1, "lstm_peephole": 4, "lstm_coupled": 3}[cell]
        self.weight_ih = nn.Parameter(torch.empty(gates * H, input_size))
        self.bias = nn.Parameter(torch.empty(gates * H))
        self.weight_hh = nn.Parameter(torch.empty(gates * H, H))  # feeds back h_{t-1} (y_{t-1} for Jordan)
        if cell == "jordan":
            self.weight_hy = nn.Parameter(torch.empty(H, H))  # y_t = tanh(W_y h_t + b_y)
            self.bias_hy = nn.Parameter(torch.empty(H))
        if cell == "lstm_peephole":
            self.peephole = nn.Parameter(torch.empty(3, H))  # p_i, p_f, p_o
        bound = 1 / math.sqrt(H)  # torch.nn.LSTM's initialisation
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def recurrent_params(self) -> list[Tensor]:
        if hasattr(self, "weight_hy"):
            return [self.weight_hh, self.weight_hy, self.bias_hy]
        if hasattr(self, "peephole"):
            return [self.weight_hh, self.peephole]
        return [self.weight_hh]


@dataclass
class CellConfig(RNNConfig):
    bidirectional: bool = True  # a second layer reads each sequence backwards from its last frame


@dataclass
class SimpleRNNConfig(CellConfig):
    activation: str = "tanh"  # tanh | relu, of the hidden state h_t


class CellStack(nn.Module):
    """A stack of custom recurrent layers: subsampling, then ``num_layers`` layers (each
    uni- or bidirectional, the directions concatenated), dropout between layers.
    """

    cell: str = ""

    def __init__(self, cfg: CellConfig, input_size: int) -> None:
        super().__init__()
        check_layers(cfg)
        if getattr(cfg, "forget_bias", None) is not None:
            raise ValueError(f"encoder.forget_bias={cfg.forget_bias}: the {self.cell} cells start from their own "
                             "init; forget_bias is for the blstm and lstm encoders (leave it unset: null)")
        self.cfg = cfg
        activation = getattr(cfg, "activation", "tanh")
        if activation not in ("tanh", "relu"):
            raise ValueError(f"encoder {self.cell!r}: activation {activation!r} is not one of: tanh, relu")
        self.relu = activation == "relu"
        self.sub = Subsample(input_size, cfg.subsample, cfg.subsample_mode, cfg.lookahead, cfg.subsample_channels)
        self.num_directions = 2 if cfg.bidirectional else 1
        self.layers = nn.ModuleList()
        size = self.sub.output_dim
        for _ in range(cfg.num_layers):
            self.layers.append(
                nn.ModuleList(
                    _Direction(self.cell, size, cfg.hidden_size) for _ in range(self.num_directions)
                )
            )
            size = cfg.hidden_size * self.num_directions
        self.dropout = nn.Dropout(cfg.dropout)
        self.output_dim = size
        self.subsampling = cfg.subsample  # output frames per input frame: 1 / subsampling

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return self.sub.output_lengths(lengths)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, T, F)``, ``(B,)`` → ``(B, T', H·directions)``, ``(B,)``; ``T' = ceil(T / subsample)``."""
        x, lengths = self.sub(x, lengths)
        x = x.transpose(0, 1)  # (T, B, F): a frame of every sequence is contiguous
        valid = SF.lengths_mask(lengths.to(x.device), x.size(0)).t()[:, :, None]  # (T, B, 1)
        x = x * valid
        for n, directions in enumerate(self.layers):
            if n > 0:
                x = self.dropout(x)
            # input projections of every frame and both directions in one product
            w = torch.cat([d.weight_ih for d in directions])
            b = torch.cat([d.bias for d in directions])
            xw = nn.functional.linear(x, w, b).to(w.dtype).chunk(len(directions), -1)
            outs = []
            for k, (d, xw_d) in enumerate(zip(directions, xw)):
                if k == 1:  # backward: read each sequence reversed within its own length
                    xw_d = SF.reverse_within_lengths(xw_d, lengths, time_dim=0)
                    y = recurrence(self.cell, xw_d, d.recurrent_params(), self.relu)
                    y = SF.reverse_within_lengths(y, lengths, time_dim=0)
                else:
                    y = recurrence(self.cell, xw_d, d.recurrent_params(), self.relu)
                outs.append(y)
            x = (torch.cat(outs, -1) if len(outs) > 1 else outs[0]) * valid
        return x.transpose(0, 1), lengths

    def stream_init(self, batch: int = 1) -> StreamState:
        """The state before a stream's first frame: zeros per layer (``h``; Jordan's fed-back ``y``;
        ``h, c`` for the LSTMs), as ``forward`` starts; ``ValueError`` for a bidirectional stack."""
        if self.num_directions != 1:
            raise not_streamable(self.cell, "is bidirectional (encoder.bidirectional=true)")
        n = 2 if self.cell in ("lstm_peephole", "lstm_coupled") else 1
        carry = []
        for (d,) in self.layers:
            h = d.weight_hh.new_zeros(batch, d.weight_hh.size(1))
            carry.append([h] + [h.clone() for _ in range(n - 1)])
        return StreamState(None, carry)

    @torch.no_grad()
    def stream_step(self, x: Tensor, state: StreamState, final: bool = False) -> tuple[Tensor, StreamState]:
        """The next chunk of a stream: frames ``(B, t, F)`` → outputs ``(B, t', H)``, the state after them
        (each layer's loop starts from the state the last chunk ended in). ``final``: the stream ends
        with this chunk (the last subsampling group is flushed). Inference only, eval mode."""
        x, rest = self.sub.stream(x, state.rest, final)
        if x.shape[1] == 0:
            return x.new_zeros(x.shape[0], 0, self.output_dim), StreamState(rest, state.carry)
        fwd, _ = _loops(self.cell)
        x = x.transpose(0, 1)  # (t, B, F)
        carry = []
        for n, ((d,), init) in enumerate(zip(self.layers, state.carry)):
            if n > 0:
                x = self.dropout(x)
            xw = nn.functional.linear(x, d.weight_ih, d.bias).to(d.weight_ih.dtype)
            x, saved = fwd(xw.contiguous(), d.recurrent_params(), self.relu, init)
            # the last frame's state: h_t (Jordan: y_t), and c_t (saved[1]) for the LSTMs
            carry.append([x[-1]] + ([saved[1][-1]] if len(init) == 2 else []))
        return x.transpose(0, 1), StreamState(rest, carry)


@register("encoder", "elman", SimpleRNNConfig)
class Elman(CellStack):
    """Elman network: h_t = act(W_x x_t + W_h h_{t-1} + b), act tanh or relu."""

    cell = "elman"


@register("encoder", "jordan", SimpleRNNConfig)
class Jordan(CellStack):
    """Jordan network: the layer's output y_t = tanh(W_y h_t + b_y) is fed back,
    h_t = act(W_x x_t + U y_{t-1} + b); the layer passes y_t on.
    """

    cell = "jordan"


@register("encoder", "lstm_peephole", CellConfig)
class PeepholeLSTM(CellStack):
    """LSTM whose gates also see the cell state (Gers & Schmidhuber 2000)."""

    cell = "lstm_peephole"


@register("encoder", "lstm_coupled", CellConfig)
class CoupledLSTM(CellStack):
    """LSTM with coupled input and forget gates: c_t = f_t c_{t-1} + (1 − f_t) c~_t."""

    cell = "lstm_coupled"

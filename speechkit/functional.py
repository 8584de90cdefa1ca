"""Tensor helpers shared by every stage: length masks, reversal within lengths, masked statistics.

Pure functions on padded batches, like ``torchaudio.functional``. A batch ``x`` is padded along
its time axis ``time_dim`` (1 unless said otherwise: ``(B, T, ...)``), and ``lengths`` ``(B,)``
int counts the valid steps of each row: step ``t`` of row ``b`` is valid when ``t < lengths[b]``.

All of them trace (``torch.jit.trace``, ONNX export): sizes are read from the tensors and never
turned into Python numbers, so a traced graph runs on other batch sizes and lengths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F


def lengths_mask(lengths: Tensor, max_len: int | Tensor) -> Tensor:
    """``(B, max_len)`` bool, true at the valid steps ``t < lengths[b]``; on ``lengths``' device."""
    return torch.arange(max_len, device=lengths.device) < lengths[:, None]


def _along(mask: Tensor, ndim: int, time_dim: int) -> Tensor:
    """A ``(B, T)`` mask viewed to broadcast against an ``ndim``-dim ``(B, ..., T, ...)`` batch."""
    return mask[(slice(None),) + (None,) * (time_dim - 1) + (slice(None),) + (None,) * (ndim - time_dim - 1)]


def _time_dim(x: Tensor, time_dim: int) -> int:
    time_dim %= x.dim()
    if time_dim == 0:
        raise ValueError("time_dim must not be the batch dimension 0")
    return time_dim


def mask_padding(x: Tensor, lengths: Tensor, time_dim: int = 1) -> Tensor:
    """``x`` ``(B, ..., T, ...)`` (``T`` on ``time_dim``) with every step ``t >= lengths[b]`` zeroed."""
    time_dim = _time_dim(x, time_dim)
    mask = lengths_mask(lengths.to(x.device), x.shape[time_dim])
    return x * _along(mask, x.dim(), time_dim).to(x.dtype)


def reverse_index(lengths: Tensor, max_len: int | Tensor) -> Tensor:
    """``(B, max_len)`` int64 indices that reverse each row within its length and leave its padding in
    place: ``t → lengths[b] − 1 − t`` for ``t < lengths[b]``, else ``t``. An involution."""
    t = torch.arange(max_len, device=lengths.device)[None, :]
    L = lengths[:, None]
    return torch.where(t < L, L - 1 - t, t)


def reverse_within_lengths(x: Tensor, lengths: Tensor, time_dim: int = 1) -> Tensor:
    """``x`` ``(B, T, ...)`` (``time_dim=1``) or time-major ``(T, B, ...)`` (``time_dim=0``) with each
    sequence's first ``lengths[b]`` steps in reverse order; padding stays where it is.

    Whole rows of the trailing features are copied (one ``index_select`` of the ``B·T`` rows, about
    4× faster on the CPU than a ``gather`` of every element).
    """
    if time_dim not in (0, 1):
        raise ValueError(f"time_dim={time_dim}: reverse_within_lengths takes (B, T, ...) or (T, B, ...)")
    B, T = (x.shape[1], x.shape[0]) if time_dim == 0 else (x.shape[0], x.shape[1])
    idx = reverse_index(lengths.to(x.device), T)  # (B, T)
    batch = torch.arange(B, device=x.device)
    if time_dim == 0:
        rows = idx.t() * B + batch  # row (t, b) of x.flatten(0, 1) is t·B + b
    else:
        rows = idx + batch[:, None] * T  # row (b, t) is b·T + t
    return x.flatten(0, 1).index_select(0, rows.flatten()).view(x.shape)


def _dims(x: Tensor, dim: int | Sequence[int], time_dim: int) -> tuple[tuple[int, ...], int]:
    time_dim = _time_dim(x, time_dim)
    dims = tuple(d % x.dim() for d in ((dim,) if isinstance(dim, int) else dim))
    if time_dim not in dims or 0 in dims:
        raise ValueError(f"dim={dim} must include time_dim={time_dim} and not the batch dimension 0")
    return dims, time_dim


def _count(x: Tensor, lengths: Tensor, dims: tuple[int, ...], time_dim: int) -> Tensor:
    """Valid elements per reduced slice, at least 1, viewed ``(B, 1, …)`` like a ``keepdim`` reduction."""
    count = lengths.to(device=x.device, dtype=x.dtype)
    for d in dims:
        if d != time_dim:
            count = count * x.shape[d]
    return count.clamp_min(1)[(slice(None),) + (None,) * (x.dim() - 1)]


def masked_mean(
    x: Tensor, lengths: Tensor, dim: int | Sequence[int] = 1, time_dim: int = 1, keepdim: bool = False
) -> Tensor:
    """Mean of ``x`` ``(B, ...)`` over ``dim`` (which includes ``time_dim``) counting valid steps only.

    ``dim=1`` on ``(B, T, F)`` features gives ``(B, F)``; a row of length 0 has mean 0.
    """
    dims, time_dim = _dims(x, dim, time_dim)
    mask = _along(lengths_mask(lengths.to(x.device), x.shape[time_dim]), x.dim(), time_dim).to(x.dtype)
    mean = (x * mask).sum(dims, keepdim=True) / _count(x, lengths, dims, time_dim)
    return mean if keepdim else mean.squeeze(dims)


def masked_mean_std(
    x: Tensor, lengths: Tensor, dim: int | Sequence[int] = 1, time_dim: int = 1, keepdim: bool = False
) -> tuple[Tensor, Tensor]:
    """Mean and population standard deviation of ``x`` ``(B, ...)`` over ``dim`` (which includes
    ``time_dim``), counting valid steps only: ``(B, F)`` each for ``(B, T, F)`` features and ``dim=1``.

    Two passes, ``σ² = Σ ((x − μ)·m)² / n``, so no cancellation; a row of length 0 gives 0 and 0.
    """
    dims, time_dim = _dims(x, dim, time_dim)
    mask = _along(lengths_mask(lengths.to(x.device), x.shape[time_dim]), x.dim(), time_dim).to(x.dtype)
    count = _count(x, lengths, dims, time_dim)
    mean = (x * mask).sum(dims, keepdim=True) / count
    std = ((((x - mean) * mask) ** 2).sum(dims, keepdim=True) / count).sqrt()
    return (mean, std) if keepdim else (mean.squeeze(dims), std.squeeze(dims))


def mean_std_where(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population standard deviation ``(B, F)`` of features ``x`` ``(B, T, F)`` over the frames
    where ``mask`` ``(B, T)`` is true (two passes, as :func:`masked_mean_std`); 0 and 0 for a row with
    none."""
    m = mask[..., None].to(x.dtype)
    count = m.sum(dim=1).clamp_min(1)  # (B, 1)
    mean = (x * m).sum(dim=1) / count
    std = ((((x - mean[:, None]) * m) ** 2).sum(dim=1) / count).sqrt()
    return mean, std


def masked_standardize(
    x: Tensor, lengths: Tensor, dim: int | Sequence[int] = 1, time_dim: int = 1, eps: float = 1e-5
) -> Tensor:
    """``(x − μ) / max(σ, eps)`` with :func:`masked_mean_std` over ``dim``; padding comes out zero.

    Utterance normalisation of features ``(B, T, F)`` is ``dim=1``; of a line image ``(B, H, W)``
    as a whole, ``dim=(1, 2), time_dim=2``; of clips ``(B, T, C, H, W)`` per channel, ``dim=(1, 3, 4)``.
    """
    mean, std = masked_mean_std(x, lengths, dim, time_dim, keepdim=True)
    return mask_padding((x - mean) / std.clamp_min(eps), lengths, time_dim)


def masked_batch_norm(
    x: Tensor,
    lengths: Tensor,
    time_dim: int,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    num_batches_tracked: Tensor | None = None,
) -> Tensor:
    """Batch norm in training of ``x`` ``(B, C, ...)`` whose statistics count valid steps only.

    ``T`` lies on ``time_dim`` (``(B, C, H, W)`` lines: 3; ``(B, C, T, H, W)`` clips: 2). With ``n``
    valid values per channel, ``μ = Σx / n``, ``σ² = Σx² / n − μ²`` over ``x`` zeroed past the
    lengths (one fused pass over the whole tensor, rescaled to the valid values), then
    ``y = (x − μ) / sqrt(σ² + eps) · weight + bias``. The running estimates (when given) move by
    ``momentum`` towards ``μ`` and the unbiased ``σ² · n / (n − 1)``, as :class:`torch.nn.BatchNorm2d`
    does; ``momentum=None`` is the cumulative average over ``num_batches_tracked``, which counts up.

    Fewer than 2 valid values per channel (a batch of one short row, or only empty rows) estimate
    no variance: such a batch is normalised with the running estimates, as in evaluation, and leaves
    them (and ``num_batches_tracked``) unchanged. Without running estimates its variance counts as 0.
    Output past the lengths is not zero (callers mask it).
    """
    time_dim = _time_dim(x, time_dim)
    valid = lengths_mask(lengths.to(x.device), x.shape[time_dim])
    per_step = math.prod(x.shape[d] for d in range(2, x.dim()) if d != time_dim)  # a channel's values a step
    n = valid.sum() * per_step  # valid values per channel
    if n < 2 and running_mean is not None and running_var is not None:
        return F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.0, eps)
    x = mask_padding(x, lengths, time_dim)
    # one fused pass over everything (padding included, as zeros), then rescaled to the valid values
    reduce = (0, *range(2, x.dim()))
    var_all, mean_all = torch.var_mean(x, dim=reduce, correction=0)
    total = x.numel() // x.shape[1]
    scale_n = total / n.clamp_min(1).to(torch.promote_types(x.dtype, torch.float32))  # all values / valid
    mean = mean_all * scale_n
    var = ((var_all + mean_all**2) * scale_n - mean**2).clamp_min(0)
    if n >= 2 and running_mean is not None and running_var is not None:
        with torch.no_grad():
            if num_batches_tracked is not None:
                num_batches_tracked += 1
            if momentum is None:  # cumulative moving average
                momentum = 1.0 / float(num_batches_tracked) if num_batches_tracked is not None else 0.0
            running_mean.lerp_(mean.detach().to(running_mean.dtype), momentum)
            running_var.lerp_((var.detach() * n / (n - 1)).to(running_var.dtype), momentum)
    scale = torch.rsqrt(var + eps)  # y = x · scale + shift
    if weight is not None:
        scale = weight * scale
    shift = -mean * scale if bias is None else bias - mean * scale
    view = (1, -1) + (1,) * (x.dim() - 2)
    return torch.addcmul(shift.view(view), x, scale.view(view))


def masked_batch_norm_of(bn: torch.nn.modules.batchnorm._BatchNorm, x: Tensor, lengths: Tensor,
                         time_dim: int) -> Tensor:
    """:func:`masked_batch_norm` with the parameters and running estimates of the module ``bn``."""
    return masked_batch_norm(x, lengths, time_dim, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                             bn.momentum, bn.eps, bn.num_batches_tracked)

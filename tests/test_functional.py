"""speechkit.functional (masks, reversal within lengths, masked statistics, masked batch norm) against
plain loops over the rows of small batches, lengths 0 and full length included; and the frontend helpers
of speechkit.frontends.base."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from speechkit import functional as SF
from speechkit.frontends.base import invalid_input, invalid_setting, log_once
from speechkit.frontends.image import MaskedBatchNorm2d
from speechkit.frontends.video import MaskedBatchNorm3d
from speechkit.registry import build

LENGTHS = [0, 3, 5, 1]  # an empty row, two partial rows and ...
T = 5  # ... one of full length


def batch(*shape: int) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(*shape, dtype=torch.float64)


def test_lengths_mask_is_true_exactly_below_each_length():
    lengths = torch.tensor(LENGTHS)
    mask = SF.lengths_mask(lengths, T + 2)  # wider than the longest row too
    expected = [[t < n for t in range(T + 2)] for n in LENGTHS]
    assert mask.dtype == torch.bool and mask.tolist() == expected


@pytest.mark.parametrize(
    "shape, time_dim", [((4, T), 1), ((4, T, 3), 1), ((4, 2, T), 2), ((4, 2, 3, T, 2), 3)]
)
def test_mask_padding_zeroes_every_step_past_the_length_and_keeps_the_rest(shape, time_dim):
    x = batch(*shape)
    y = SF.mask_padding(x, torch.tensor(LENGTHS), time_dim)
    for b, n in enumerate(LENGTHS):
        row, out = x[b].movedim(time_dim - 1, 0), y[b].movedim(time_dim - 1, 0)
        assert torch.equal(out[:n], row[:n]) and out[n:].abs().sum() == 0


def test_reverse_index_reverses_each_row_within_its_length_and_is_an_involution():
    idx = SF.reverse_index(torch.tensor(LENGTHS), T)
    expected = [list(range(n))[::-1] + list(range(n, T)) for n in LENGTHS]
    assert idx.tolist() == expected
    assert torch.equal(idx.gather(1, idx), torch.arange(T).expand(len(LENGTHS), T))


@pytest.mark.parametrize("time_dim", [0, 1])
@pytest.mark.parametrize("features", [(), (3,), (2, 3)])
def test_reverse_within_lengths_flips_the_valid_steps_and_leaves_padding_in_place(time_dim, features):
    x = batch(len(LENGTHS), T, *features)  # (B, T, ...)
    lengths = torch.tensor(LENGTHS)
    expected = x.clone()
    for b, n in enumerate(LENGTHS):
        expected[b, :n] = x[b, :n].flip(0)
    if time_dim == 0:  # time-major (T, B, ...), as the custom recurrent cells keep it
        got = SF.reverse_within_lengths(x.transpose(0, 1).contiguous(), lengths, time_dim=0).transpose(0, 1)
    else:
        got = SF.reverse_within_lengths(x, lengths)
    assert torch.equal(got, expected)
    assert torch.equal(SF.reverse_within_lengths(got, lengths), x)  # twice: the order restored


def _valid(x: torch.Tensor, b: int, n: int, time_dim: int) -> torch.Tensor:
    """Row ``b`` of ``x`` cut to its ``n`` valid steps, time moved first: ``(n, ...)``."""
    return x[b].movedim(time_dim - 1, 0)[:n]


@pytest.mark.parametrize(
    "shape, dim, time_dim",
    [
        ((4, T, 3), 1, 1),  # features (B, T, F): per utterance and feature
        ((4, 2, T), (1, 2), 2),  # a line image (B, H, W): the whole line
        ((4, T, 2, 3, 2), (1, 3, 4), 1),  # clips (B, T, C, H, W): per clip and channel
    ],
)
def test_masked_mean_and_std_equal_those_of_each_rows_valid_steps(shape, dim, time_dim):
    x = batch(*shape)
    lengths = torch.tensor(LENGTHS)
    mean, std = SF.masked_mean_std(x, lengths, dim, time_dim)
    dims = (dim,) if isinstance(dim, int) else dim
    kept = [d for d in range(1, x.dim()) if d not in dims]  # what the statistics are per
    assert mean.shape == std.shape == (len(LENGTHS), *(x.shape[d] for d in kept))
    torch.testing.assert_close(SF.masked_mean(x, lengths, dim, time_dim), mean, rtol=0, atol=0)
    for b, n in enumerate(LENGTHS):
        if n == 0:
            assert mean[b].abs().sum() == 0 and std[b].abs().sum() == 0
            continue
        # the row's valid steps with the statistics' own axes first, everything reduced over flattened
        v = _valid(x, b, n, time_dim)  # (n, ...) with the remaining dims of x[b] in order
        rest = [d for d in range(1, x.dim()) if d != time_dim]  # x's dims, as they follow in v
        v = v.movedim([1 + rest.index(d) for d in kept], list(range(len(kept)))).flatten(len(kept))
        torch.testing.assert_close(mean[b], v.mean(-1), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(std[b], v.std(-1, correction=0), rtol=1e-12, atol=1e-12)


def test_masked_standardize_gives_zero_mean_unit_std_per_row_and_zero_padding():
    x = 3 + 2 * batch(len(LENGTHS), T, 3)
    lengths = torch.tensor(LENGTHS)
    y = SF.masked_standardize(x, lengths, eps=1e-5)
    for b, n in enumerate(LENGTHS):
        assert y[b, n:].abs().sum() == 0
        if n > 1:  # one step has std 0: (x − μ) / eps = 0
            torch.testing.assert_close(y[b, :n].mean(0), torch.zeros(3, dtype=x.dtype), rtol=0, atol=1e-12)
            torch.testing.assert_close(y[b, :n].std(0, correction=0), torch.ones(3, dtype=x.dtype))
    assert y[3, 0].abs().max() == 0 and y[0].abs().max() == 0


# ----------------------------------------------------------------------------- masked batch norm


def reference_batch_norm(x, lengths, time_dim, weight, bias, eps):
    """Batch norm over the valid values only, gathered row by row: ``y`` at valid steps (0 elsewhere),
    the population mean and variance per channel and the number of valid values."""
    C = x.shape[1]
    values = [
        torch.cat([_valid(x[:, c : c + 1], b, n, time_dim).flatten() for b, n in enumerate(lengths.tolist())])
        for c in range(C)
    ]
    mean = torch.stack([v.mean() for v in values])
    var = torch.stack([v.var(correction=0) for v in values])
    view = (1, C) + (1,) * (x.dim() - 2)
    y = (x - mean.view(view)) / (var.view(view) + eps).sqrt() * weight.view(view) + bias.view(view)
    return SF.mask_padding(y, lengths, time_dim), mean, var, values[0].numel()


@pytest.mark.parametrize(
    "shape, time_dim, lengths",
    [
        ((4, 3, 2, T), 3, LENGTHS),  # lines (B, C, H, W)
        ((4, 3, T, 2, 3), 2, LENGTHS),  # clips (B, C, T, H, W)
        ((1, 3, 2, T), 3, [T]),  # a batch of one, full length
        ((1, 3, T, 2, 2), 2, [2]),  # a batch of one, partial
        ((1, 3, 2, T), 3, [1]),  # a batch of one line of one column: 2 values per channel, the least
    ],
)
def test_masked_batch_norm_normalises_with_the_valid_values_and_moves_the_running_estimates(
    shape, time_dim, lengths
):
    torch.manual_seed(0)
    x = 1.5 + torch.randn(*shape, dtype=torch.float64)
    lengths = torch.tensor(lengths)
    C = shape[1]
    weight, bias = torch.rand(C, dtype=x.dtype) + 0.5, torch.randn(C, dtype=x.dtype)
    running_mean, running_var = torch.randn(C, dtype=x.dtype), torch.rand(C, dtype=x.dtype) + 0.5
    rm0, rv0, tracked = running_mean.clone(), running_var.clone(), torch.tensor(0)
    y = SF.masked_batch_norm(
        x, lengths, time_dim, running_mean, running_var, weight, bias, 0.1, 1e-5, num_batches_tracked=tracked
    )
    want, mean, var, n = reference_batch_norm(x, lengths, time_dim, weight, bias, 1e-5)
    torch.testing.assert_close(SF.mask_padding(y, lengths, time_dim), want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(running_mean, 0.9 * rm0 + 0.1 * mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(running_var, 0.9 * rv0 + 0.1 * var * n / (n - 1), rtol=1e-12, atol=1e-12)
    assert tracked.item() == 1


def test_masked_batch_norm_with_momentum_none_averages_all_batches_so_far():
    torch.manual_seed(0)
    rm, rv, tracked = torch.zeros(2), torch.ones(2), torch.tensor(0)
    means = []
    for _ in range(3):
        x = torch.randn(2, 2, 3, T) + 4
        lengths = torch.tensor([T, 2])
        SF.masked_batch_norm(x, lengths, 3, rm, rv, momentum=None, num_batches_tracked=tracked)
        means.append(reference_batch_norm(x, lengths, 3, torch.ones(2), torch.zeros(2), 1e-5)[1])
    torch.testing.assert_close(rm, torch.stack(means).mean(0))
    assert tracked.item() == 3


@pytest.mark.parametrize("lengths", [[0], [1], [0, 0]])
def test_masked_batch_norm_of_fewer_than_two_values_uses_and_keeps_the_running_estimates(lengths):
    # one valid value per channel (or none) estimates no variance: normalised as in evaluation
    x = torch.randn(len(lengths), 3, T, 1, 1)
    lengths = torch.tensor(lengths)
    weight, bias = torch.rand(3) + 0.5, torch.randn(3)
    rm, rv, tracked = torch.randn(3), torch.rand(3) + 0.5, torch.tensor(7)
    before = rm.clone(), rv.clone()
    y = SF.masked_batch_norm(x, lengths, 2, rm, rv, weight, bias, 0.1, 1e-5, tracked)
    want = torch.nn.functional.batch_norm(x, before[0], before[1], weight, bias, False, 0.0, 1e-5)
    torch.testing.assert_close(y, want)
    assert torch.equal(rm, before[0]) and torch.equal(rv, before[1]) and tracked.item() == 7


def test_image_and_video_batch_norms_agree_on_a_batch_of_one_single_value():
    """Both used to differ here: the image one fell back to torch's batch norm (which refuses one value per
    channel in training), the video one pulled its running variance towards 0 and output only the bias."""
    torch.manual_seed(0)
    bn2, bn3 = MaskedBatchNorm2d(4).train(), MaskedBatchNorm3d(4).train()
    for bn in (bn2, bn3):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.normal_()
    bn3.load_state_dict(bn2.state_dict())
    x = torch.randn(1, 4, 1, 1)  # one clip of one 1×1 frame; one text line of one 1-pixel column
    lengths = torch.tensor([1])
    y2, y3 = bn2(x, lengths), bn3(x[:, :, None], lengths)
    expected = bn2.eval()(x)
    torch.testing.assert_close(y2, expected)
    torch.testing.assert_close(y3[:, :, 0], expected)
    assert not torch.allclose(y3[:, :, 0], bn3.bias.detach()[None, :, None, None])  # not the bias alone
    for key, value in bn2.state_dict().items():
        assert torch.equal(bn3.state_dict()[key], value), key
    assert bn3.num_batches_tracked.item() == 0


def test_video_frontend_trained_on_a_batch_of_one_short_clip_keeps_finite_running_statistics():
    """1×1 pixels after the last block: a one-frame clip gives its batch norm a single value per channel.
    Before, that batch pulled the running variance towards 0 (evaluation then divides by ~0) and the block
    output only its bias (0 after the ReLU), whatever the clip."""
    torch.manual_seed(0)
    fe = build(
        "frontend", "lips", height=8, width=8, grayscale=True, channels=[2, 3, 3], spatial_kernels=[5, 5, 3],
        strides=[2, 1, 1], pools=[2, 2, 1], dropout=0.0,
    )  # fmt: skip
    assert (fe.out_height, fe.out_width) == (1, 1)
    bn = fe.blocks[-1].bn
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    clip = torch.rand(1, 1, 1, 8, 8)
    y, _ = fe.train()(clip, torch.tensor([1]))
    for key, value in bn.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert torch.isfinite(y).all() and y.abs().max() > 0  # normalised by the running estimates, not zeroed
    fe.train()(torch.rand(1, 3, 1, 8, 8), torch.tensor([0]))  # an empty clip: nothing to learn from
    for key, value in bn.state_dict().items():
        assert torch.equal(value, before[key]), key


# ----------------------------------------------------------------------------- export


class _Helpers(torch.nn.Module):
    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = SF.masked_standardize(SF.reverse_within_lengths(x, lengths), lengths)
        z = SF.reverse_within_lengths(x.transpose(0, 1), lengths, time_dim=0).transpose(0, 1)
        return y + SF.mask_padding(z, lengths), SF.lengths_mask(lengths, x.shape[1])


def _other_shape() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(3, 9, 4), torch.tensor([9, 0, 4])


def test_helpers_trace_with_dynamic_batch_and_length():
    module = _Helpers()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (torch.randn(2, 5, 4), torch.tensor([5, 2])), check_trace=False)
    x, lengths = _other_shape()
    for got, want in zip(traced(x, lengths), module(x, lengths)):
        assert torch.equal(got, want)


def test_helpers_export_to_onnx_with_dynamic_batch_and_length(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = tmp_path / "helpers.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Helpers(), (torch.randn(2, 5, 4), torch.tensor([5, 2])), str(path), input_names=["x", "lengths"],
            output_names=["y", "mask"], dynamic_axes={"x": {0: "b", 1: "t"}, "lengths": {0: "b"}},
            opset_version=17, dynamo=False,
        )  # fmt: skip
    x, lengths = _other_shape()
    y, mask = ort.InferenceSession(str(path)).run(None, {"x": x.numpy(), "lengths": lengths.numpy()})
    want_y, want_mask = _Helpers()(x, lengths)
    torch.testing.assert_close(torch.from_numpy(y), want_y, rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.from_numpy(mask), want_mask)


# ----------------------------------------------------------------------------- frontends/base.py


def test_log_once_logs_each_kind_once_into_the_callers_set(caplog):
    log, seen = logging.getLogger("speechkit.test_functional"), set()
    with caplog.at_level(logging.DEBUG, logger=log.name):
        for rate in (8000, 8000, 22050):
            log_once(log, seen, ("resample", rate), "resampling from %d Hz", rate, level=logging.DEBUG)
    assert [r.getMessage() for r in caplog.records] == [
        "resampling from 8000 Hz (logged once per kind)",
        "resampling from 22050 Hz (logged once per kind)",
    ]
    assert all(r.levelno == logging.DEBUG for r in caplog.records) and seen == {
        ("resample", 8000),
        ("resample", 22050),
    }


def test_frontend_errors_name_the_frontend_the_key_or_shape_and_what_to_do():
    assert str(invalid_setting("fbank", "n_mels", 0, "a positive number of bands")) == (
        "frontend 'fbank': n_mels=0 is invalid; allowed: a positive number of bands"
    )
    err = invalid_input(
        "ocr_line", "lines (B, width, 32)", torch.zeros(1, 50, 40), "load images with its load()"
    )
    assert (
        str(err)
        == "frontend 'ocr_line' expects lines (B, width, 32), got (1, 50, 40); load images with its load()"
    )

import math

import pytest
import torch

from speechkit import build


@pytest.mark.parametrize("impl", ["packed", "reversed"])
@pytest.mark.parametrize("name", ["blstm", "lstm", "bgru", "gru"])
@pytest.mark.parametrize("subsample,mode", [(1, "stack"), (2, "stack"), (3, "conv"), (4, "conv2d")])
def test_padding_never_changes_an_utterances_output(name, subsample, mode, impl):
    torch.manual_seed(0)
    # float64: a batch of 2 and a batch of 1 run differently shaped (and, per CPU, differently ordered)
    # matrix products, whose float32 rounding would be compared as if it were padding leaking in
    shape = {"hidden_size": 8, "num_layers": 2, "dropout": 0.0, "input_size": 5}
    enc = build("encoder", name, subsample=subsample, subsample_mode=mode, impl=impl, **shape).eval().double()
    x = torch.randn(2, 13, 5, dtype=torch.float64)
    lengths = torch.tensor([13, 7])
    y, out = enc(x, lengths)
    alone, out_alone = enc(x[1:, :7], lengths[1:])
    expected = -(-lengths // subsample)
    assert out.tolist() == expected.tolist() and y.shape[1] == expected[0]
    torch.testing.assert_close(y[1, : out[1]], alone[0, : out_alone[0]], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["blstm", "lstm", "bgru", "gru"])
def test_reversed_and_packed_give_the_same_outputs_and_gradients(name):
    torch.manual_seed(0)
    enc = build("encoder", name, hidden_size=6, num_layers=3, dropout=0.0, input_size=4, impl="packed")
    x = torch.randn(3, 11, 4, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([11, 4, 8])
    enc = enc.double()
    results = []
    for impl in ("packed", "reversed"):
        enc.cfg.impl = impl
        enc.zero_grad()
        x.grad = None
        y, _ = enc(x, lengths)
        (y * torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)).square().sum().backward()
        results.append((y.detach(), x.grad.clone(), [p.grad.clone() for p in enc.parameters()]))
    (y0, gx0, gp0), (y1, gx1, gp1) = results
    assert torch.allclose(y0, y1, atol=1e-10)  # padded frames are zero in both
    assert torch.allclose(gx0, gx1, atol=1e-10)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(gp0, gp1))


def test_unknown_impl_is_refused():
    with pytest.raises(ValueError, match="encoder.impl"):
        build("encoder", "blstm", hidden_size=4, num_layers=1, input_size=3, impl="fast")


def test_lookahead_stacks_each_group_with_the_next_frames_zero_past_the_end():
    from speechkit.encoders.rnn import Subsample

    sub = Subsample(2, factor=3, lookahead=2)
    x = torch.arange(2 * 7 * 2, dtype=torch.float32).view(2, 7, 2)
    y, n = sub(x, torch.tensor([7, 4]))
    assert n.tolist() == [3, 2] and y.shape == (2, 3, 10)
    assert torch.equal(y[0, 0], x[0, :5].flatten())  # frames 0-2 and the look-ahead 3-4
    assert torch.equal(y[0, 1], torch.cat([x[0, 3:7].flatten(), torch.zeros(2)]))  # 3-5, 6 and past the end
    assert torch.equal(y[1, 1], torch.cat([x[1, 3].flatten(), torch.zeros(8)]))  # padding reads as zeros
    alone, _ = sub(x[1:, :4], torch.tensor([4]))
    assert torch.equal(alone[0], y[1, :2])


@pytest.mark.parametrize("features,factor", [(80, 4), (13, 3), (5, 1)])
def test_conv2d_subsampling_gives_the_frames_and_width_it_promises(features, factor):
    enc = build("encoder", "blstm", hidden_size=4, num_layers=1, subsample=factor, subsample_mode="conv2d",
                subsample_channels=6, input_size=features)
    y, lengths = enc.sub(torch.randn(2, 10, features), torch.tensor([10, 5]))
    bands = math.ceil(math.ceil(features / 2) / 2)  # each convolution halves the frequency axis
    assert y.shape == (2, math.ceil(10 / factor), 6 * bands) and enc.sub.output_dim == 6 * bands
    assert lengths.tolist() == [-(-10 // factor), -(-5 // factor)]


def test_conv2d_subsampling_refuses_a_lookahead_it_cannot_read():
    with pytest.raises(ValueError, match="lookahead=2 with encoder.subsample_mode=conv2d"):
        build("encoder", "blstm", subsample=4, subsample_mode="conv2d", lookahead=2, input_size=80)


def test_conv2d_subsampling_of_an_empty_batch_and_a_factor_below_one():
    enc = build("encoder", "blstm", hidden_size=4, num_layers=1, subsample=4, subsample_mode="conv2d",
                subsample_channels=3, input_size=10)
    y, lengths = enc.sub(torch.randn(0, 8, 10), torch.zeros(0, dtype=torch.long))
    assert y.shape == (0, 2, enc.sub.output_dim) and lengths.numel() == 0
    with pytest.raises(ValueError, match="encoder.subsample=0"):
        build("encoder", "blstm", subsample=0, input_size=10)

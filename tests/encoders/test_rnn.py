import math
import os

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


@pytest.mark.parametrize("name", ["blstm", "lstm"])
def test_forget_bias_starts_every_forget_gate_there_and_leaves_the_rest(name):
    """torch's gates are input, forget, cell, output; its two bias vectors add, so the forget slice of
    bias_ih holds the value and bias_hh's is zero. The same seed draws the same other weights."""
    H = 5
    torch.manual_seed(3)
    plain = build("encoder", name, hidden_size=H, num_layers=2, input_size=4)
    torch.manual_seed(3)
    fb = build("encoder", name, hidden_size=H, num_layers=2, input_size=4, forget_bias=1.0)
    for (n, a), (_, b) in zip(plain.named_parameters(), fb.named_parameters(), strict=True):
        if ".bias_" not in n:
            assert torch.equal(a, b), n
            continue
        want = 1.0 if ".bias_ih" in n else 0.0
        assert torch.equal(b[H : 2 * H], torch.full((H,), want)), n
        keep = torch.cat([torch.arange(H), torch.arange(2 * H, 4 * H)])
        assert torch.equal(a[keep], b[keep]), n


@pytest.mark.parametrize("name", ["bgru", "lstm_peephole"])
def test_forget_bias_is_refused_where_there_is_no_lstm_forget_gate_to_set(name):
    with pytest.raises(ValueError, match="encoder.forget_bias=1.0"):
        build("encoder", name, hidden_size=4, num_layers=1, input_size=3, forget_bias=1.0)


def _run(enc, x, lengths, taps=()):
    """Outputs, the inner layers' outputs, and the input's and weights' gradients of a fixed loss."""
    enc.zero_grad()
    x = x.detach().requires_grad_(True)
    y, _, inner = enc.forward_taps(x, lengths, list(taps))
    loss = (y * torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)).square().sum()
    (loss + sum(t.square().sum() for t in inner)).backward()
    return y.detach(), [t.detach() for t in inner], x.grad, [p.grad.clone() for p in enc.parameters()]


@pytest.mark.parametrize("name", ["blstm", "bgru"])
def test_parallel_directions_compute_what_reversed_does(name):
    """impl=parallel runs the same operations as impl=reversed, one direction on a second thread:
    the same outputs and inner taps; the gradients sum the two directions' parts in another order, so
    they agree to float64 rounding."""
    torch.manual_seed(0)
    enc = build("encoder", name, hidden_size=6, num_layers=3, dropout=0.0, input_size=4, impl="reversed").double()
    x, lengths = torch.randn(3, 11, 4, dtype=torch.float64), torch.tensor([11, 4, 8])
    base = _run(enc, x, lengths, taps=(2,))
    enc.cfg.impl = "parallel"
    got = _run(enc, x, lengths, taps=(2,))
    assert torch.equal(got[0], base[0]) and torch.equal(got[1][0], base[1][0])
    torch.testing.assert_close(got[2], base[2], rtol=0, atol=1e-12)
    for a, b in zip(got[3], base[3], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    enc.eval()
    with torch.no_grad():  # inference: both threads, no graph
        y, _ = enc(x, lengths)
    assert torch.equal(y, base[0]) and not y.requires_grad


def test_parallel_directions_keep_the_callers_mixed_precision():
    """autocast is per thread: the second direction must run in bf16 as the first does."""
    torch.manual_seed(0)
    enc = build("encoder", "blstm", hidden_size=8, num_layers=2, dropout=0.0, input_size=5, impl="reversed")
    x, lengths = torch.randn(2, 9, 5), torch.tensor([9, 6])
    outs = []
    for impl in ("reversed", "parallel"):
        enc.cfg.impl = impl
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append(enc(x, lengths)[0])
    assert outs[1].dtype == torch.bfloat16 and torch.equal(outs[0], outs[1])


def test_auto_runs_the_directions_in_parallel_only_with_a_core_to_spare(monkeypatch):
    import speechkit.encoders.rnn as rnn

    cpu = torch.device("cpu")
    bi = build("encoder", "blstm", hidden_size=4, num_layers=1, input_size=3)
    uni = build("encoder", "lstm", hidden_size=4, num_layers=1, input_size=3, impl="parallel")
    threads = torch.get_num_threads()
    monkeypatch.setattr(rnn, "cores_per_process", lambda: 2 * threads)
    assert bi.runs_as(cpu) == "parallel" and uni.runs_as(cpu) == "reversed"  # one direction: nothing to run beside it
    monkeypatch.setattr(rnn, "cores_per_process", lambda: 2 * threads - 1)
    assert bi.runs_as(cpu) == "reversed"


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace is deprecated, still what export uses
def test_a_traced_parallel_encoder_records_both_directions():
    """A tracer records the calling thread's operations only: under it the directions run one after
    the other, so the traced graph computes what the encoder does."""
    torch.manual_seed(0)
    enc = build("encoder", "blstm", hidden_size=5, num_layers=2, dropout=0.0, input_size=3, impl="parallel").eval()
    x, lengths = torch.randn(2, 7, 3), torch.tensor([7, 7])
    with torch.no_grad():
        traced = torch.jit.trace(enc, (x, lengths), check_trace=False)
        other = torch.randn(2, 7, 3)
        torch.testing.assert_close(traced(other, lengths)[0], enc(other, lengths)[0])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this OS")
def test_parallel_directions_run_in_a_forked_child():
    """A fork copies the second thread's executor but not its thread: the child makes its own."""
    import multiprocessing

    torch.manual_seed(0)
    enc = build("encoder", "blstm", hidden_size=4, num_layers=1, input_size=3, impl="parallel").eval()
    x, lengths = torch.randn(1, 5, 3), torch.tensor([5])
    with torch.no_grad():
        enc(x, lengths)  # the parent's thread exists now
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_forward_in_child, args=(enc, x, lengths))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0


def _forward_in_child(enc, x, lengths):
    with torch.no_grad():
        enc(x, lengths)


def test_the_second_direction_follows_the_callers_thread_count():
    """trainer.threads=auto changes the count mid-run; the second thread must not keep its first one."""
    import speechkit.encoders.rnn as rnn

    before = torch.get_num_threads()
    enc = build("encoder", "blstm", hidden_size=4, num_layers=1, input_size=3, impl="parallel").eval()
    x, lengths = torch.randn(1, 5, 3), torch.tensor([5])
    try:
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            with torch.no_grad():
                enc(x, lengths)
            assert rnn._second_thread().submit(torch.get_num_threads).result() == n
    finally:
        torch.set_num_threads(before)

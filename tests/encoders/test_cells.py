import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from speechkit import build
from speechkit.encoders.cells import recurrence, reverse_index

CELLS = ["elman", "jordan", "lstm_peephole", "lstm_coupled"]
# (cell, activation) pairs; activation only exists for elman and jordan
VARIANTS = [("elman", "tanh"), ("elman", "relu"), ("jordan", "tanh"), ("jordan", "relu"),
            ("lstm_peephole", None), ("lstm_coupled", None)]  # fmt: skip


def make(cell, activation=None, **params):
    params = {"hidden_size": 4, "num_layers": 2, "dropout": 0.0, "input_size": 3, **params}
    if activation:
        params["activation"] = activation
    return build("encoder", cell, **params).double().eval()


# ---- a naive, frame-by-frame reference of every cell, one sequence at a time -------------


def reference_layer(cell, d, x, relu):
    """One direction of one layer over one sequence ``x`` ``(T, F)``, written as the equations."""
    act = torch.relu if relu else torch.tanh
    H = d.weight_hh.shape[1]
    h, c, y = torch.zeros(H, dtype=x.dtype), torch.zeros(H, dtype=x.dtype), torch.zeros(H, dtype=x.dtype)
    out = []
    for x_t in x:
        a = d.weight_ih @ x_t + d.bias
        if cell == "elman":
            h = act(a + d.weight_hh @ h)
            out.append(h)
        elif cell == "jordan":
            h = act(a + d.weight_hh @ y)
            y = torch.tanh(d.weight_hy @ h + d.bias_hy)
            out.append(y)
        elif cell == "lstm_peephole":
            a_i, a_f, a_g, a_o = (a + d.weight_hh @ h).chunk(4)
            p_i, p_f, p_o = d.peephole
            i, f = torch.sigmoid(a_i + p_i * c), torch.sigmoid(a_f + p_f * c)
            c = f * c + i * torch.tanh(a_g)
            h = torch.sigmoid(a_o + p_o * c) * torch.tanh(c)
            out.append(h)
        else:  # lstm_coupled
            a_f, a_g, a_o = (a + d.weight_hh @ h).chunk(3)
            f = torch.sigmoid(a_f)
            c = f * c + (1 - f) * torch.tanh(a_g)
            h = torch.sigmoid(a_o) * torch.tanh(c)
            out.append(h)
    return torch.stack(out)


def reference_stack(enc, x):
    for directions in enc.layers:
        outs = [reference_layer(enc.cell, directions[0], x, enc.relu)]
        if len(directions) == 2:
            outs.append(reference_layer(enc.cell, directions[1], x.flip(0), enc.relu).flip(0))
        x = torch.cat(outs, -1)
    return x


@pytest.mark.parametrize("cell,activation", VARIANTS)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_batched_stack_matches_the_frame_by_frame_reference(cell, activation, bidirectional):
    torch.manual_seed(0)
    enc = make(cell, activation, bidirectional=bidirectional)
    x = torch.randn(3, 9, 3, dtype=torch.double)
    lengths = torch.tensor([9, 4, 6])
    y, out = enc(x, lengths)
    assert y.shape == (3, 9, 4 * (2 if bidirectional else 1)) and out.tolist() == [9, 4, 6]
    for b, L in enumerate(lengths.tolist()):
        torch.testing.assert_close(y[b, :L], reference_stack(enc, x[b, :L]), rtol=1e-9, atol=1e-10)
        assert y[b, L:].abs().max().item() == 0 if L < 9 else True  # padded frames are zeroed


# ---- gradients ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell,activation", VARIANTS)
def test_hand_written_backward_passes_gradcheck(cell, activation):
    torch.manual_seed(0)
    d = make(cell, activation, num_layers=1, bidirectional=False).layers[0][0]
    xw = torch.randn(5, 2, d.weight_ih.shape[0], dtype=torch.double, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in d.recurrent_params()]
    relu = activation == "relu"
    assert torch.autograd.gradcheck(lambda xw, *p: recurrence(cell, xw, list(p), relu), (xw, *params))


@pytest.mark.parametrize("cell", CELLS)
def test_whole_bidirectional_stack_passes_gradcheck_with_padding(cell):
    torch.manual_seed(0)
    enc = make(cell, hidden_size=3, input_size=2, subsample=2)
    x = torch.randn(2, 7, 2, dtype=torch.double, requires_grad=True)
    lengths = torch.tensor([7, 4])
    assert torch.autograd.gradcheck(lambda x: enc(x, lengths)[0], (x,))


def test_padding_frames_get_no_gradient_and_change_nothing():
    torch.manual_seed(0)
    enc = make("lstm_peephole")
    x = torch.randn(2, 8, 3, dtype=torch.double, requires_grad=True)
    enc(x, torch.tensor([8, 5]))[0].sum().backward()
    assert x.grad[1, 5:].abs().max().item() == 0 and x.grad[1, :5].abs().max().item() > 0


# ---- peephole LSTM without its peepholes is torch's LSTM -----------------------------------


def test_peephole_lstm_with_zero_peepholes_equals_torch_lstm():
    torch.manual_seed(0)
    enc = make("lstm_peephole", hidden_size=5, num_layers=2, input_size=3)
    ref = torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True).double()
    with torch.no_grad():
        for n, directions in enumerate(enc.layers):
            for d, suffix in zip(directions, ["", "_reverse"]):
                d.weight_ih.copy_(getattr(ref, f"weight_ih_l{n}{suffix}"))
                d.weight_hh.copy_(getattr(ref, f"weight_hh_l{n}{suffix}"))
                d.bias.copy_(getattr(ref, f"bias_ih_l{n}{suffix}") + getattr(ref, f"bias_hh_l{n}{suffix}"))
                d.peephole.zero_()
    x = torch.randn(3, 11, 3, dtype=torch.double)
    lengths = torch.tensor([11, 6, 8])
    y, _ = enc(x, lengths)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = pad_packed_sequence(ref(packed)[0], batch_first=True, total_length=11)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-12)


# ---- padding, subsampling, lengths --------------------------------------------------------


@pytest.mark.parametrize("cell,activation", VARIANTS)
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("subsample,mode", [(1, "stack"), (2, "stack"), (3, "conv"), (4, "conv2d")])
def test_padding_never_changes_an_utterances_output(cell, activation, bidirectional, subsample, mode):
    torch.manual_seed(0)
    enc = make(
        cell, activation, bidirectional=bidirectional, subsample=subsample, subsample_mode=mode, input_size=5
    )
    x = torch.randn(2, 13, 5, dtype=torch.double)
    lengths = torch.tensor([13, 7])
    y, out = enc(x, lengths)
    alone, out_alone = enc(x[1:, :7], lengths[1:])
    expected = -(-lengths // subsample)
    assert out.tolist() == expected.tolist() == enc.output_lengths(lengths).tolist()
    assert y.shape == (2, expected[0], enc.output_dim) and enc.subsampling == subsample
    torch.testing.assert_close(y[1, : out[1]], alone[0, : out_alone[0]], rtol=1e-10, atol=1e-12)


def test_reverse_index_reverses_each_sequence_within_its_length():
    idx = reverse_index(torch.tensor([4, 2, 0]), 5)
    assert idx.t().tolist() == [[3, 2, 1, 0, 4], [1, 0, 2, 3, 4], [0, 1, 2, 3, 4]]
    assert torch.equal(idx.gather(0, idx), torch.arange(5).unsqueeze(1).expand(5, 3))  # an involution


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    enc = make("elman", dropout=0.5, num_layers=2).train()
    x = torch.randn(2, 6, 3, dtype=torch.double)
    lengths = torch.tensor([6, 6])
    assert not torch.equal(enc(x, lengths)[0], enc(x, lengths)[0])
    enc.eval()
    assert torch.equal(enc(x, lengths)[0], enc(x, lengths)[0])


def test_unknown_activation_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="tanh, relu"):
        build("encoder", "elman", activation="sigmoid", input_size=3)

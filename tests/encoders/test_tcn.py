import pytest
import torch

from speechkit import build


def make(**params):
    params = {"hidden_size": 6, "num_layers": 3, "kernel_size": 3, "dropout": 0.0, "input_size": 4, **params}
    return build("encoder", "tcn", **params).double().eval()


def changed_frames(enc, T=40, t0=20):
    """Output frames that change when input frame ``t0`` is perturbed."""
    torch.manual_seed(1)
    x = torch.randn(1, T, 4, dtype=torch.double)
    lengths = torch.tensor([T])
    y = enc(x, lengths)[0]
    x[0, t0] += 1.0
    diff = (enc(x, lengths)[0] - y).abs().amax(-1)[0]
    return (diff > 1e-12).nonzero().flatten().tolist()


@pytest.mark.parametrize("causal", [True, False])
def test_receptive_field_is_exactly_the_frames_a_perturbation_reaches(causal):
    torch.manual_seed(0)
    enc = make(causal=causal)  # dilations 1, 2, 4 with 3 taps: 1 + 2·(1 + 2 + 4) frames
    assert enc.receptive_field == 15
    t0 = 20
    if causal:
        assert enc.lookahead == 0
        assert changed_frames(enc, t0=t0) == list(range(t0, t0 + 15))  # only the present and future outputs
    else:
        assert enc.lookahead == 7
        assert changed_frames(enc, t0=t0) == list(range(t0 - 7, t0 + 8))  # centred on the frame


def test_dilation_cycle_restarts_the_doubling():
    enc = make(num_layers=5, dilation_cycle=2, causal=True)  # dilations 1, 2, 1, 2, 1
    assert enc.receptive_field == 1 + 2 * (1 + 2 + 1 + 2 + 1)
    assert changed_frames(enc, t0=20) == list(range(20, 20 + enc.receptive_field))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("subsample,mode", [(1, "stack"), (2, "stack"), (3, "conv"), (4, "conv2d")])
def test_padding_never_changes_an_utterances_output(causal, subsample, mode):
    torch.manual_seed(0)
    enc = make(causal=causal, subsample=subsample, subsample_mode=mode)
    x = torch.randn(2, 25, 4, dtype=torch.double)
    lengths = torch.tensor([25, 11])
    y, out = enc(x, lengths)
    alone, out_alone = enc(x[1:, :11], lengths[1:])
    expected = -(-lengths // subsample)
    assert out.tolist() == expected.tolist() == enc.output_lengths(lengths).tolist()
    assert y.shape == (2, expected[0], 6) and enc.output_dim == 6 and enc.subsampling == subsample
    torch.testing.assert_close(y[1, : out[1]], alone[0, : out_alone[0]], rtol=1e-10, atol=1e-12)
    assert y[1, out[1] :].abs().max().item() == 0  # padded frames are zeroed


def test_centred_tcn_with_an_even_kernel_is_an_error():
    with pytest.raises(ValueError, match="odd kernel_size"):
        build("encoder", "tcn", kernel_size=4, causal=False, input_size=4)

import pytest
import torch

from speechkit import build


@pytest.mark.parametrize("name", ["blstm", "lstm", "bgru", "gru"])
@pytest.mark.parametrize("subsample,mode", [(1, "stack"), (2, "stack"), (3, "conv")])
def test_padding_never_changes_an_utterances_output(name, subsample, mode):
    torch.manual_seed(0)
    enc = build("encoder", name, hidden_size=8, num_layers=2, dropout=0.0, subsample=subsample,
                subsample_mode=mode, input_size=5).eval()
    x = torch.randn(2, 13, 5)
    lengths = torch.tensor([13, 7])
    y, out = enc(x, lengths)
    alone, out_alone = enc(x[1:, :7], lengths[1:])
    expected = -(-lengths // subsample)
    assert out.tolist() == expected.tolist() and y.shape[1] == expected[0]
    assert torch.allclose(y[1, : out[1]], alone[0, : out_alone[0]], atol=1e-6)

import torch

from speechkit import build
from speechkit.losses.ctc import min_ctc_frames


def test_min_frames_counts_one_extra_frame_per_repeated_label():
    targets = torch.tensor([1, 1, 2, 3, 3, 3, 1])
    assert min_ctc_frames(targets, torch.tensor([3, 4])).tolist() == [4, 6]


def test_loss_equals_torch_ctc_when_every_utterance_fits():
    torch.manual_seed(0)
    lp = torch.randn(2, 10, 5).log_softmax(-1)
    targets, tl, lengths = torch.tensor([1, 2, 3, 4, 1]), torch.tensor([3, 2]), torch.tensor([10, 8])
    loss, bad = build("loss", "ctc")(lp, lengths, targets, tl)
    ref = torch.nn.functional.ctc_loss(lp.transpose(0, 1), targets, lengths, tl, reduction="mean")
    assert bad == 0 and torch.allclose(loss, ref)


def test_utterances_too_short_for_their_transcript_are_left_out_and_counted():
    torch.manual_seed(0)
    lp = torch.randn(2, 6, 5, requires_grad=True)
    targets, tl, lengths = torch.tensor([1, 2, 1, 1, 1, 1]), torch.tensor([2, 4]), torch.tensor([6, 6])
    loss, bad = build("loss", "ctc")(lp.log_softmax(-1), lengths, targets, tl)  # 1 1 1 1 needs 7 frames
    ref = torch.nn.functional.ctc_loss(lp.log_softmax(-1)[:1].transpose(0, 1), targets[:2], lengths[:1], tl[:1])
    assert bad == 1 and torch.isfinite(loss) and torch.allclose(loss, ref)
    loss.backward()
    assert lp.grad[1].abs().sum() == 0

import torch

from speechkit import build


def test_masks_only_touch_valid_frames_and_respect_widths():
    torch.manual_seed(0)
    aug = build("augment", "specaugment", freq_masks=2, freq_width=5, time_masks=2, time_width=10, mask_value=-1.0)
    x = torch.zeros(8, 100, 40)
    lengths = torch.tensor([100, 80, 60, 40, 100, 90, 20, 1])
    y, out = aug(x, lengths)
    assert out.tolist() == lengths.tolist() and y.shape == x.shape
    masked_time = (y == -1).all(dim=2)  # frames where every feature is masked: time masks
    for b, n in enumerate(lengths.tolist()):
        assert not masked_time[b, n:].any()
        assert masked_time[b].sum() <= 2 * min(10, int(0.1 * n))
    masked_freq = (y == -1).all(dim=1)
    assert (masked_freq.sum(dim=1) <= 10).all()
    assert (y == -1).any()


def test_masks_differ_between_utterances():
    torch.manual_seed(1)
    y, _ = build("augment", "specaugment")(torch.ones(4, 200, 80), torch.full((4,), 200))
    masks = (y != 0).view(4, -1)
    assert not all(torch.equal(masks[0], masks[i]) for i in range(1, 4))

"""The ``video`` augment: raw clips in, same shape out, exact lengths, padding untouched, train only."""

from __future__ import annotations

import torch

from speechkit.pipeline import CTCModel
from speechkit.registry import build

OFF = dict(flip_prob=0.0, crop_scale=1.0, brightness=0.0, contrast=0.0, time_masks=0, drop_prob=0.0)


def batch(lengths=(10, 6, 3), T=12) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.rand(len(lengths), T, 1, 8, 16)
    lengths = torch.tensor(lengths)
    for i, n in enumerate(lengths.tolist()):
        x[i, n:] = 0
    return x, lengths


def augment(**kw):
    return build("augment", "video", **{**OFF, **kw}).train()


def test_it_runs_on_raw_clips_before_the_frontend():
    assert build("augment", "video").raw is True


def test_everything_off_is_the_identity():
    x, lengths = batch()
    y, n = augment()(x, lengths)
    torch.testing.assert_close(y, x)
    assert n.tolist() == lengths.tolist()


def test_flip_mirrors_every_frame_left_to_right():
    x, lengths = batch()
    y, _ = augment(flip_prob=1.0)(x, lengths)
    torch.testing.assert_close(y, x.flip(-1), atol=1e-5, rtol=0)


def test_crop_zooms_in_keeping_shape_and_padding_zero():
    x, lengths = batch()
    y, n = augment(crop_scale=0.5)(x, lengths)
    assert y.shape == x.shape and n.tolist() == lengths.tolist()
    assert not torch.allclose(y, x)
    assert y[1, 6:].abs().sum() == 0 and y[2, 3:].abs().sum() == 0


def test_frame_dropping_keeps_original_frames_in_order_with_exact_lengths():
    x, lengths = batch((12, 10, 5))
    torch.manual_seed(3)
    y, n = augment(drop_prob=0.5, min_keep=0.5)(x, lengths)
    assert y.shape == x.shape
    for i in range(3):
        assert lengths[i] * 0.5 <= n[i] <= lengths[i]
        assert y[i, n[i] :].abs().sum() == 0
        # every kept frame is one of the clip's frames, and they come in their original order
        idx = [int(((x[i, : lengths[i]] - f).abs().flatten(1).sum(1)).argmin()) for f in y[i, : n[i]]]
        assert idx == sorted(idx) and len(set(idx)) == len(idx)
        torch.testing.assert_close(y[i, : n[i]], x[i, idx])


def test_min_keep_bounds_how_much_is_dropped():
    x, lengths = batch((12, 12, 12))
    y, n = augment(drop_prob=1.0, min_keep=0.75)(x, lengths)
    assert n.tolist() == [9, 9, 9]


def test_time_masks_replace_frames_with_the_clips_mean_frame():
    x, lengths = batch((12, 12, 12))
    y, _ = augment(time_masks=1, time_width=4)(x, lengths)
    mean = x.mean(1, keepdim=True)
    changed = (y != x).flatten(2).any(2)  # (B, T)
    assert changed.any()
    assert torch.allclose(y[changed], mean.expand_as(x)[changed])
    assert (changed.sum(1) <= 4).all()


def test_brightness_and_contrast_change_pixels_within_range():
    x, lengths = batch()
    y, _ = augment(brightness=0.3, contrast=0.5)(x, lengths)
    assert 0 <= y.min() and y.max() <= 1 and not torch.allclose(y, x)
    assert y[1, 6:].abs().sum() == 0


def test_the_model_augments_in_training_only():
    frontend = build("frontend", "lips", height=8, width=16, grayscale=True, channels=[2], temporal_kernels=[3],
                     spatial_kernels=[3], strides=[1], pools=[2], dropout=0.0)  # fmt: skip
    encoder = build("encoder", "bgru", hidden_size=4, num_layers=1, input_size=frontend.output_dim)
    model = CTCModel(frontend, augment(drop_prob=1.0, min_keep=0.5), encoder, vocab_size=5)
    x, lengths = batch((12, 10, 6))
    _, n_train = model.train()(x, lengths)
    _, n_eval = model.eval()(x, lengths)
    assert n_train.tolist() == [6, 5, 3] and n_eval.tolist() == [12, 10, 6]

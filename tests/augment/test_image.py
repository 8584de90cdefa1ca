"""The ``image`` augmentation: raw line images (B, W, H) in, warped and degraded lines with exact lengths out."""

from __future__ import annotations

import math

import pytest
import torch

from speechkit.augment.image import ImageAugment, ImageAugmentConfig, affine_warp, gaussian_blur
from speechkit.pipeline import CTCModel
from speechkit.registry import build

H = 32  # px, the frontend's default line height


def strokes(widths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lines of vertical 'strokes' (ink 1) every 7 columns, away from the ends, zero-padded."""
    x = torch.zeros(len(widths), max(widths), H)
    for i, w in enumerate(widths):
        for c in range(6, w - 6, 7):
            x[i, c : c + 2, 8:24] = 1.0
    return x, torch.tensor(widths)


def zero_past(x: torch.Tensor, lengths: torch.Tensor) -> bool:
    return all(
        x[i, n:].abs().max().item() == 0 if n < x.shape[1] else True for i, n in enumerate(lengths.tolist())
    )


def test_prob_zero_returns_the_batch_unchanged():
    x, lengths = strokes([100, 60])
    y, out = build("augment", "image", prob=0.0)(x, lengths)
    assert torch.equal(y, x) and torch.equal(out, lengths)


def test_margins_alone_shift_the_line_and_add_exactly_their_width():
    x, lengths = strokes([100, 60])
    z = torch.zeros(2)
    y, out = affine_warp(
        x, lengths, z, z, torch.ones(2), z, torch.tensor([5.0, 0.0]), torch.tensor([3.0, 11.0])
    )
    assert out.tolist() == [108, 71] and y.shape == (2, 108, H)
    assert (y[0, 5:105] - x[0]).abs().max() < 1e-5 and y[0, :5].abs().max() < 1e-5
    assert (y[1, :60] - x[1, :60]).abs().max() < 1e-5
    assert zero_past(y, out)


def test_shear_widens_the_line_so_nothing_is_cropped():
    x, lengths = strokes([100, 60])
    z = torch.zeros(2)
    shear = torch.tensor([0.4, -0.4])
    y, out = affine_warp(x, lengths, z, shear, torch.ones(2), z, z, z)
    assert out.tolist() == [100 + math.ceil(0.4 * H), 60 + math.ceil(0.4 * H)]
    # a shear keeps area, so all the ink is still there
    assert torch.allclose(y.sum((1, 2)), x.sum((1, 2)), rtol=0.02)
    assert zero_past(y, out)


def test_scale_below_one_shrinks_the_line_inside_its_height():
    x, lengths = strokes([100])
    z = torch.zeros(1)
    y, out = affine_warp(x, lengths, z, z, torch.tensor([0.5]), z, z, z)
    assert out.tolist() == [50]
    rows = y[0].sum(0) > 0.1  # rows with ink: the strokes' 16 rows become about 8, still centred
    assert 7 <= rows.sum().item() <= 10 and rows[12:20].all()


def test_gaussian_blur_keeps_ink_and_sigma_zero_is_identity():
    x, _ = strokes([100, 100])
    y = gaussian_blur(x, torch.tensor([0.0, 1.5]))
    assert (y[0] - x[0]).abs().max() < 1e-5
    assert abs(y[1].sum() - x[1].sum()) < 1e-3 * x[1].sum()  # the strokes lie away from the edges
    assert y[1].max() < 0.9  # but they are softened


def test_random_augmentation_returns_exact_lengths_and_valid_ink():
    torch.manual_seed(0)
    aug = build("augment", "image", prob=1.0)
    assert aug.raw is True
    x, lengths = strokes([300, 200, 64, 40])
    y, out = aug(x, lengths)
    assert y.shape == (4, int(out.max()), H) and out.dtype == torch.long
    assert zero_past(y, out) and y.min() >= 0 and y.max() <= 1
    for i in range(4):  # every line still holds ink, inside its new length
        assert y[i, : out[i]].sum() > 0.3 * x[i].sum()


def test_lines_are_augmented_independently():
    torch.manual_seed(3)
    x, lengths = strokes([200] * 6)
    y, out = build("augment", "image", prob=0.7)(x, lengths)
    assert len(set(out.tolist())) > 1 or not all(torch.equal(y[0], y[i]) for i in range(1, 6))


def test_augment_runs_on_the_raw_batch_in_training_only():
    torch.manual_seed(0)
    frontend = build("frontend", "ocr_line", channels=[8, 8], pool_width=[2, 2])
    encoder = build("encoder", "blstm", hidden_size=8, num_layers=1, input_size=frontend.output_dim)
    model = CTCModel(frontend, build("augment", "image", prob=1.0, pad_max=2.0, scale_min=1.0), encoder, 5)
    x, lengths = strokes([120, 80])
    model.train()
    _, train_lengths = model(x, lengths)
    model.eval()
    _, eval_lengths = model(x, lengths)
    assert eval_lengths.tolist() == [30, 20]
    assert train_lengths.tolist() != eval_lengths.tolist()  # the random margins changed the widths


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="prob=1.5 is invalid"):
        ImageAugment(ImageAugmentConfig(prob=1.5))
    with pytest.raises(ValueError, match="scale_min=0 is invalid"):
        ImageAugment(ImageAugmentConfig(scale_min=0))

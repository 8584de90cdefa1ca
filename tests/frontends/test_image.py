"""Image frontend: load_image on real PNG/JPEG files (good and bad), and the ocr_line plugin's shapes."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from speechkit.data.errors import DataError
from speechkit.frontends.image import OcrLine, OcrLineConfig, load_image
from speechkit.registry import build

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # fonts-dejavu-core (scripts/setup.sh)
PAD_TOLERANCE = 1e-5  # max |padded batch − alone|: only float reordering may differ

needs_font = pytest.mark.skipif(not FONT.exists(), reason="fonts-dejavu-core is not installed")


def line_image(text: str = "Hello, world 42!", size: int = 40, mode: str = "L") -> Image.Image:
    """Black ``text`` on white paper in DejaVu Sans at ``size`` px, with small margins."""
    font = ImageFont.truetype(str(FONT), size)
    w = int(font.getlength(text)) + 16
    img = Image.new("L", (w, int(size * 1.3)), 255)
    ImageDraw.Draw(img).text((8, 2), text, font=font, fill=0)
    return img.convert(mode)


def save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` × ``height`` (8-bit gray), with no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# ----------------------------------------------------------------------------- loading


@needs_font
@pytest.mark.parametrize(
    "mode, fmt", [("L", "PNG"), ("RGB", "PNG"), ("RGB", "JPEG"), ("L", "JPEG"), ("P", "PNG")]
)
def test_load_image_is_ink_scaled_to_the_height_keeping_the_aspect(tmp_path, mode, fmt):
    img = line_image(mode=mode)
    path = save(img, tmp_path / f"line.{fmt.lower()}", format=fmt)
    x = load_image(path, height=32)
    w, h = img.size
    assert x.shape == (round(w * 32 / h), 32) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1
    assert x[:, :2].max() < 0.1  # white paper above the text: no ink
    assert x.max() > 0.9  # black strokes: full ink
    assert 0.03 < x.mean() < 0.4  # text, mostly paper


@needs_font
def test_colour_grayscale_and_16_bit_versions_of_one_line_load_alike(tmp_path):
    img = line_image()
    gray = load_image(save(img, tmp_path / "g.png"))
    rgb = load_image(save(img.convert("RGB"), tmp_path / "c.png"))
    deep = load_image(save(Image.fromarray(np.asarray(img).astype(np.uint16) * 257), tmp_path / "d.png"))
    assert (gray - rgb).abs().max() < 1e-6
    assert (gray - deep).abs().max() < 1e-3


@needs_font
def test_transparent_background_reads_as_white_paper(tmp_path):
    ink = np.asarray(line_image())  # 0 = black text, 255 = paper
    rgba = np.zeros((*ink.shape, 4), np.uint8)  # black everywhere, transparent where there is no text
    rgba[..., 3] = 255 - ink
    x = load_image(save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"))
    reference = load_image(save(line_image(), tmp_path / "g.png"))
    assert (x - reference).abs().max() < 0.02


@needs_font
def test_exif_orientation_is_applied(tmp_path):
    upright = line_image()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the file holds the line turned on its side
    path = save(upright.transpose(Image.Transpose.ROTATE_90), tmp_path / "turned.jpg", exif=exif, quality=95)
    x = load_image(path)
    reference = load_image(save(upright, tmp_path / "upright.png"))
    assert x.shape == reference.shape
    assert (x - reference).abs().mean() < 0.02


def test_any_size_is_scaled_to_the_height(tmp_path):
    for w, h in [(7, 3), (2000, 300), (64, 32)]:
        x = load_image(save(Image.new("L", (w, h), 200), tmp_path / f"{w}x{h}.png"), height=32)
        assert x.shape == (round(w * 32 / h), 32)
        assert torch.allclose(x, torch.full_like(x, 1 - 200 / 255), atol=1e-5)


def test_corrupt_image_is_a_data_error_naming_the_file(tmp_path):
    path = tmp_path / "corrupt.png"
    path.write_bytes(b"this is not an image at all" * 20)
    with pytest.raises(
        DataError, match=r"corrupt\.png: cannot read the image .*re-create it or convert it to PNG"
    ):
        load_image(path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_a_data_error(tmp_path, fmt):
    buf = io.BytesIO()
    Image.effect_noise((300, 60), 60).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataError, match=r"cut\.\w+: cannot decode the image .*truncated"):
        load_image(path)


def test_zero_size_images_are_data_errors(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png: is empty \(0 bytes\)"):
        load_image(empty)
    zero = tmp_path / "zero.png"
    zero.write_bytes(png_header_only(0, 40))
    with pytest.raises(DataError, match=r"zero\.png: zero-size image \(0×40 pixels\)"):
        load_image(zero)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="image file not found"):
        load_image(tmp_path / "nope.png")


def test_far_too_wide_image_names_the_limit_and_how_to_raise_it(tmp_path):
    path = save(Image.new("L", (20000, 40), 255), tmp_path / "wide.png")
    with pytest.raises(DataError) as e:
        load_image(path, height=32, max_width=4096)
    msg = str(e.value)
    assert "wide.png: far too wide" in msg and "16000 px wide" in msg
    assert "frontend.max_width=4096" in msg and "raise frontend.max_width" in msg


def test_far_too_tall_image_says_so_before_decoding(tmp_path):
    path = save(Image.new("L", (10, 2000), 255), tmp_path / "tall.png")
    with pytest.raises(
        DataError, match=r"tall\.png: far too tall for a text line: 10×2000 pixels .* 0 px wide"
    ):
        load_image(path, height=32)
    # the frontend asks for at least one output frame's worth of columns (4 with the default pooling)
    path = save(Image.new("L", (6, 100), 255), tmp_path / "narrow.png")
    with pytest.raises(DataError, match="fewer than the 4 column"):
        build("frontend", "ocr_line").load(path)


def test_too_many_pixels_names_frontend_max_pixels(tmp_path):
    path = save(Image.new("L", (3000, 2000), 255), tmp_path / "page.png")
    with pytest.raises(DataError, match=r"6000000 pixels, more than frontend\.max_pixels=1000000"):
        load_image(path, max_pixels=1_000_000)


# ----------------------------------------------------------------------------- the plugin


def random_lines(widths: list[int], height: int = 32, total: int | None = None, seed: int = 0):
    """Random ink lines of ``widths`` columns, zero-padded into ``(B, total, height)``."""
    g = torch.Generator().manual_seed(seed)
    total = total or max(widths)
    x = torch.zeros(len(widths), total, height)
    for i, w in enumerate(widths):
        x[i, :w] = torch.rand(w, height, generator=g)
    return x, torch.tensor(widths)


def test_default_stem_gives_one_frame_per_four_columns():
    frontend = build("frontend", "ocr_line")
    x, lengths = random_lines([120, 77, 9, 4])
    y, out = frontend(x, lengths)
    assert frontend.output_dim == 96 and frontend.modality == "image" and frontend.frame_shift_s is None
    assert frontend.extensions == (".png", ".jpg", ".jpeg")
    assert y.shape == (4, 30, 96)
    assert out.tolist() == [30, 19, 2, 1] == frontend.output_lengths(lengths).tolist()


@pytest.mark.parametrize(
    "params, frames, dim",
    [
        ({"channels": [8, 16, 24], "pool_width": [2, 1, 1]}, 50, 24),  # depth 3, 2 columns a frame
        ({"channels": [8, 8, 8, 8, 8], "pool_width": [2, 2, 2, 1, 1]}, 12, 8),  # depth 5: height 32 → 1
        ({"channels": [8, 16], "pool_width": [1, 1], "collapse": "flatten"}, 100, 16 * 8),  # 8 rows left
        ({"channels": [8, 16], "pool_width": [2, 1], "collapse": "mean", "height": 48}, 50, 16),
    ],
)
def test_depth_channels_and_pooling_set_frames_and_features(params, frames, dim):
    frontend = build("frontend", "ocr_line", **params)
    x, lengths = random_lines([100, 61], height=params.get("height", 32))
    y, out = frontend(x, lengths)
    assert y.shape == (2, frames, dim) and frontend.output_dim == dim
    assert out.tolist() == frontend.output_lengths(lengths).tolist()
    assert y[1, out[1] :].abs().max() == 0  # frames past a line's length are zero


@pytest.mark.parametrize("train", [False, True])
def test_padding_never_changes_valid_outputs(train):
    torch.manual_seed(0)
    frontend = build("frontend", "ocr_line", channels=[8, 16, 16], pool_width=[2, 2, 1]).train(train)
    widths = [97, 60, 23]
    tight, lengths = random_lines(widths)
    loose, _ = random_lines(widths, total=180)  # the same lines with 83 more columns of padding
    state = {k: v.clone() for k, v in frontend.state_dict().items()}
    y, out = frontend(tight, lengths)
    frontend.load_state_dict(state)  # same running statistics for the second pass
    y_loose, out_loose = frontend(loose, lengths)
    assert out.tolist() == out_loose.tolist() == [24, 15, 5]
    # In training, batch norm divides by statistics summed over the whole padded width: their float32
    # rounding depends on that width (and on the CPU's vector width) and scales the outputs, so the
    # tolerance has a relative part (measured: ≤ 3.4e-6 at |y| ≤ 3.5, over 168 widths from 98 to 600).
    # In eval every position is normalised alone: no reduction over the width, nothing relative.
    rtol = 1e-5 if train else 0.0
    torch.testing.assert_close(y_loose[:, : y.shape[1]], y, rtol=rtol, atol=PAD_TOLERANCE)
    assert y_loose[:, y.shape[1] :].abs().max() == 0
    if not train:  # in eval, a line alone gives the same features as inside the batch
        for i, w in enumerate(widths):
            alone, n = frontend(tight[i : i + 1, :w], lengths[i : i + 1])
            assert (alone[0, : n[0]] - y[i, : n[0]]).abs().max() < PAD_TOLERANCE


def test_batch_norm_statistics_count_valid_columns_only():
    frontend = build("frontend", "ocr_line", channels=[4], pool_width=[1], normalize="none").train()
    x, lengths = random_lines([50, 10], total=400)  # mostly padding
    frontend(x, lengths)
    bn = frontend.blocks[0].bn
    conv = frontend.blocks[0].conv(x.transpose(1, 2)[:, None])
    pooled = torch.nn.functional.max_pool2d(conv, (2, 1))
    valid = torch.cat([pooled[0, :, :, :50], pooled[1, :, :, :10]], dim=-1)  # (C, H, valid columns)
    expected = 0.9 * torch.zeros(4) + 0.1 * valid.mean(dim=(1, 2))
    assert torch.allclose(bn.running_mean, expected.detach(), atol=1e-5)


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match=r"pool_width=\[2\] is invalid; allowed: 2 positive factors"):
        OcrLine(OcrLineConfig(channels=[8, 8], pool_width=[2]))
    with pytest.raises(ValueError, match="collapse='sum' is invalid"):
        build("frontend", "ocr_line", collapse="sum")


def test_wrong_height_is_refused_with_a_hint():
    with pytest.raises(ValueError, match=r"expects lines \(B, width, 32\), got \(1, 50, 40\)"):
        build("frontend", "ocr_line")(torch.zeros(1, 50, 40), torch.tensor([50]))


@needs_font
def test_load_reads_a_png_into_frames_that_fit_its_text(tmp_path):
    frontend = build("frontend", "ocr_line").eval()
    path = save(line_image("abc 123"), tmp_path / "line.png")
    raw = frontend.load(path)
    with torch.no_grad():
        y, out = frontend(raw[None], torch.tensor([raw.shape[0]]))
    assert y.shape == (1, raw.shape[0] // 4, 96) and out.item() >= len("abc 123")

"""How a rendered line looks once printed and scanned: the conditions drawn for each line.

:func:`draw_style` draws how the line is set (size, extra weight, spacing, hinting), which every
renderer of ``rasterizers.py`` honours; :func:`compose_line` turns a renderer's coverage into the
final image, the same way whichever renderer drew it: stroke weight, crop and margins, width,
resolution, perspective, blur, paper and ink, paper texture, uneven lighting, noise, specks,
binarisation. Everything is drawn from the ``numpy`` generator passed in, so a line's look depends
only on its seed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from rasterizers import HINTING, Style  # beside this file: prepare.py puts this folder on sys.path
from scipy import ndimage


def draw_style(rng: np.random.Generator, size: int | None = None) -> Style:
    """How a line is set: size, extra stroke weight, letter and word spacing, hinting."""
    if size is None:  # px per em; one line in ten small, as in a low-resolution scan
        size = int(rng.integers(11, 16) if rng.random() < 0.1 else rng.integers(16, 53))
    bold = int(size >= 16 and rng.random() < 0.2) * (1 + int(size >= 32 and rng.random() < 0.5))
    spaced = rng.random() < 0.35
    return Style(
        size=int(size),
        bold=bold,
        tracking=rng.uniform(-0.04, 0.18) * size if spaced else 0.0,
        word_gap=rng.uniform(0.7, 2.2) if spaced else 1.0,
        hinting=str(rng.choice(HINTING)),
        subpixel=bool(rng.random() < 0.5),
        antialias=bool(rng.random() > 0.05),
    )


def _crop(a: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Rows ``y0:y1``, columns ``x0:x1`` of ``a``, zero where they reach past its edges."""
    out = np.zeros((y1 - y0, x1 - x0), np.float32)
    H, W = a.shape
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, H), max(x0, 0), min(x1, W)
    out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = a[sy0:sy1, sx0:sx1]
    return out


def _resize(a: np.ndarray, width: int, height: int) -> np.ndarray:
    shrink = width < a.shape[1] or height < a.shape[0]
    filt = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(a, "F").resize((max(1, width), max(1, height)), filt), dtype=np.float32)


def _perspective(a: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A slight keystone: the image's corners pulled outwards by up to ``strength`` × its height, independently,
    so nothing is cut off and the line shrinks a little and tilts in depth."""
    H, W = a.shape
    out_pts = np.array([(0, 0), (W, 0), (W, H), (0, H)], np.float64)
    sign = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], np.float64)
    in_pts = out_pts + sign * rng.uniform(0, strength * H, (4, 2)) * np.array([0.5, 1.0])
    # output (x, y) → input ((a x + b y + c) / (g x + h y + 1), (d x + e y + f) / (g x + h y + 1))
    rows = []
    for (x, y), (u, v) in zip(out_pts, in_pts):
        rows.append(([x, y, 1, 0, 0, 0, -u * x, -u * y], u))
        rows.append(([0, 0, 0, x, y, 1, -v * x, -v * y], v))
    coeffs = np.linalg.solve(np.array([r for r, _ in rows]), np.array([b for _, b in rows]))
    img = Image.fromarray(a, "F").transform(
        (W, H), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BILINEAR
    )
    return np.asarray(img, dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Unit-variance-ish noise ``(height, width)`` smooth over ``cell`` px: a coarse grid, bicubically upsampled."""
    g = rng.standard_normal((max(2, int(height / cell) + 2), max(2, int(width / cell) + 2))).astype(
        np.float32
    )
    return np.asarray(
        Image.fromarray(g, "F").resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32
    )


def compose_line(cov: np.ndarray, style: Style, rng: np.random.Generator) -> Image.Image:
    """A rendered line's coverage ``(H, W)`` (H the font's line box) → the line as printed and scanned.

    Every renderer's output goes through this, so the conditions are the same for all: stroke weight,
    crop (line box or tight to the ink) and margins, width and resolution, perspective, blur, paper and
    ink colour, paper texture, uneven lighting, noise, specks, and binarisation. Returns "L" or "RGB".
    """
    # stroke weight after rasterising: a pixel thicker (unless already emboldened) or thinner, in part,
    # and a gamma on the edges
    size = style.size
    w = rng.random()
    if (w < 0.1 and not style.bold) or (0.1 <= w < 0.2 and size >= 20):
        filt = ndimage.maximum_filter if w < 0.1 else ndimage.minimum_filter
        cov = cov + rng.uniform(0.3, 1.0) * (
            filt(cov, footprint=ndimage.generate_binary_structure(2, 1)) - cov
        )
    if rng.random() < 0.3:
        cov = np.clip(cov, 0, 1) ** rng.uniform(0.6, 1.7)

    # crop: the font's line box with margins, or tight around the ink (sometimes shaving a pixel off)
    rows = np.flatnonzero(cov.max(axis=1) > 0.1)
    cols = np.flatnonzero(cov.max(axis=0) > 0.1)
    if rows.size == 0:
        raise ValueError("the rendered line has no ink")
    if rng.random() < 0.25:
        y0, y1 = rows[0], rows[-1] + 1
        top, bottom = rng.uniform(-0.03, 0.2, 2) * size
        left, right = rng.uniform(0.0, 0.3, 2) * size
    else:
        y0, y1 = 0, cov.shape[0]
        top, bottom = rng.uniform(0.0, 0.35, 2) * size
        left, right = rng.uniform(0.05, 0.7, 2) * size
    cov = _crop(cov, y0 - round(top), y1 + round(bottom), cols[0] - round(left), cols[-1] + 1 + round(right))

    H, W = cov.shape
    if rng.random() < 0.3:  # condensed or extended
        W = max(1, round(W * rng.uniform(0.8, 1.25)))
        cov = _resize(cov, W, H)
    if (
        rng.random() < 0.12 and size > 16
    ):  # low resolution: shrunk, half the time enlarged again (blocky, soft)
        f = rng.uniform(max(0.45, 13 / size), 0.8)  # never below 13 px per em: small, still legible
        small = _resize(cov, round(W * f), round(H * f))
        cov = small if rng.random() < 0.5 else _resize(small, W, H)
        H, W = cov.shape
    if rng.random() < 0.25:
        cov = _perspective(cov, rng, strength=0.06)
    if rng.random() < 0.15:
        cov = ndimage.gaussian_filter(cov, rng.uniform(0.3, 0.3 + 0.8 * min(1.0, size / 32)))  # σ px
    cov = np.clip(cov, 0, 1)

    # paper and ink: grey, or (10 %) light ink on dark paper, 30 % tinted colour
    dark = rng.random() < 0.1
    paper = rng.uniform(0, 90) if dark else rng.uniform(170, 255)
    ink = rng.uniform(min(255, paper + 110), 255) if dark else rng.uniform(0, max(0, paper - 110))
    colour = rng.random() < 0.3
    if colour:
        paper_c = np.clip(paper + rng.uniform(-25, 25, 3), 0, 255).astype(np.float32)
        ink_c = np.clip(ink + rng.uniform(-60, 60, 3), 0, 255).astype(np.float32)
    else:
        paper_c, ink_c = np.float32([paper]), np.float32([ink])
    a = paper_c + cov[..., None] * (ink_c - paper_c)  # (H, W, C)

    if rng.random() < 0.4:  # paper texture: fine grain and coarse blotches
        tex = _smooth_noise(rng, H, W, rng.uniform(1.5, 5)) * rng.uniform(2, 12)
        tex += _smooth_noise(rng, H, W, rng.uniform(0.5, 2) * H) * rng.uniform(0, 18)
        a += tex[..., None]
    if rng.random() < 0.4:  # uneven lighting: a gradient in any direction, sometimes a soft shadow
        theta = rng.uniform(0, 2 * np.pi)
        x = np.linspace(-1, 1, W, dtype=np.float32)[None, :]
        y = np.linspace(-1, 1, H, dtype=np.float32)[:, None] * (H / max(W, 1))
        light = 1 + rng.uniform(0.05, 0.3) * (np.cos(theta) * x + np.sin(theta) * y)
        if rng.random() < 0.35:
            centre, width = rng.uniform(-1, 1), rng.uniform(0.1, 0.6)
            light = light * (1 - rng.uniform(0.15, 0.45) * np.exp(-(((x - centre) / width) ** 2)))
        a *= light[..., None]
    if rng.random() < 0.5:  # sensor or paper noise
        a += rng.normal(0, rng.uniform(2, 14), a.shape).astype(np.float32)
    if rng.random() < 0.05:  # specks
        a[rng.random((H, W)) < rng.uniform(0.001, 0.01)] = ink_c
    if rng.random() < 0.08:  # binarised (a thresholding scanner or fax): two levels, no colour
        lum = a.mean(axis=2)
        level = (paper + ink) / 2 + rng.uniform(-0.15, 0.15) * abs(paper - ink)
        is_ink = lum > level if dark else lum < level
        fg, bg = (255.0, 0.0) if dark else (0.0, 255.0)
        return Image.fromarray(np.where(is_ink, fg, bg).astype(np.uint8), "L")
    a = np.clip(a, 0, 255).astype(np.uint8)
    return Image.fromarray(a, "RGB") if colour else Image.fromarray(a[..., 0], "L")

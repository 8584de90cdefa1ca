"""Three programs that set a text line in a given font file: Pillow, ImageMagick and Pango.

Each returns the line's *coverage*: a float32 array ``(height, width)`` in ``[0, 1]`` (1 = full
ink), as tall as the font's line box (ascent + descent at that size) and at least as wide as the
ink. Paper, ink colour and every degradation are added afterwards, the same way for all three
(``prepare.py``), so two renderers of one line differ only in how they lay out and rasterise it:

- ``pillow``: Pillow's FreeType binding, laid out by raqm (or basic layout), strokes by FreeType's
  stroker;
- ``imagemagick``: ImageMagick 6's ``convert … label:``, its own layout (``kern`` table, no
  GPOS), its own stroke rasteriser (Debian package ``imagemagick``);
- ``pango``: ``pango-view``, HarfBuzz shaping through Pango and Cairo, with fontconfig's hinting
  and synthetic emboldening (Debian package ``pango1.0-tools``). Pango picks fonts by name, not
  by file, so each font file gets a fontconfig configuration that knows that file only.

All three load the same ``.ttf``/``.otf`` file, so a font split holds for every renderer.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw, ImageFont

RENDERERS = ("pillow", "imagemagick", "pango")
DEBIAN_PACKAGES = {"pillow": (), "imagemagick": ("imagemagick",), "pango": ("pango1.0-tools",)}
LAYOUT_FEATURES = ["-liga", "-clig", "-dlig", "-calt"]  # no ligatures: œ for "oe", -> or != in coding fonts
PANGO_FEATURES = "liga=0, clig=0, dlig=0, calt=0"  # the same, in Pango markup
HINTING = ("none", "slight", "medium", "full")  # fontconfig hint styles (Pango only)


@dataclass(frozen=True)
class Style:
    """How a line is set; every renderer reads the same fields (hinting only Pango)."""

    size: int  # px per em
    bold: int = 0  # extra stroke weight, px on each side of a stroke (0: the font as designed)
    tracking: float = 0.0  # px added between letters
    word_gap: float = 1.0  # × the font's space
    hinting: str = "slight"  # one of HINTING
    subpixel: bool = True  # Pango: glyphs at fractional positions
    antialias: bool = True  # ImageMagick: False draws bilevel glyphs


class RendererError(RuntimeError):
    """A renderer program is missing or failed."""


def _coverage(img: Image.Image) -> np.ndarray:
    """White-on-black image (any mode, alpha composited over black) → float32 coverage ``(H, W)``."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        a = np.asarray(rgba, dtype=np.float32) / 255.0
        return (a[..., :3].max(axis=2) * a[..., 3]).astype(np.float32)
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


# --- Pillow ------------------------------------------------------------------------------------
_font_cache: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}


def pillow_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    key = (path, size)
    if key not in _font_cache:
        if len(_font_cache) > 512:
            _font_cache.clear()
        _font_cache[key] = ImageFont.truetype(path, size)
    return _font_cache[key]


def rasterize_pillow(text: str, font_path: str, style: Style) -> np.ndarray:
    font = pillow_font(font_path, style.size)
    ascent, descent = font.getmetrics()
    s = style.bold
    spaced = style.tracking != 0 or style.word_gap != 1
    if spaced:  # letter by letter, each advanced by its own width plus the spacing
        xs, x = [], 0.0
        for c in text:
            xs.append(x)
            x += font.getlength(c) * (style.word_gap if c == " " else 1.0) + style.tracking
        width = x - style.tracking
    else:
        width = font.getlength(text, features=LAYOUT_FEATURES)
    box = font.getbbox(text, stroke_width=s, features=LAYOUT_FEATURES)
    pad = style.size // 2 + 2 * s  # italics and strokes reach past the advance box
    W = int(np.ceil(2 * pad + max(width, box[2]) - min(0, box[0])))
    H = int(np.ceil(ascent + descent + 2 * s))
    img = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(img)
    x0, y0 = pad - min(0, box[0]), s
    if spaced:
        for c, x in zip(text, xs):
            if c != " ":
                draw.text((x0 + x, y0), c, font=font, fill=255, stroke_width=s, stroke_fill=255)
    else:
        draw.text(
            (x0, y0), text, font=font, fill=255, stroke_width=s, stroke_fill=255, features=LAYOUT_FEATURES
        )
    return _coverage(img)


# --- ImageMagick -------------------------------------------------------------------------------
def imagemagick_program() -> str | None:
    """ImageMagick 7's ``magick`` or 6's ``convert`` (not GraphicsMagick's), or None."""
    for name in ("magick", "convert"):
        path = shutil.which(name)
        if path and not os.path.realpath(path).endswith("/gm"):
            return path
    return None


def _imagemagick_text(text: str) -> str:
    """``label:`` text with ImageMagick's escapes defused: ``%`` percent escapes, a leading ``@`` (read a file)."""
    t = text.replace("\\", "\\\\").replace("%", "%%")
    return "\\" + t if t.startswith("@") else t


def rasterize_imagemagick(text: str, font_path: str, style: Style) -> np.ndarray:
    program = imagemagick_program()
    if program is None:
        raise RendererError("ImageMagick is not installed: apt-get install imagemagick")
    size = style.size
    cmd = [program, "-density", "72", "-font", font_path, "-pointsize", str(size)]
    cmd += ["-background", "black", "-fill", "white", "-kerning", f"{style.tracking:.2f}"]
    if not style.antialias:
        cmd.append("+antialias")
    if style.word_gap != 1:
        space = pillow_font(font_path, size).getlength(" ")  # the font's space, px
        cmd += ["-interword-spacing", f"{space * style.word_gap + style.tracking:.2f}"]
    if style.bold:
        cmd += ["-stroke", "white", "-strokewidth", str(2 * style.bold)]  # a stroke is centred on the outline
    # a space at each end keeps italic overhangs inside the label's box
    cmd += [f"label: {_imagemagick_text(text)} ", "png:-"]
    p = subprocess.run(cmd, capture_output=True)
    if p.returncode != 0 or not p.stdout:
        raise RendererError(
            f"{' '.join(cmd[:1])} failed on {text!r} in {font_path}: {p.stderr.decode()[-300:]}"
        )
    return _coverage(Image.open(io.BytesIO(p.stdout)))


# --- Pango -------------------------------------------------------------------------------------
# fontconfig: this one file, and the synthetic emboldening of Debian's conf.d/90-synthetic.conf
_FONTCONFIG = """<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig>
  <dir>{dir}</dir>
  <cachedir>{dir}/cache</cachedir>
  <match target="font">
    <test name="weight" compare="less_eq"><const>medium</const></test>
    <test target="pattern" name="weight" compare="more_eq"><const>bold</const></test>
    <edit name="embolden" mode="assign"><bool>true</bool></edit>
    <edit name="weight" mode="assign"><const>bold</const></edit>
  </match>
</fontconfig>
"""


def pango_fontconfig(font_path: str, workdir: Path) -> Path:
    """A fontconfig file under ``workdir`` whose only font is ``font_path`` (made once, safe across processes).

    Checked with ``fc-list`` when made: a configuration fontconfig cannot use makes it fall back to the
    system's fonts silently, and Pango would draw every line in the default sans.
    """
    # absolute: fontconfig reads a relative <dir> against its own search path, finds nothing there and
    # falls back to the system's fonts
    d = Path(workdir).resolve() / hashlib.sha1(font_path.encode()).hexdigest()[:16]
    conf = d / "fonts.conf"
    if not conf.exists():
        d.mkdir(parents=True, exist_ok=True)
        link = d / ("font" + Path(font_path).suffix.lower())
        if not link.exists():
            try:
                link.symlink_to(Path(font_path).resolve())
            except FileExistsError:
                pass
        tmp = d / f"fonts.conf.{os.getpid()}"
        tmp.write_text(_FONTCONFIG.format(dir=d))
        env = {**os.environ, "FONTCONFIG_FILE": str(tmp)}
        listed = subprocess.run(["fc-list", "--format=%{file}\\n"], capture_output=True, text=True, env=env)
        if listed.stdout.split() != [str(link)]:
            raise RendererError(
                f"fontconfig with {tmp} lists {listed.stdout.split()[:3]} instead of only {link} "
                f"({font_path}): {listed.stderr.strip()[-200:]}"
            )
        tmp.replace(conf)
    return conf


def rasterize_pango(text: str, font_path: str, style: Style, workdir: Path) -> np.ndarray:
    program = shutil.which("pango-view")
    if program is None:
        raise RendererError("pango-view is not installed: apt-get install pango1.0-tools")
    conf = pango_fontconfig(font_path, workdir)
    spacing = int(round(style.tracking * 1024))  # Pango units: 1024 per point, and a point is a pixel here
    body = escape(text)
    if style.word_gap != 1:  # a space's own letter spacing widens it
        space = pillow_font(font_path, style.size).getlength(" ")
        extra = int(round((space * (style.word_gap - 1) + style.tracking) * 1024))
        body = body.replace(" ", f'<span letter_spacing="{extra}"> </span>')
    markup = f'<span font_features="{PANGO_FEATURES}" letter_spacing="{spacing}">{body}</span>'
    out = Path(workdir) / f"line.{os.getpid()}.png"
    cmd = [program, "-q", "--pixels", f"--font=Sans {'Bold ' if style.bold else ''}{style.size}"]
    cmd += [f"--hinting={style.hinting}", f"--margin={style.size // 2}", "--background=black"]
    cmd += ["--foreground=white", "--markup", f"--text={markup}", "-o", str(out)]
    if style.subpixel:
        cmd.append("--subpixel-positions")
    p = subprocess.run(cmd, capture_output=True, env={**os.environ, "FONTCONFIG_FILE": str(conf)})
    if p.returncode != 0 or not out.exists():
        raise RendererError(f"pango-view failed on {text!r} in {font_path}: {p.stderr.decode()[-300:]}")
    with Image.open(out) as img:
        cov = _coverage(img)
    out.unlink()
    m = style.size // 2
    return cov[m : cov.shape[0] - m]  # the line box: Pango's margin is removed above and below


def rasterize(renderer: str, text: str, font_path: str, style: Style, workdir: Path) -> np.ndarray:
    """``text`` in ``font_path`` by ``renderer`` → coverage ``(H, W)`` float32 in [0, 1], H the line box.

    ``workdir`` holds Pango's per-font fontconfig files (reused across calls and processes).
    """
    if renderer == "pillow":
        return rasterize_pillow(text, font_path, style)
    if renderer == "imagemagick":
        return rasterize_imagemagick(text, font_path, style)
    if renderer == "pango":
        return rasterize_pango(text, font_path, style, workdir)
    raise ValueError(f"unknown renderer {renderer!r}; choose from {', '.join(RENDERERS)}")

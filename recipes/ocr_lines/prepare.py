"""Render a printed text-line corpus offline from the fonts of Debian's font packages.

Every line is one to eight tokens — dictionary words (``wamerican``), a few random letter
strings, numbers, prices, times, dates, and common punctuation — set in one font at a random
size, with random stroke (emboldening), letter and word spacing, margins, paper, ink, noise and
compression, and saved as a PNG or JPEG (grayscale or colour) with its transcript.

Fonts are split by *design group*: a family together with its clones and derivatives (e.g.
Helvetica's: Nimbus Sans, TeX Gyre Heros, FreeSans, Liberation Sans, Arimo; Vera's: DejaVu,
Hack, Verana), so no design of the dev or test fonts is seen in training. Design groups not
listed in ``CLONE_GROUPS`` are the Debian package their font comes from.

Output (paths in the manifests are relative to ``--out``)::

    <out>/images/{train,dev,test}/000001.png|.jpg
    <out>/{train,dev,test}.jsonl   {"image_filepath", "text", "font", "group"}
    <out>/fonts.json               the design groups and font files of each split
    <out>/charset.txt              every character a transcript may use

Example::

    python recipes/ocr_lines/prepare.py --out data/ocr_lines --jobs 2

The output depends only on the arguments and the installed font packages, not on ``--jobs``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import string
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from speechkit.data.manifest import write_manifest

# --- characters ------------------------------------------------------------------------------
PUNCTUATION = ".,;:!?'\"()[]-/&%$#@+*="
CHARSET = string.ascii_lowercase + string.ascii_uppercase + string.digits + " " + PUNCTUATION

# --- fonts -------------------------------------------------------------------------------------
FONT_PACKAGES = (  # text faces only: no symbol, icon, script, handwriting or display-only packages
    "fonts-dejavu-core fonts-dejavu-extra fonts-liberation2 fonts-freefont-ttf fonts-urw-base35 "
    "fonts-crosextra-carlito fonts-crosextra-caladea fonts-roboto-unhinted fonts-roboto-slab fonts-croscore "
    "fonts-open-sans fonts-lato fonts-cantarell fonts-go fonts-hack fonts-inconsolata fonts-sil-gentiumplus "
    "fonts-sil-gentium-basic fonts-sil-charis fonts-sil-andika fonts-sil-doulos fonts-linuxlibertine "
    "fonts-ebgaramond fonts-texgyre fonts-lmodern fonts-cmu fonts-oxygen fonts-cabin fonts-karla "
    "fonts-junction fonts-quattrocento fonts-b612 fonts-clear-sans fonts-comic-neue fonts-dosis fonts-jura "
    "fonts-manrope fonts-jetbrains-mono fonts-firacode fonts-paratype fonts-tuffy fonts-oldstandard "
    "fonts-stix fonts-goudybookletter fonts-fanwood fonts-play fonts-tiresias fonts-noto-core "
    "fonts-noto-mono fonts-inter fonts-adf-accanthis fonts-adf-baskervald fonts-adf-berenis "
    "fonts-adf-gillius fonts-adf-universalis fonts-adf-verana fonts-adf-libris fonts-adf-switzera "
    "fonts-mononoki fonts-sora fonts-league-spartan fonts-averia-sans-gwf fonts-averia-serif-gwf "
    "fonts-arapey fonts-century-catalogue fonts-prociono fonts-ocr-b fonts-lindenhill "
    "fonts-gfs-neohellenic fonts-hermit fonts-vollkorn fonts-monoid"
).split()
WORDS_PACKAGE, WORDS_FILE = "wamerican", Path("/usr/share/dict/american-english")

# Families that are clones or derivatives of one design; a group lies wholly in one split.
CLONE_GROUPS = {
    "helvetica": ("Nimbus Sans", "TeX Gyre Heros", "FreeSans", "Liberation Sans", "Arimo"),
    "times": (
        "Nimbus Roman",
        "TeX Gyre Termes",
        "FreeSerif",
        "Liberation Serif",
        "Tinos",
        "STIX",
        "STIXGeneral",
        "Doulos SIL",
    ),
    "courier": ("Nimbus Mono", "TeX Gyre Cursor", "FreeMono", "Liberation Mono", "Cousine"),
    "palatino": ("P052", "TeX Gyre Pagella"),
    "century-schoolbook": ("C059", "TeX Gyre Schola", "Century Catalogue"),
    "bookman": ("URW Bookman", "TeX Gyre Bonum"),
    "avant-garde": ("URW Gothic", "TeX Gyre Adventor"),
    "computer-modern": ("Latin Modern", "CMU"),
    "vera": ("DejaVu", "Hack", "Verana"),
    "open-sans-noto": ("Open Sans", "Noto"),
    "gentium": ("Gentium",),
}
# Not text faces, or faces whose lowercase is not lowercase (small capitals, key caps).
EXCLUDED_FAMILIES = re.compile(
    r"Symbol|Dingbat|D050000L|Math|Z003|Chorus|Keyboard|Keyfont|Small ?caps|\bCaps\b|Dunhill|Monoisome",
    re.IGNORECASE,
)
# Design groups held out of training. Test: serif, sans and monospaced designs of several kinds.
TEST_GROUPS = (
    "palatino",
    "fonts-sil-charis",
    "fonts-paratype",
    "fonts-go",
    "fonts-cabin",
    "fonts-b612",
    "fonts-adf-gillius",
    "fonts-vollkorn",
    "fonts-jetbrains-mono",
    "fonts-crosextra-caladea",
)
DEV_GROUPS = ("bookman", "fonts-lato", "fonts-sil-andika", "fonts-oldstandard", "fonts-hermit")
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Font:
    path: str
    family: str
    style: str
    package: str
    group: str

    @property
    def name(self) -> str:
        return f"{self.family} {self.style}".strip()


def missing_packages(packages: list[str]) -> list[str]:
    def installed(p: str) -> bool:
        q = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True)
        return q.returncode == 0 and q.stdout.endswith(" installed")

    return [p for p in packages if not installed(p)]


def ensure_packages(packages: list[str], install: bool) -> None:
    """Install the Debian packages that are missing (apt-get, as root or through sudo), or say how."""
    missing = missing_packages(packages)
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    cmd = " ".join(sudo + ["apt-get", "install", "-y", "--no-install-recommends", *missing])
    if not install:
        sys.exit(
            f"error: {len(missing)} Debian package(s) missing; run:\n  {' '.join(sudo)} apt-get update && {cmd}"
        )
    print(f"installing {len(missing)} Debian package(s): {' '.join(missing)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        sys.exit(f"error: installing the font packages failed ({e}); run:\n  {cmd}")


def design_group(family: str, package: str) -> str:
    for group, prefixes in CLONE_GROUPS.items():
        if any(family == p or family.startswith(p + " ") or family.startswith(p + "-") for p in prefixes):
            return group
    return package


def font_names(path: str) -> tuple[str, str] | None:
    """(family, style) of a font file when its character map covers ``CHARSET``, else None."""
    from fontTools.ttLib import TTFont, TTLibError

    try:
        with TTFont(path, fontNumber=0, lazy=True) as f:
            cmap = f.getBestCmap() or {}
            if not all(ord(c) in cmap for c in CHARSET if c != " "):
                return None
            names = f["name"]
            family = names.getDebugName(16) or names.getDebugName(1) or Path(path).stem
            style = names.getDebugName(17) or names.getDebugName(2) or ""
    except (TTLibError, OSError, KeyError, AssertionError):
        return None
    return family, "" if style == "Regular" else style


def renders_every_character(path: str) -> bool:
    """Every non-space character of ``CHARSET`` draws some ink (no empty or missing glyphs)."""
    try:
        font = ImageFont.truetype(path, 24)
    except OSError:
        return False
    for c in CHARSET.replace(" ", ""):
        box = font.getbbox(c)
        if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
            return False
    return True


def discover_fonts(packages: list[str]) -> list[Font]:
    """The usable text fonts of the installed ``packages``, sorted by path."""
    fonts = []
    for package in packages:
        listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True).stdout.split("\n")
        for path in sorted(p for p in listing if p.lower().endswith((".ttf", ".otf"))):
            if not Path(path).is_file():
                continue
            names = font_names(path)
            if names is None or EXCLUDED_FAMILIES.search(names[0]) or not renders_every_character(path):
                continue
            fonts.append(Font(path, names[0], names[1], package, design_group(names[0], package)))
    return sorted(set(fonts), key=lambda f: f.path)


def assign_splits(fonts: list[Font], test_groups=TEST_GROUPS, dev_groups=DEV_GROUPS) -> dict[str, list[Font]]:
    """Fonts of each split by design group: test and dev groups as listed, every other group trains."""
    overlap = set(test_groups) & set(dev_groups)
    if overlap:
        raise ValueError(f"design groups both in dev and test: {sorted(overlap)}")
    splits: dict[str, list[Font]] = {s: [] for s in SPLITS}
    for f in fonts:
        split = "test" if f.group in test_groups else "dev" if f.group in dev_groups else "train"
        splits[split].append(f)
    return splits


# --- text --------------------------------------------------------------------------------------
def load_words(path: Path = WORDS_FILE) -> list[str]:
    """Dictionary words of letters (and a possessive or contraction), at most 14 characters."""
    pattern = re.compile(r"^[A-Za-z]+('[a-z]+)?$")
    return sorted({w for w in path.read_text(encoding="utf-8").split() if pattern.match(w) and len(w) <= 14})


def _word(rng: np.random.Generator, words: list[str]) -> str:
    """A dictionary word; a third of the dictionary is possessives, so those are redrawn 70 % of the time."""
    w = words[rng.integers(len(words))]
    if "'" in w and rng.random() < 0.7:
        w = words[rng.integers(len(words))]
    return w


def _number(rng: np.random.Generator) -> str:
    kind = rng.choice(12)
    if kind < 4:
        return str(int(rng.integers(0, 10 ** rng.integers(1, 6))))
    if kind == 4:
        return f"{rng.integers(0, 1000)}.{rng.integers(0, 100):02d}"
    if kind == 5:
        return f"${rng.integers(1, 10000)}.{rng.integers(0, 100):02d}"
    if kind == 6:
        return f"{rng.integers(0, 24)}:{rng.integers(0, 60):02d}"
    if kind == 7:
        return f"{rng.integers(1, 101)}%"
    if kind == 8:
        return f"{rng.integers(1, 32)}/{rng.integers(1, 13)}/{rng.integers(1950, 2040)}"
    if kind == 9:
        return f"{rng.integers(100, 1000)}-{rng.integers(1000, 10000)}"
    if kind == 10:
        return f"#{rng.integers(1, 1000)}"
    return f"{rng.integers(1, 100)}{rng.choice(['+', '-', '*', '/', '='])}{rng.integers(1, 100)}"


def _symbolic(rng: np.random.Generator, words: list[str]) -> str:
    a, b = (words[i].lower().split("'")[0] for i in rng.integers(0, len(words), 2))
    kind = rng.choice(6)
    if kind == 0:
        return "&"
    if kind == 1:
        return f"@{a}"
    if kind == 2:
        return f"{a}@{b}.{rng.choice(['com', 'org', 'net'])}"
    if kind == 3:
        return f"{a}/{b}"
    if kind == 4:
        return f"{a}-{b}"
    return f"{a}+{b}={rng.integers(1, 100)}"


def make_text(rng: np.random.Generator, words: list[str], max_chars: int = 48) -> str:
    """One line of one to eight tokens in ``CHARSET``, at most ``max_chars`` characters."""
    n = int(rng.choice(np.arange(1, 9), p=[0.10, 0.15, 0.19, 0.18, 0.15, 0.11, 0.07, 0.05]))
    style = rng.choice(4, p=[0.6, 0.2, 0.12, 0.08])  # sentence, lowercase, Title Case, UPPER
    tokens: list[str] = []
    for i in range(n):
        r = rng.random()
        if r < 0.76:
            w = _word(rng, words)
            w = w if w[0].isupper() and style != 1 else w.lower()
            if style == 2 or (style == 0 and i == 0):
                w = w[0].upper() + w[1:]
            elif style == 3 or rng.random() < 0.03:
                w = w.upper()
        elif r < 0.81:  # a random letter string: not every line is dictionary words
            letters = string.ascii_uppercase if style == 3 else string.ascii_lowercase
            w = "".join(rng.choice(list(letters), size=int(rng.integers(2, 9))))
        elif r < 0.93:
            w = _number(rng)
        else:
            w = _symbolic(rng, words)
        p = rng.random()
        if p < 0.03:
            w = f'"{w}"'
        elif p < 0.05:
            w = f"({w})"
        elif p < 0.06:
            w = f"[{w}]"
        elif p < 0.07:
            w = f"'{w}'"
        last = i == n - 1
        q = rng.random()
        if q < (0.35 if last else 0.08):
            w += "." if rng.random() < 0.6 or not last else rng.choice(["!", "?"])
        elif q < (0.45 if last else 0.16):
            w += str(rng.choice([",", ";", ":", "!", "?", "..."] if last else [",", ",", ",", ";", ":"]))
        if tokens and len(" ".join(tokens)) + 1 + len(w) > max_chars:
            break
        tokens.append(w[:max_chars])
    return " ".join(tokens)


# --- rendering ---------------------------------------------------------------------------------
_font_cache: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}
LAYOUT_FEATURES = ["-liga", "-clig", "-dlig", "-calt"]  # no ligatures: œ for "oe", -> or != in coding fonts


def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    key = (path, size)
    if key not in _font_cache:
        if len(_font_cache) > 512:
            _font_cache.clear()
        _font_cache[key] = ImageFont.truetype(path, size)
    return _font_cache[key]


def render_line(text: str, font_path: str, rng: np.random.Generator, size: int | None = None) -> Image.Image:
    """``text`` set in one font on varied paper: an "L" or "RGB" image a little taller than the font."""
    size = int(size or rng.integers(16, 49))  # px per em
    font = _font(font_path, size)
    ascent, descent = font.getmetrics()
    stroke = int(rng.random() < 0.15) * (1 + int(size >= 36 and rng.random() < 0.5))
    spaced = rng.random() < 0.35
    tracking = rng.uniform(-0.03, 0.15) * size if spaced else 0.0  # px between letters
    word_gap = rng.uniform(0.7, 2.0) if spaced else 1.0  # × the font's space
    # x positions: natural layout (kerning, ligatures), or letter by letter with extra spacing
    if spaced:
        xs, x = [], 0.0
        for c in text:
            xs.append(x)
            x += font.getlength(c) * (word_gap if c == " " else 1.0) + tracking
        width = x - tracking
    else:
        width = font.getlength(text, features=LAYOUT_FEATURES)
    box = font.getbbox(text, stroke_width=stroke, features=LAYOUT_FEATURES)
    left, right = rng.uniform(0.05, 0.7, 2) * size
    top, bottom = rng.uniform(0.0, 0.35, 2) * size
    ink_left = min(0, box[0])  # some italics reach left of the origin
    W = int(np.ceil(left - ink_left + max(width, box[2]) + right + 2 * stroke))
    H = int(np.ceil(top + ascent + descent + bottom + 2 * stroke))
    origin = (left - ink_left + stroke, top + stroke)

    dark = rng.random() < 0.1  # light ink on dark paper
    paper = rng.uniform(0, 90) if dark else rng.uniform(170, 255)
    ink = rng.uniform(min(255, paper + 110), 255) if dark else rng.uniform(0, max(0, paper - 110))
    colour = rng.random() < 0.3
    if colour:
        tint = rng.uniform(-25, 25, 3)
        paper_rgb = tuple(int(np.clip(paper + t, 0, 255)) for t in tint)
        ink_rgb = tuple(int(np.clip(ink + t, 0, 255)) for t in rng.uniform(-60, 60, 3))
        img = Image.new("RGB", (W, H), paper_rgb)
        fill: int | tuple[int, ...] = ink_rgb
    else:
        img = Image.new("L", (W, H), int(paper))
        fill = int(ink)
    draw = ImageDraw.Draw(img)
    if spaced:
        for c, x in zip(text, xs):
            if c != " ":
                draw.text(
                    (origin[0] + x, origin[1]), c, font=font, fill=fill, stroke_width=stroke, stroke_fill=fill
                )
    else:
        draw.text(
            origin,
            text,
            font=font,
            fill=fill,
            stroke_width=stroke,
            stroke_fill=fill,
            features=LAYOUT_FEATURES,
        )

    a = np.asarray(img, dtype=np.float32)
    if rng.random() < 0.3:  # uneven lighting: a gradient across the line
        ramp = np.linspace(-1, 1, W, dtype=np.float32) * rng.uniform(-30, 30)
        a = a + (ramp[None, :, None] if a.ndim == 3 else ramp[None, :])
    if rng.random() < 0.5:  # sensor or paper noise
        a = a + rng.normal(0, rng.uniform(2, 14), a.shape).astype(np.float32)
    if rng.random() < 0.05:  # specks
        mask = rng.random(a.shape[:2]) < rng.uniform(0.001, 0.01)
        a[mask] = ink
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB" if colour else "L")


def _render_task(task: tuple) -> dict:
    """Render and save one line; the seed fixes text, font, style and format."""
    index, split, seed, out, fonts, words = task
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    text = make_text(rng, words)
    group = fonts[int(rng.integers(len(fonts)))]
    family = group[int(rng.integers(len(group)))]
    font: Font = family[int(rng.integers(len(family)))]
    img = render_line(text, font.path, rng)
    jpeg = rng.random() < 0.3
    rel = Path("images") / split / f"{index + 1:06d}.{'jpg' if jpeg else 'png'}"
    if jpeg:
        img.save(out / rel, quality=int(rng.integers(40, 96)))
    else:
        img.save(out / rel, optimize=False, compress_level=6)
    return {"image_filepath": str(rel), "text": text, "font": font.name, "group": font.group}


_shared: dict = {}


def _init_worker(fonts: dict, words: list[str]) -> None:
    _shared["fonts"], _shared["words"] = fonts, words


def _task_in_worker(args: tuple) -> dict:
    index, split, seed, out = args
    return _render_task((index, split, seed, out, _shared["fonts"][split], _shared["words"]))


def font_pool(fonts: list[Font]) -> list[list[list[Font]]]:
    """Fonts of a split as design groups → families → styles, each level sorted. A line draws a
    group, then a family, then a style, so a design with many families or styles (Computer
    Modern has 23 families) is not drawn more often than one with a single font file."""
    tree: dict[str, dict[str, list[Font]]] = defaultdict(lambda: defaultdict(list))
    for f in fonts:
        tree[f.group][f.family].append(f)
    return [[sorted(tree[g][fam], key=lambda f: f.path) for fam in sorted(tree[g])] for g in sorted(tree)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("data/ocr_lines"))
    ap.add_argument("--num-train", type=int, default=30000)
    ap.add_argument("--num-dev", type=int, default=300)
    ap.add_argument("--num-test", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)))
    ap.add_argument(
        "--no-install", action="store_true", help="print the apt-get command instead of running it"
    )
    ap.add_argument("--list-fonts", action="store_true", help="print the fonts of each split and stop")
    args = ap.parse_args(argv)

    ensure_packages([*FONT_PACKAGES, WORDS_PACKAGE], install=not args.no_install)
    fonts = discover_fonts(list(FONT_PACKAGES))
    splits = assign_splits(fonts)
    for split in SPLITS:
        if not splits[split]:
            sys.exit(f"error: no fonts for the {split} split; are the font packages installed?")
    groups = {s: sorted({f.group for f in splits[s]}) for s in SPLITS}
    assert not (set(groups["train"]) & (set(groups["dev"]) | set(groups["test"]))), "font groups overlap"
    for split in SPLITS:
        fams = Counter(f.family for f in splits[split])
        print(
            f"{split}: {len(groups[split])} design groups, {len(fams)} families, {len(splits[split])} font files"
        )
        if args.list_fonts:
            for group in groups[split]:
                print(
                    f"  {group}: {', '.join(sorted({f.family for f in splits[split] if f.group == group}))}"
                )
    if args.list_fonts:
        return 0

    words = load_words()
    out: Path = args.out
    sizes = {"train": args.num_train, "dev": args.num_dev, "test": args.num_test}
    pools = {s: font_pool(splits[s]) for s in SPLITS}
    for split in SPLITS:
        if (out / "images" / split).exists():
            shutil.rmtree(out / "images" / split)
        (out / "images" / split).mkdir(parents=True)
    from tqdm import tqdm

    t0 = time.time()
    tasks = [(i, s, args.seed, out) for s in SPLITS for i in range(sizes[s])]
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    with multiprocessing.Pool(args.jobs, initializer=_init_worker, initargs=(pools, words)) as pool:
        results = pool.imap(_task_in_worker, tasks, chunksize=32)
        for (_, split, _, _), row in tqdm(
            zip(tasks, results), total=len(tasks), desc="render", unit="line", mininterval=2.0
        ):
            rows[split].append(row)
    for split in SPLITS:
        bad = [r["text"] for r in rows[split] if set(r["text"]) - set(CHARSET)]
        assert not bad, f"characters outside CHARSET in {bad[:3]}"
        write_manifest(out / f"{split}.jsonl", rows[split])
    (out / "charset.txt").write_text(CHARSET + "\n")
    (out / "fonts.json").write_text(
        json.dumps(
            {
                s: {g: sorted({f"{f.name} ({f.path})" for f in splits[s] if f.group == g}) for g in groups[s]}
                for s in SPLITS
            },
            indent=1,
        )
        + "\n"
    )
    n = sum(sizes.values())
    print(
        f"wrote {n} lines to {out} in {time.time() - t0:.0f} s "
        f"({', '.join(f'{s} {sizes[s]}' for s in SPLITS)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

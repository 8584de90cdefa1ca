"""Render a printed text-line corpus offline from the fonts of Debian's font packages, by several renderers.

Every line is one to eight tokens — dictionary words (``wamerican``), a few random letter
strings, numbers, prices, times, dates, and common punctuation — set in one font by one of the
training renderers (``--renderers``: Pillow, ImageMagick; ``rasterizers.py``) at a random size, with
random stroke weight, letter and word spacing and hinting, then cropped (line box or tight to the
ink) with random margins, stretched, sometimes shrunk to low resolution or seen in slight
perspective, blurred, and printed on varied paper (colour, texture, uneven lighting), with noise,
specks, binarisation or JPEG compression; saved as a PNG or JPEG (grayscale or colour) with its
transcript.

Fonts are split by *design group*: a family together with its clones and derivatives (e.g.
Helvetica's: Nimbus Sans, TeX Gyre Heros, FreeSans, Liberation Sans, Arimo; Vera's: DejaVu,
Hack, Verana), so no design of the dev or test fonts is seen in training. Design groups not
listed in ``CLONE_GROUPS`` are the Debian package their font comes from. A renderer held out of
training (``--test-renderer``, default Pango) draws the test lines once more, the same text, font
and conditions line by line, so a model is also measured on a rasteriser it never saw.

Output (paths in the manifests are relative to ``--out``)::

    <out>/images/{train,dev,test,test_pango}/000001.png|.jpg
    <out>/{train,dev,test,test_pango}.jsonl   {"image_filepath", "text", "font", "group", "renderer", "width", "height"}
    <out>/fonts.json               the design groups and font files of each split
    <out>/charset.txt              every character a transcript may use

Example::

    python recipes/ocr_lines/prepare.py --out data/ocr_lines --jobs 2

The output depends only on the arguments and the installed Debian packages, not on ``--jobs``.
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
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFont

from speechkit.data.manifest import write_manifest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # rasterizers.py beside this script
from conditions import compose_line, draw_style  # noqa: E402
from rasterizers import DEBIAN_PACKAGES, RENDERERS, rasterize  # noqa: E402

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
# Not text faces, faces whose lowercase is not lowercase (small capitals, key caps), or inverted
# faces (light letters cut out of dark boxes, OCR B's "Inverted"); matched on family and style.
EXCLUDED_FAMILIES = re.compile(
    r"Symbol|Dingbat|D050000L|Math|Z003|Chorus|Keyboard|Keyfont|Small ?caps|\bCaps\b|Dunhill|Monoisome|Inverted",
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
        sys.exit(f"error: installing the Debian packages failed ({e}); run:\n  {cmd}")


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
            if (
                names is None
                or EXCLUDED_FAMILIES.search(" ".join(names))
                or not renders_every_character(path)
            ):
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
def render_line(
    text: str,
    font_path: str,
    rng: np.random.Generator,
    renderer: str = "pillow",
    workdir: Path | None = None,
    size: int | None = None,
) -> Image.Image:
    """``text`` set in one font by ``renderer`` on varied paper: an "L" or "RGB" image a little taller than the font."""
    style = draw_style(rng, size)
    cov = rasterize(
        renderer, text, font_path, style, workdir or Path(tempfile.gettempdir()) / "ocr_lines_fontconfig"
    )
    return compose_line(cov, style, rng)


def _render_task(task: tuple) -> dict:
    """Render and save one line. The seed and the split's *kind* (train, dev, test) fix text, font, style and
    conditions; a test set of another renderer (``test_pango``) has the same lines as ``test``, drawn by that one."""
    index, split, seed, out, fonts, words, renderers = task
    kind, _, forced = split.partition("_")
    rng = np.random.default_rng([seed, SPLITS.index(kind), index])
    text = make_text(rng, words)
    group = fonts[int(rng.integers(len(fonts)))]
    family = group[int(rng.integers(len(group)))]
    font: Font = family[int(rng.integers(len(family)))]
    if forced:
        renderer = forced
    else:  # its own generator, so that the line is the same whichever renderers are in use
        renderer = renderers[
            int(np.random.default_rng([seed, SPLITS.index(kind), index, 1]).integers(len(renderers)))
        ]
    img = render_line(text, font.path, rng, renderer, out / "fontconfig")
    jpeg = rng.random() < 0.3
    rel = Path("images") / split / f"{index + 1:06d}.{'jpg' if jpeg else 'png'}"
    if jpeg:
        img.save(out / rel, quality=int(rng.integers(15, 96)))
    else:
        img.save(out / rel, optimize=False, compress_level=6)
    return {
        "image_filepath": str(rel),
        "text": text,
        "font": font.name,
        "group": font.group,
        "renderer": renderer,
        "width": img.width,  # pixels: the trainer batches lines of similar width / height together
        "height": img.height,
    }


_shared: dict = {}


def _init_worker(fonts: dict, words: list[str], renderers: tuple[str, ...]) -> None:
    _shared["fonts"], _shared["words"], _shared["renderers"] = fonts, words, renderers


def _task_in_worker(args: tuple) -> dict:
    index, split, seed, out = args
    fonts = _shared["fonts"][split.partition("_")[0]]
    return _render_task((index, split, seed, out, fonts, _shared["words"], _shared["renderers"]))


def font_pool(fonts: list[Font]) -> list[list[list[Font]]]:
    """Fonts of a split as design groups → families → styles, each level sorted. A line draws a
    group, then a family, then a style, so a design with many families or styles (Computer
    Modern has 23 families) is not drawn more often than one with a single font file."""
    tree: dict[str, dict[str, list[Font]]] = defaultdict(lambda: defaultdict(list))
    for f in fonts:
        tree[f.group][f.family].append(f)
    return [[sorted(tree[g][fam], key=lambda f: f.path) for fam in sorted(tree[g])] for g in sorted(tree)]


def parse_renderers(renderers: str, test_renderer: str) -> tuple[tuple[str, ...], str | None]:
    """``"pillow,imagemagick"``, ``"pango"`` → the training renderers and the held-out one (``"none"``: None)."""
    train = tuple(r.strip() for r in renderers.split(",") if r.strip())
    held = None if test_renderer in ("", "none") else test_renderer
    unknown = sorted(set(train) - set(RENDERERS)) + ([held] if held and held not in RENDERERS else [])
    if unknown or not train:
        raise ValueError(f"unknown renderer(s) {unknown or [renderers]}; choose from {', '.join(RENDERERS)}")
    if held in train:
        raise ValueError(
            f"--test-renderer {held} is also in --renderers {','.join(train)}: a held-out renderer must not train"
        )
    return train, held


def render_corpus(
    out: Path,
    pools: dict[str, list],
    words: list[str],
    sizes: dict[str, int],
    renderers: tuple[str, ...],
    seed: int,
    jobs: int,
) -> dict[str, list[dict]]:
    """Render ``sizes[split]`` lines of each split into ``out/images/<split>/`` and return their manifest rows.

    ``pools`` are the font pools of train, dev and test (:func:`font_pool`). A split ``test_<renderer>`` draws
    the lines of ``test`` by that renderer alone; every other split draws each line by one of ``renderers``.
    """
    from tqdm import tqdm

    for split in sizes:
        if (out / "images" / split).exists():
            shutil.rmtree(out / "images" / split)
        (out / "images" / split).mkdir(parents=True)
    tasks = [(i, s, seed, out) for s in sizes for i in range(sizes[s])]
    rows: dict[str, list[dict]] = {s: [] for s in sizes}
    with multiprocessing.Pool(jobs, initializer=_init_worker, initargs=(pools, words, renderers)) as pool:
        results = pool.imap(_task_in_worker, tasks, chunksize=32)
        for (_, split, _, _), row in tqdm(
            zip(tasks, results), total=len(tasks), desc="render", unit="line", mininterval=2.0
        ):
            rows[split].append(row)
    shutil.rmtree(out / "fontconfig", ignore_errors=True)
    return rows


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
        "--renderers",
        default="pillow,imagemagick",
        help=f"renderers of train, dev and test, each line one of them (from {', '.join(RENDERERS)})",
    )
    ap.add_argument(
        "--test-renderer",
        default="pango",
        help="a renderer never used in training: it draws test_<renderer>.jsonl, the lines of test.jsonl "
        "(same text, font and conditions); 'none' for no such set",
    )
    ap.add_argument(
        "--no-install", action="store_true", help="print the apt-get command instead of running it"
    )
    ap.add_argument("--list-fonts", action="store_true", help="print the fonts of each split and stop")
    args = ap.parse_args(argv)
    try:
        renderers, held = parse_renderers(args.renderers, args.test_renderer)
    except ValueError as e:
        ap.error(str(e))

    programs = [p for r in (*renderers, held) if r for p in DEBIAN_PACKAGES[r]]
    ensure_packages([*FONT_PACKAGES, WORDS_PACKAGE, *programs], install=not args.no_install)
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
    if held:
        sizes[f"test_{held}"] = args.num_test
    pools = {s: font_pool(splits[s]) for s in SPLITS}
    t0 = time.time()
    rows = render_corpus(out, pools, words, sizes, renderers, args.seed, args.jobs)
    trained_on = {r["renderer"] for s in ("train", "dev") for r in rows[s]}
    assert held not in trained_on, f"the held-out renderer {held} drew training lines"
    for split in sizes:
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
        f"({', '.join(f'{s} {sizes[s]}' for s in sizes)}; renderers {', '.join(renderers)}"
        f"{f', held out: {held}' if held else ''})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ocr_lines recipe: its text and font split, an overfit on a few rendered lines, and the command line
(train briefly on rendered PNGs, transcribe a PNG, a folder and a manifest, refuse bad input)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from speechkit.data.dataset import ManifestDataset, collate
from speechkit.data.errors import DataError
from speechkit.data.manifest import read_manifest
from speechkit.data.tokenizer import CharConfig, CharTokenizer
from speechkit.decoders.greedy import GreedyConfig, GreedyDecoder
from speechkit.pipeline import CTCModel
from speechkit.registry import build
from tests.conftest import REPO, run_cli, write_manifest

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # fonts-dejavu-core (scripts/setup.sh)
MONO = FONT.with_name("DejaVuSansMono.ttf")  # fonts-dejavu-core too
SCRIPT = REPO / "recipes" / "ocr_lines" / "prepare.py"

needs_font = pytest.mark.skipif(not FONT.exists(), reason="fonts-dejavu-core is not installed")


def load_prepare():
    spec = importlib.util.spec_from_file_location("ocr_lines_prepare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


prepare = load_prepare()
rasterizers = sys.modules[
    "rasterizers"
]  # recipes/ocr_lines/rasterizers.py and conditions.py, imported by prepare.py
conditions = sys.modules["conditions"]


def render(text: str, path: Path, size: int = 28) -> Path:
    """``text`` in DejaVu Sans, black on white, saved as PNG."""
    font = ImageFont.truetype(str(FONT), size)
    img = Image.new("L", (int(font.getlength(text)) + 12, int(size * 1.25)), 255)
    ImageDraw.Draw(img).text((6, 1), text, font=font, fill=0)
    img.save(path)
    return path


# ----------------------------------------------------------------------------- prepare.py


def test_generated_text_stays_in_the_charset_and_covers_it():
    words = ["apple", "Boston", "can't", "dog's", "echo"]
    rng = np.random.default_rng(0)
    lines = [prepare.make_text(rng, words) for _ in range(2000)]
    used = set("".join(lines))
    assert used <= set(prepare.CHARSET)
    assert set("abcdefghijklmnopqrstuvwxyzABCDEXYZ0123456789 .,;:!?'\"()[]-/&%$#@+=*") <= used
    assert all(0 < len(t) <= 48 and t == t.strip() and "  " not in t for t in lines)
    n_words = [len(t.split()) for t in lines]
    assert min(n_words) == 1 and max(n_words) >= 6
    again = [prepare.make_text(np.random.default_rng(0), words) for _ in range(1)]
    assert again[0] == lines[0]  # the seed fixes the text


def test_clones_share_a_design_group_and_splits_never_share_one():
    Font = prepare.Font
    assert prepare.design_group("Arimo", "fonts-croscore") == prepare.design_group(
        "Nimbus Sans", "fonts-urw-base35"
    )
    assert prepare.design_group("TeX Gyre Pagella", "fonts-texgyre") == "palatino"
    assert prepare.design_group("Cabin", "fonts-cabin") == "fonts-cabin"  # unlisted: its package
    fonts = [
        Font(f"/f/{fam}{i}.ttf", fam, "", pkg, prepare.design_group(fam, pkg))
        for i, (fam, pkg) in enumerate(
            [
                ("P052", "fonts-urw-base35"),
                ("TeX Gyre Pagella", "fonts-texgyre"),
                ("Nimbus Sans", "fonts-urw-base35"),
                ("Lato", "fonts-lato"),
                ("Cabin", "fonts-cabin"),
                ("DejaVu Sans", "fonts-dejavu-core"),
            ]
        )
    ]
    splits = prepare.assign_splits(fonts)
    groups = {s: {f.group for f in fs} for s, fs in splits.items()}
    assert groups == {
        "train": {"helvetica", "vera"},
        "dev": {"fonts-lato"},
        "test": {"palatino", "fonts-cabin"},
    }
    with pytest.raises(ValueError, match="both in dev and test"):
        prepare.assign_splits(fonts, test_groups=("vera",), dev_groups=("vera",))


@needs_font
@pytest.mark.parametrize("renderer", ["pillow", "imagemagick", "pango"])
def test_render_line_gives_a_loadable_line_with_the_text_on_it(tmp_path, renderer):
    img = prepare.render_line(
        "Hello (World) 42!", str(FONT), np.random.default_rng(1), renderer, tmp_path / "fc", size=30
    )
    assert img.mode in ("L", "RGB") and img.height >= 20 and img.width > 6 * 17
    img.save(tmp_path / "x.png")
    x = build("frontend", "ocr_line").load(tmp_path / "x.png")
    assert x.shape[1] == 32 and x.shape[0] > 100


LINE = "Hello (World) 42!"


def ink_box(cov: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the pixels at least half covered."""
    rows, cols = np.flatnonzero(cov.max(axis=1) >= 0.5), np.flatnonzero(cov.max(axis=0) >= 0.5)
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


@needs_font
@pytest.mark.parametrize("renderer", rasterizers.RENDERERS)
@pytest.mark.parametrize("font_file", [FONT, MONO], ids=["sans", "mono"])
def test_each_renderer_sets_the_line_as_wide_and_as_high_as_the_font_says(
    tmp_path, monkeypatch, renderer, font_file
):
    """Every renderer (installed by scripts/setup.sh, never skipped) draws the whole line in the line box of
    the font file it is given: ink as wide as Pillow's advance width, capitals as tall as the cap height.
    DejaVu Sans Mono is not fontconfig's default sans, so a renderer falling back to the system's fonts
    fails here; the work folder is relative, as prepare.py's is (a relative fontconfig file did fall back)."""
    size = 40
    monkeypatch.chdir(tmp_path)
    cov = rasterizers.rasterize(renderer, LINE, str(font_file), rasterizers.Style(size), Path("fc"))
    assert cov.dtype == np.float32 and 0 <= cov.min() and cov.max() <= 1
    font = ImageFont.truetype(str(font_file), size)
    ascent, descent = font.getmetrics()
    assert abs(cov.shape[0] - (ascent + descent)) <= 2  # the line box, not the ink box
    top, bottom, left, right = ink_box(cov)
    assert abs((right - left) - font.getlength(LINE)) <= 0.04 * font.getlength(LINE)
    cap = font.getbbox("H")  # (left, top, right, bottom) below the ascent line
    assert abs(top - cap[1]) <= 2 and bottom - top >= cap[3] - cap[1]  # "(" reaches above the H and below
    assert 0.05 < float((cov > 0.5).mean()) < 0.4  # ink, not a blank or a filled box


@needs_font
@pytest.mark.parametrize("renderer", rasterizers.RENDERERS)
def test_each_renderer_applies_letter_spacing_word_spacing_and_weight(tmp_path, renderer):
    base = rasterizers.rasterize(renderer, LINE, str(FONT), rasterizers.Style(30), tmp_path)
    spaced = rasterizers.rasterize(renderer, LINE, str(FONT), rasterizers.Style(30, tracking=3.0), tmp_path)
    words = rasterizers.rasterize(renderer, LINE, str(FONT), rasterizers.Style(30, word_gap=3.0), tmp_path)
    bold = rasterizers.rasterize(renderer, LINE, str(FONT), rasterizers.Style(30, bold=1), tmp_path)
    width = [ink_box(c)[3] - ink_box(c)[2] for c in (base, spaced, words)]
    gaps = len(LINE) - 1
    assert abs(width[1] - width[0] - 3 * gaps) <= 0.25 * 3 * gaps  # 3 px between each pair of letters
    space = ImageFont.truetype(str(FONT), 30).getlength(" ")
    assert abs(width[2] - width[0] - 2 * 2 * space) <= 0.25 * 4 * space  # two spaces, each 2 spaces wider
    assert bold.sum() > 1.15 * base.sum()  # heavier strokes


@needs_font
def test_renderers_draw_differently_and_imagemagick_escapes_are_literal(tmp_path):
    text = "@home 50% off"
    covs = {
        r: rasterizers.rasterize(r, text, str(FONT), rasterizers.Style(32), tmp_path)
        for r in rasterizers.RENDERERS
    }
    crops = {r: c[:, ink_box(c)[2] : ink_box(c)[3]] for r, c in covs.items()}
    widths = {r: c.shape[1] for r, c in crops.items()}
    assert max(widths.values()) - min(widths.values()) <= 4, widths  # "%" and "@" drawn, not interpreted
    h, w = min(c.shape[0] for c in crops.values()), min(widths.values())
    a, b, c = (crops[r][:h, :w] for r in rasterizers.RENDERERS)
    assert np.abs(a - b).mean() > 0.005 and np.abs(a - c).mean() > 0.005  # three rasterisations, not one


def test_perspective_pulls_the_corners_outwards_and_cuts_no_ink_off():
    cov = np.zeros((40, 300), np.float32)
    cov[:, :3] = cov[:, -3:] = 1  # ink along both ends, where a crop would bite first
    cov[:3, :] = cov[-3:, :] = 1
    for seed in range(20):
        out = conditions._perspective(cov, np.random.default_rng(seed), strength=0.06)
        assert out.shape == cov.shape
        assert (
            out[:, :12].max() > 0.5
            and out[:, -12:].max() > 0.5
            and out[:8].max() > 0.5
            and out[-8:].max() > 0.5
        )
        assert 0.8 * cov.sum() < out.sum() <= 1.01 * cov.sum()  # shrinks a little, loses nothing


@needs_font
def test_composed_lines_keep_the_text_legible_whatever_the_conditions(tmp_path):
    """Forty draws of every condition (crop, weight, perspective, paper, lighting, binarisation…) on one line:
    the image stays about the line's size and the text always stands out from the paper."""
    cov = rasterizers.rasterize("pillow", LINE, str(FONT), rasterizers.Style(30), tmp_path)
    width = ink_box(cov)[3] - ink_box(cov)[2]
    for seed in range(40):
        rng = np.random.default_rng(seed)
        img = conditions.compose_line(cov, rasterizers.Style(30), rng)
        lum = np.asarray(img.convert("L"), dtype=np.float32)
        # height: the line box, tight crops, margins, low resolution (× ≥ 0.45); width: stretch 0.8–1.25,
        # low resolution, margins ≤ 0.7 em at each end
        assert 0.45 * 0.5 * cov.shape[0] <= img.height <= 2 * cov.shape[0], seed
        assert 0.8 * 0.45 * width <= img.width <= 1.25 * (width + 1.4 * 30) + 2, seed
        assert np.percentile(lum, 99) - np.percentile(lum, 1) > 60, seed


def test_a_held_out_renderer_may_not_also_train():
    assert prepare.parse_renderers("pillow,imagemagick", "pango") == (("pillow", "imagemagick"), "pango")
    assert prepare.parse_renderers("pillow", "none") == (("pillow",), None)
    with pytest.raises(ValueError, match="must not train"):
        prepare.parse_renderers("pillow,pango", "pango")
    with pytest.raises(ValueError, match="unknown renderer"):
        prepare.parse_renderers("pillow,cairo", "pango")


@needs_font
def test_the_held_out_renderer_draws_the_test_lines_only_and_never_a_training_line(tmp_path):
    font = prepare.Font(str(FONT), "DejaVu Sans", "", "fonts-dejavu-core", "vera")
    pools = {s: prepare.font_pool([font]) for s in prepare.SPLITS}
    sizes = {"train": 24, "dev": 4, "test": 6, "test_pango": 6}
    words = ["apple", "Boston", "echo", "dog"]
    rows = prepare.render_corpus(tmp_path, pools, words, sizes, ("pillow", "imagemagick"), seed=3, jobs=1)
    assert {r["renderer"] for s in ("train", "dev", "test") for r in rows[s]} == {"pillow", "imagemagick"}
    assert {r["renderer"] for r in rows["test_pango"]} == {"pango"}
    assert [r["text"] for r in rows["test_pango"]] == [r["text"] for r in rows["test"]]  # the same lines
    for split, rs in rows.items():
        assert len(rs) == sizes[split]
        assert all(r["image_filepath"].startswith(f"images/{split}/") for r in rs)
        assert all((tmp_path / r["image_filepath"]).stat().st_size > 100 for r in rs)
        for r in rs:  # the size the trainer batches by is the file's
            with Image.open(tmp_path / r["image_filepath"]) as img:
                assert (r["width"], r["height"]) == img.size
    assert not (tmp_path / "fontconfig").exists()  # Pango's per-font configurations are cleaned up


# ----------------------------------------------------------------------------- training


OVERFIT = ["the quick brown", "Fox 42!", "jumps (over)", "lazy dog."]


@pytest.fixture
def one_thread():
    """One torch thread: on a busy 2-core machine, two threads spin-wait and run many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@needs_font
def test_overfits_a_few_rendered_lines(tmp_path, one_thread):
    torch.manual_seed(0)
    rows = [
        {"image_filepath": str(render(t, tmp_path / f"{i}.png", 20)), "text": t}
        for i, t in enumerate(OVERFIT)
    ]
    manifest = write_manifest(tmp_path / "train.jsonl", rows)
    tok = CharTokenizer(CharConfig()).fit(OVERFIT)
    frontend = build("frontend", "ocr_line", channels=[16, 32], pool_width=[2, 2])
    encoder = build("encoder", "blstm", hidden_size=32, num_layers=1, input_size=frontend.output_dim)
    model = CTCModel(frontend, build("augment", "none"), encoder, len(tok))
    batch = collate(
        [ManifestDataset(read_manifest(manifest, "image"), frontend.load, tok)[i] for i in range(4)]
    )
    loss_fn = build("loss", "ctc")
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    decoder = GreedyDecoder(GreedyConfig(), tok.tokens, None)
    hyps: list[str] = []
    # Steps to spell all four lines, over 80 seeds on one CPU: 110-450, median 160 (one seed needed 450, the
    # rest at most 260: another machine's rounding draws another sample). A passing run stops early.
    for step in range(1000):
        model.train()
        lp, lengths = model(batch.x, batch.lengths)
        loss, _ = loss_fn(lp, lengths, batch.targets, batch.target_lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9:
            model.eval()  # batch norm's running statistics, as at inference
            with torch.no_grad():
                hyps = [n[0].text for n in decoder(*model(batch.x, batch.lengths))]
            if hyps == OVERFIT:
                break
    assert hyps == OVERFIT


@needs_font
def test_characters_outside_the_vocabulary_are_a_data_error_naming_the_line(tmp_path):
    tok = CharTokenizer(CharConfig()).fit(["abc"])
    row = {"image_filepath": str(render("café", tmp_path / "x.png")), "text": "café"}
    dataset = ManifestDataset(
        read_manifest(write_manifest(tmp_path / "m.jsonl", [row]), "image"), lambda p: p, tok
    )
    with pytest.raises(
        DataError, match=r"m\.jsonl:1: characters 'f', 'é' in 'café' are not in the model's vocabulary"
    ):
        dataset[0]


# ----------------------------------------------------------------------------- command line

SMALL = [
    "frontend.channels=[8,16,16,16]",
    "encoder.hidden_size=16",
    "encoder.num_layers=1",
    "data.num_workers=0",
    "data.batch_size=4",
    "trainer.device=cpu",
    "trainer.max_steps=3",
    "trainer.max_minutes=0",
    "trainer.threads=1",
]


def run(*args, check=True):
    return run_cli(
        *args, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=check
    )  # one thread, as in one_thread


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    if not FONT.exists():
        pytest.skip("fonts-dejavu-core is not installed")
    tmp = tmp_path_factory.mktemp("ocr_cli")
    (tmp / "lines").mkdir()
    texts = [
        "hello world",
        "OCR 2024!",
        "the cat (sat)",
        "a-b/c; d:e",
        "Line 5.",
        "quick brown",
        "fox's den",
        "xyz",
    ]
    rows = [{"image_filepath": f"lines/{i}.png", "text": t} for i, t in enumerate(texts)]
    for i, t in enumerate(texts):
        render(t, tmp / "lines" / f"{i}.png")
    write_manifest(tmp / "train.jsonl", rows)
    write_manifest(tmp / "dev.jsonl", rows[:2])
    run(
        "speechkit-train",
        "recipe=ocr_lines",
        f"data.train_manifest={tmp / 'train.jsonl'}",
        f"data.dev_manifest={tmp / 'dev.jsonl'}",
        *SMALL,
        f"hydra.run.dir={tmp / 'run'}",
    )
    return tmp


@pytest.mark.slow
def test_train_on_images_writes_a_checkpoint_with_the_image_frontend(trained):
    config = (trained / "run" / "config.yaml").read_text()
    assert "name: ocr_line" in config and "name: image" in config and "name: blstm" in config
    assert (trained / "run" / "checkpoints" / "best.pt").exists()


@pytest.mark.slow
def test_transcribe_prints_a_pngs_text_and_writes_a_folders_predictions(trained):
    ckpt = f"checkpoint={trained / 'run/checkpoints/best.pt'}"
    p = run("speechkit-transcribe", ckpt, f"input={trained / 'lines' / '0.png'}")
    vocabulary = set(
        "".join(json.loads(line)["text"] for line in (trained / "train.jsonl").read_text().splitlines())
    )
    assert set(p.stdout.rstrip("\n")) <= vocabulary  # a 3-step model: its text, not its accuracy
    out = trained / "folder.jsonl"
    run("speechkit-transcribe", ckpt, f"input={trained / 'lines'}", f"output={out}")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and {Path(r["image_filepath"]).name for r in rows} == {f"{i}.png" for i in range(8)}
    out = trained / "manifest.jsonl"
    run("speechkit-transcribe", ckpt, f"input={trained / 'dev.jsonl'}", f"output={out}")
    assert len(out.read_text().splitlines()) == 2


@pytest.mark.slow
def test_bad_images_and_unknown_characters_fail_with_clear_messages(trained):
    ckpt = f"checkpoint={trained / 'run/checkpoints/best.pt'}"
    bad = trained / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    p = run("speechkit-transcribe", ckpt, f"input={bad}", check=False)
    assert p.returncode != 0 and "bad.png: cannot read the image" in p.stderr
    rows = [{"image_filepath": "lines/0.png", "text": "naïve"}]
    write_manifest(trained / "oov.jsonl", rows)
    p = run(
        "speechkit-eval",
        ckpt,
        f"data.test_manifest={trained / 'oov.jsonl'}",
        "progress=false",
        f"hydra.run.dir={trained / 'eval'}",
        check=False,
    )
    assert p.returncode != 0 and "oov.jsonl:1" in p.stderr and "'ï'" in p.stderr

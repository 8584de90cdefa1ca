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
SCRIPT = REPO / "recipes" / "ocr_lines" / "prepare.py"

needs_font = pytest.mark.skipif(not FONT.exists(), reason="fonts-dejavu-core is not installed")


def load_prepare():
    spec = importlib.util.spec_from_file_location("ocr_lines_prepare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


prepare = load_prepare()


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
def test_render_line_gives_a_loadable_line_with_the_text_on_it(tmp_path):
    img = prepare.render_line("Hello (World) 42!", str(FONT), np.random.default_rng(1), size=30)
    assert img.mode in ("L", "RGB") and img.height >= 30 and img.width > 8 * 17
    img.save(tmp_path / "x.png")
    x = build("frontend", "ocr_line").load(tmp_path / "x.png")
    assert x.shape[1] == 32 and x.shape[0] > 100


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
    for step in range(400):  # about 170 steps, 5 s
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
    return run_cli(*args, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=check)  # one thread, as in one_thread


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

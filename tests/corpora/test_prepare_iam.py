"""IAM's text lines: a tiny tree in IAM's layout becomes the writer-independent split's manifests,
every problem is one clear error, and the manifests train the OCR pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from speechkit.cli import UsageError
from speechkit.corpora.iam import prepare
from speechkit.data.errors import DataError

WRITERS = {"a01-000u": "000", "a01-000x": "001", "b02-010": "002", "c03-003": "003"}
# line id, segmentation, transcription as IAM writes it (words joined by |)
LINES = [
    ("a01-000u-00", "ok", "A|MOVE|to|stop"),
    ("a01-000u-01", "ok", "Mr.|Gaitskell|from"),
    ("a01-000u-02", "err", "nominating|any|more"),
    ("a01-000x-00", "ok", "&quot;|Labour|life|Peers"),
    ("a01-000x-01", "ok", "is|to|be|made"),
    ("b02-010-00", "ok", "at|a|meeting"),
    ("b02-010-01", "err", "of|Labour|Peers"),
    ("c03-003-00", "ok", "to|stop|Mr.|Gaitskell"),
]
SPLITS = {"trainset.txt": LINES[:5], "validationset1.txt": LINES[5:6], "validationset2.txt": LINES[6:7],
          "testset.txt": LINES[7:]}  # fmt: skip


def _iam(
    root: Path, forms: bool = True, split_folder: str = "largeWriterIndependentTextLineRecognitionTask"
) -> Path:
    """IAM's layout: lines/<a01>/<a01-000u>/<line>.png (the text drawn in black on white),
    ascii/lines.txt (and forms.txt), the task's split files in ``split_folder``."""
    for line_id, _, words in LINES:
        form = line_id.rsplit("-", 1)[0]
        png = root / "lines" / form.split("-")[0] / form / f"{line_id}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        image = Image.new("L", (8 * len(words) + 16, 24), 255)
        ImageDraw.Draw(image).text((4, 6), words.replace("|", " "), fill=0)
        image.save(png)
    (root / "ascii").mkdir(parents=True)
    header = "#--- lines.txt ---#\n#\n# format: a01-000u-00 ok 154 19 408 746 1663 91 A|MOVE|to|stop|Mr.|Gaitskell|from\n#\n"
    body = "".join(f"{i} {seg} 154 19 408 746 1663 91 {words}\n" for i, seg, words in LINES)
    (root / "ascii" / "lines.txt").write_text(header + body)
    if forms:
        rows = "".join(f"{form} {writer} 2 prt 7 5 52 36\n" for form, writer in WRITERS.items())
        (root / "ascii" / "forms.txt").write_text("#--- forms.txt ---#\n" + rows)
    (root / split_folder).mkdir(exist_ok=True)
    for name, lines in SPLITS.items():
        (root / split_folder / name).write_text("".join(f"{i}\n" for i, _, _ in lines))
    return root


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_prepare_writes_the_writer_independent_split_with_spaces_for_bars_and_writers_from_forms(tmp_path):
    corpus = _iam(tmp_path / "iam")
    paths = prepare(corpus, tmp_path / "data", corpus="iam", subsets=None)
    assert paths == {s: tmp_path / "data" / f"{s}.jsonl" for s in ("train", "dev", "dev2", "test")}
    train = _rows(paths["train"])
    assert train[0] == {
        "image_filepath": str(corpus / "lines" / "a01" / "a01-000u" / "a01-000u-00.png"),
        "text": "A MOVE to stop",
        "id": "a01-000u-00",
        "writer": "000",
        "segmentation": "ok",
    }
    assert [(r["id"], r["text"], r["writer"]) for r in train[1:]] == [
        ("a01-000u-01", "Mr. Gaitskell from", "000"),
        ("a01-000u-02", "nominating any more", "000"),  # an err line: kept by default
        ("a01-000x-00", '" Labour life Peers', "001"),
        ("a01-000x-01", "is to be made", "001"),
    ]
    assert [r["id"] for r in _rows(paths["dev"])] == ["b02-010-00"]
    assert [(r["id"], r["segmentation"]) for r in _rows(paths["dev2"])] == [("b02-010-01", "err")]
    assert [r["id"] for r in _rows(paths["test"])] == ["c03-003-00"]


def test_skip_err_leaves_out_badly_segmented_lines_listing_them_and_without_forms_the_form_is_the_writer(
    tmp_path,
):
    corpus = _iam(tmp_path / "iam", forms=False, split_folder="splits")
    out = corpus / "manifests"
    paths = prepare(
        corpus, out, corpus="iam", subsets=["train", "dev2"], split_dir=str(corpus / "splits"), skip_err=True
    )
    assert set(paths) == {"train", "dev2"}
    train = _rows(paths["train"])
    assert [(r["id"], r["writer"]) for r in train] == [
        ("a01-000u-00", "a01-000u"), ("a01-000u-01", "a01-000u"), ("a01-000x-00", "a01-000x"), ("a01-000x-01", "a01-000x"),
    ]  # fmt: skip
    assert train[0]["image_filepath"] == str(corpus / "lines" / "a01" / "a01-000u" / "a01-000u-00.png")
    assert _rows(paths["dev2"]) == []  # its one line is an err line, listed:
    assert (out / "dev2.skipped.tsv").read_text() == "b02-010-01\tsegmentation marked err (skip_err=true)\n"
    assert (out / "train.skipped.tsv").read_text() == "a01-000u-02\tsegmentation marked err (skip_err=true)\n"
    prepare(corpus, out, corpus="iam", subsets=["dev2"], split_dir=str(corpus / "splits"))
    assert len(_rows(paths["dev2"])) == 1 and not (out / "dev2.skipped.tsv").exists()


def test_without_the_split_files_the_error_says_where_to_get_them(tmp_path):
    with pytest.raises(DataError, match="nowhere: has no lines/ folder — give corpus_dir= the folder where"):
        prepare(tmp_path / "nowhere", tmp_path / "out", corpus="iam", subsets=None)
    corpus = _iam(tmp_path / "iam", split_folder="elsewhere")
    with pytest.raises(DataError) as e:
        prepare(corpus, tmp_path / "out", corpus="iam", subsets=None)
    assert "trainset.txt, validationset1.txt, validationset2.txt, testset.txt) are not here" in str(e.value)
    assert (
        "download largeWriterIndependentTextLineRecognitionTask.zip from https://fki.tic.heia-fr.ch"
        in str(e.value)
    )
    assert "give split_dir=" in str(e.value)


def test_a_missing_line_image_or_an_unknown_line_id_is_an_error_naming_it_not_a_shorter_manifest(tmp_path):
    corpus = _iam(tmp_path / "iam")
    (corpus / "lines" / "c03" / "c03-003" / "c03-003-00.png").unlink()
    with pytest.raises(
        DataError, match=r"c03-003-00.png: line image not found \(1 of the 1 in testset.txt\)"
    ):
        prepare(corpus, tmp_path / "out", corpus="iam", subsets=["test"])
    split = corpus / "largeWriterIndependentTextLineRecognitionTask" / "validationset1.txt"
    split.write_text("b02-010-00\nz99-999-00\n")
    with pytest.raises(DataError, match=r"1 line id\(s\) not in ascii/lines.txt \(first: z99-999-00\)"):
        prepare(corpus, tmp_path / "out", corpus="iam", subsets=["dev"])


def test_an_unknown_option_or_subset_is_a_usage_error_naming_the_valid_ones(tmp_path):
    corpus = _iam(tmp_path / "iam")
    with pytest.raises(UsageError, match="takes split_dir= and skip_err=, not skip_errors="):
        prepare(corpus, tmp_path / "out", corpus="iam", subsets=None, skip_errors="true")
    with pytest.raises(UsageError, match="has subsets train, dev, dev2, test, not valid"):
        prepare(corpus, tmp_path / "out", corpus="iam", subsets=["valid"])
    with pytest.raises(UsageError, match="skip_err=perhaps: give true or false"):
        prepare(corpus, tmp_path / "out", corpus="iam", subsets=None, skip_err="perhaps")


def test_speechkit_prepare_sees_both_options_typed_by_their_defaults():
    from speechkit.corpora.prepare import recipe_options

    assert recipe_options(prepare) == {"split_dir": "", "skip_err": False}  # skip_err=true arrives as a bool


def test_three_training_steps_on_the_prepared_lines(tmp_path):
    from hydra import compose, initialize_config_dir

    from speechkit.config import CONF_DIR, store_schemas
    from speechkit.trainer import Trainer

    paths = prepare(_iam(tmp_path / "iam"), tmp_path / "data", corpus="iam", subsets=["train", "dev"])
    store_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"data.train_manifest={paths['train']}", f"data.dev_manifest={paths['dev']}", "frontend=ocr_line",
            "frontend.channels=[8,8]", "frontend.pool_width=[2,1]", "augment=none", "encoder.hidden_size=16",
            "encoder.num_layers=1", "encoder.subsample=1", "data.batch_size=2", "data.num_workers=0",
            "trainer.max_steps=3", "trainer.device=cpu", "trainer.log_every_steps=1", "trainer.warmup_steps=1",
        ])  # fmt: skip
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.plot = lambda final=False: (
        None
    )  # training.png is tested elsewhere; matplotlib is most of the time here
    metrics = trainer.fit()
    assert trainer.state.step == 3 and (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    assert {'"', ".", "G", " "} <= set(trainer.tokenizer.tokens)  # IAM's characters, | read as a space
    assert 0 <= metrics["dev_cer"] <= 1.5  # dev read and scored (3 steps learn nothing yet)

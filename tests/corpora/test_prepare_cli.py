"""The speechkit-prepare command: its keys come from the chosen recipe, its summary counts what was
written and skipped, and every mistake — a corpus, key or recipe that does not exist, lhotse
missing or failing — is one error line, never a traceback (a bug of ours keeps its traceback)."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from speechkit.corpora import prepare as cli
from speechkit.corpora.lhotse_io import skipped_path
from speechkit.data.manifest import write_manifest
from tests.conftest import REPO, error_line


def prepare_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(list(args))
    assert e.value.code == 2
    return error_line(capsys.readouterr().err)


@pytest.fixture
def fake_recipe(monkeypatch):
    """corpus=fake: a recipe with typed options that records its call and writes two splits."""
    calls = []

    def prepare(corpus_dir: Path, out: Path, *, corpus, subsets, flag=False, ratio=0.5, count=2, name=None):
        calls.append(
            {"corpus": corpus, "subsets": subsets, "flag": flag, "ratio": ratio, "count": count, "name": name}
        )
        out.mkdir(parents=True, exist_ok=True)
        train = write_manifest(
            out / "train.jsonl",
            [
                {"audio_filepath": "a.wav", "duration": 1200.0, "text": "the cat", "speaker": "s1"},
                {"audio_filepath": "b.wav", "duration": 1800.0, "text": "a  dog", "speaker": "s2"},
                {"audio_filepath": "c.wav", "duration": 600.0, "text": "the dog", "speaker": "s1"},
            ],
        )
        skipped_path(train).write_text("d\tno audio for this transcript\n")
        dev = write_manifest(
            out / "dev.jsonl", [{"audio_filepath": "e.wav", "duration": 36.0, "text": "a cat"}]
        )
        return {"train": train, "dev": dev}

    monkeypatch.setitem(sys.modules, "speechkit.corpora.fake_recipe", types.SimpleNamespace(prepare=prepare))
    monkeypatch.setitem(cli.CORPORA, "fake", "fake_recipe")
    return calls


def test_help_lists_every_corpus_and_the_common_keys(capsys):
    cli.main(["--help"])
    printed = capsys.readouterr().out
    assert all(f"  {name} " in printed for name in cli.CORPORA)
    assert all(
        f"  {key}=" in printed for key in ("corpus", "corpus_dir", "out", "subsets", "language", "num_jobs")
    )


def test_the_console_command_exits_2_with_one_error_line_for_an_unknown_corpus(tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "speechkit.corpora.prepare",
            "corpus=librispeach",
            f"corpus_dir={tmp_path}",
            "out=o",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert p.returncode == 2 and p.stdout == ""
    line = error_line(p.stderr)
    assert "unknown corpus='librispeach'; did you mean librispeech?" in line
    assert "valid corpora: librispeech, mini_librispeech, commonvoice, timit, grid, iam" in line


def test_options_are_typed_by_their_defaults_and_the_summary_counts_utterances_hours_speakers_skips(
    fake_recipe, tmp_path, capsys
):
    cli.main(["corpus=fake", "corpus_dir=c", f"out={tmp_path}", "subsets=train, dev", "flag=true", "count=5"])
    assert fake_recipe == [
        {"corpus": "fake", "subsets": ["train", "dev"], "flag": True, "ratio": 0.5, "count": 5, "name": None}
    ]
    printed = capsys.readouterr().out
    assert "train: 3 utterances, 1.00 h, 2 speakers, 1 skipped" in printed
    assert "skipped d: no audio for this transcript" in printed
    assert "dev: 1 utterances, 0.01 h, 0 speakers, 0 skipped" in printed
    assert (tmp_path / "lm_train.txt").read_text() == "the cat\na dog\nthe dog\n"
    assert (tmp_path / "words.txt").read_text() == "a\ncat\ndog\nthe\n"


@pytest.mark.parametrize(
    "args, expected",
    [
        (("corpus=fake", "count=two"), "count=two: give a whole number"),
        (("corpus=fake", "flag=maybe"), "flag=maybe: give true or false"),
        (
            ("corpus=fake", "colour=red"),
            "unknown key 'colour'; valid keys: corpus, corpus_dir, out, subsets, flag",
        ),
        (("corpus=librispeech", "language=en"), "valid keys: corpus, corpus_dir, out, subsets, num_jobs"),
        (
            ("corpus=commonvoice", "lang=en"),
            "did you mean language? valid keys: corpus, corpus_dir, out, subsets, language",
        ),
        (("corpus_dir=c", "out=o"), "missing corpus=… (one of librispeech, mini_librispeech, commonvoice"),
        (
            ("--corpus", "fake", "--corpus-dir", "c"),
            "not --flags: speechkit-prepare corpus=fake corpus_dir=c",
        ),
        (("corpus=fake", "out=o"), "missing corpus_dir=…"),
    ],
)
def test_a_bad_key_or_value_is_one_error_line_naming_the_valid_ones(fake_recipe, capsys, args, expected):
    full = (
        args
        if any(a.startswith(("out=", "--", "corpus_dir=")) for a in args)
        else (*args, "corpus_dir=c", "out=o")
    )
    assert expected in prepare_error(capsys, *full)
    assert fake_recipe == []


def test_a_recipe_module_that_is_missing_is_named(monkeypatch, capsys):
    monkeypatch.setitem(cli.CORPORA, "fake", "no_such_recipe")
    line = prepare_error(capsys, "corpus=fake", "corpus_dir=c", "out=o")
    assert "its recipe speechkit.corpora.no_such_recipe is not part of this installation" in line


def test_lhotse_not_installed_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    for name in [m for m in sys.modules if m == "lhotse" or m.startswith("lhotse.")]:
        monkeypatch.setitem(sys.modules, name, None)  # import lhotse… now raises ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "lhotse", None)
    for corpus in ("librispeech", "commonvoice"):
        line = prepare_error(capsys, f"corpus={corpus}", f"corpus_dir={tmp_path}", f"out={tmp_path}")
        assert "need lhotse, which is not installed: pip install speechkit[corpora]" in line


def test_lhotse_raising_is_one_error_line_with_its_message(monkeypatch, tmp_path, capsys):
    import lhotse.recipes.librispeech as recipe

    from tests.corpora.test_prepare_librispeech import make_librispeech

    make_librispeech(tmp_path, {"dev-clean": [("84", "121", 1)]})

    def failing_validation(*args, **kwargs):
        raise AssertionError("Supervision 84-121-0000: duration is negative")

    monkeypatch.setattr(recipe, "validate_recordings_and_supervisions", failing_validation)
    line = prepare_error(
        capsys, "corpus=librispeech", f"corpus_dir={tmp_path / 'LibriSpeech'}", f"out={tmp_path}"
    )
    assert "lhotse's librispeech recipe failed on corpus_dir=" in line
    assert "(AssertionError: Supervision 84-121-0000: duration is negative)" in line


def test_a_bug_outside_lhotse_keeps_its_traceback(fake_recipe, monkeypatch):
    def buggy(corpus_dir, out, *, corpus, subsets):
        return 1 / 0

    monkeypatch.setitem(sys.modules, "speechkit.corpora.fake_recipe", types.SimpleNamespace(prepare=buggy))
    with pytest.raises(ZeroDivisionError):
        cli.main(["corpus=fake", "corpus_dir=c", "out=o"])

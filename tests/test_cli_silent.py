"""Commands that used to do something else than asked without a word: a word LM scored as characters,
fewer hypotheses than ``nbest`` asked for, an unlabelled audio length, ``speechkit-ngram``'s lone
``--flag`` style, and ``speechkit-plugins`` listing everything with cut-off descriptions."""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass, field

import pytest

from speechkit.lm.ngram import NgramLM, read_arpa
from speechkit.registry import describe, field_help
from tests.conftest import copy_of_tiny_run, run_cli, sample_rows, write_manifest

pytestmark = pytest.mark.slow

TEXT = "bin blue at f two now\nplace green by a one soon\nlay red in q nine again\n"


def ngram(*args: str):
    """``speechkit-ngram ARGS`` as the console script runs it, on the checkout's own package."""
    return run_cli(sys.executable, "-c", "from speechkit.lm.ngram_cli import main; main()", *args, check=False)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# --------------------------------------------------------------------------- speechkit-ngram


def test_ngram_trains_from_key_value_arguments_like_every_other_command(tmp_path):
    text, out = tmp_path / "lm_train.txt", tmp_path / "w3.arpa"
    text.write_text(TEXT)
    p = ngram(f"text={text}", "order=3", "unit=word", f"out={out}")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"wrote {out} (word 3-gram")
    tables = read_arpa(out)
    assert ("blue",) in tables[0] and [set(t) for t in tables] == [set(t) for t in NgramLM.train(text, 3, "word").ngrams]


def test_ngram_help_names_the_command_and_its_keys():
    p = ngram("--help")
    assert p.returncode == 0 and p.stdout.startswith("usage: speechkit-ngram text=FILE out=FILE")
    assert "python -m" not in p.stdout
    for key in ("text=", "out=", "order=", "unit=", "space_symbol="):
        assert key in p.stdout


def test_ngram_old_flags_are_one_error_line_giving_the_same_command_in_the_new_form(tmp_path):
    p = ngram("--text", "lm_train.txt", "--order", "3", "--unit", "word", "--out", "w3.arpa")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.splitlines()[0].startswith("usage: speechkit-ngram text=FILE")
    assert error_lines(p.stderr) == [
        "error: speechkit-ngram takes key=value arguments like every speechkit command, not --flags: "
        "speechkit-ngram text=lm_train.txt order=3 unit=word out=w3.arpa"
    ]


def test_ngram_missing_text_file_is_one_error_line(tmp_path):
    p = ngram(f"text={tmp_path / 'none.txt'}", f"out={tmp_path / 'x.arpa'}")
    assert p.returncode == 2 and error_lines(p.stderr) == [
        f"error: text={tmp_path / 'none.txt'}: no such file (give the training text, one sentence a line)"
    ]
    assert not (tmp_path / "x.arpa").exists()


# --------------------------------------------------------------------------- speechkit-plugins


def test_plugins_of_one_kind_lists_only_that_kind_with_a_help_line_per_parameter():
    p = run_cli("speechkit-plugins", "decoder")
    lines = p.stdout.splitlines()
    assert lines[0] == "decoder:" and not [line for line in lines[1:] if not line.startswith(" ")]
    assert "blstm" not in p.stdout and "fbank" not in p.stdout and "ngram  " not in p.stdout
    assert {line.split()[0] for line in lines if re.match(r"  \S", line)} == {"beam", "greedy"}
    params = [line for line in lines if line.startswith("      ")]
    assert len(params) == len(dataclasses.fields(__import__("speechkit.decoders.beam").decoders.beam.BeamConfig))
    assert all("  # " in line for line in params)  # every parameter of beam has its help
    assert "      beam_size: int = 16  # hypotheses kept per utterance" in lines
    # a comment that goes on over a second source line is one help line
    skip = next(line for line in params if line.lstrip().startswith("blank_skip_logp:"))
    assert skip.endswith("runs of them take one search step (e.g. -0.001: P(blank) ≥ 0.999; None: off, "
                         "every frame is searched)")
    compiled = next(line for line in params if line.lstrip().startswith("compile:"))
    assert compiled == ("      compile: bool = False  # torch.compile the torch search's frame step "
                        "(fused kernels; compiles on first use)")


def test_plugins_unknown_kind_is_one_error_line_naming_the_kinds():
    p = run_cli("speechkit-plugins", "decodr", check=False)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [
        "usage: speechkit-plugins [KIND]",
        "error: unknown plugin kind 'decodr'; valid kinds: frontend, augment, encoder, loss, decoder, lm, tokenizer"
    ]


def test_plugin_descriptions_are_whole_first_sentences_not_first_lines():
    text = describe()
    descriptions = {line.split()[0]: line.split("  — ", 1)[1] for line in text.splitlines() if "  — " in line}
    assert len(descriptions) >= 20
    for name, about in descriptions.items():
        assert about.endswith((".", ")", "?", "!")), (name, about)
    # Jordan's docstring breaks its first sentence over two lines
    assert descriptions["jordan"].endswith("h_t = act(W_x x_t + U y_{t-1} + b); the layer passes y_t on.")
    # the first sentence only, not the paragraph after it
    assert descriptions["beam"] == "CTC prefix beam search, batched on CPU or GPU, with optional LM fusion, lexicon and hotwords."


@dataclass
class _Documented:
    plain: int = 1  # a comment on the field's line
    long: float = 0.5  # a comment that goes on
    # over the next line
    # -- a section header, not help ----------------------------------
    wrapped: bool = (
        False  # a comment inside the value's parentheses
    )
    undocumented: str = "x"
    meta: list[int] = field(default_factory=list, metadata={"help": "help from the field's metadata"})


@dataclass
class _Derived(_Documented):
    plain: int = 2  # the subclass's own comment wins
    extra: int = 0  # a field of the subclass


def test_field_help_reads_each_fields_comment_from_the_source():
    assert field_help(_Derived) == {
        "plain": "the subclass's own comment wins",
        "long": "a comment that goes on over the next line",
        "wrapped": "a comment inside the value's parentheses",
        "meta": "help from the field's metadata",
        "extra": "a field of the subclass",
    }
    made = dataclasses.make_dataclass("Made", [("n", int, 1)])  # no source: no help, no error
    assert field_help(made) == {}


# --------------------------------------------------------------------------- speechkit-transcribe nbest


@pytest.mark.parametrize(
    "decoder, said",
    [
        ((), "the greedy decoder returns at most 1 hypothesis per input: set decoder=beam decoder.nbest=3"),
        (("decoder=beam",), "the beam decoder returns at most 1 hypothesis per input: set decoder=beam decoder.nbest=3"),
        (("decoder=beam", "decoder.nbest=5", "decoder.beam_size=2"),
         "the beam decoder returns at most 2 hypotheses per input: set decoder=beam decoder.nbest=3 decoder.beam_size=3"),
    ],
)
def test_transcribe_nbest_above_what_the_decoder_returns_is_an_error_before_anything_is_loaded(tmp_path, decoder, said):
    # the checkpoint does not exist: the nbest check comes first, before loading or decoding
    p = run_cli("speechkit-transcribe", f"checkpoint={tmp_path / 'missing.pt'}", f"input={tmp_path / 'a.wav'}",
                "nbest=3", *decoder, check=False)
    assert p.returncode != 0 and p.stdout == ""
    assert error_lines(p.stderr) == [f"error: nbest=3, but {said}"]


def test_transcribe_nbest_within_what_the_decoder_returns_goes_on_to_load_the_checkpoint(tmp_path):
    p = run_cli("speechkit-transcribe", f"checkpoint={tmp_path / 'missing.pt'}", f"input={tmp_path / 'a.wav'}",
                "nbest=3", "decoder=beam", "decoder.nbest=3", check=False)
    [line] = error_lines(p.stderr)
    assert p.returncode != 0 and "checkpoint not found" in line and "nbest=" not in line


# --------------------------------------------------------------------------- speechkit-validate


def test_validate_labels_the_corpus_length_as_audio_not_run_time(tmp_path):
    rows = sample_rows("train", 2)
    train = write_manifest(tmp_path / "train.jsonl", rows)
    p = run_cli("speechkit-validate", "recipe=demo", f"data.train_manifest={train}", "data.dev_manifest=null",
                "data.test_manifest=null", "data.num_workers=0", "progress=false", f"report={tmp_path / 'r.json'}")
    seconds = sum(r["duration"] for r in rows)
    line = next(line for line in p.stdout.splitlines() if line.startswith("train"))
    assert line.endswith(f"2 entries, 2 loaded, 0 with errors, {seconds:.1f} s of audio"), line


# --------------------------------------------------------------------------- a word LM in the decoder


@pytest.fixture(scope="module")
def trained(tiny_run, tmp_path_factory):
    """The shared tiny checkpoint, and a word and a character LM of GRID-like sentences."""
    tmp = copy_of_tiny_run(tiny_run, tmp_path_factory, "silent")
    (tmp / "lm_train.txt").write_text(TEXT)
    for unit in ("word", "char"):
        NgramLM.train(tmp / "lm_train.txt", order=3, unit=unit).save_arpa(tmp / f"{unit}3.arpa")
    return tmp


def test_transcribe_refuses_a_word_lm_configured_as_a_char_lm_naming_the_file_and_setting(trained):
    wav = sample_rows("test", 1)[0]["audio_filepath"]
    arpa = trained / "word3.arpa"
    p = run_cli("speechkit-transcribe", f"checkpoint={trained / 'run/checkpoints/best.pt'}", f"input={wav}",
                "decoder=beam", "decoder.lm=ngram", f"decoder.lm.path={arpa}", "decoder.lm.unit=char",
                "device=cpu", check=False)
    assert p.returncode != 0
    [line] = error_lines(p.stderr)
    assert line.startswith(f"error: decoder: {arpa}: a word LM (1-grams such as '")
    assert "set decoder.lm.unit=word" in line


def test_transcribe_takes_a_word_lms_unit_from_the_file_by_default(trained):
    wav = sample_rows("test", 1)[0]["audio_filepath"]
    ckpt = f"checkpoint={trained / 'run/checkpoints/best.pt'}"
    beam = ("decoder=beam", "decoder.lm=ngram", "device=cpu")
    auto = run_cli("speechkit-transcribe", ckpt, f"input={wav}", *beam, f"decoder.lm.path={trained / 'word3.arpa'}")
    word = run_cli("speechkit-transcribe", ckpt, f"input={wav}", *beam, f"decoder.lm.path={trained / 'word3.arpa'}",
                   "decoder.lm.unit=word")
    assert auto.stdout.splitlines()[-1] == word.stdout.splitlines()[-1]  # the text (log lines above it)

"""The ``word`` tokenizer: a closed vocabulary of whole words behind id 0 = blank; WER and CER reported."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from speechkit import build, load_checkpoint
from speechkit.checkpoint import model_payload, save_checkpoint
from speechkit.config import CONF_DIR, store_schemas
from speechkit.data.tokenizer import BLANK_SYMBOL, UnknownSymbolError
from speechkit.metrics import error_counts, named_rates
from speechkit.pipeline import CTCModel

GRID = ["bin blue at f two now", "set red by a one soon", "place green with z nine again"]


def test_vocabulary_is_the_sorted_words_of_the_training_text_one_label_each():
    tok = build("tokenizer", "word").fit(GRID)
    words = sorted({w for t in GRID for w in t.split()})
    assert tok.unit == "word" and tok.tokens == [BLANK_SYMBOL, *(" " + w for w in words)]
    assert tok.encode("bin blue at f two now") == [words.index(w) + 1 for w in GRID[0].split()]
    assert [tok.decode(tok.encode(t)) for t in GRID] == GRID


def test_a_word_outside_the_vocabulary_is_named_as_a_word():
    tok = build("tokenizer", "word").fit(GRID)
    with pytest.raises(UnknownSymbolError, match="words 'purple' in 'bin purple'") as e:
        tok.encode("bin purple")
    assert e.value.what == "words"


def test_a_fixed_vocabulary_file_keeps_its_order_and_checks_the_training_text(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("bin\nlay\n\nplace 12\n")
    tok = build("tokenizer", "word", inventory=str(path)).fit(["lay bin", "place"])
    assert tok.tokens == [BLANK_SYMBOL, " bin", " lay", " place"]
    with pytest.raises(UnknownSymbolError, match="words 'set' in 'set bin'.*tokenizer.inventory"):
        tok.fit(["set bin"])
    with pytest.raises(ValueError, match="list each word once"):
        build("tokenizer", "word", inventory=["bin", "bin"])
    with pytest.raises(FileNotFoundError, match="one word a line"):
        build("tokenizer", "word", inventory=str(tmp_path / "none.txt"))


def test_error_rates_are_word_and_character_rates():
    counts = error_counts(["bin blue at f two now"], ["bin blue at s two now"])
    assert named_rates(counts, "word") == {"wer": pytest.approx(1 / 6), "cer": pytest.approx(1 / 21)}


def test_a_checkpoint_rebuilds_the_vocabulary_as_words(tmp_path):
    tok = build("tokenizer", "word").fit(GRID)
    store_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["encoder.hidden_size=8", "encoder.num_layers=1", "tokenizer=word"])
    path = tmp_path / "model.pt"
    save_checkpoint(path, model_payload(cfg, tok.tokens, CTCModel.from_config(cfg, len(tok))))
    again = load_checkpoint(path).tokenizer
    assert (
        again.unit == "word"
        and again.words == tok.words == sorted({w for t in GRID for w in t.split()})
        and again.encode(GRID[2]) == tok.encode(GRID[2])
    )

"""The `ngram` LM: Kneser-Ney training, normalised distributions, ARPA read/write (KenLM's format)."""

from __future__ import annotations

import math

import pytest
import torch

from speechkit.cli import UsageError
from speechkit.lm.ngram import BOS, NgramConfig, NgramLM, detect_unit, read_arpa
from speechkit.lm.ngram_cli import main, parse_args
from speechkit.registry import build

LN10 = math.log(10.0)

TEXT = "the cat sat on the mat\nthe dog sat\na cat ran away\nthe cat ran\n"

# A bigram model in the layout KenLM's lmplz writes: tabs, -99 for <s>, 0 backoffs, <unk>.
KENLM_ARPA = """\\data\\
ngram 1=5
ngram 2=4

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.30103
-0.69897\t</s>\t0
-0.52288\ta\t-0.17609
-0.60206\tb\t-0.25

\\2-grams:
-0.30103\t<s> a
-0.39794\ta b
-0.22185\tb </s>
-0.5\ta </s>

\\end\\
"""


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "lm_train.txt"
    path.write_text(TEXT)
    return path


def all_units_but_bos(lm: NgramLM) -> torch.Tensor:
    return torch.tensor([i for i, w in enumerate(lm.vocab) if w != BOS])


@pytest.mark.parametrize("unit", ["char", "word"])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_next_unit_probabilities_sum_to_one_in_every_context(text_file, unit, order):
    lm = NgramLM.train(text_file, order=order, unit=unit)
    states = torch.arange(lm.num_states)
    ids = all_units_but_bos(lm)
    p = lm.logprobs(states, ids[None].expand(len(states), -1)).exp().sum(1)
    torch.testing.assert_close(p, torch.ones_like(p), atol=1e-5, rtol=0)


def test_arpa_round_trip_keeps_every_sentence_probability(text_file, tmp_path):
    for unit in ("char", "word"):
        lm = NgramLM.train(text_file, order=3, unit=unit)
        lm.save_arpa(tmp_path / f"{unit}.arpa")
        back = NgramLM(NgramConfig(path=str(tmp_path / f"{unit}.arpa"), unit=unit))
        assert back.order == 3
        for s in ("the cat sat", "a dog ran away", "zebra on the mat"):
            units = list(s) if unit == "char" else s.split()
            assert back.sentence_logprob(units) == pytest.approx(lm.sentence_logprob(units), abs=1e-4)


def test_reads_kenlm_arpa_with_backoffs_unk_and_sentence_markers(tmp_path):
    path = tmp_path / "kenlm.arpa"
    path.write_text(KENLM_ARPA)
    lm = build("lm", "ngram", path=str(path), unit="word")
    assert lm.order == 2
    # listed bigrams, then backoff b(h) + p(w)
    expected = {
        ("a", "b"): -0.30103 - 0.39794 - 0.22185,  # <s> a, a b, b </s>
        ("b",): (-0.30103 - 0.60206) + (-0.22185),  # b(<s>) p(b), b </s>
        ("b", "a"): (-0.30103 - 0.60206) + (-0.25 - 0.52288) + (-0.5),  # …, b(b) p(a), a </s>
        ("zz",): (-0.30103 - 1.0) + (0.0 - 0.69897),  # b(<s>) p(<unk>), b(<unk>) p(</s>)
    }
    for words, log10p in expected.items():
        assert lm.sentence_logprob(list(words)) == pytest.approx(log10p * LN10, abs=1e-4)
    assert read_arpa(path)[0][("<s>",)] == (-99.0, -0.30103)


def test_agrees_with_kenlm_where_installed(text_file, tmp_path):
    kenlm = pytest.importorskip("kenlm")
    NgramLM.train(text_file, order=3, unit="word").save_arpa(tmp_path / "w.arpa")
    ours = NgramLM(NgramConfig(path=str(tmp_path / "w.arpa"), unit="word"))
    theirs = kenlm.Model(str(tmp_path / "w.arpa"))
    for s in ("the cat sat", "the the mat ran", "unknown words here"):
        assert ours.sentence_logprob(s.split()) == pytest.approx(theirs.score(s) * LN10, abs=1e-4)


def test_kneser_ney_prefers_seen_continuations(text_file):
    lm = NgramLM.train(text_file, order=3, unit="word")
    assert lm.sentence_logprob("the cat sat".split()) > lm.sentence_logprob("sat cat the".split())
    lm = NgramLM.train(text_file, order=4, unit="char")
    assert lm.sentence_logprob(list("the cat")) > lm.sentence_logprob(list("tha cet"))


def test_batched_scoring_equals_one_hypothesis_at_a_time(text_file):
    for unit, dense in (("char", True), ("word", True), ("word", False)):
        lm = NgramLM.train(text_file, order=3, unit=unit)
        if not dense:  # the sparse backoff walk that large models use
            lm._dense = None
        states = torch.arange(lm.num_states)
        ids = torch.randint(0, len(lm.vocab), (lm.num_states,))
        batch = lm.logprobs(states, ids[:, None])[:, 0]
        one = torch.stack(
            [lm.logprobs(states[i : i + 1], ids[i : i + 1, None])[0, 0] for i in range(len(ids))]
        )
        torch.testing.assert_close(batch, one)
        moved = lm.advance(states, ids, torch.ones_like(ids, dtype=torch.bool))
        kept = lm.advance(states, ids, torch.zeros_like(ids, dtype=torch.bool))
        assert torch.equal(kept, states) and moved.shape == states.shape


def test_command_line_trains_and_writes_arpa(text_file, tmp_path, capsys):
    out = tmp_path / "lm.arpa"
    main([f"text={text_file}", "order=4", "unit=char", f"out={out}"])
    assert "4-gram" in capsys.readouterr().out
    tables = read_arpa(out)
    assert len(tables) == 4 and ("t", "h", "e") in tables[2] and ("|",) in tables[0]


def test_command_line_takes_key_value_with_the_old_options_under_key_names_and_defaults():
    assert parse_args(["text=a.txt", "out=b.arpa"]) == {
        "text": "a.txt", "out": "b.arpa", "order": "3", "unit": "char", "space_symbol": "|"
    }
    got = parse_args(["text=a.txt", "out=b.arpa", "order=5", "unit=word", "space_symbol=_"])
    assert (got["order"], got["unit"], got["space_symbol"]) == ("5", "word", "_")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--text", "a.txt", "--order", "4", "--unit", "word", "--out", "b.arpa"],
         "not --flags: speechkit-ngram text=a.txt order=4 unit=word out=b.arpa"),
        (["--space-symbol=_", "--text", "a.txt"], "speechkit-ngram space_symbol=_ text=a.txt"),
        (["text=a.txt", "ordr=4", "out=b.arpa"], "unknown key 'ordr'; did you mean order?"),
        (["text=a.txt"], "missing out=…"),
        (["text=a.txt", "out=b.arpa", "order=two"], "order=two: give a whole number"),
        (["text=a.txt", "out=b.arpa", "unit=auto"], "unit=auto: give char or word"),
        (["a.txt"], "'a.txt' is not key=value"),
    ],
)
def test_command_line_errors_are_one_line_naming_the_key_value_form(argv, message):
    with pytest.raises(UsageError) as e:  # speechkit.cli.run prints it as one `error:` line, exit status 2
        parse_args(argv)
    assert message in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------- the unit of an ARPA file


@pytest.fixture
def arpas(text_file, tmp_path):
    """A word and a character trigram LM of the same text, as ARPA files."""
    paths = {}
    for unit in ("word", "char"):
        paths[unit] = tmp_path / f"{unit}3.arpa"
        NgramLM.train(text_file, order=3, unit=unit).save_arpa(paths[unit])
    return paths


def test_unit_is_detected_from_the_files_unigrams(arpas):
    word, char = detect_unit(read_arpa(arpas["word"])[0]), detect_unit(read_arpa(arpas["char"])[0])
    assert word.unit == "word" and word.example in TEXT.split() and len(word.example) > 1
    assert char.unit == "char" and len(char.example) == 1 and char.separator is None
    assert detect_unit({("<s>",): (-99.0, 0.0), ("</s>",): (-1.0, 0.0), ("<unk>",): (-2.0, 0.0)}).unit is None


def test_unit_auto_is_the_default_and_takes_the_files_own_unit(arpas):
    assert NgramConfig().unit == "auto"
    assert NgramLM(NgramConfig(path=str(arpas["word"]))).unit == "word"
    assert NgramLM(NgramConfig(path=str(arpas["char"]))).unit == "char"
    # a word file read as auto scores words exactly as with unit=word
    auto, word = NgramLM(NgramConfig(path=str(arpas["word"]))), NgramLM(NgramConfig(path=str(arpas["word"]), unit="word"))
    assert auto.sentence_logprob("the cat sat".split()) == word.sentence_logprob("the cat sat".split())


def test_a_word_lm_read_as_a_char_lm_is_an_error_naming_the_file_an_entry_and_the_setting(arpas):
    with pytest.raises(ValueError) as e:
        NgramLM(NgramConfig(path=str(arpas["word"]), unit="char"))
    msg, example = str(e.value), detect_unit(read_arpa(arpas["word"])[0]).example
    assert msg.startswith(f"{arpas['word']}: a word LM") and f"such as {example!r}" in msg
    assert "set decoder.lm.unit=word" in msg


def test_a_char_lm_read_as_a_word_lm_is_an_error_naming_the_setting(arpas):
    with pytest.raises(ValueError, match=r"char3\.arpa: a character LM .*'\|'.*decoder\.lm\.unit=char"):
        NgramLM(NgramConfig(path=str(arpas["char"]), unit="word"))


def test_a_char_lm_with_another_separator_spelling_says_which_space_symbol_to_set(text_file, tmp_path):
    path = tmp_path / "spaced.arpa"
    NgramLM.train(text_file, order=3, unit="char", space_symbol="<space>").save_arpa(path)
    with pytest.raises(ValueError, match=r"spelt '<space>'.*decoder\.lm\.space_symbol='<space>'"):
        NgramLM(NgramConfig(path=str(path)))
    lm = NgramLM(NgramConfig(path=str(path), space_symbol="<space>"))
    assert lm.unit == "char" and lm.index([" "]).item() == lm.stoi["<space>"]


def test_the_beam_decoder_refuses_a_word_lm_configured_as_char_and_fuses_it_as_words_by_default(arpas):
    tokens = ["<b>", " "] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    with pytest.raises(ValueError, match="decoder.lm.unit=word"):
        build("decoder", "beam", tokens=tokens, lm={"name": "ngram", "path": str(arpas["word"]), "unit": "char"})
    dec = build("decoder", "beam", tokens=tokens, lm={"name": "ngram", "path": str(arpas["word"])})
    assert dec.lm.unit == "word" and type(dec.fusion).__name__ == "WordFusion"


def test_missing_path_and_text_is_an_error_that_says_what_to_give():
    with pytest.raises(ValueError, match="decoder.lm.path"):
        NgramLM(NgramConfig())


def test_kenlm_plugin_scores_like_ngram_in_the_beam_decoder(text_file, tmp_path):
    pytest.importorskip("kenlm")
    arpa = tmp_path / "w.arpa"
    NgramLM.train(text_file, order=3, unit="word").save_arpa(arpa)
    ours, theirs = build("lm", "ngram", path=str(arpa), unit="word"), build("lm", "kenlm", path=str(arpa))
    for s in ("the cat sat", "zebra ran"):
        assert theirs.sentence_logprob(s.split()) == pytest.approx(ours.sentence_logprob(s.split()), abs=1e-4)
    tokens = ["<b>", " "] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    lp = torch.randn(2, 30, len(tokens), generator=torch.Generator().manual_seed(0)).mul(3).log_softmax(-1)
    lengths = torch.tensor([30, 22])
    a = build("decoder", "beam", tokens=tokens, lm=ours, alpha=1.0, beta=1.0, beam_size=8)(lp, lengths)
    b = build("decoder", "beam", tokens=tokens, lm=theirs, alpha=1.0, beta=1.0, beam_size=8)(lp, lengths)
    assert [h[0].text for h in a] == [h[0].text for h in b]
    assert [h[0].score for h in a] == pytest.approx([h[0].score for h in b], abs=1e-3)

"""The `ngram` LM: Kneser-Ney training, normalised distributions, ARPA read/write (KenLM's format)."""

from __future__ import annotations

import math

import pytest
import torch

from speechkit.lm.ngram import BOS, NgramConfig, NgramLM, main, read_arpa
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
    main(["--text", str(text_file), "--order", "4", "--unit", "char", "--out", str(out)])
    assert "4-gram" in capsys.readouterr().out
    tables = read_arpa(out)
    assert len(tables) == 4 and ("t", "h", "e") in tables[2] and ("|",) in tables[0]


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

"""Word LM fusion, lexicon and word bonus over subword tokens (``" the"``, ``"ing"``), on both engines."""

from __future__ import annotations

import math

import pytest
import torch

from speechkit.decoders import lexicon as lexicon_module
from speechkit.decoders.lexicon import LexiconTrie, Spelling
from speechkit.lm.ngram import NgramConfig, NgramLM
from speechkit.registry import build

# a small subword vocabulary: word-initial pieces start with a space; " " alone starts a word too
PIECES = ["<b>", " ", " the", " ca", " cat", " sat", " on", " t", "t", "p", "s", "a", "c", "h", "e", "o", "n"]
IX = {t: i for i, t in enumerate(PIECES)}
LM_TEXT = ["the cat sat", "the cat sat on the cat", "a cat sat on the hat", "the cap", "the cat"]
WORDS = ["the", "cat", "cats", "sat", "on", "a", "hat"]  # the lexicon: no "cap", no "ca"


@pytest.fixture(scope="module")
def word_lm(tmp_path_factory):
    text = tmp_path_factory.mktemp("lm") / "lm.txt"
    text.write_text("\n".join(LM_TEXT) + "\n")
    return NgramLM(NgramConfig(text=str(text), order=2, unit="word"))


@pytest.fixture(scope="module")
def lexicon(tmp_path_factory):
    path = tmp_path_factory.mktemp("lex") / "words.txt"
    path.write_text("\n".join(WORDS) + "\n")
    return str(path)


def beam(tokens=PIECES, **options):
    return build("decoder", "beam", tokens=tokens, **options)


def peaky(frames: list[dict[str, float]], tokens=PIECES) -> torch.Tensor:
    """``(1, T, V)`` log-probs from a few probabilities per frame (the blank takes what is left)."""
    ix = {t: i for i, t in enumerate(tokens)}
    p = torch.full((len(frames), len(tokens)), 1e-4)
    for t, probs in enumerate(frames):
        for tok, q in probs.items():
            p[t, ix[tok]] = q
        p[t, 0] = max(1.0 - sum(probs.values()), 1e-4)
    return (p / p.sum(1, keepdim=True)).log()[None]


# "the ca" then "p" narrowly over "t": the acoustics say "the cap"
CAP_OR_CAT = peaky([{" the": 0.9}, {}, {" ca": 0.9}, {"p": 0.5, "t": 0.45}, {}])
LEN = torch.tensor([CAP_OR_CAT.shape[1]])


def ctc_logprob(log_probs: torch.Tensor, length: int, tokens: list[int]) -> float:
    """Exact CTC log-probability of a label sequence: minus ctc_loss (the sum over alignments)."""
    nll = torch.nn.functional.ctc_loss(
        log_probs[:, None].double(), torch.tensor([tokens or [1]]), torch.tensor([length]),
        torch.tensor([len(tokens)]), reduction="none",
    )  # fmt: skip
    return -float(nll)


@pytest.mark.parametrize("engine", ["torch", "native"])
def test_word_lm_turns_the_acoustically_best_word_into_the_likely_one(word_lm, engine):
    assert beam(engine=engine)(CAP_OR_CAT, LEN)[0][0].text == "the cap"
    h = beam(lm=word_lm, alpha=1.0, engine=engine)(CAP_OR_CAT, LEN)[0][0]
    assert h.text == "the cat" and h.tokens == [IX[" the"], IX[" ca"], IX["t"]]
    # the fused score: the exact CTC log-probability, plus alpha times the LM's of the words
    ctc = ctc_logprob(CAP_OR_CAT[0], int(LEN), h.tokens)
    assert h.score == pytest.approx(ctc + word_lm.sentence_logprob(["the", "cat"]), abs=1e-4)


def test_a_word_scores_the_same_whichever_tokens_spell_it(word_lm):
    """The word "cat" from " cat", " ca"+"t" or " "+"c"+"a"+"t": the same LM word, the same fused terms."""
    fused = []
    for spelling in ([" cat"], [" ca", "t"], [" ", "c", "a", "t"]):
        lp = peaky([{tok: 0.95} for tok in [" the", *spelling, " sat"]])
        h = beam(lm=word_lm, alpha=0.7, beta=0.3, engine="native")(lp, torch.tensor([lp.shape[1]]))[0][0]
        assert h.text == "the cat sat"
        fused.append(h.score - ctc_logprob(lp[0], lp.shape[1], h.tokens))
    expected = 0.7 * word_lm.sentence_logprob(["the", "cat", "sat"]) + 0.3 * 3
    assert fused == pytest.approx([expected] * 3, abs=1e-4)


@pytest.mark.parametrize("engine", ["torch", "native"])
def test_lexicon_forbids_words_outside_the_list(lexicon, engine):
    assert beam(lexicon=lexicon, engine=engine)(CAP_OR_CAT, LEN)[0][0].text == "the cat"
    words = set(WORDS)
    g = torch.Generator().manual_seed(3)
    lp = (3.0 * torch.randn(4, 24, len(PIECES), generator=g)).log_softmax(-1)
    out = beam(lexicon=lexicon, beam_size=12, nbest=6, engine=engine)(lp, torch.tensor([24, 20, 13, 7]))
    n_words = 0
    for nbest in out:
        for h in nbest:
            assert set(h.text.split()) <= words, h.text
            n_words += len(h.text.split())
    assert n_words > 20  # the list was used, not only the empty text


@pytest.mark.parametrize("engine", ["torch", "native"])
def test_beta_adds_its_bonus_once_per_word(engine):
    g = torch.Generator().manual_seed(1)
    lp = (4.0 * torch.randn(3, 16, len(PIECES), generator=g)).log_softmax(-1)
    lengths = torch.tensor([16, 11, 5])
    for beta in (0.8, -0.6):
        for b, nbest in enumerate(beam(beta=beta, beam_size=8, nbest=4, engine=engine)(lp, lengths)):
            for h in nbest:
                ctc = ctc_logprob(lp[b], int(lengths[b]), h.tokens)
                assert h.score == pytest.approx(ctc + beta * len(h.text.split()), abs=1e-4), h.text
    # a large bonus splits "cat" into words: " ca" + " t" (two) beats " ca" + "t" (one)
    lp = peaky([{" ca": 0.9}, {"t": 0.5, " t": 0.45}])
    assert beam(beta=0.0, engine=engine)(lp, torch.tensor([2]))[0][0].text == "cat"
    assert beam(beta=1.0, engine=engine)(lp, torch.tensor([2]))[0][0].text == "ca t"


def fused_terms(h, word_lm, alpha: float, beta: float) -> float:
    words = h.text.split()
    return (alpha * word_lm.sentence_logprob(words) if alpha else 0.0) + beta * len(words)


# Tolerance of engine agreement: the torch search adds float32 scores frame by frame, the compiled one
# float64; over ≤ 16 frames of log-probabilities ≥ -30 and LM terms of a few nats the float32 rounding
# is below 16 · 30 · 6e-8 ≈ 3e-5 per score, so 1e-3 passes rounding and nothing else: a misplaced word
# end or bonus moves a score by a whole LM term or beta (≥ 0.3 here).
FUSIONS = [
    {"beta": 1.2},
    {"lm": True, "alpha": 0.8, "beta": 0.5},
    {"lexicon": True},
    {"lexicon": True, "lm": True, "alpha": 1.0, "beta": -0.4},
]
PRUNING = [{}, {"token_topk": 4, "beam_threshold": 6.0}, {"token_min_logp": -3.0, "blank_skip_logp": -0.5}]


@pytest.mark.parametrize("pruning", PRUNING, ids=lambda p: ",".join(p) or "exact")
@pytest.mark.parametrize("fusion", FUSIONS, ids=lambda f: "+".join(f))
def test_engines_agree_on_subword_fusion_and_lexicon(fusion, pruning, word_lm, lexicon):
    kw = dict(fusion, **pruning)
    if kw.pop("lm", False):
        kw["lm"] = word_lm
    if kw.pop("lexicon", False):
        kw["lexicon"] = lexicon
    g = torch.Generator().manual_seed(5)
    for trial in range(12):
        B, T = int(torch.randint(1, 4, (), generator=g)), int(torch.randint(1, 17, (), generator=g))
        K = (2, 4, 8, 16)[trial % 4]
        lp = ((1.5, 3.0, 6.0)[trial % 3] * torch.randn(B, T, len(PIECES), generator=g)).log_softmax(-1)
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        out = {e: beam(beam_size=K, nbest=K, engine=e, **kw)(lp, lengths) for e in ("torch", "native")}
        for a, b in zip(out["torch"], out["native"]):
            assert [h.text for h in a] == [h.text for h in b], trial
            assert [h.tokens for h in a] == [h.tokens for h in b], trial
            assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-3), trial
    # and the scores are what they should be: exact CTC + the LM and bonus of the words (rescoring keeps them)
    alpha = kw.get("alpha", 0.0) if "lm" in kw else 0.0
    for b, nbest in enumerate(out["native"]):
        for h in nbest:
            if h.score > -math.inf:
                ctc = ctc_logprob(lp[b], int(lengths[b]), h.tokens)
                assert h.score == pytest.approx(
                    ctc + fused_terms(h, word_lm, alpha, kw.get("beta", 0.0)), abs=1e-3
                )


def test_compiled_lexicon_gives_the_same_on_its_sparse_table_as_on_its_dense_one(
    word_lm, lexicon, monkeypatch
):
    """A lexicon too large for a dense (nodes × tokens) table is stepped by bisection: same n-best."""
    g = torch.Generator().manual_seed(8)
    lp = (3.0 * torch.randn(3, 20, len(PIECES), generator=g)).log_softmax(-1)
    lengths = torch.tensor([20, 14, 6])
    kw = dict(lexicon=lexicon, lm=word_lm, alpha=0.5, beta=0.5, beam_size=8, nbest=4, engine="native")
    dense = beam(**kw)
    monkeypatch.setattr(lexicon_module, "DENSE_MAX", 0)
    sparse = beam(**kw)
    assert dense.native_lexicon.trie.size > 0 and sparse.native_lexicon.trie.size == 0
    a, b = dense(lp, lengths), sparse(lp, lengths)
    assert [[h.text for h in nb] for nb in a] == [[h.text for h in nb] for nb in b]
    assert [[h.score for h in nb] for nb in a] == [[h.score for h in nb] for nb in b]
    assert sum(len(h.text.split()) for nb in a for h in nb) > 10


def test_lexicon_trie_steps_a_subword_through_its_letters():
    sp = Spelling(PIECES)
    trie = LexiconTrie([sp.spell(w) for w in ("cat", "cats", "the")], sp).to(torch.device("cpu"))
    node = torch.tensor([[0]])

    def allowed(node, tok):
        return bool(trie.penalty(node, torch.tensor([[IX[tok]]]))[0, 0, 0] == 0)

    assert allowed(node, " cat") and allowed(node, " ca") and allowed(node, "c") and not allowed(node, " ")
    after_ca = trie.step(node, torch.tensor([[IX[" ca"]]]))
    assert allowed(after_ca, "t") and not allowed(after_ca, "p") and not allowed(after_ca, " the")
    after_cat = trie.step(after_ca, torch.tensor([[IX["t"]]]))
    assert bool(trie.is_word[after_cat]) and allowed(after_cat, "s") and allowed(after_cat, " the")
    assert allowed(after_cat, " ") and not allowed(after_cat, " on")  # "on" is not in this list


PHONES = ["<blank>", " sil", " dh", " ax", " k", " ae", " t"]


def test_phones_with_a_lexicon_or_word_lm_are_refused_with_what_to_do(lexicon, word_lm):
    for setting in ({"lexicon": lexicon}, {"lm": word_lm}):
        with pytest.raises(
            ValueError, match=r"every token of this model is a whole word .*a phone or a word, such as ' sil'"
        ):
            beam(PHONES, **setting)
    # a bonus still counts tokens (each phone is a word of the text)
    lp = peaky([{" dh": 0.9}, {" ax": 0.6}], PHONES)
    h0, h1 = (beam(PHONES, beta=beta)(lp, torch.tensor([2]))[0][0] for beta in (0.0, 2.0))
    assert h0.text == h1.text == "dh ax" and h1.score == pytest.approx(h0.score + 4.0, abs=1e-5)


def test_char_lm_and_tokens_that_cross_words_are_refused_with_what_to_do(tmp_path):
    text = tmp_path / "lm.txt"
    text.write_text("\n".join(LM_TEXT) + "\n")
    char_lm = NgramLM(NgramConfig(text=str(text), order=3, unit="char"))
    with pytest.raises(ValueError, match=r"char LM scores one character a token.*use a word LM"):
        beam(lm=char_lm)
    with pytest.raises(ValueError, match=r"token 'a b' writes one after its start"):
        beam(["<b>", " ", "a", "a b"], beta=1.0)

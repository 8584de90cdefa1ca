"""The compiled CPU engine (decoders/beam_compiled.py) against the batched torch search."""

from __future__ import annotations

import pytest
import torch

from speechkit.decoders import beam_compiled
from speechkit.lm.ngram import NgramConfig, NgramLM
from speechkit.registry import build

NEG_INF = float("-inf")


def random_log_probs(g: torch.Generator, B: int, T: int, V: int, scale: float) -> torch.Tensor:
    return (scale * torch.randn(B, T, V, generator=g)).log_softmax(-1)


def search(engine: str, lp: torch.Tensor, lengths: torch.Tensor, beam_size: int, **options):
    """The ``beam`` decoder's search on one engine, with tokens for ``lp``'s vocabulary (no separator)."""
    tokens = ["<b>"] + [chr(ord("a") + i) for i in range(lp.shape[2] - 1)]
    decoder = build("decoder", "beam", tokens=tokens, beam_size=beam_size, engine=engine, **options)
    return decoder.search(lp, lengths)


def assert_same_hypotheses(a, b, atol: float, trial: int) -> None:
    """Search results ``a`` (torch) and ``b`` (native) hold the same live hypotheses: fused and CTC
    scores within ``atol``, the same per-frame tokens and "still on the token" flags."""
    live = a.scores > NEG_INF
    assert torch.equal(live, b.scores > NEG_INF), trial
    torch.testing.assert_close(b.scores[live], a.scores[live], atol=atol, rtol=0)
    torch.testing.assert_close(b.ctc[live], a.ctc[live], atol=atol, rtol=0)
    paths = live[None].expand_as(a.emitted)
    assert torch.equal(b.emitted[paths], a.emitted[paths]), trial
    assert torch.equal(b.nonblank[paths], a.nonblank[paths]), trial


OPTIONS = [
    {},
    {"token_topk": 2},
    {"token_min_logp": -2.0},
    {"beam_threshold": 3.0},
    {"blank_skip_logp": -0.5},
    {"token_topk": 3, "token_min_logp": -4.0, "beam_threshold": 6.0},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "exact")
def test_native_engine_finds_what_the_torch_search_finds(options):
    """Same hypotheses, CTC scores and per-frame paths (hence timestamps) on random inputs.

    Random continuous inputs have no exactly tied candidates, so the two engines, which break
    ties differently, must agree everywhere.
    """
    g = torch.Generator().manual_seed(7)
    for trial in range(60):
        B, T, V = (int(torch.randint(lo, hi, (), generator=g)) for lo, hi in ((1, 5), (1, 14), (2, 9)))
        K = (1, 2, 3, 5, 8, 16)[trial % 6]
        lp = random_log_probs(g, B, T, V, scale=(1.0, 3.0, 8.0)[trial % 3])
        lengths = torch.randint(0, T + 1, (B,), generator=g)
        lengths[0] = T
        a = search("torch", lp, lengths, K, nbest=K, **options)
        b = search("native", lp, lengths, K, nbest=K, **options)
        assert_same_hypotheses(a, b, atol=1e-4, trial=trial)


def test_native_engine_on_wide_beams_and_long_peaky_inputs():
    g = torch.Generator().manual_seed(3)
    B, T, V = 4, 120, 29
    logits = 2.0 * torch.randn(B, T, V, generator=g)
    logits[torch.arange(B)[:, None], torch.arange(T), torch.randint(0, V, (B, T), generator=g)] += 6.0
    lp, lengths = logits.log_softmax(-1), torch.tensor([120, 97, 64, 3])
    for K in (32, 64):
        a = search("torch", lp, lengths, K, nbest=4)
        b = search("native", lp, lengths, K, nbest=4)
        torch.testing.assert_close(b.scores, a.scores, atol=1e-3, rtol=0)
        assert torch.equal(b.emitted, a.emitted)


def test_engine_choice_is_checked_and_explained(tmp_path):
    tokens = ["<b>", " ", "a", "b"]
    with pytest.raises(ValueError, match="engine must be one of auto, torch, native"):
        build("decoder", "beam", tokens=tokens, engine="cuda")

    class OtherLM(NgramLM):  # an LM the compiled engine does not know (like char_rnn or kenlm)
        pass

    text = tmp_path / "lm.txt"
    text.write_text("ab ba\nba ab\n")
    other = OtherLM(NgramConfig(text=str(text), order=2, unit="char"))
    with pytest.raises(ValueError, match="engine=native takes no LM or the ngram LM"):
        build("decoder", "beam", tokens=tokens, engine="native", lm=other)
    # auto falls back to the torch search where the compiled engine does not reach
    lp = torch.randn(2, 6, 4).log_softmax(-1)
    auto = build("decoder", "beam", tokens=tokens, lm=other)(lp, torch.tensor([6, 4]))
    torch_ = build("decoder", "beam", tokens=tokens, lm=other, engine="torch")(lp, torch.tensor([6, 4]))
    assert [h[0].text for h in auto] == [h[0].text for h in torch_]


LETTERS = ["<b>", " ", "a", "b", "c", "d"]
SENTENCES = ["ab cd", "ba dc", "cab", "ab ab cd", "dad cab", "bad", "cd ab ba", "a b c d"]


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    text = tmp_path_factory.mktemp("lm") / "lm.txt"
    text.write_text("\n".join(SENTENCES) + "\n")
    words = text.parent / "words.txt"
    words.write_text("ab\ncd\nba\ndc\ncab\nbad\ndad\n")
    return {
        "char": NgramLM(NgramConfig(text=str(text), order=3, unit="char")),
        "word": NgramLM(NgramConfig(text=str(text), order=2, unit="word")),
        "words": str(words),
    }


FUSIONS = [
    {"beta": 1.5},
    {"lm": "char", "alpha": 0.7, "beta": 0.5},
    {"lm": "word", "alpha": 0.8, "beta": 2.0},
    {"lexicon": True},
    {"lexicon": True, "beta": -0.5},
    {"lm": "char", "alpha": 0.4, "beta": 0.0, "lexicon": True},
    {"lm": "word", "alpha": 1.0, "beta": 1.0, "lexicon": True},
]


@pytest.mark.parametrize("fusion", FUSIONS, ids=lambda f: "+".join(f"{k}" for k in f))
def test_native_fusion_and_lexicon_find_what_the_torch_search_finds(fusion, lms):
    """LM fusion (char and word n-grams), insertion bonus and lexicon on both engines: same n-best
    (fused scores, CTC parts, paths)."""
    kw = dict(fusion)
    if "lm" in kw:
        kw["lm"] = lms[kw["lm"]]
    if kw.pop("lexicon", False):
        kw["lexicon"] = lms["words"]
    g = torch.Generator().manual_seed(5)
    for trial in range(25):
        B, T = int(torch.randint(1, 4, (), generator=g)), int(torch.randint(1, 16, (), generator=g))
        K = (2, 4, 8, 16, 5)[trial % 5]
        lp = random_log_probs(g, B, T, len(LETTERS), scale=(1.5, 3.0, 6.0)[trial % 3])
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        res = {}
        for engine in ("torch", "native"):
            dec = build("decoder", "beam", tokens=LETTERS, beam_size=K, nbest=K, engine=engine, **kw)
            res[engine] = dec.search(lp, lengths)
        assert_same_hypotheses(res["torch"], res["native"], atol=1e-3, trial=trial)


def test_beam_decoder_results_are_the_same_on_either_engine():
    g = torch.Generator().manual_seed(11)
    tokens = ["<b>", " ", "a", "b", "c"]
    lp = random_log_probs(g, 3, 20, 5, scale=3.0)
    lengths = torch.tensor([20, 13, 1])
    out = {
        e: build("decoder", "beam", tokens=tokens, beam_size=6, nbest=3, frame_shift_s=0.02, engine=e)(
            lp, lengths
        )
        for e in ("torch", "native")
    }
    for a, b in zip(out["torch"], out["native"]):
        assert [h.text for h in a] == [h.text for h in b]
        assert [h.token_frames for h in a] == [h.token_frames for h in b]
        assert [h.words for h in a] == [h.words for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)


@pytest.mark.parametrize("engine", ["torch", "native"])
def test_bad_search_arguments_are_refused_before_searching(engine):
    tokens = ["<b>", " ", "a", "b"]
    with pytest.raises(ValueError, match="beam_size and nbest must be ≥ 1"):
        build("decoder", "beam", tokens=tokens, beam_size=0, engine=engine)
    with pytest.raises(ValueError, match="token_topk ≥ 0"):
        build("decoder", "beam", tokens=tokens, token_topk=-2, engine=engine)
    lp = torch.randn(1, 5, 4).log_softmax(-1)
    with pytest.raises(ValueError, match=r"lengths\[0\] = 9 is outside \[0, 5\]"):
        build("decoder", "beam", tokens=tokens, beam_size=3, engine=engine)(lp, torch.tensor([9]))


def test_compiled_engine_keeps_its_memory_accesses_in_bounds():
    """Called directly, past the decoder's checks, the compiled engine still refuses what would read
    or write outside its arrays (numba does not check bounds)."""
    lp = torch.randn(1, 5, 4).log_softmax(-1)
    for lengths, beam_size in (([9], 3), ([-1], 3), ([5], 0)):
        with pytest.raises(ValueError, match=r"lengths in \[0, 5\]"):
            beam_compiled.search(lp, torch.tensor(lengths), beam_size)


def test_word_lm_sharing_no_spelling_with_the_tokens_scores_every_word_as_unknown(tmp_path):
    text = tmp_path / "lm.txt"
    text.write_text("xy zz\nzz xy\n")
    lm = NgramLM(NgramConfig(text=str(text), order=2, unit="word"))
    tokens = ["_", " ", "a", "b"]
    lp = random_log_probs(torch.Generator().manual_seed(1), 2, 12, 4, scale=3.0)
    out = {
        e: build("decoder", "beam", tokens=tokens, beam_size=6, lm=lm, alpha=0.5, beta=1.0, engine=e)(
            lp, torch.tensor([12, 7])
        )
        for e in ("torch", "native")
    }
    assert [h[0].text for h in out["torch"]] == [h[0].text for h in out["native"]]


def test_large_vocabularies_take_the_sorted_path_and_agree():
    g = torch.Generator().manual_seed(2)
    lp = random_log_probs(g, 2, 30, 300, scale=1.0)  # flat frames over 300 tokens: deep token orders
    a = search("torch", lp, torch.tensor([30, 17]), 8, nbest=4)
    b = search("native", lp, torch.tensor([30, 17]), 8, nbest=4)
    torch.testing.assert_close(b.scores, a.scores, atol=1e-3, rtol=0)
    assert torch.equal(b.emitted, a.emitted)

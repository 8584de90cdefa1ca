"""The compiled CPU engine (decoders/native.py) against the batched torch search and ctc_loss."""

from __future__ import annotations

import pytest
import torch

from speechkit.decoders import native
from speechkit.decoders.beam import prefix_beam_search
from speechkit.lm.ngram import NgramConfig, NgramLM
from speechkit.registry import build

NEG_INF = float("-inf")


def random_log_probs(g: torch.Generator, B: int, T: int, V: int, scale: float) -> torch.Tensor:
    return (scale * torch.randn(B, T, V, generator=g)).log_softmax(-1)


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
        a = prefix_beam_search(lp, lengths, K, nbest=K, engine="torch", **options)
        b = prefix_beam_search(lp, lengths, K, nbest=K, engine="native", **options)
        assert_same_hypotheses(a, b, atol=1e-4, trial=trial)


def test_native_engine_on_wide_beams_and_long_peaky_inputs():
    g = torch.Generator().manual_seed(3)
    B, T, V = 4, 120, 29
    logits = 2.0 * torch.randn(B, T, V, generator=g)
    logits[torch.arange(B)[:, None], torch.arange(T), torch.randint(0, V, (B, T), generator=g)] += 6.0
    lp, lengths = logits.log_softmax(-1), torch.tensor([120, 97, 64, 3])
    for K in (32, 64):
        a = prefix_beam_search(lp, lengths, K, nbest=4, engine="torch")
        b = prefix_beam_search(lp, lengths, K, nbest=4, engine="native")
        torch.testing.assert_close(b.scores, a.scores, atol=1e-3, rtol=0)
        assert torch.equal(b.emitted, a.emitted)


def test_forward_algorithm_equals_ctc_loss_including_underflow():
    g = torch.Generator().manual_seed(0)
    B, T, V = 5, 150, 12
    lp = random_log_probs(g, B, T, V, scale=4.0)
    lp[3] = lp[3] * 60.0  # log-probabilities near -1000: exp underflows, the log-space fallback runs
    lengths = torch.tensor([150, 149, 80, 150, 2])
    N = 2
    emitted = torch.zeros(T, B, N, dtype=torch.long)
    for b in range(B):
        for n in range(N):
            n_lab = int(torch.randint(0, min(40, int(lengths[b])) + 1, (), generator=g))
            frames = torch.randperm(int(lengths[b]), generator=g)[:n_lab].sort().values
            emitted[frames, b, n] = torch.randint(1, V, (n_lab,), generator=g)
    scores = torch.full((B, N), -1e30)  # a lower bound that checks nothing: the forward pass alone
    scores[4, 1] = NEG_INF  # an empty slot stays empty
    got = native.ctc_logprob(lp, lengths, emitted, scores)
    for b in range(B):
        for n in range(N):
            if scores[b, n] == NEG_INF:
                assert got[b, n] == NEG_INF
                continue
            e = emitted[:, b, n]
            labels = e[e > 0]
            nll = torch.nn.functional.ctc_loss(
                lp[b : b + 1, : int(lengths[b])].transpose(0, 1).double(),
                labels[None] if len(labels) else torch.ones(1, 1, dtype=torch.long),
                lengths[b : b + 1],
                torch.tensor([len(labels)]),
                reduction="none",
                zero_infinity=False,
            )
            want = -float(nll)
            if want == NEG_INF:
                assert got[b, n] == NEG_INF
            else:
                assert float(got[b, n]) == pytest.approx(want, rel=1e-5, abs=1e-3), (b, n)


def test_exact_scores_survive_paths_that_underflow_and_come_back():
    """A path ~300 nats behind the best at first dominates at the end: probability-domain
    rescaling flushes it to zero, the search's own (log-space) score exposes that, and the
    rescoring redoes it in log space."""
    inf = float("-inf")
    rows = [[inf, 0.0, inf]] + [[-300.0, inf, 0.0]] * 3 + [[0.0, inf, -300.0]] * 3 + [[-600.0, inf, 0.0]] * 2
    lp, lengths = torch.tensor([rows]), torch.tensor([9])

    def exact(tokens):
        return -float(
            torch.nn.functional.ctc_loss(
                lp.transpose(0, 1).double(),
                torch.tensor([tokens]),
                lengths,
                torch.tensor([len(tokens)]),
                reduction="sum",
            )
        )

    for engine in ("torch", "native"):
        nbest = build("decoder", "beam", tokens=["_", "a", "b"], beam_size=8, nbest=8, engine=engine)(
            lp, lengths
        )
        assert "ab" in [h.text for h in nbest[0]]
        for h in nbest[0]:
            assert h.score == pytest.approx(exact(h.tokens), abs=1e-2), (engine, h.text)


def test_more_labels_than_frames_allow_is_impossible():
    lp = torch.zeros(1, 3, 3).log_softmax(-1)
    emitted = torch.tensor([1, 1, 1])[:, None, None]  # "aaa" needs 5 frames (blanks between repeats)
    assert native.ctc_logprob(lp, torch.tensor([3]), emitted, torch.zeros(1, 1))[0, 0] == NEG_INF


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
    lp = torch.randn(1, 5, 4).log_softmax(-1)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 5\]"):
        prefix_beam_search(lp, torch.tensor([9]), 3, engine=engine)
    with pytest.raises(ValueError, match="beam_size and nbest ≥ 1"):
        prefix_beam_search(lp, torch.tensor([5]), 0, engine=engine)
    with pytest.raises(ValueError, match="token_topk ≥ 0"):
        prefix_beam_search(lp, torch.tensor([5]), 3, token_topk=-2, engine=engine)


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
    a = prefix_beam_search(lp, torch.tensor([30, 17]), 8, nbest=4, engine="torch")
    b = prefix_beam_search(lp, torch.tensor([30, 17]), 8, nbest=4, engine="native")
    torch.testing.assert_close(b.scores, a.scores, atol=1e-3, rtol=0)
    assert torch.equal(b.emitted, a.emitted)

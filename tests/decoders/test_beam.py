"""The `beam` decoder: exact CTC scores, brute-force optimality, pruning, timestamps, lexicon, LM fusion."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from speechkit.decoders.beam_torch import prefix_beam_search
from speechkit.decoders.fusion import Fusion
from speechkit.lm.ngram import NgramConfig, NgramLM
from speechkit.registry import build

LETTERS = ["<b>", " "] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
IX = {t: i for i, t in enumerate(LETTERS)}


def ctc_logprob(log_probs: torch.Tensor, length: int, tokens: list[int]) -> float:
    """Exact CTC log-probability of a label sequence: minus ctc_loss (the sum over alignments)."""
    nll = torch.nn.functional.ctc_loss(
        log_probs[:, None].double(),
        torch.tensor([tokens or [1]], dtype=torch.long),
        torch.tensor([length]),
        torch.tensor([len(tokens)]),
        reduction="none",
    )
    return -float(nll)


def random_log_probs(seed: int, B: int, T: int, V: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(B, T, V, generator=g)).log_softmax(-1)


def peaky(frames: list[dict[str, float]]) -> torch.Tensor:
    """``(1, T, V)`` log-probs over LETTERS from a few probabilities per frame (the rest tiny)."""
    p = torch.full((len(frames), len(LETTERS)), 1e-4)
    for t, d in enumerate(frames):
        for sym, q in d.items():
            p[t, IX[sym]] = q
    return (p / p.sum(1, keepdim=True)).log()[None]


ENGINE = {"name": "auto"}


@pytest.fixture(autouse=True, params=["torch", "auto"])
def engine(request):
    """Every test runs on the batched torch search and on "auto" (the compiled engine where it covers)."""
    ENGINE["name"] = request.param
    yield request.param
    ENGINE["name"] = "auto"


def beam(tokens, **kw):
    return build("decoder", "beam", tokens=tokens, engine=ENGINE["name"], **kw)


# --------------------------------------------------------------------------- exactness


def test_every_score_equals_ctc_loss_when_nothing_is_pruned():
    B, T, V = 3, 5, 3  # at most 63 label sequences: a beam of 64 keeps every prefix
    lp = random_log_probs(0, B, T, V)
    lengths = torch.tensor([5, 3, 1])
    hyps = beam(["<b>", "a", "b"], beam_size=64, nbest=64, exact_scores=False)(lp, lengths)
    for b in range(B):
        total = 0.0
        for h in hyps[b]:
            assert h.score == pytest.approx(ctc_logprob(lp[b], int(lengths[b]), h.tokens), abs=1e-5)
            total += math.exp(h.score)
        assert total == pytest.approx(1.0, abs=1e-5)  # every label sequence, each counted once


def test_rescored_scores_equal_ctc_loss_with_a_narrow_beam():
    lp = random_log_probs(1, 4, 8, 5)
    lengths = torch.tensor([8, 7, 6, 2])
    hyps = beam(["<b>", "a", "b", "c", "d"], beam_size=3, nbest=3)(lp, lengths)
    for b, nbest in enumerate(hyps):
        assert [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)
        for h in nbest:
            assert h.score == pytest.approx(ctc_logprob(lp[b], int(lengths[b]), h.tokens), abs=1e-5)


def test_search_score_is_a_lower_bound_when_prefixes_are_pruned():
    lp = random_log_probs(2, 4, 8, 5)
    lengths = torch.full((4,), 8)
    hyps = beam(["<b>", "a", "b", "c", "d"], beam_size=2, nbest=2, exact_scores=False)(lp, lengths)
    for b, nbest in enumerate(hyps):
        for h in nbest:
            assert h.score <= ctc_logprob(lp[b], 8, h.tokens) + 1e-5


@pytest.mark.parametrize("seed", range(4))
def test_best_hypothesis_equals_brute_force_best_label_sequence(seed):
    T, V = 5, 4
    lp = random_log_probs(seed, 1, T, V, scale=2.0)
    best_score, best_seq = -math.inf, None
    for n in range(T + 1):
        for seq in itertools.product(range(1, V), repeat=n):
            s = ctc_logprob(lp[0], T, list(seq))
            if s > best_score:
                best_score, best_seq = s, list(seq)
    h = beam(["<b>", "a", "b", "c"], beam_size=64)(lp, torch.tensor([T]))[0][0]
    assert h.tokens == best_seq
    assert h.score == pytest.approx(best_score, abs=1e-5)


def test_automatic_token_pruning_keeps_the_search_exact():
    # without LM, lexicon or bonus the core extends by the K + 1 best tokens only; compare with
    # a no-op fusion, which takes the general path over every token
    lp = random_log_probs(3, 6, 12, 9, scale=1.5)
    lengths = torch.tensor([12, 11, 9, 12, 5, 1])

    class NoOp(Fusion):
        pass

    tokens = ["<b>"] + list("abcdefgh")
    for K in (1, 3, 6):
        fast = beam(tokens, beam_size=K, nbest=K).search(lp, lengths)
        full = prefix_beam_search(lp, lengths, K, nbest=K, fusion=NoOp(0.0))
        torch.testing.assert_close(fast.scores, full.scores)
        assert torch.equal(fast.emitted, full.emitted)


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 4),
    T=st.integers(1, 7),
    V=st.integers(2, 5),
    K=st.integers(1, 6),
    nbest=st.integers(1, 4),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_properties_over_shapes_lengths_padding_and_beams(B, T, V, K, nbest, seed, data):
    lengths = torch.tensor(data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B)))
    lp = random_log_probs(seed, B, T, V, scale=2.0)
    tokens = ["<b>", " ", "a", "b", "c"][:V]
    dec = beam(tokens, beam_size=K, nbest=nbest)
    hyps = dec(lp, lengths)
    assert len(hyps) == B
    for b, nb in enumerate(hyps):
        n = int(lengths[b])
        assert 1 <= len(nb) <= min(nbest, K)
        assert len({tuple(h.tokens) for h in nb}) == len(nb)  # equal prefixes were merged
        scores = [h.score for h in nb]
        assert scores == sorted(scores, reverse=True)
        for h in nb:
            assert h.text == " ".join("".join(tokens[i] for i in h.tokens).split())
            assert all(0 < i < V for i in h.tokens)
            assert h.token_frames == sorted(set(h.token_frames)) and all(0 <= f < n for f in h.token_frames)
            assert h.score == pytest.approx(ctc_logprob(lp[b], n, h.tokens), abs=1e-4)
        if n == 0:
            assert nb[0].text == "" and nb[0].score == 0.0
        # padding and batch-mates change nothing
        alone = dec(lp[b : b + 1, : max(n, 1)], lengths[b : b + 1])[0]
        assert [h.tokens for h in alone] == [h.tokens for h in nb]
        assert [h.score for h in alone] == pytest.approx([h.score for h in nb], abs=1e-5)


def test_all_blank_input_gives_empty_text_with_the_blank_path_score():
    lp = peaky([{"<b>": 0.99}] * 6)
    h = beam(LETTERS)(lp, torch.tensor([6]))[0][0]
    assert h.text == "" and h.words == []
    assert h.score == pytest.approx(float(lp[0, :, 0].sum()) + 0.0, abs=1e-3)


def test_single_frame_input_gives_its_most_likely_token():
    lp = peaky([{"q": 0.9}])
    h = beam(LETTERS, beam_size=4)(lp, torch.tensor([1]))[0][0]
    assert h.text == "q" and h.token_frames == [0]
    assert h.score == pytest.approx(float(lp[0, 0, IX["q"]]), abs=1e-5)


def test_beam_agrees_with_greedy_on_peaky_posteriors_with_pruning_on():
    lp = peaky([{"h": 0.9}, {"<b>": 0.9}, {"i": 0.9}, {"i": 0.9}, {"<b>": 0.9}, {"i": 0.9}])
    greedy = build("decoder", "greedy", tokens=LETTERS)(lp, torch.tensor([6]))[0][0]
    h = beam(LETTERS, beam_size=8, token_topk=3, token_min_logp=-8.0, beam_threshold=20.0)(
        lp, torch.tensor([6])
    )
    assert h[0][0].text == greedy.text == "hii"


@pytest.mark.parametrize("seed", range(3))
def test_collapsing_blank_runs_keeps_text_scores_and_timestamps_on_peaky_posteriors(seed):
    g = torch.Generator().manual_seed(seed)
    B, T = 6, 60
    logits = 3 * torch.randn(B, T, len(LETTERS), generator=g)
    logits[:, :, 0] += 14.0 * (torch.rand(B, T, generator=g) < 0.6)  # runs of near-certain blanks
    lp, lengths = logits.log_softmax(-1), torch.tensor([60, 45, 1, 30, 59, 12])
    plain = beam(LETTERS, beam_size=8, nbest=3, frame_shift_s=0.01)(lp, lengths)
    fast = beam(LETTERS, beam_size=8, nbest=3, frame_shift_s=0.01, blank_skip_logp=-1e-3)(lp, lengths)
    for a, b in zip(plain, fast):
        assert [h.text for h in b] == [h.text for h in a]
        assert [h.token_frames for h in b] == [h.token_frames for h in a]
        assert [h.words for h in b] == [h.words for h in a]
        assert [h.score for h in b] == pytest.approx([h.score for h in a], abs=1e-4)  # exact, rescored


def test_collapsed_runs_carry_their_summed_blank_log_probability():
    from speechkit.decoders.beam import collapse_blank_runs

    lp = peaky([{"a": 0.9}, {"<b>": 0.9999}, {"<b>": 0.9999}, {"b": 0.9}, {"<b>": 0.9999}])
    short, lengths, src = collapse_blank_runs(lp, torch.tensor([5]), -0.01)
    assert lengths.tolist() == [4] and src.tolist() == [[0, -1, 3, -1]]
    assert float(short[0, 1, 0]) == pytest.approx(float(lp[0, 1, 0] + lp[0, 2, 0]), abs=1e-6)
    assert torch.isinf(short[0, 1, 1:]).all() and torch.equal(short[0, 2], lp[0, 3])


# --------------------------------------------------------------------------- timestamps


def test_word_timestamps_in_seconds_from_frame_shift():
    frames = [
        {"a": 0.9},
        {"a": 0.9},
        {"<b>": 0.9},
        {" ": 0.9},
        {"b": 0.9},
        {"b": 0.9},
        {"c": 0.9},
        {"<b>": 0.9},
    ]
    lp = peaky(frames)
    h = beam(LETTERS, frame_shift_s=0.04)(lp, torch.tensor([8]))[0][0]
    assert h.text == "a bc"
    assert h.token_frames == [0, 3, 4, 6]
    assert [w for w, _, _ in h.words] == ["a", "bc"]
    # "a" is on frames 0-1, "bc" on frames 4-6 (ends after its last frame)
    assert [(s, e) for _, s, e in h.words] == pytest.approx([(0.0, 0.08), (0.16, 0.28)])


# --------------------------------------------------------------------------- lexicon and LM


@pytest.fixture
def lm_text(tmp_path):
    path = tmp_path / "lm.txt"
    path.write_text("the cat sat\n" * 20 + "a cat ran\n" * 5)
    return path


# "thx cot" is acoustically best; "the cat" is what the LM and lexicon know
AMBIGUOUS = peaky(
    [
        {"t": 0.9},
        {"<b>": 0.9},
        {"h": 0.9},
        {"<b>": 0.9},
        {"x": 0.55, "e": 0.45},
        {"<b>": 0.9},
        {" ": 0.9},
        {"c": 0.9},
        {"o": 0.55, "a": 0.45},
        {"t": 0.9},
    ]
)
AMB_LEN = torch.tensor([AMBIGUOUS.shape[1]])


def test_without_lm_the_acoustically_best_text_wins():
    assert beam(LETTERS)(AMBIGUOUS, AMB_LEN)[0][0].text == "thx cot"


def test_lexicon_allows_only_listed_words(tmp_path):
    lex = tmp_path / "words.txt"
    lex.write_text("the\ncat\nsat\n")
    assert beam(LETTERS, lexicon=str(lex))(AMBIGUOUS, AMB_LEN)[0][0].text == "the cat"
    words = {"bin", "blue", "at", "a", "one", "please"}
    lex.write_text("\n".join(sorted(words)) + "\n")
    lp = random_log_probs(5, 3, 30, len(LETTERS), scale=3.0)
    for nbest in beam(LETTERS, lexicon=str(lex), beam_size=8, nbest=4)(lp, torch.full((3,), 30)):
        for h in nbest:
            assert {w for w, _, _ in h.words} <= words


@pytest.mark.parametrize("unit", ["char", "word"])
def test_lm_fusion_moves_the_result_towards_the_lm(lm_text, unit):
    lm = NgramLM.train(lm_text, order=3 if unit == "char" else 2, unit=unit)
    h = beam(LETTERS, lm=lm, alpha=1.0)(AMBIGUOUS, AMB_LEN)[0][0]
    assert h.text == "the cat"
    # the fused score is the CTC log-probability plus alpha times the LM's
    ctc = ctc_logprob(AMBIGUOUS[0], int(AMB_LEN), h.tokens)
    units = list(h.text) if unit == "char" else h.text.split()
    assert h.score == pytest.approx(ctc + lm.sentence_logprob(units), abs=1e-3)
    # alpha = 0 switches the LM off
    assert beam(LETTERS, lm=lm, alpha=0.0)(AMBIGUOUS, AMB_LEN)[0][0].text == "thx cot"


def test_lm_is_built_from_a_config_node_with_a_name(lm_text, tmp_path):
    from omegaconf import OmegaConf

    arpa = tmp_path / "c.arpa"
    NgramLM.train(lm_text, order=3).save_arpa(arpa)
    for spec in (
        {"name": "ngram", "path": str(arpa)},
        OmegaConf.create({"name": "ngram", "path": str(arpa)}),
    ):
        dec = beam(LETTERS, lm=spec, alpha=1.0)
        assert isinstance(dec.lm, NgramLM) and dec.lm.unit == "char"
        assert dec(AMBIGUOUS, AMB_LEN)[0][0].text == "the cat"
    assert isinstance(beam(LETTERS, lm=NgramLM(NgramConfig(path=str(arpa)))).lm, NgramLM)


def test_beta_rewards_words(lm_text):
    lm = NgramLM.train(lm_text, order=2, unit="word")
    lp = peaky([{"a": 0.9}, {" ": 0.4, "<b>": 0.5}, {"b": 0.9}])
    plain = beam(LETTERS, lm=lm, alpha=0.0)(lp, torch.tensor([3]))[0][0].text
    bonus = beam(LETTERS, lm=lm, alpha=0.0, beta=5.0)(lp, torch.tensor([3]))[0][0].text
    assert (plain, bonus) == ("ab", "a b")

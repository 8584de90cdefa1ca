"""Exact CTC scoring (decoders/ctc_score.py): the compiled forward algorithm against ctc_loss."""

from __future__ import annotations

import pytest
import torch

from speechkit.decoders.ctc_score import ctc_logprob
from speechkit.registry import build

NEG_INF = float("-inf")


def random_log_probs(g: torch.Generator, B: int, T: int, V: int, scale: float) -> torch.Tensor:
    return (scale * torch.randn(B, T, V, generator=g)).log_softmax(-1)


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
    got = ctc_logprob(lp, lengths, emitted, scores)
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
    assert ctc_logprob(lp, torch.tensor([3]), emitted, torch.zeros(1, 1))[0, 0] == NEG_INF

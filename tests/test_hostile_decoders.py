"""Decoders fed what is not log-softmax output: +inf refused, raw logits normalised (greedy, beam)."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from speechkit import build

TOKENS = ["<blank>", " ", "a", "b", "c"]

DECODERS = [
    pytest.param("greedy", {}, id="greedy"),
    pytest.param("beam", {"engine": "torch"}, id="beam-torch"),
    pytest.param("beam", {"engine": "native"}, id="beam-native"),
    pytest.param("beam", {"engine": "auto"}, id="beam-auto"),
]


def _decoder(name: str, params: dict):
    extra = {"beam_size": 8, "nbest": 3} if name == "beam" else {}
    return build("decoder", name, tokens=TOKENS, frame_shift_s=0.04, **extra, **params)


def _logits(seed: int = 0) -> torch.Tensor:
    """(2, 7, V) raw scores: a peaked random row per frame, far from normalised."""
    return torch.randn(2, 7, len(TOKENS), generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize(("name", "params"), DECODERS)
def test_plus_inf_in_log_probs_is_refused_naming_utterance_and_frame(name, params):
    lp = torch.log_softmax(_logits(), -1)
    lp[1, 5, 3] = math.inf
    with pytest.raises(ValueError, match=r"\+inf.*utterance 1, frame 5"):
        _decoder(name, params)(lp, torch.tensor([7, 7]))


@pytest.mark.parametrize(("name", "params"), DECODERS)
@pytest.mark.parametrize("shift", ["+5", "-5", "raw logits"])
def test_unnormalised_scores_decode_like_their_log_softmax_with_log_probability_scores(name, params, shift):
    x = _logits()
    lp = torch.log_softmax(x, -1)
    raw = {"+5": lp + 5, "-5": lp - 5, "raw logits": x}[shift]
    lengths = torch.tensor([7, 5])
    decoder = _decoder(name, params)
    want, got = decoder(lp, lengths), decoder(raw, lengths)
    for w, g in zip(want, got):
        assert [h.text for h in g] == [h.text for h in w] and [h.tokens for h in g] == [h.tokens for h in w]
        assert [h.score for h in g] == pytest.approx([h.score for h in w], abs=1e-4)
        assert all(h.score <= 1e-6 for h in g)


def test_unnormalised_input_is_warned_about_once_per_decoder_and_log_softmax_not_at_all(caplog):
    x = _logits()
    decoder = _decoder("greedy", {})
    with caplog.at_level(logging.WARNING, logger="speechkit"):
        decoder(torch.log_softmax(x, -1), torch.tensor([7, 7]))
        assert not caplog.records
        decoder(x, torch.tensor([7, 7]))
        decoder(x + 1, torch.tensor([7, 7]))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "not log-probabilities" in warnings[0] and "log_softmax" in warnings[0]


def test_padding_frames_and_half_precision_log_softmax_are_left_as_they_are(caplog):
    lp = torch.log_softmax(_logits(), -1)
    padded = lp.clone()
    padded[0, 4:] = 0.0  # padding beyond the length: not a distribution, never looked at
    decoder = _decoder("greedy", {})
    with caplog.at_level(logging.WARNING, logger="speechkit"):
        out = decoder(padded, torch.tensor([4, 7]))
        bf16 = _logits(1).bfloat16().log_softmax(-1).float()  # rows off by up to ~1e-2 from rounding
        out16 = decoder(bf16, torch.tensor([7, 7]))
    assert not caplog.records
    assert out[0][0].score == pytest.approx(float(lp[0, :4].max(-1).values.sum()), abs=1e-6)
    assert out16[1][0].score == pytest.approx(float(bf16[1].max(-1).values.sum()), abs=1e-6)

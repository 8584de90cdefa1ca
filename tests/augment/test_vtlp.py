"""VTLP: a formant at f moves to where the warp says, on real fbank and spectrogram features of tones."""

from __future__ import annotations

import math

import pytest
import torch

from speechkit.augment.vtlp import Vtlp, VtlpConfig
from speechkit.pipeline import CTCModel
from speechkit.registry import build
from tests.augment.test_chain import _compose

SR = 16000


def tone(hz: float, seconds: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return torch.sin(2 * math.pi * hz * t)[None]


def features(frontend, x: torch.Tensor) -> torch.Tensor:
    frontend.eval()
    feats, _ = frontend(x, torch.tensor([x.shape[1]]))
    return feats


def warped(frontend, feats: torch.Tensor, alpha: float) -> torch.Tensor:
    stage = Vtlp(VtlpConfig(low=alpha, high=alpha), frontend=frontend).train()
    out, lengths = stage(feats, torch.tensor([feats.shape[1]]))
    assert lengths.tolist() == [feats.shape[1]]
    return out


@pytest.mark.parametrize("name", ["fbank", "spectrogram"])
@pytest.mark.parametrize("alpha", [0.9, 1.1])
def test_a_tone_moves_where_the_warp_sends_it(name, alpha):
    """Bin k reads the spectrum at α·c_k (below the knee): a 1 kHz tone shows up where a 1/α kHz tone is."""
    frontend = build("frontend", name, normalize="none")
    out = warped(frontend, features(frontend, tone(1000.0)), alpha)
    expected = features(frontend, tone(1000.0 / alpha))
    peak = out.mean(1).argmax(-1).item()
    assert abs(peak - expected.mean(1).argmax(-1).item()) <= 1
    assert peak != features(frontend, tone(1000.0)).mean(1).argmax(-1).item()  # it did move
    # the whole profile, not just its peak: close to the shifted tone's, in log energy
    profile, target = out.mean(1)[0], expected.mean(1)[0]
    assert torch.corrcoef(torch.stack([profile, target]))[0, 1] > 0.95


def test_warp_is_piecewise_linear_fixing_nyquist():
    frontend = build("frontend", "spectrogram", normalize="none")
    stage = Vtlp(VtlpConfig(), frontend=frontend)  # boundary 4 800 Hz at 16 kHz
    alphas = torch.tensor([0.9, 1.0, 1.1])
    src = stage.source_hz(alphas)
    centres = stage.centres
    assert torch.allclose(src[1], centres)  # α = 1: every bin reads itself
    assert torch.allclose(src[:, -1], torch.full((3,), SR / 2.0))  # Nyquist stays put
    assert bool((src.diff(dim=1) > 0).all())  # monotonic: no two bins swap
    low = centres < 4000
    assert torch.allclose(src[0, low], 0.9 * centres[low]) and torch.allclose(src[2, low], 1.1 * centres[low])


def test_each_utterance_draws_its_own_factor_and_padding_stays_zero():
    frontend = build("frontend", "fbank", normalize="none")
    one = features(frontend, tone(700.0))
    batch = torch.cat([one, one, one, one])
    batch[3, 20:] = 0  # a shorter utterance's padding
    lengths = torch.tensor([one.shape[1]] * 3 + [20])
    stage = Vtlp(VtlpConfig(), frontend=frontend).train()
    torch.manual_seed(0)
    out, out_lengths = stage(batch, lengths)
    assert torch.equal(out_lengths, lengths)
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])
    assert bool((out[3, 20:] == 0).all())
    stage.eval()
    assert torch.equal(stage(batch, lengths)[0], batch)  # identity outside training
    off = Vtlp(VtlpConfig(prob=0.0), frontend=frontend).train()
    assert torch.equal(off(batch, lengths)[0], batch)


def test_mfcc_and_bad_settings_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match="frontend=fbank"):
        Vtlp(VtlpConfig(), frontend=build("frontend", "mfcc"))
    fbank = build("frontend", "fbank")
    with pytest.raises(ValueError, match="low"):
        Vtlp(VtlpConfig(low=1.2, high=1.1), frontend=fbank)
    with pytest.raises(ValueError, match=r"augment\.vtlp\.boundary_hz=9000"):
        Vtlp(VtlpConfig(boundary_hz=9000.0), frontend=fbank)
    with pytest.raises(ValueError, match="frontend=fbank"):  # an image frontend: no sample rate either
        Vtlp(VtlpConfig(), frontend=build("frontend", "ocr_line"))


def test_the_default_boundary_follows_the_sample_rate():
    """0.6 × Nyquist: the paper's 4 800 Hz at 16 kHz, and still inside the band of an 8 kHz model."""
    assert Vtlp(VtlpConfig(), frontend=build("frontend", "fbank")).boundary_hz == pytest.approx(4800.0)
    narrow = Vtlp(VtlpConfig(), frontend=build("frontend", "fbank", sample_rate=8000, n_mels=40))
    assert narrow.boundary_hz == pytest.approx(2400.0)
    assert float(narrow.source_hz(torch.tensor([1.1, 0.9])).max()) <= 4000.0  # nothing read past the band


def test_the_chain_gives_vtlp_its_frontend_and_trains():
    cfg = _compose("frontend=fbank", "augment=[gain,vtlp,specaugment]")
    model = CTCModel.from_config(cfg, vocab_size=4)
    assert model.augment.names == ["gain", "vtlp", "specaugment"]
    assert model.augment.stages[1].centres.shape == (model.frontend.output_dim,)
    model.train()
    x = torch.randn(2, 8000) * 0.1
    log_probs, lengths = model(x, torch.tensor([8000, 6000]))
    assert bool(torch.isfinite(log_probs).all())
    log_probs.sum().backward()

"""Waveform augmentations: shapes, lengths and padding, eval-mode identity, and each one's effect measured."""

from __future__ import annotations

import math

import pytest
import soundfile as sf
import torch

from speechkit import build
from speechkit.augment.audio import colored_noise
from speechkit.augment.reverb import DIRECT_PRE, simulate_rirs
from speechkit.functional import lengths_mask, mask_padding

SR = 16000  # Hz
SMALL_BANK = {"n_rirs": 3, "rt60_min": 0.2, "rt60_max": 0.4, "room_max": [6.0, 5.0, 3.0], "seed": 5}
PLUGINS = {  # every waveform plugin, applied to every utterance
    "speed": {},
    "telephone": {"prob": 1.0},
    "gain": {"prob": 1.0},
    "noise": {"prob": 1.0},
    "silence": {"prob": 1.0, "max_s": 0.2},
    "reverb": {"prob": 1.0, **SMALL_BANK},
}


def _batch(lengths=(8000, 5000, 3001), seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    """Speech-like test signals: a tone plus noise, zero past each length."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    t = torch.arange(int(lengths.max())) / SR
    x = 0.3 * torch.sin(2 * math.pi * 440 * t) + 0.05 * torch.randn(len(lengths), t.shape[0], generator=g)
    return mask_padding(x, lengths), lengths


def _db(power_ratio: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(power_ratio)


def _power(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return (x.square() * lengths_mask(lengths, x.shape[1])).sum(1) / lengths


@pytest.mark.parametrize("name", PLUGINS)
def test_shapes_lengths_and_zero_padding_and_eval_mode_is_identity(name):
    torch.manual_seed(0)
    aug = build("augment", name, **PLUGINS[name])
    x, lengths = _batch()
    y, new = aug.train()(x, lengths)
    assert y.dim() == 2 and y.shape[0] == 3 and y.dtype == torch.float32 and new.shape == (3,)
    assert y.shape[1] == int(new.max()) or (y.shape[1] == x.shape[1] and new.max() <= y.shape[1])
    assert (y * ~lengths_mask(new, y.shape[1])).abs().max() == 0  # padding stays zero
    assert torch.isfinite(y).all() and (y.abs().sum(1) > 0).all()
    ev, ev_lengths = aug.eval()(x, lengths)
    assert ev is x and ev_lengths is lengths


@pytest.mark.parametrize("name", ["telephone", "gain", "noise", "silence", "reverb"])
def test_prob_zero_leaves_the_batch_alone_and_a_partial_prob_keeps_the_rest_unchanged(name):
    x, lengths = _batch(lengths=(8000,) * 16)
    aug = build("augment", name, **{**PLUGINS[name], "prob": 0.0}).train()
    assert aug(x, lengths)[0] is x
    torch.manual_seed(1)
    y, new = build("augment", name, **{**PLUGINS[name], "prob": 0.5}).train()(x, lengths)
    same = [bool(torch.equal(y[b, : new[b]], x[b, : lengths[b]])) for b in range(16)]
    assert 0 < sum(same) < 16


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_duration_by_one_over_the_factor_and_pitch_by_the_factor(factor):
    x, lengths = _batch(lengths=(16000, 9999))
    y, new = build("augment", "speed", factors=[factor]).train()(x, lengths)
    assert (new.float() - lengths / factor).abs().max() <= 1  # within a sample
    spectrum = torch.fft.rfft(y[0, : new[0]]).abs()
    peak_hz = float(spectrum.argmax()) * SR / int(new[0])
    assert peak_hz == pytest.approx(440 * factor, abs=2)


def test_speed_draws_each_factor_per_utterance():
    torch.manual_seed(0)
    x, lengths = _batch(lengths=(8000,) * 32)
    _, new = build("augment", "speed").train()(x, lengths)
    assert set(new.tolist()) == {8000, math.ceil(8000 / 0.9), math.ceil(8000 / 1.1)}


def test_telephone_removes_the_energy_above_4_khz_and_below_300_hz():
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(2, SR, generator=g)  # white: energy at every frequency
    lengths = torch.tensor([SR, SR])
    y, new = build("augment", "telephone", prob=1.0).train()(x, lengths)
    assert torch.equal(new, lengths)
    f = torch.fft.rfftfreq(SR, 1 / SR)

    def band(z, lo, hi):
        return torch.fft.rfft(z).abs().square()[:, (f >= lo) & (f < hi)].sum()

    assert band(y, 4000, 8001) / band(x, 4000, 8001) < 1e-3  # measured 2e-4 (−37 dB)
    assert band(y, 0, 150) / band(x, 0, 150) < 1e-2  # measured 2e-4
    assert band(y, 500, 3000) / band(x, 500, 3000) == pytest.approx(1, abs=0.05)  # the pass band kept


def test_gain_changes_the_level_by_the_drawn_db_and_protects_from_clipping():
    x, lengths = _batch()
    y, _ = build("augment", "gain", prob=1.0, min_db=6.0, max_db=6.0, protect_clipping=False).train()(
        x, lengths
    )
    assert _db(_power(y, lengths) / _power(x, lengths)).tolist() == pytest.approx([6.0] * 3, abs=1e-3)
    y, _ = build("augment", "gain", prob=1.0, min_db=20.0, max_db=20.0).train()(x, lengths)
    peak = y.abs().amax(1)
    assert peak.tolist() == pytest.approx([1.0] * 3, abs=1e-5)  # raised only as far as full scale
    torch.manual_seed(0)
    y, _ = build("augment", "gain", prob=1.0, min_db=-20.0, max_db=-10.0).train()(x, lengths)
    gains = _db(_power(y, lengths) / _power(x, lengths))
    assert ((gains >= -20 - 1e-3) & (gains <= -10 + 1e-3)).all() and gains.std() > 0


@pytest.mark.parametrize("color", ["white", "pink", "brown"])
def test_noise_is_added_at_the_drawn_snr(color):
    x, lengths = _batch()
    torch.manual_seed(0)
    y, _ = build("augment", "noise", prob=1.0, snr_min_db=10.0, snr_max_db=10.0, colors=[color]).train()(
        x, lengths
    )
    snr = _db(_power(x, lengths) / _power(y - x, lengths))
    assert snr.tolist() == pytest.approx([10.0] * 3, abs=0.5)


def test_colored_noise_has_the_spectral_slope_of_its_color():
    torch.manual_seed(0)
    noise = colored_noise(3, 2**15, torch.tensor([0.0, 1.0, 2.0]))
    f = torch.fft.rfftfreq(2**15)
    keep = (f > 1e-3) & (f < 0.4)
    power = torch.fft.rfft(noise).abs().square()[:, keep]
    logf = torch.log10(f[keep])
    a = torch.stack([logf, torch.ones_like(logf)], 1)
    slopes = torch.linalg.lstsq(a, torch.log10(power).T).solution[0]  # power ∝ f^slope
    assert slopes.tolist() == pytest.approx([0.0, -1.0, -2.0], abs=0.1)


def test_noise_from_a_folder_of_recordings_mixes_windows_of_them_at_the_snr(tmp_path):
    g = torch.Generator().manual_seed(0)
    recording = 0.1 * torch.randn(SR, generator=g)
    sf.write(tmp_path / "fan.wav", recording.numpy(), SR, subtype="FLOAT")
    x, lengths = _batch()
    torch.manual_seed(0)
    aug = build("augment", "noise", prob=1.0, snr_min_db=0.0, snr_max_db=0.0, folder=str(tmp_path)).train()
    y, _ = aug(x, lengths)
    assert _db(_power(x, lengths) / _power(y - x, lengths)).tolist() == pytest.approx([0.0] * 3, abs=0.5)
    added = (y - x)[0, :100]  # a window of the recording, scaled
    windows = torch.cat([recording, recording]).unfold(0, 100, 1)[:SR]
    corr = (windows @ added) / (windows.norm(dim=1) * added.norm())
    assert float(corr.max()) == pytest.approx(1.0, abs=1e-4)


def test_reverb_bank_is_seeded_in_its_rt60_range_and_leaves_the_global_rngs_alone():
    import pyroomacoustics as pra

    state = torch.get_rng_state()
    bank = simulate_rirs(4, SR, (0.2, 0.5), (3.0, 3.0, 2.4), (6.0, 5.0, 3.0), (0.5, 2.0), 11)
    assert torch.equal(torch.get_rng_state(), state)
    again = simulate_rirs.__wrapped__(4, SR, (0.2, 0.5), (3.0, 3.0, 2.4), (6.0, 5.0, 3.0), (0.5, 2.0), 11)
    assert torch.equal(bank.rirs, again.rirs)  # the same rooms in every run
    assert ((bank.rt60 >= 0.2) & (bank.rt60 <= 0.5)).all()
    measured = torch.tensor([pra.experimental.measure_rt60(h.numpy(), fs=SR, decay_db=30) for h in bank.rirs])
    assert ((measured > 0.7 * bank.rt60) & (measured < 1.6 * bank.rt60)).all(), (measured, bank.rt60)
    assert (bank.rirs.abs().argmax(1) == DIRECT_PRE).all()  # direct path at a fixed place
    assert ((bank.distance >= 0.5) & (bank.distance <= 2.0)).all()


def test_reverb_keeps_the_direct_path_where_the_dry_sound_was_and_the_level():
    x = torch.zeros(2, 12000)
    x[0, 3000], x[1, 7000] = 1.0, -1.0  # a click in each
    lengths = torch.tensor([12000, 9000])
    torch.manual_seed(0)
    y, new = build("augment", "reverb", **PLUGINS["reverb"]).train()(x, lengths)
    assert torch.equal(new, lengths) and y.abs().argmax(1).tolist() == [3000, 7000]
    assert (y[0, 3200:] != 0).any()  # the room's tail follows the click
    assert _power(y, lengths).tolist() == pytest.approx(_power(x, lengths).tolist(), rel=1e-4)


def test_silence_adds_a_lead_and_a_trail_over_a_low_noise_floor():
    x, lengths = _batch(lengths=(8000,) * 8)
    x[:, 0] = 0.9  # a marker: where the utterance starts after its lead
    torch.manual_seed(0)
    aug = build("augment", "silence", prob=1.0, max_s=0.5, floor_min_db=-60.0, floor_max_db=-50.0).train()
    y, new = aug(x, lengths)
    added = new - lengths
    assert ((added >= 0) & (added <= SR)).all() and added.float().std() > 0  # 0 to 2 × 0.5 s
    leads = (y > 0.5).float().argmax(1)
    assert ((leads >= 0) & (leads <= added)).all() and leads.float().std() > 0
    for b, lead in enumerate(leads.tolist()):
        assert (y[b, lead : lead + 8000] - x[b]).abs().max() < 0.02  # the utterance, whole, over the floor
        if lead > 200:
            assert -61 < float(_db(y[b, :lead].square().mean())) < -49  # the floor's level, dB re full scale

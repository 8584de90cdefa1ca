"""Reverberation from simulated rooms: the ``reverb`` waveform augmentation (see audio.py).

A bank of room impulse responses (RIRs) is simulated once per process, at first use, by
pyroomacoustics, the field's shoebox-room simulator: rooms of random size whose wall absorption
gives, by Sabine's formula, an RT60 drawn from a range; source and microphone at random places a
random distance apart. Image sources up to order ``ISM_ORDER`` give the early reflections and ray
tracing the tail (a room of RT60 0.8 s takes ~0.1 s this way, ~4 s with image sources alone). The
bank depends on its settings and ``seed`` alone — NumPy generator and pyroomacoustics' own RNG
seeded from it, torch's, NumPy's and Python's global RNGs untouched — so every run (and a resumed
one) convolves with the same rooms. Measured T30 of 16 rooms built for 0.2–0.8 s: 0.96–1.43× the
Sabine target (Sabine's formula underestimates the decay of the simulated rooms).

Each RIR starts ``DIRECT_PRE`` samples before its direct path (its peak); after the (FFT, batched)
convolution those samples are dropped, so the direct sound stays where the dry speech was and CTC's
timing holds. The output keeps the input's length (the tail past the end is cut) and its RMS level.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from speechkit.augment.audio import WaveformAugment, mean_power
from speechkit.functional import mask_padding
from speechkit.registry import register

log = logging.getLogger(__name__)

ISM_ORDER = 10  # image-source reflection order; ray tracing (pyroomacoustics' hybrid) models the rest
RAYS = 5000  # rays traced per room
DIRECT_PRE = 40  # samples kept before the direct-path peak: half pyroomacoustics' 81-tap fractional delay
TAIL_RT60S = 1.25  # RIRs are cut this many RT60s (of the longest room) after the direct path
WALL_MARGIN_M = 0.3  # source and microphone at least this far from every wall, m


@dataclass
class ReverbConfig:
    prob: float = 0.5  # chance that an utterance is reverberated
    n_rirs: int = 64  # simulated rooms in the bank (~0.1-0.2 s each, once per process)
    rt60_min: float = 0.2  # reverberation time range of the rooms, s (Sabine's formula sets the walls)
    rt60_max: float = 0.8
    room_min: list[float] = field(default_factory=lambda: [3.0, 3.0, 2.4])  # smallest room, m
    # (length, width, height)
    room_max: list[float] = field(default_factory=lambda: [10.0, 8.0, 4.0])  # largest room, m
    distance_min: float = 0.5  # source–microphone distance range, m
    distance_max: float = 3.0
    seed: int = 0  # the bank's own seed: the same rooms in every run, whatever trainer.seed


class RIRBank(NamedTuple):
    rirs: Tensor  # (n, K) float32, direct path at sample DIRECT_PRE, zero-padded to a common length
    rt60: Tensor  # (n,) the RT60 each room was built for, s (Sabine)
    distance: Tensor  # (n,) source–microphone distance, m


@functools.lru_cache(maxsize=4)
def simulate_rirs(
    n: int,
    sample_rate: int,
    rt60: tuple[float, float],
    room_min: tuple[float, ...],
    room_max: tuple[float, ...],
    distance: tuple[float, float],
    seed: int,
) -> RIRBank:
    """``n`` RIRs of random shoebox rooms at ``sample_rate`` Hz (ranges as ``(low, high)``), cached."""
    import numpy as np

    try:
        import pyroomacoustics as pra
    except ImportError:
        raise ValueError(
            "augment 'reverb' simulates rooms with pyroomacoustics: pip install pyroomacoustics"
        ) from None

    log.info("reverb: simulating %d rooms at %d Hz (once per process; ~0.1-0.2 s each)", n, sample_rate)
    rng = np.random.default_rng(seed)
    pra.random.seed(numpy=seed, libroom=seed)  # the ray tracer's draws
    K = DIRECT_PRE + math.ceil(TAIL_RT60S * rt60[1] * sample_rate)
    rirs, targets, distances = torch.zeros(n, K), torch.zeros(n), torch.zeros(n)
    lo, hi = np.asarray(room_min, dtype=float), np.asarray(room_max, dtype=float)
    for i in range(n):  # one room each; draws are redone until the room can be built and the pair fits
        for _ in range(1000):
            dim, t60 = rng.uniform(lo, hi), rng.uniform(*rt60)
            source = rng.uniform(WALL_MARGIN_M, dim - WALL_MARGIN_M)
            d = rng.uniform(*distance)
            direction = rng.normal(size=3)
            mic = source + d * direction / np.linalg.norm(direction)
            if np.all(mic >= WALL_MARGIN_M) and np.all(mic <= dim - WALL_MARGIN_M):
                try:
                    absorption, _ = pra.inverse_sabine(t60, dim)
                except ValueError:  # too little absorption possible for this RT60 in this room
                    continue
                break
        else:
            raise ValueError(
                f"augment 'reverb': no room in {list(room_min)}–{list(room_max)} m fits a source–microphone "
                f"distance of {distance[0]}–{distance[1]} m at RT60 {rt60[0]}–{rt60[1]} s; widen the ranges"
            )
        room = pra.ShoeBox(
            dim,
            fs=sample_rate,
            materials=pra.Material(absorption),
            max_order=ISM_ORDER,
            ray_tracing=True,
            air_absorption=False,
        )
        room.set_ray_tracing(receiver_radius=0.5, n_rays=RAYS, energy_thres=1e-5)
        room.add_source(source)
        room.add_microphone(mic)
        room.compute_rir()
        h = np.asarray(room.rir[0][0], dtype=np.float32)
        start = int(np.argmax(np.abs(h))) - DIRECT_PRE  # the direct path is the strongest arrival
        h = h[max(start, 0) : max(start, 0) + K]
        rirs[i, : len(h)] = torch.from_numpy(h)
        targets[i], distances[i] = t60, d
    return RIRBank(rirs, targets, distances)


def fft_size(n: int) -> int:
    """The smallest ``2^a · 3^b · 5^c ≥ n``: a length torch's FFT is fast at (an arbitrary ``n`` measured
    2.6× slower for a 3 s utterance and a 1 s RIR)."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            best = min(best, p35 << (-(-n // p35) - 1).bit_length())  # p35 · the smallest 2^a ≥ n / p35
            p35 *= 3
        p5 *= 5
    return best


def reverberate(x: Tensor, lengths: Tensor, rirs: Tensor) -> Tensor:
    """``x`` ``(B, N)`` convolved with ``rirs`` ``(B, K)`` (direct path at ``DIRECT_PRE``), aligned on the
    direct path, cut to ``N``, zero past ``lengths``, at each utterance's own RMS level."""
    N, K = x.shape[1], rirs.shape[1]
    n = fft_size(N + K - 1)  # ≥ the full linear convolution: nothing wraps round
    wet = torch.fft.irfft(torch.fft.rfft(x, n) * torch.fft.rfft(rirs.to(x), n), n)
    wet = mask_padding(wet[:, DIRECT_PRE : DIRECT_PRE + N], lengths)
    return wet * (mean_power(x, lengths) / mean_power(wet, lengths).clamp_min(1e-20)).sqrt()[:, None]


@register("augment", "reverb", ReverbConfig)
class Reverb(WaveformAugment):
    """Reverberation by simulated rooms (pyroomacoustics): a seeded bank of RIRs, one drawn per utterance."""

    def __init__(self, cfg: ReverbConfig, sample_rate: int = 16000) -> None:
        super().__init__(cfg, sample_rate)
        ranges_ok = 0 < cfg.rt60_min <= cfg.rt60_max and 0 < cfg.distance_min <= cfg.distance_max
        rooms_ok = len(cfg.room_min) == len(cfg.room_max) == 3 and all(
            2 * WALL_MARGIN_M < a <= b for a, b in zip(cfg.room_min, cfg.room_max)
        )
        if cfg.n_rirs < 1 or not ranges_ok or not rooms_ok:
            raise ValueError(
                "augment 'reverb': needs n_rirs ≥ 1, 0 < rt60_min ≤ rt60_max, 0 < distance_min ≤ distance_max, "
                f"and room_min ≤ room_max as [length, width, height] of more than {2 * WALL_MARGIN_M} m"
            )
        self._rirs: Tensor | None = None  # the bank on the batch's device, from the first training batch on

    def bank(self) -> RIRBank:
        """The simulated rooms (built on first call, then cached for the process)."""
        c = self.cfg
        return simulate_rirs(
            c.n_rirs,
            self.sample_rate,
            (c.rt60_min, c.rt60_max),
            tuple(c.room_min),
            tuple(c.room_max),
            (c.distance_min, c.distance_max),
            c.seed,
        )

    def prepare(self) -> None:
        """The bank built now (on the CPU), e.g. before loader workers fork."""
        if self._rirs is None:
            self._rirs = self.bank().rirs

    def apply(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if self._rirs is None or self._rirs.device != x.device:
            self._rirs = self.bank().rirs.to(x.device)
        pick = torch.randint(self._rirs.shape[0], (x.shape[0],), device=x.device)
        return reverberate(x, lengths, self._rirs[pick]), lengths

"""Word times: where each word of a hypothesis starts and ends, in seconds.

:func:`align_tokens` finds each token's frames (the best CTC alignment), :func:`word_spans` turns
them into word spans by the rule of :class:`WordTiming` (stray spikes left out, offsets measured
against true word boundaries), and :func:`snap_to_audio` moves each boundary to the pauses of the
waveform (:func:`loudness`). ``Pipeline.annotate`` runs all three; decoders report their tokens'
frames as they are (:data:`RAW_FRAMES`). Measured in benchmarks/timestamps.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from speechkit.decoders.base import BLANK, word_groups
from speechkit.frontends import functional as FF


@dataclass(frozen=True)
class WordTiming:
    """How word times are read: :func:`word_spans` from token frames (seconds; unused without a frame
    rate), then :func:`snap_to_audio` to the waveform's pauses where the audio is at hand.

    CTC puts a token's frames anywhere the model is sure of it, not where its sound is: the
    bidirectional asr_grid model emits a sentence's first letter on the file's first frames and its
    last letters on the last ones, whatever silence lies between, and the last letter of a word well
    before the word's sound ends. So a word's span is the largest cluster of its tokens' frames (split
    where more than ``max_gap_s`` of blank separates two of its tokens; a stray spike is left out),
    shifted by ``start_offset_s`` and ``end_offset_s`` (an end never past the next word's start or the
    input's end). Each boundary then moves up to ``snap_s`` to where the audio says it is: the nearest
    pause (windows quieter than ``silence_level`` of the way from the noise floor to the speech peak,
    in dB), else the quietest window between two words; words estimated more than ``apart_s`` apart
    each take their own nearest pause. The defaults minimise the mean absolute boundary error of the
    asr_grid mix model on the asr_grid dev set (benchmarks/timestamps.py; frames of 30 ms, receptive
    centre 22.5 ms in; 58 ms from the frames alone, 30 ms snapped)."""

    max_gap_s: float | None = 0.06  # s of blank inside a word that splits it into clusters (None: never)
    start_offset_s: float = 0.015  # s added to the first frame's start
    end_offset_s: float = 0.12  # s added to the last frame's end
    snap_s: float | None = 0.2  # s a boundary may move to meet the audio (None: times from the frames alone)
    silence_level: float = 0.15  # a window is silent below this fraction of the floor-to-peak range, in dB
    apart_s: float = 0.5  # s between one word's end and the next one's start past which each snaps alone


# the tokens' frames as they are: what decoders report
RAW_FRAMES = WordTiming(max_gap_s=None, start_offset_s=0.0, end_offset_s=0.0, snap_s=None)

# Word times off an aligner's posteriors (speechkit/aligner.py): its spikes are not spread over a word
# nor displaced by their place in the sentence, so every token counts (no clusters); a word's first
# token comes 60 ms after its sound starts, its last at its end; snapped within 0.1 s. Fitted on the
# asr_grid dev set (recipe model with aligner.context_ms=80: 35 ms from the frames, 21 ms snapped;
# benchmarks/README.md, "Word timestamps").
ALIGNER_TIMING = WordTiming(max_gap_s=None, start_offset_s=-0.06, end_offset_s=0.0, snap_s=0.1)

# Fewest moved boundaries of each kind (starts, ends) for :func:`timing_shift` to trust their median.
MIN_CALIBRATION_BOUNDARIES = 20


def timing_shift(
    from_frames: Sequence[Sequence[tuple[str, float, float]]],
    snapped: Sequence[Sequence[tuple[str, float, float]]],
) -> tuple[float, float]:
    """How far a model's word times read off the frames sit from the audio's pauses: the median move of
    the starts, and of the ends, that snapping moved (s; ``from_frames`` and ``snapped`` the same
    utterances' words without and with :func:`snap_to_audio`). No references needed: run on a model's
    own dev audio, it calibrates ``start_offset_s`` / ``end_offset_s`` for that model (a CTC head's
    spikes sit earlier or later by model and seed). (0, 0) for a kind with fewer than
    ``MIN_CALIBRATION_BOUNDARIES`` moves."""
    starts, ends = [], []
    for frames_words, snapped_words in zip(from_frames, snapped):
        for (_, s1, e1), (_, s2, e2) in zip(frames_words, snapped_words):
            if s2 != s1:
                starts.append(s2 - s1)
            if e2 != e1:
                ends.append(e2 - e1)

    def median(moves: list[float]) -> float:
        return round(float(np.median(moves)), 3) if len(moves) >= MIN_CALIBRATION_BOUNDARIES else 0.0

    return median(starts), median(ends)


def word_spans(
    tokens: list[int],
    frames: list[int],
    symbols: list[str],
    frame_shift_s: float | None,
    end_frames: list[int] | None = None,
    space: str = " ",
    duration_s: float | None = None,
    timing: WordTiming = RAW_FRAMES,
) -> list[tuple[str, float, float]]:
    """Group tokens into words at ``space`` tokens: ``(word, start, end)`` in seconds (or frames).

    Token ``i`` holds frames ``frames[i] … end_frames[i]`` (default: its first frame only); frame
    ``t`` spans ``[t, t + 1) · frame_shift_s``. A word runs from the first frame of the largest
    cluster of its tokens to the end of that cluster's last frame, moved by ``timing``'s offsets
    (:class:`WordTiming`); its end is never past the next word's start nor ``duration_s`` (the
    input's length), nor is its start. Seconds are rounded to milliseconds; without a frame rate
    times are frames, neither clustered nor moved. Starts never decrease and every end ≥ its start.
    The default ``RAW_FRAMES`` (what decoders report: where the tokens are) keeps every token and
    moves nothing; ``Pipeline`` reads word times with ``WordTiming()``, measured against true ones.
    """
    ends = end_frames if end_frames is not None else frames
    groups = word_groups(tokens, symbols, space)
    if not frame_shift_s:
        timing, shift = RAW_FRAMES, 1.0
    else:
        shift = frame_shift_s
    max_gap = None if timing.max_gap_s is None else timing.max_gap_s / shift  # frames
    spans = [_main_cluster(frames[a : b + 1], ends[a : b + 1], max_gap) for a, b in groups]
    starts = [first * shift + timing.start_offset_s for first, _ in spans]
    stops = [(last + 1) * shift + timing.end_offset_s for _, last in spans]
    limit = float("inf") if duration_s is None else duration_s
    if frame_shift_s and duration_s is not None:
        limit = math.floor(duration_s * 1000 + 1e-6) / 1000  # whole ms, so rounding cannot pass it
    out = []
    for k, (a, b) in enumerate(groups):
        nxt = starts[k + 1] if k + 1 < len(groups) else limit
        start = max(0.0, min(starts[k], limit))
        end = max(start, min(stops[k], nxt, limit))
        if frame_shift_s:
            start, end = round(start, 3), round(end, 3)
        out.append(("".join(symbols[t] for t in tokens[a : b + 1]).removeprefix(space), start, end))
    return out


def _main_cluster(firsts: Sequence[int], lasts: Sequence[int], max_gap: float | None) -> tuple[int, int]:
    """First and last frame of the cluster of tokens (frames ``firsts[i] … lasts[i]``, in time order)
    that holds the most frames, clusters split where more than ``max_gap`` frames lie between tokens."""
    best, best_size = (firsts[0], lasts[0]), -1
    lo, size = firsts[0], 0
    for i, (a, b) in enumerate(zip(firsts, lasts)):
        if i and max_gap is not None and a - lasts[i - 1] - 1 > max_gap:
            lo, size = a, 0
        size += b - a + 1
        if size > best_size:  # ties: the earlier cluster
            best, best_size = (lo, b), size
    return best


# The waveform's short-time energy, which WordTiming.snap_s moves word boundaries to.
ENERGY_WINDOW_S = 0.010  # s per energy window (160 samples at 16 kHz)
ENERGY_HOP_S = 0.0025  # s between windows (40 samples at 16 kHz)
NOISE_PERCENTILE, PEAK_PERCENTILE = 10, 99  # % of an utterance's windows below its noise floor, its peak
# dB re full scale: windows at or under it are digital silence (padding), not counted for the floor
DIGITAL_SILENCE_DB = FF.ENERGY_FLOOR_DB + 1e-3  # (the floor itself, whatever the last bits of its log)
MIN_RANGE_DB = 6.0  # dB: with less between noise floor and peak, pauses cannot be told: no snapping


class EnergyLevels(NamedTuple):
    """What snapping needs of an utterance's audio: its short-time energy (small enough to cache with
    the log-probs, so that ``speechkit-eval`` snaps as ``speechkit-transcribe`` does)."""

    level_db: np.ndarray  # (F,) dB re full scale, windows of ENERGY_WINDOW_S every ENERGY_HOP_S
    sample_rate: int  # Hz
    num_samples: int  # the audio's length


class Loudness(NamedTuple):
    """An utterance's short-time energy and its pauses, as :func:`snap_to_audio` reads them."""

    level_db: np.ndarray  # (F,) dB re full scale, one per window
    times_s: np.ndarray  # (F,) s, each window's centre
    pauses_s: np.ndarray  # (P, 2) s, start and end of each run of silent windows, in time order
    duration_s: float  # s of audio


def _window_hop(sample_rate: int) -> tuple[int, int]:
    return max(1, round(ENERGY_WINDOW_S * sample_rate)), max(1, round(ENERGY_HOP_S * sample_rate))


def energy_levels(audio: Tensor | np.ndarray, sample_rate: int) -> EnergyLevels:
    """Energy of ``audio`` ``(samples,)`` at ``sample_rate`` Hz in windows of ``ENERGY_WINDOW_S`` every
    ``ENERGY_HOP_S`` (none for audio shorter than a window)."""
    x = torch.as_tensor(audio, dtype=torch.float32).flatten()
    win, hop = _window_hop(sample_rate)
    if x.numel() < win:
        return EnergyLevels(np.zeros(0), sample_rate, x.numel())
    return EnergyLevels(FF.frame_energy_db(x[None], win, hop)[0].cpu().numpy(), sample_rate, x.numel())


class EnergyMeter:
    """:func:`energy_levels` of audio that arrives in chunks (a stream): the same windows as of the whole,
    computed as each is complete; keeps the levels and the few samples of an unfinished window."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.win, self.hop = _window_hop(sample_rate)
        self.pending = torch.zeros(0)  # samples from the next window's start on
        self.parts: list[np.ndarray] = []
        self.num_samples = 0

    def push(self, samples: Tensor) -> None:
        x = samples.detach().float().flatten().cpu()
        self.num_samples += x.numel()
        buf = torch.cat([self.pending, x])
        if buf.numel() < self.win:
            self.pending = buf
            return
        full = (buf.numel() - self.win) // self.hop + 1  # windows complete in buf
        self.parts.append(energy_levels(buf[: (full - 1) * self.hop + self.win], self.sample_rate).level_db)
        self.pending = buf[full * self.hop :]

    def levels(self) -> EnergyLevels:
        level = np.concatenate(self.parts) if self.parts else np.zeros(0)
        return EnergyLevels(level, self.sample_rate, self.num_samples)


def pauses(levels: EnergyLevels, silence_level: float) -> Loudness:
    """The pauses of an utterance from its :func:`energy_levels`: runs of windows at most
    ``silence_level`` of the way from the noise floor to the speech peak (``NOISE_PERCENTILE`` and
    ``PEAK_PERCENTILE`` of the windows louder than digital silence), in dB, so the same for any gain
    and any noise level. A window stands for the ``ENERGY_HOP_S`` around its centre; pauses are
    clipped to ``[0, duration]``. Audio flatter than ``MIN_RANGE_DB`` (or shorter than a window) has
    no windows: nothing to snap to."""
    level, sample_rate = levels.level_db, levels.sample_rate
    duration = levels.num_samples / sample_rate
    flat = Loudness(np.zeros(0), np.zeros(0), np.zeros((0, 2)), duration)  # nothing to snap to
    live = level[level > DIGITAL_SILENCE_DB]
    if not live.size:
        return flat
    floor, peak = np.percentile(live, (NOISE_PERCENTILE, PEAK_PERCENTILE))
    if peak - floor < MIN_RANGE_DB:
        return flat
    win, hop = _window_hop(sample_rate)
    times = (np.arange(level.size) * hop + win / 2) / sample_rate
    silent = level <= floor + silence_level * (peak - floor)
    edges = np.diff(silent.astype(np.int8), prepend=0, append=0)  # +1: a pause starts, -1: it ended
    first, stop = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # windows; stop exclusive
    half = hop / 2 / sample_rate  # s
    spans = np.stack([times[first] - half, times[stop - 1] + half], axis=1)
    return Loudness(level, times, spans.clip(0.0, duration), duration)


def loudness(audio: Tensor | np.ndarray, sample_rate: int, silence_level: float) -> Loudness:
    """:func:`pauses` of the :func:`energy_levels` of ``audio`` ``(samples,)`` at ``sample_rate`` Hz."""
    return pauses(energy_levels(audio, sample_rate), silence_level)


def snap_to_audio(
    words: list[tuple[str, float, float]], loud: Loudness, timing: WordTiming
) -> list[tuple[str, float, float]]:
    """Word times (s, from :func:`word_spans`) moved to the pauses of the audio (:func:`loudness`).

    Each boundary (from where the frames end a word to where they start the next; before the first
    word its start, after the last its end) goes to the pause of ``loud`` nearest to it, as far as
    it lies within ``timing.snap_s`` of it (ties: the longest): the word before ends where the pause
    starts, the word after starts where it ends. Between two words with no pause in reach
    both go to the quietest window; the first word's start and the last one's end stay. Words more
    than ``timing.apart_s`` apart each take the pause nearest to their own end or start. No boundary
    passes the middle of a word next to it, so words keep their order and never overlap (a word the
    model put in silence can shrink to a point); times stay in ``[0, duration]``, rounded to ms.
    """
    if not words or timing.snap_s is None or not loud.times_s.size:
        return words
    starts = np.array([s for _, s, _ in words])
    ends = np.array([e for _, _, e in words])
    middles = (starts + ends) / 2
    limit = math.floor(loud.duration_s * 1000 + 1e-6) / 1000  # whole ms, so rounding cannot pass it
    new_starts, new_ends = starts.copy(), ends.copy()
    K = len(words)
    for k in range(K + 1):  # boundary k: between word k - 1 and word k
        before = ends[k - 1] if k else starts[0]  # where the frames put it: word k - 1's end …
        after = starts[k] if k < K else ends[-1]  # … and word k's start
        lo = max(before - timing.snap_s, middles[k - 1] if k else 0.0)
        hi = min(after + timing.snap_s, middles[k] if k < K else limit)
        a = np.maximum(loud.pauses_s[:, 0], lo)  # the pauses, clipped to the reach
        b = np.minimum(loud.pauses_s[:, 1], hi)
        a, b = a[a < b], b[a < b]
        if a.size:
            i = j = _nearest(a, b, before, after)
            if 0 < k < K and after - before > timing.apart_s:
                i_end, j_start = _nearest(a, b, before, before), _nearest(a, b, after, after)
                if i_end <= j_start:
                    i, j = i_end, j_start
            if k:
                new_ends[k - 1] = a[i]
            if k < K:
                new_starts[k] = b[j]
        elif 0 < k < K:
            reach = (loud.times_s >= lo) & (loud.times_s <= hi)
            if reach.any():
                new_ends[k - 1] = new_starts[k] = loud.times_s[reach][np.argmin(loud.level_db[reach])]
    out = []
    for (word, _, _), start, end in zip(words, new_starts, new_ends):
        start = min(max(float(start), 0.0), limit)
        out.append((word, round(start, 3), round(max(start, min(float(end), limit)), 3)))
    return out


def _nearest(a: np.ndarray, b: np.ndarray, lo: float, hi: float) -> int:
    """Index of the interval ``[a[i], b[i]]`` nearest to ``[lo, hi]`` (0 apart where they meet; ties:
    the longest)."""
    apart = np.maximum(0.0, np.maximum(a - hi, lo - b))
    return int(np.lexsort((a - b, apart))[0])


def align_tokens(log_probs: np.ndarray, tokens: Sequence[int]) -> tuple[list[int], list[int]] | None:
    """Each token's first and last frame in the best CTC alignment of ``tokens`` to ``log_probs`` ``(T, V)``.

    Blank-aware: a token's span holds only the frames its alignment gives that token, never the
    blanks around it, so a word read off these spans starts at its first token's first frame and
    ends at its last token's last frame, whatever silence surrounds it. Viterbi over the ``2L + 1``
    states of the blank-padded labels ``l``: ``δ_t(s) = log y_t(l_s) + max(δ_{t-1}(s), δ_{t-1}(s-1),
    δ_{t-1}(s-2))``, the last term only for a token unlike the one two states back. When the best
    path (the most likely token of every frame) spells ``tokens``, it is that alignment and no
    search runs. ``None`` when no alignment exists (too few frames, or ``-inf`` where one is needed).
    """
    lp = np.asarray(log_probs, dtype=np.float32)
    T, L = lp.shape[0], len(tokens)
    if L == 0:
        return [], []
    if T == 0:
        return None
    ids = lp.argmax(axis=1)
    on = ids != BLANK
    starts = np.flatnonzero(on & (ids != np.concatenate(([BLANK], ids[:-1]))))
    if len(starts) == L and (ids[starts] == np.asarray(tokens)).all():
        ends = np.flatnonzero(on & (ids != np.concatenate((ids[1:], [BLANK]))))
        return starts.tolist(), ends.tolist()
    labels = np.zeros(2 * L + 1, dtype=np.int64)
    labels[1::2] = tokens
    S = len(labels)
    can_skip = np.zeros(S, dtype=bool)  # s - 2 → s: between two different tokens, past the blank
    can_skip[3::2] = labels[3::2] != labels[1:-2:2]
    emit = lp[:, labels]  # (T, S)
    back = np.zeros((T, S), dtype=np.int8)  # how many states back the best predecessor is
    delta = np.full(S, -np.inf, dtype=np.float32)
    delta[:2] = emit[0, :2]
    cand = np.full((3, S), -np.inf, dtype=np.float32)
    for t in range(1, T):
        cand[0] = delta
        cand[1, 1:] = delta[:-1]
        cand[2, 2:] = np.where(can_skip[2:], delta[:-2], -np.inf)
        k = cand.argmax(axis=0)
        back[t] = k
        delta = cand[k, np.arange(S)] + emit[t]
    s = S - 1 if S == 1 or delta[S - 1] >= delta[S - 2] else S - 2
    if not np.isfinite(delta[s]):
        return None
    state = np.empty(T, dtype=np.int64)
    for t in range(T - 1, -1, -1):
        state[t] = s
        s -= int(back[t, s])  # a Python int: numpy 2 keeps int8 - int in int8, which overflows
    token_of = np.where(state % 2 == 1, state // 2, -1)  # frame → token index (-1: blank)
    frames = np.flatnonzero(token_of >= 0)
    first = np.full(L, T, dtype=np.int64)
    last = np.full(L, -1, dtype=np.int64)
    np.minimum.at(first, token_of[frames], frames)
    np.maximum.at(last, token_of[frames], frames)
    return first.tolist(), last.tolist()

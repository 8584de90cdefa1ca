"""Voice activity detection and segmentation for long files, on 10-ms frames.

:class:`EnergyVAD` (log energy over an adaptive noise floor) or :class:`SileroVAD` (the optional
``silero-vad`` package) marks frames as speech as the audio arrives; :class:`Segmenter` turns those
marks into segments (:class:`Piece`) of at most ``max_segment_s``, cutting a longer stretch of speech
at its quietest frame before the limit. Their settings are :class:`~speechkit.longform.LongFormConfig`'s;
longform.py runs them over a file's blocks.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from speechkit.longform import LongFormConfig

FRAME_S = 0.01  # seconds per VAD frame (10 ms: 160 samples at 16 kHz)
SILENCE_DB = -100.0  # log energy of a silent frame (power floored at 1e-10, in dB re full scale)


def frame_log_energy(x: Tensor, frame: int) -> Tensor:
    """Samples ``(n,)`` → each whole ``frame``-sample frame's mean power in dB re full scale ``(n // frame,)``,
    floored at ``SILENCE_DB``."""
    frames = x[: x.shape[0] // frame * frame].reshape(-1, frame)
    return 10 * torch.log10(frames.square().mean(1).clamp_min(1e-10))


def noise_floor(log_e: Tensor, window: int, smooth: int) -> Tensor:
    """The noise floor under each frame of ``log_e`` ``(T,)`` dB: the least of the energies averaged over
    ``smooth`` frames (odd) within ``window`` frames either side ``(T,)``. Averaging first keeps a single
    quiet frame (a stop's closure) from passing for the floor; a floor from within ± ``window`` follows
    noise that changes over the file."""
    smoothed = F.avg_pool1d(log_e[None, None], smooth, 1, smooth // 2, count_include_pad=False)
    return -F.max_pool1d(-smoothed, 2 * window + 1, 1, window)[0, 0]


class EnergyVAD:
    """Speech where a 10-ms frame's log energy is ``threshold_db`` over the noise floor (:func:`noise_floor`,
    never under ``min_floor_db``). Streaming: a frame is decided once ``floor_window_s / 2`` of audio after
    it has arrived, and the decisions equal those made on the whole file at once."""

    def __init__(self, cfg: LongFormConfig, sample_rate: int) -> None:
        self.cfg = cfg
        self.window = max(1, round(cfg.floor_window_s / 2 / FRAME_S))  # frames either side
        self.smooth = max(1, round(cfg.floor_smooth_s / FRAME_S)) | 1  # frames, odd
        self.context = self.window + self.smooth // 2  # frames a decision needs on either side
        self.energy = torch.empty(0)  # log energies of frames first, first + 1, …
        self.first = self.decided = 0  # frame indices: energy[0]'s, and the next to decide

    def push(self, samples: Tensor, log_e: Tensor, final: bool = False) -> Tensor:
        """Decisions ``(k,)`` bool for the next frames, given the next samples and their frames' energies."""
        self.energy = torch.cat([self.energy, log_e])
        end = self.first + self.energy.shape[0]
        upto = end if final else end - self.context
        if upto <= self.decided:
            return torch.zeros(0, dtype=torch.bool)
        floor = noise_floor(self.energy, self.window, self.smooth).clamp_min(self.cfg.min_floor_db)
        lo, hi = self.decided - self.first, upto - self.first
        speech = self.energy[lo:hi] > floor[lo:hi] + self.cfg.threshold_db
        self.decided = upto
        drop = max(0, self.decided - self.context - self.first)
        self.energy, self.first = self.energy[drop:], self.first + drop
        return speech


class SileroVAD:
    """Speech where silero-vad's probability (one per 32-ms window at 16 kHz, 16 ms at 8 kHz) exceeds
    ``silero_threshold``; each 10-ms frame takes the window holding its centre. Needs the ``silero-vad``
    package (its model ships inside the wheel, and runs on the CPU, one window at a time)."""

    def __init__(self, cfg: LongFormConfig, sample_rate: int) -> None:
        if sample_rate not in (8000, 16000):
            raise ValueError(
                f"long_form.vad=silero reads 8000 or 16000 Hz audio; this model takes {sample_rate} Hz: "
                "use long_form.vad=energy"
            )
        threads = torch.get_num_threads()
        try:
            from silero_vad import load_silero_vad
        except ImportError:
            raise ImportError(
                "long_form.vad=silero needs the silero-vad package (pip install silero-vad; its model is "
                "inside the wheel), or use long_form.vad=energy"
            ) from None
        finally:
            torch.set_num_threads(threads)  # importing silero_vad sets torch's threads to 1
        self.cfg, self.rate = cfg, sample_rate
        with warnings.catch_warnings():  # deprecations inside silero-vad's loader, not the user's to fix
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            self.model = load_silero_vad()
        self.model.reset_states()
        self.win = 512 if sample_rate == 16000 else 256  # samples per window, as silero-vad takes them
        self.frame = round(sample_rate * FRAME_S)
        self.pending = torch.empty(0)  # samples of the next, incomplete window
        self.probs = torch.empty(0)  # probabilities of windows first_window, … not yet used by all frames
        self.first_window = self.decided = self.frames = 0  # frames: given so far

    @torch.no_grad()
    def push(self, samples: Tensor, log_e: Tensor, final: bool = False) -> Tensor:
        self.frames += log_e.shape[0]
        x = torch.cat([self.pending, samples])
        if final and x.shape[0] % self.win:
            x = F.pad(x, (0, self.win - x.shape[0] % self.win))
        n = x.shape[0] // self.win
        new = [float(self.model(x[i * self.win : (i + 1) * self.win][None], self.rate)) for i in range(n)]
        self.probs = torch.cat([self.probs, torch.tensor(new)])
        self.pending = x[n * self.win :]
        windows = self.first_window + self.probs.shape[0]
        # frame t's centre t·frame + frame // 2 lies in window (t·frame + frame // 2) // win
        upto = (
            self.frames
            if final
            else min(self.frames, -(-(windows * self.win - self.frame // 2) // self.frame))
        )
        t = torch.arange(self.decided, upto)
        speech = self.probs[(t * self.frame + self.frame // 2) // self.win - self.first_window]
        self.decided = upto
        keep = (upto * self.frame + self.frame // 2) // self.win - self.first_window
        self.probs, self.first_window = self.probs[keep:], self.first_window + keep
        return speech > self.cfg.silero_threshold


VADS: dict[str, Callable[[LongFormConfig, int], Any]] = {"energy": EnergyVAD, "silero": SileroVAD}


# ----------------------------------------------------------------------------- segmentation


def speech_runs(speech: Tensor) -> list[tuple[int, int]]:
    """``(start, end)`` frame indices (end exclusive) of the runs of true frames of ``speech`` ``(T,)``."""
    zero = torch.zeros(1, dtype=torch.int8)
    edges = torch.diff(speech.to(torch.int8), prepend=zero, append=zero)  # +1: a run starts, -1: it ended
    return list(zip(torch.nonzero(edges == 1)[:, 0].tolist(), torch.nonzero(edges == -1)[:, 0].tolist()))


@dataclass
class Piece:
    """A segment in frames: ``[start, end)``, and whether it was cut inside speech at either end (no
    padding there)."""

    start: int
    end: int
    cut_before: bool = False
    cut_after: bool = False


class Segmenter:
    """Per-frame speech decisions, as they come → segments (:class:`Piece`), as soon as they are final.

    Runs of speech closer than ``min_silence_s`` join; a joined stretch shorter than ``min_speech_s`` is
    dropped; a segment ends ``hangover_s`` after its last speech frame. A stretch that would make a segment
    longer than ``max_segment_s`` (with ``pad_s`` either side and the hangover) is cut at its quietest
    frame in the ``cut_search_s`` before that limit, and goes on from there as a new segment."""

    def __init__(self, cfg: LongFormConfig) -> None:
        def frames(s: float) -> int:
            return round(s / FRAME_S)

        self.min_silence, self.min_speech = frames(cfg.min_silence_s), frames(cfg.min_speech_s)
        self.hangover = frames(cfg.hangover_s)
        self.max_len = frames(
            cfg.max_segment_s - 2 * cfg.pad_s - cfg.hangover_s
        )  # speech frames a segment holds
        self.search = max(1, min(frames(cfg.cut_search_s), self.max_len - 1))
        self.start: int | None = None  # the open stretch's first frame (None: none open)
        self.end = 0  # the end of its last run of speech
        self.was_cut = False  # the open stretch follows a cut
        self.frames = 0  # frames decided so far

    def push(self, speech: Tensor, quietest: Callable[[int, int], int]) -> list[Piece]:
        """The segments that ``speech`` ``(k,)``, the decisions of the next frames, completes.
        ``quietest(lo, hi)``: the quietest frame in ``[lo, hi)``, where long stretches are cut."""
        out: list[Piece] = []
        for a, b in speech_runs(speech):
            a, b = a + self.frames, b + self.frames
            if self.start is not None and a - self.end < self.min_silence:
                self.end = b
            else:
                out += self._close(math.inf)
                self.start, self.end, self.was_cut = a, b, False
            while self.end - self.start > self.max_len:
                limit = self.start + self.max_len
                cut = quietest(max(self.start + 1, limit - self.search), limit)
                out.append(Piece(self.start, cut, self.was_cut, True))
                self.start, self.was_cut = cut, True
        self.frames += speech.shape[0]
        if self.start is not None and self.frames - self.end >= self.min_silence:
            out += self._close(math.inf)
        return out

    def finish(self, total_frames: int) -> list[Piece]:
        """The last segment, once every frame is decided."""
        return self._close(total_frames)

    def _close(self, total_frames: float) -> list[Piece]:
        start, end, self.start = self.start, self.end, None
        if start is None or (end - start < self.min_speech and not self.was_cut):
            return []
        return [Piece(start, int(min(end + self.hangover, total_frames)), self.was_cut, False)]

    @property
    def keep_from(self) -> int:
        """The first frame a later segment may still start at."""
        return self.frames if self.start is None else self.start

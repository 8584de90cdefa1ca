"""Long-form audio: files of any length transcribed in bounded memory.

The file is read in blocks (:func:`read_blocks`: libsndfile, or FFmpeg through PyAV for containers,
resampled piece by piece to the same samples ``load_audio`` gives); a voice activity detector
(:class:`EnergyVAD`, or :class:`SileroVAD` with the optional ``silero-vad`` package) marks 10-ms
frames as speech; a :class:`Segmenter` turns those marks into segments of at most ``max_segment_s``
(a longer stretch of speech is cut at its quietest frame before the limit); :class:`SegmentStream`
runs all three as the blocks arrive and hands out each segment's samples, keeping only the audio a
segment may still need; :func:`transcribe_long` batches the segments through the model and stitches
the hypotheses back on the file's clock (a word's time = its segment's start + its time in the
segment) into a :class:`LongTranscript`.

Memory: one block, the undecided lookahead of the VAD (``floor_window_s / 2`` for ``energy``), the
open segment (at most ``max_segment_s``) and one batch of segments; none of it grows with the file.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from speechkit.data.errors import DataError
from speechkit.decoders.base import Hypothesis
from speechkit.pipeline import Transcript

log = logging.getLogger(__name__)

FRAME_S = 0.01  # seconds per VAD frame (10 ms: 160 samples at 16 kHz)
SILENCE_DB = -100.0  # log energy of a silent frame (power floored at 1e-10, in dB re full scale)


@dataclass
class LongFormConfig:
    """How long files are cut and transcribed (``long_form.*`` of speechkit-transcribe)."""

    enabled: Any = (
        "auto"  # speechkit-transcribe: auto (files longer than min_s), true (every audio file), false
    )
    min_s: float = 30.0  # auto: files longer than this many seconds take the long-form path
    vad: str = "energy"  # energy (log energy over an adaptive noise floor) | silero (pip install silero-vad)
    max_segment_s: float = 20.0  # no segment is longer (s); longer speech is cut at its quietest frame
    cut_search_s: float = 5.0  # the cut is sought in the last this-many seconds before the limit
    block_s: float = 10.0  # seconds of audio read at a time
    pad_s: float = 0.1  # silence kept before and after each segment (s), never past a neighbour
    min_speech_s: float = 0.15  # speech shorter than this (s), after bridging, is dropped
    min_silence_s: float = 0.3  # pauses shorter than this (s) do not end a segment
    hangover_s: float = 0.02  # a segment goes on this long (s) after its last speech frame
    threshold_db: float = 9.0  # energy: a frame is speech this many dB over the noise floor
    floor_window_s: float = 10.0  # energy: the floor is the least smoothed energy within this window (s)
    floor_smooth_s: float = 0.1  # energy: frame energies are averaged over this long (s) for the floor
    min_floor_db: float = -70.0  # energy: the floor never goes lower (dB re full scale; digital silence)
    silero_threshold: float = 0.5  # silero: a frame is speech when the speech probability exceeds this

    @classmethod
    def from_node(cls, node: Any = None) -> LongFormConfig:
        """A config from ``None`` (the defaults), a dict or DictConfig of some of the fields, or a config."""
        if node is None or isinstance(node, LongFormConfig):
            return node or cls()
        from omegaconf import DictConfig, OmegaConf

        given = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise ValueError(
                f"long_form: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
            )
        cfg = cls(**given)
        cfg.check()
        return cfg

    def check(self) -> None:
        """Raise ``ValueError`` naming the setting when the settings cannot work together."""
        if str(self.enabled).lower() not in ("auto", "true", "false"):
            raise ValueError(f"long_form.enabled={self.enabled!r}: use auto, true or false")
        if self.vad not in VADS:
            raise ValueError(f"long_form.vad={self.vad!r}: use {' or '.join(VADS)}")
        room = self.max_segment_s - 2 * self.pad_s - self.hangover_s
        if room < 2 * FRAME_S or self.cut_search_s <= 0 or self.block_s <= 0:
            raise ValueError(
                f"long_form: max_segment_s={self.max_segment_s} leaves no room for speech besides "
                f"pad_s={self.pad_s} on each side and hangover_s={self.hangover_s}, or cut_search_s/block_s "
                "is not positive; raise max_segment_s"
            )
        if self.hangover_s + self.pad_s > self.min_silence_s:
            raise ValueError(
                f"long_form: hangover_s + pad_s ({self.hangover_s} + {self.pad_s}) must not exceed "
                f"min_silence_s ({self.min_silence_s}), or segments could overlap"
            )

    @property
    def mode(self) -> str:
        """``enabled`` as ``"auto"``, ``"true"`` or ``"false"`` (YAML reads true/false as booleans)."""
        return str(self.enabled).lower()


# ----------------------------------------------------------------------------- reading in blocks


class StreamResampler:
    """``torchaudio.functional.resample`` of a signal that arrives in pieces: the same samples, piece by
    piece. Its windowed-sinc kernel turns each ``orig`` input samples (after dividing both rates by
    their gcd) into ``new`` output samples from the inputs ``width`` either side, so each call emits the
    outputs whose inputs have all arrived and keeps the rest (fewer than ``2 width + orig`` samples)."""

    def __init__(self, orig_rate: int, new_rate: int) -> None:
        from torchaudio.functional.functional import _get_sinc_resample_kernel  # resample's own kernel

        g = math.gcd(orig_rate, new_rate)
        self.orig, self.new = orig_rate // g, new_rate // g
        self.kernel, self.width = _get_sinc_resample_kernel(orig_rate, new_rate, g, dtype=torch.float32)
        self.pending = torch.zeros(self.width)  # inputs not yet used up, after resample's left zero padding
        self.n_in = self.n_out = 0

    def __call__(self, x: Tensor, final: bool = False) -> Tensor:
        """The next output samples for input samples ``x`` ``(n,)``; ``final``: ``x`` is the last piece."""
        self.n_in += x.shape[0]
        buf = torch.cat([self.pending, x] + ([torch.zeros(self.width + self.orig)] if final else []))
        span = 2 * self.width + self.orig  # inputs behind one group of `new` outputs
        steps = max(0, (buf.shape[0] - span) // self.orig + 1)
        out = torch.empty(0)
        if steps:
            used = buf[: (steps - 1) * self.orig + span]
            out = F.conv1d(used[None, None], self.kernel, stride=self.orig)[0].T.reshape(-1)
        self.pending = buf[steps * self.orig :]
        if final:  # resample's output length: ceil(new · n / orig)
            out = out[: math.ceil(self.new * self.n_in / self.orig) - self.n_out]
        self.n_out += out.shape[0]
        return out


def audio_seconds(source: str | Path | bytes) -> float | None:
    """The duration of an audio file (path or bytes) from its header, without decoding it; None when
    neither libsndfile nor FFmpeg says."""
    import soundfile as sf

    try:
        return float(sf.info(io.BytesIO(source) if isinstance(source, bytes) else str(source)).duration)
    except Exception:  # noqa: BLE001 (not a file libsndfile reads: ask FFmpeg)
        pass
    try:
        import av

        with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as c:
            return None if c.duration is None else c.duration / 1_000_000  # av.time_base: microseconds
    except Exception:  # noqa: BLE001 (unreadable: the reader names the problem when it gets there)
        return None


def read_blocks(source: str | Path | bytes, sample_rate: int, block_s: float = 10.0) -> Iterator[Tensor]:
    """A mono float32 waveform in blocks ``(n,)`` at ``sample_rate`` Hz, about ``block_s`` seconds each:
    together exactly what :func:`~speechkit.frontends.audio_io.load_audio` returns for the file (the same
    readers, downmix and resampler), with the same checks (missing, unreadable, truncated, empty,
    non-finite or absurdly loud audio: :class:`DataError` naming the file), while at most one block of the
    file is held. ``source``: a path, or an encoded file's bytes (named ``<bytes>`` in errors)."""
    import soundfile as sf

    from speechkit.frontends import audio_io

    where: str | Path = "<bytes>" if isinstance(source, bytes) else Path(source)
    if not isinstance(source, bytes):
        audio_io.check_media_file(Path(source), "audio")
    try:
        f = sf.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else str(source))
        cut = None if isinstance(source, bytes) else audio_io._wav_truncation(Path(source))
    except (sf.SoundFileError, RuntimeError, OSError) as e:
        if not isinstance(source, bytes) and Path(source).suffix.lower() in audio_io.SNDFILE_SUFFIXES:
            raise audio_io._unreadable(where, f"{type(e).__name__}: {e}", "libsndfile does not read") from e
        pieces = _ffmpeg_blocks(source, where, f"{type(e).__name__}: {e}", block_s)
    else:
        if cut is not None:
            f.close()
            raise DataError(
                where,
                f"truncated WAV: its header declares {cut[0]} bytes of audio but only {cut[1]} are present",
                "re-copy or re-create the file",
            )
        pieces = _sndfile_blocks(f, where, block_s)
    yield from _to_model_rate(pieces, sample_rate, where)


def _sndfile_blocks(f, where: str | Path, block_s: float) -> Iterator[tuple[np.ndarray, int]]:
    import soundfile as sf

    with f:
        try:
            for block in f.blocks(
                blocksize=max(1, round(block_s * f.samplerate)), dtype="float32", always_2d=True
            ):
                yield block, f.samplerate
        except (sf.SoundFileError, RuntimeError) as e:
            from speechkit.frontends.audio_io import _corrupt

            raise _corrupt(where, f"reading stopped at sample {f.tell()} ({e})") from None


def _ffmpeg_blocks(
    source: str | Path | bytes, where: str | Path, sndfile_error: str, block_s: float
) -> Iterator[tuple[np.ndarray, int]]:
    """The first audio stream of a container FFmpeg reads, as ``(samples, channels)`` float32 blocks and
    the rate; FFmpeg's error messages while decoding make the file corrupt, as in ``load_audio``."""
    import av

    from speechkit.frontends.audio_io import _corrupt, _unreadable
    from speechkit.frontends.ffmpeg import damage, watched

    decoded, held = 0, []
    path = None if isinstance(source, bytes) else Path(source)
    with watched(path, lambda what: _corrupt(where, what)) as messages:
        try:
            container = av.open(io.BytesIO(source) if path is None else str(path))
        except av.FFmpegError as e:
            raise _unreadable(where, f"libsndfile: {sndfile_error}; FFmpeg: {e.strerror or e}") from None
        with container:
            if not container.streams.audio:
                raise DataError(where, "has no audio stream", "point at a file with sound in it")
            stream = container.streams.audio[0]
            if stream.codec_context is None:
                raise _corrupt(where, "its audio stream has no decodable codec")
            stream.codec_context.thread_count = 1  # FFmpeg's messages from other threads would escape
            rate = stream.codec_context.sample_rate or stream.rate
            block = max(1, round(block_s * rate))
            resampler = av.AudioResampler(format="fltp")  # planar float32; channels and rate kept
            try:
                for frame in itertools.chain(container.decode(stream), [None]):
                    held.extend(f.to_ndarray().T for f in resampler.resample(frame))
                    if problems := damage(messages):
                        raise _corrupt(
                            where, f"FFmpeg reported {problems[0]!r} after {decoded} decoded sample(s)"
                        )
                    while sum(h.shape[0] for h in held) >= block or (frame is None and held):
                        out = np.concatenate(held)
                        held = [out[block:]] if out.shape[0] > block else []
                        decoded += min(block, out.shape[0])
                        yield np.ascontiguousarray(out[:block]), int(rate)
            except av.FFmpegError as e:
                raise _corrupt(
                    where, f"decoding stopped after {decoded} sample(s) ({e.strerror or e})"
                ) from None


def _to_model_rate(pieces: Iterable[tuple[np.ndarray, int]], sample_rate: int, where) -> Iterator[Tensor]:
    """``(samples, channels)`` blocks at the file's rate → checked mono blocks at ``sample_rate``
    (``to_waveform``'s checks and downmix on each block; one resampler across blocks)."""
    from speechkit.frontends.audio_io import to_waveform

    resampler, seen = None, 0
    for block, rate in pieces:
        if block.shape[0] == 0:
            continue
        seen += block.shape[0]
        mono = to_waveform(block, rate, rate, where)  # checks (finite, peak), downmix; rate unchanged
        if rate == sample_rate:
            yield mono
            continue
        resampler = resampler or StreamResampler(rate, sample_rate)
        if (out := resampler(mono)).shape[0]:
            yield out
    if not seen:
        raise DataError(where, "has no audio samples", "remove it from the manifest or re-create it")
    if resampler is not None and (out := resampler(torch.empty(0), final=True)).shape[0]:
        yield out


# ----------------------------------------------------------------------------- voice activity


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


@dataclass
class Segment:
    """One segment's audio ``(end - start,)``, samples ``[start, end)`` of the file at the model's rate."""

    start: int
    end: int
    audio: Tensor | None = field(default=None, repr=False)


class SegmentStream:
    """Blocks of samples → :class:`Segment` s in order, holding only the samples a segment may still need.

    ``given``: ``(start_s, end_s)`` segments to cut instead of asking the VAD (sorted, not overlapping;
    taken as they are, without padding). After iterating, ``total`` is the file's length in samples and
    ``max_held`` the most samples held at once (the block just read included).
    """

    def __init__(
        self,
        blocks: Iterable[Tensor],
        cfg: LongFormConfig,
        sample_rate: int,
        given: Iterable[tuple[float, float]] | None = None,
    ) -> None:
        self.blocks, self.cfg, self.rate = blocks, cfg, sample_rate
        self.frame = round(sample_rate * FRAME_S)  # samples per VAD frame
        self.pad = round(cfg.pad_s * sample_rate)
        self.given = None if given is None else _checked_segments(given, sample_rate, cfg.max_segment_s)
        self.total = self.max_held = 0

    def __iter__(self) -> Iterator[Segment]:
        held, first = torch.empty(0), 0  # samples first … first + len(held) - 1 of the file
        framed = 0  # whole frames whose energies have been computed
        previous_end = 0  # the last segment's end: no segment reaches back past it
        vad = VADS[self.cfg.vad](self.cfg, self.rate) if self.given is None else None
        segmenter = Segmenter(self.cfg)

        def quietest(lo: int, hi: int) -> int:  # frames; 50-ms means, so one quiet frame is no pause
            e = frame_log_energy(held[lo * self.frame - first : hi * self.frame - first], self.frame)
            return lo + int(F.avg_pool1d(e[None, None], 5, 1, 2, count_include_pad=False)[0, 0].argmin())

        def cut(piece: Piece) -> Segment:
            nonlocal previous_end
            start = piece.start * self.frame - (0 if piece.cut_before else self.pad)
            end = piece.end * self.frame + (0 if piece.cut_after else self.pad)
            start, end = max(start, previous_end, 0), min(end, self.total)
            previous_end = end
            return Segment(start, end, held[start - first : end - first].clone())

        for block, final in _with_last(self.blocks):
            held = torch.cat([held, block])
            self.total += block.shape[0]
            self.max_held = max(self.max_held, held.shape[0])
            if self.given is not None:
                while self.given and (self.given[0][1] <= self.total or final):
                    s, e = self.given.pop(0)
                    yield Segment(s, e, held[s - first : e - first].clone())
                keep = min(self.given[0][0], self.total) if self.given else self.total
            else:
                whole = self.total // self.frame + (1 if final and self.total % self.frame else 0)
                chunk = held[framed * self.frame - first : whole * self.frame - first]
                log_e = frame_log_energy(F.pad(chunk, (0, (-chunk.shape[0]) % self.frame)), self.frame)
                framed = whole
                pieces = segmenter.push(vad.push(block, log_e, final), quietest)
                if final:
                    pieces += segmenter.finish(whole)
                yield from (cut(p) for p in pieces)
                keep = max(segmenter.keep_from * self.frame - self.pad, previous_end)
                keep = min(keep, framed * self.frame)  # frames not yet framed are still needed
            if keep > first:
                held, first = held[keep - first :], keep


def _with_last(items: Iterable[Tensor]) -> Iterator[tuple[Tensor, bool]]:
    """``(item, is_last)`` for each item; one empty item when there are none."""
    it = iter(items)
    prev = next(it, None)
    if prev is None:
        yield torch.empty(0), True
        return
    for item in it:
        yield prev, False
        prev = item
    yield prev, True


def _checked_segments(given: Iterable[tuple[float, float]], rate: int, max_s: float) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for k, (s, e) in enumerate(given):
        a, b = round(s * rate), round(e * rate)
        if not 0 <= a < b or (out and a < out[-1][1]) or e - s > max_s + 1e-9:
            raise ValueError(
                f"segments[{k}] = ({s}, {e}): give increasing, non-overlapping (start, end) seconds, each "
                f"at most max_segment_s = {max_s}"
            )
        out.append((a, b))
    return out


# ----------------------------------------------------------------------------- transcription, stitching


@dataclass
class LongTranscript(Transcript):
    """A :class:`Transcript` of a long file: the segments' hypotheses joined, word times on the file's
    clock, and ``segments``: ``{start, end, text}`` of each segment decoded (seconds)."""

    segments: list[dict] = field(default_factory=list)

    def to_dict(self, nbest: int = 1) -> dict:
        """The row of :meth:`Transcript.to_dict` (one hypothesis: the segments' best joined), and ``segments``."""
        row = super().to_dict(nbest)
        row["segments"] = [
            {**s, "start": round(s["start"], 3), "end": round(s["end"], 3)} for s in self.segments
        ]
        return row

    @classmethod
    def stitch(
        cls,
        decoded: list[tuple[Segment, Hypothesis]],
        sample_rate: int,
        duration: float,
        fields: dict | None,
        space: int | None,
    ) -> LongTranscript:
        """Each segment's best hypothesis, words shifted by the segment's start, joined in order."""
        words, confs, tokens, texts, segments = [], [], [], [], []
        score = 0.0
        for seg, h in decoded:
            offset = seg.start / sample_rate
            segments.append({"start": offset, "end": seg.end / sample_rate, "text": h.text})
            words += [(w, offset + s, offset + e) for w, s, e in h.words]
            confs += h.word_confidences if len(h.word_confidences) == len(h.words) else []
            if h.text:
                texts.append(h.text)
                tokens += ([space] if tokens and space is not None else []) + list(h.tokens)
            score += h.score
        confs = confs if len(confs) == len(words) else []
        seg_conf = [h.confidence for _, h in decoded if h.confidence is not None]
        confidence = float(np.mean(confs)) if confs else (float(np.mean(seg_conf)) if seg_conf else None)
        best = Hypothesis(" ".join(texts), score, tokens, [], words, confidence, confs)
        out = cls.from_nbest([best] if decoded else [], duration, fields)
        out.segments = segments
        return out


def transcribe_long(
    pipe,
    source: str | Path | bytes,
    cfg: LongFormConfig | dict | None = None,
    *,
    segments: Iterable[tuple[float, float]] | None = None,
    fields: dict | None = None,
    progress: bool = False,
) -> LongTranscript:
    """Transcribe an audio file of any length with ``pipe`` (a :class:`~speechkit.pipeline.Pipeline`) in
    bounded memory: read in blocks, cut into segments by the VAD (``cfg.vad``; or at ``segments``, ``(start,
    end)`` seconds), decoded ``pipe.batch_size`` segments at a time, stitched on the file's clock.
    ``fields``: the row the transcript starts from (default ``{"audio_filepath": path}``)."""
    from tqdm import tqdm

    from speechkit.data.dataset import pad_time_first

    cfg = LongFormConfig.from_node(cfg)
    fe = pipe.model.frontend
    if fe.modality != "audio":
        raise ValueError(f"long-form transcription is for audio; this model reads {fe.modality}")
    rate = fe.cfg.sample_rate
    stream = SegmentStream(read_blocks(source, rate, cfg.block_s), cfg, rate, given=segments)
    decoded: list[tuple[Segment, Hypothesis]] = []
    total = audio_seconds(source) if progress else None
    with tqdm(total=total and round(total, 1), desc="long-form", unit="s", disable=not progress) as bar:

        def run(batch: list[Segment]) -> None:
            if not batch:
                return
            x, lengths = pad_time_first([s.audio for s in batch])
            lp, frames = pipe.log_probs(x, lengths)
            nbests = pipe.annotate(pipe.decoder(lp.float(), frames), lp, frames, pipe.durations(lengths))
            for seg, nbest in zip(batch, nbests):
                seg.audio = None  # decoded: its samples go
                decoded.append((seg, nbest[0] if nbest else Hypothesis("", 0.0)))
            bar.update(round(batch[-1].end / rate - bar.n, 1))
            batch.clear()

        batch: list[Segment] = []
        for seg in stream:
            batch.append(seg)
            if len(batch) >= pipe.batch_size:
                run(batch)
        run(batch)
    if fields is None:
        fields = {} if isinstance(source, bytes) else {"audio_filepath": str(source)}
    space = pipe.tokenizer.tokens.index(" ") if " " in pipe.tokenizer.tokens else None
    return LongTranscript.stitch(decoded, rate, stream.total / rate, fields, space)


def config_defaults() -> dict:
    """The defaults of :class:`LongFormConfig` as a plain dict (conf/transcribe.yaml's ``long_form``)."""
    return asdict(LongFormConfig())

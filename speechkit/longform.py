"""Long-form audio: files of any length transcribed in bounded memory.

The file is read in blocks (:func:`~speechkit.frontends.audio_blocks.read_blocks`: libsndfile, or FFmpeg
through PyAV for containers, resampled piece by piece to the same samples ``load_audio`` gives); a voice
activity detector (vad.py: :class:`~speechkit.vad.EnergyVAD`, or :class:`~speechkit.vad.SileroVAD` with
the optional ``silero-vad`` package) marks 10-ms frames as speech; a :class:`~speechkit.vad.Segmenter`
turns those marks into segments of at most ``max_segment_s`` (a longer stretch of speech is cut at its
quietest frame before the limit); :class:`SegmentStream` runs all three as the blocks arrive and hands
out each segment's samples, keeping only the audio a segment may still need; :func:`transcribe_long`
batches the segments through the model and stitches the hypotheses back on the file's clock (a word's
time = its segment's start + its time in the segment) into a :class:`LongTranscript`.

Memory: one block, the undecided lookahead of the VAD (``floor_window_s / 2`` for ``energy``), the
open segment (at most ``max_segment_s``) and one batch of segments; none of it grows with the file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from speechkit.decoders.base import Hypothesis
from speechkit.pipeline import Transcript
from speechkit.vad import FRAME_S, VADS, Piece, Segmenter, frame_log_energy

log = logging.getLogger(__name__)


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


# ----------------------------------------------------------------------------- segments of a file


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
    from speechkit.frontends.audio_blocks import audio_seconds, read_blocks

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
            lp, frames, aligned = pipe.posteriors(x, lengths)
            hyps = pipe.decoder(lp.float(), frames)
            nbests = pipe.annotate(hyps, lp, frames, pipe.durations(lengths), pipe.energy_levels(x, lengths), aligned)
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

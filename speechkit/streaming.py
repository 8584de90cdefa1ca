"""Streaming recognition: audio pushed chunk by chunk, text out as it is recognised.

``streamer = pipeline.stream()`` (:meth:`speechkit.pipeline.Pipeline.stream`), then
``streamer.push(samples)`` per chunk of audio at the model's rate (any size, down to a single
sample), each returning a :class:`Partial` (the greedy text so far), and ``streamer.finish()`` for
the final :class:`~speechkit.pipeline.Transcript`. Nothing waits for future audio except what the
model itself needs, and the log-probabilities equal the whole utterance's (tests/test_streaming.py):

- **framing** (:class:`FeatureStream`): Kaldi snip-edges frames (``[t·hop, t·hop + win)``) are
  computed as soon as their last sample arrives; the samples from the next frame's start on are kept
  (``win − hop`` to ``win − 1`` of them: 240–399 at 16 kHz). MFCC deltas look ``2 · order`` frames
  ahead (and back), so those frames wait for their look-ahead, and the last ones for ``finish``.
- **normalisation**: ``global`` (fixed training statistics) and ``none`` stream as they are;
  ``online`` (each frame by the mean and variance of the frames so far, with the training set's as a
  prior) carries its running sums from chunk to chunk. ``utterance`` and ``speech`` (each utterance's
  own statistics) need the whole utterance before its first frame: they are refused, naming the
  setting to train with, rather than approximated by a running estimate the model never saw in
  training.
- **encoder** (``stream_init``/``stream_step``, speechkit/encoders/): unidirectional recurrences carry
  their state, a causal TCN each block's left context, and subsampling the frames of an unfinished
  group (zero-padded by ``finish``, as the whole utterance's last group is). A bidirectional encoder
  (or a centred TCN) is refused.
- **decoding**: greedy, incremental: a frame's most likely token is emitted when it is not blank
  and not the previous frame's, so a partial is exactly the greedy text of the audio so far.
  ``finish`` runs the pipeline's own decoder (greedy, or a beam search with its LM) on the whole
  utterance's log-probabilities and annotates words, times and confidences as ``transcribe`` does.

:func:`wav_stream` reads a WAV file from a pipe as its bytes arrive (``speechkit-transcribe
streaming=true input=-``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor

from speechkit.decoders.base import BLANK, tokens_to_text
from speechkit.decoders.timing import EnergyMeter
from speechkit.encoders.rnn import not_streamable
from speechkit.frontends import functional as FF

CAUSAL_NORMALIZE = ("online", "global", "none")  # normalisations whose frame t reads no later frame


def refuse_normalize(frontend: Any) -> None:
    """``ValueError`` unless the frontend's normalisation is causal (``online``, ``global`` or ``none``)."""
    mode = getattr(getattr(frontend, "cfg", None), "normalize", "none")
    if mode not in CAUSAL_NORMALIZE:
        raise ValueError(
            f"streaming needs frontend.normalize=online, global or none; this model was trained with "
            f"normalize={mode!r}, whose mean and variance are the whole utterance's, known only at its end. "
            "Train a streaming model with frontend.normalize=online (e.g. recipe=asr_grid_stream)"
        )


class FeatureStream:
    """An audio frontend's features chunk by chunk, equal to its features of the whole utterance.

    ``push(samples)`` ``(N,)`` → the frames ``(1, t, F)`` now complete (normalised as the frontend
    does), ``finish()`` → the frames held back for their delta look-ahead. ``lookahead`` frames wait
    for future ones (0 without deltas; MFCC with Δ and ΔΔ: 4). ``normalize=online`` carries the
    running moments of the frames given out so far (``moments``) into the next chunk's.
    """

    def __init__(self, frontend: Any) -> None:
        refuse_normalize(frontend)
        self.fe = frontend
        self.win, self.hop = frontend.win_length, frontend.hop_length  # samples
        self.order = getattr(frontend, "delta_order", 0)  # 0 none, 1 Δ, 2 Δ and ΔΔ
        self.lookahead = FF.DELTA_WIDTH * self.order  # frames each delta frame reads ahead (and back)
        device = frontend.window.device
        self.samples = torch.zeros(0, device=device)  # from the next frame's first sample on
        self.static: Tensor | None = None  # (1, n, F0) frames kept for the deltas: frames start … start+n-1
        self.start = 0  # utterance index of static's first frame
        self.frames = 0  # static frames computed so far
        self.emitted = 0  # frames given out so far
        mode = frontend.cfg.normalize
        self.mean_std = frontend.global_mean_std() if mode == "global" else None
        self.online = mode == "online"
        self.moments: FF.Moments | None = None  # normalize=online: of the frames given out so far

    def push(self, samples: Tensor) -> Tensor:
        """The next samples ``(N,)`` (float, full scale 1) → the frames they complete ``(1, t, F)``."""
        self.samples = torch.cat([self.samples, samples.to(self.samples)])
        n = int(FF.num_frames(torch.tensor(self.samples.shape[0]), self.win, self.hop))
        if n > 0:
            new = self.fe.frame_features(self.samples[None, : (n - 1) * self.hop + self.win])
            self.samples = self.samples[n * self.hop :]
            self.static = new if self.static is None else torch.cat([self.static, new], 1)
            self.frames += n
        return self._emit(final=False)

    def finish(self) -> Tensor:
        """The frames still held back (the last ``lookahead``), ``(1, t, F)``; the stream then ends."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> Tensor:
        if self.static is None or self.static.shape[1] == 0:
            return self.samples.new_zeros(1, 0, self.fe.output_dim)
        parts = [self.static]
        n = torch.tensor([self.static.shape[1]], device=self.static.device)
        for _ in range(self.order):  # Δ, then ΔΔ = Δ of Δ, clamped at the kept frames' ends
            parts.append(FF.deltas(parts[-1], n))
        feats = torch.cat(parts, -1)
        # exact: frames with `lookahead` frames on both sides inside `static`, or at the utterance's ends
        end = self.frames if final else max(self.emitted, self.frames - self.lookahead)
        out = feats[:, self.emitted - self.start : end - self.start]
        self.emitted = end
        keep = max(0, end - self.lookahead)  # the look-back the next frames need
        self.static, self.start = self.static[:, keep - self.start :], keep
        frames = torch.tensor([out.shape[1]], device=out.device)
        if self.mean_std is not None:
            mean, std = self.mean_std
            from speechkit.frontends.audio import NORM_EPS

            out = FF.normalize(out, frames, mean.to(out), std.to(out), NORM_EPS)
        elif self.online:
            out, self.moments = self.fe.online_normalize(out, frames, self.moments)
        return out


@dataclass
class Partial:
    """The greedy result so far: ``text``, its ``tokens`` with the output frame each was emitted at
    (``token_frames``), the output ``frames`` and audio ``seconds`` pushed so far."""

    text: str
    tokens: list[int] = field(default_factory=list)
    token_frames: list[int] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0


class Streamer:
    """One utterance recognised as it arrives; made by :meth:`Pipeline.stream <speechkit.pipeline.Pipeline.stream>`.

    ``push(samples)`` takes the next chunk (1-D samples, or ``(samples, channels)``, float full scale
    or integer PCM, at the model's rate) and returns the :class:`Partial`; ``finish()`` returns the
    final :class:`~speechkit.pipeline.Transcript`. ``log_probs()`` is ``(T, V)`` so far.
    Raises ``ValueError`` when the model cannot stream (its encoder or normalisation look ahead).
    """

    def __init__(self, pipeline: Any, sample_rate: int | None = None) -> None:
        model = pipeline.model
        fe, enc = model.frontend, model.encoder
        if getattr(fe, "modality", None) != "audio" or not hasattr(fe, "frame_features"):
            raise ValueError(
                f"streaming takes audio; this model's frontend {getattr(fe, 'plugin_name', type(fe).__name__)!r} "
                f"reads {getattr(fe, 'modality', 'something else')}"
            )
        self.rate = fe.cfg.sample_rate  # Hz
        if sample_rate is not None and sample_rate != self.rate:
            raise ValueError(
                f"sample_rate={sample_rate}: streaming takes samples at the model's rate, {self.rate} Hz; "
                f"resample before pushing (sox … -r {self.rate}), or transcribe the whole file"
            )
        if not hasattr(enc, "stream_init"):
            raise not_streamable(getattr(enc, "plugin_name", type(enc).__name__), "has no streaming step")
        if getattr(model, "condition", None) is not None:
            raise ValueError("streaming runs the encoder's layers as one stack; this model conditions its later "
                             "layers on inner layers' posteriors (inter_ctc.self_condition=true): transcribe the "
                             "whole file instead")  # fmt: skip
        self.pipeline, self.model = pipeline, model
        self.device = pipeline.device
        self.state = enc.stream_init(1)  # refuses a bidirectional encoder
        self.features = FeatureStream(fe)  # refuses per-utterance normalisation
        self.symbols = pipeline.tokenizer.tokens
        self.chunks: list[Tensor] = []  # (t, V) log-probs of each step
        self.tokens: list[int] = []
        self.token_frames: list[int] = []
        self.frames = 0  # output frames so far
        self.samples = 0  # samples pushed so far
        self.prev = BLANK  # the last frame's most likely token
        self.done = False
        snap = pipeline.timing(False).snap_s is not None  # the final word times snap to the audio's pauses
        self.energy = EnergyMeter(self.rate) if snap else None

    @torch.no_grad()
    def push(self, samples: Any) -> Partial:
        """Add the next chunk of audio; the greedy :class:`Partial` result so far."""
        from speechkit.frontends.audio_io import to_waveform

        if self.done:
            raise RuntimeError("this stream has finished; start another with Pipeline.stream()")
        if len(samples):
            wave = to_waveform(samples, self.rate, self.rate, f"<stream chunk at sample {self.samples}>")
            self.samples += wave.shape[0]
            if self.energy is not None:
                self.energy.push(wave)
            self._advance(self.features.push(wave.to(self.device)), final=False)
        return self.partial()

    @torch.no_grad()
    def finish(self) -> Any:
        """End the stream: the last frames, and the final transcript from the pipeline's decoder."""
        from speechkit.pipeline import Transcript

        if self.done:
            raise RuntimeError("this stream has already finished; start another with Pipeline.stream()")
        self._advance(self.features.finish(), final=True)
        self.done = True
        seconds = self.samples / self.rate
        if self.frames == 0:
            return Transcript.from_nbest([], seconds, {})
        pipe = self.pipeline
        lp = self.log_probs()[None]
        lengths = torch.tensor([self.frames], device=lp.device)
        levels = None if self.energy is None else [self.energy.levels()]
        nbests = pipe.annotate(pipe.decoder(lp.float(), lengths), lp, lengths, [seconds], levels)
        return Transcript.from_nbest(nbests[0], seconds, {})

    def partial(self) -> Partial:
        return Partial(
            tokens_to_text(self.tokens, self.symbols),
            list(self.tokens),
            list(self.token_frames),
            self.frames,
            self.samples / self.rate,
        )

    def log_probs(self) -> Tensor:
        """The log-probabilities so far, ``(T, V)``."""
        if not self.chunks:
            return torch.zeros(0, len(self.symbols), device=self.device)
        return torch.cat(self.chunks)

    def _advance(self, feats: Tensor, final: bool) -> None:
        """Encode the new feature frames ``(1, t, F)`` and emit their greedy tokens."""
        y, self.state = self.model.encoder.stream_step(feats, self.state, final)
        if y.shape[1] == 0:
            return
        lp = self.model.head(y).log_softmax(-1)[0]  # (t', V)
        self.chunks.append(lp)
        for k, i in enumerate(lp.max(-1).indices.tolist()):  # greedy: argmax, repeats merged, blanks dropped
            if i != BLANK and i != self.prev:
                self.tokens.append(i)
                self.token_frames.append(self.frames + k)
            self.prev = i
        self.frames += lp.shape[0]


def chunked(wave: Tensor, size: int) -> Iterator[Tensor]:
    """A whole waveform ``(N,)`` as consecutive chunks of ``size`` samples (the last one shorter)."""
    for start in range(0, wave.shape[0], size):
        yield wave[start : start + size]


# ----------------------------------------------------------------------------- WAV from a pipe

_WAV_PCM, _WAV_FLOAT, _WAV_EXTENSIBLE = 1, 3, 0xFFFE  # format tags of the fmt chunk
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # data sizes a writer to a pipe leaves (it cannot seek back)


@dataclass
class WavStream:
    """A WAV file's header read from a pipe; :meth:`chunks` reads its samples as they arrive."""

    file: IO[bytes]
    rate: int  # Hz
    channels: int
    bits: int  # per sample
    tag: int  # 1 integer PCM, 3 float
    remaining: int | None  # bytes of the data chunk left; None: up to the end of the stream

    def chunks(self, frames: int) -> Iterator[np.ndarray]:
        """Blocks of up to ``frames`` sample frames, ``(n, channels)`` (int or float as stored)."""
        size = self.channels * self.bits // 8  # bytes per sample frame
        while self.remaining is None or self.remaining > 0:
            want = frames * size if self.remaining is None else min(frames * size, self.remaining)
            raw = read_bytes(self.file, want)
            if self.remaining is not None:
                self.remaining -= len(raw)
            data = raw[: len(raw) - len(raw) % size]  # a cut-off frame at the end is dropped
            if data:
                yield self._samples(data)
            if len(raw) < want:  # the stream ended
                return

    def _samples(self, data: bytes) -> np.ndarray:
        if self.tag == _WAV_FLOAT:
            x = np.frombuffer(data, "<f4" if self.bits == 32 else "<f8")
        elif self.bits == 8:
            x = np.frombuffer(data, np.uint8)
        elif self.bits == 24:  # three bytes, little-endian: shifted into the top of an int32
            b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
            x = (b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)
        else:
            x = np.frombuffer(data, "<i2" if self.bits == 16 else "<i4")
        return x.reshape(-1, self.channels)


def read_bytes(f: IO[bytes], n: int) -> bytes:
    """``n`` bytes, or fewer only at the end of the stream (a pipe returns what has arrived)."""
    parts, got = [], 0
    while got < n:
        b = f.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def wav_stream(f: IO[bytes], head: bytes = b"") -> WavStream:
    """Read a WAV header from ``f`` (after ``head``, bytes already read from it) up to the data chunk.
    ``ValueError`` for anything but integer PCM (8, 16, 24, 32 bits) or float (32, 64 bits) WAV."""
    head += read_bytes(f, 12 - len(head)) if len(head) < 12 else b""
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise ValueError("not a WAV file (no RIFF/WAVE header)")
    fmt = None
    while True:
        chunk = read_bytes(f, 8)
        if len(chunk) < 8:
            raise ValueError("the WAV stream ended before its data chunk")
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"data":
            break
        body = read_bytes(f, size + size % 2)  # chunks are padded to an even size
        if cid == b"fmt ":
            fmt = body
    if fmt is None or len(fmt) < 16:
        raise ValueError("the WAV stream has no format chunk before its data")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _WAV_EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]  # the sub-format GUID's first two bytes
    ok = (tag == _WAV_PCM and bits in (8, 16, 24, 32)) or (tag == _WAV_FLOAT and bits in (32, 64))
    if not ok or channels < 1:
        raise ValueError(
            f"WAV format tag {tag} with {bits}-bit samples and {channels} channel(s) is not streamed; "
            "send integer PCM (8/16/24/32 bits) or float (32/64 bits)"
        )
    return WavStream(f, rate, channels, bits, tag, None if size in _UNKNOWN_SIZES else size)

"""Reading an audio file in blocks, for files too long to hold: :func:`read_blocks` gives the same samples
as :func:`~speechkit.frontends.audio_io.load_audio` (libsndfile, or FFmpeg through PyAV for containers; the
same checks and downmix), block by block, resampled across blocks by :class:`StreamResampler`;
:func:`audio_seconds` reads a file's duration from its header. At most one block of the file is held."""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from speechkit.data.errors import DataError


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

"""Reading audio files: ``load_audio`` turns any file libsndfile or FFmpeg reads into a mono float32
waveform at the frontend's rate, and refuses — naming the file — what would train or decode on
garbage (missing, unreadable, truncated, empty, non-finite or absurdly loud audio). ``to_waveform``
makes the same checks and conversions on samples already in memory."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

from speechkit.data.errors import DataError
from speechkit.data.files import check_media_file
from speechkit.frontends.base import log_once
from speechkit.frontends.ffmpeg import damage, watched

log = logging.getLogger("speechkit.frontends.audio")  # the messages users know, under the same name

# Largest peak |sample| accepted, in full-scale units (float audio is in [-1, 1]): 100 = +40 dB.
# Real float recordings overshoot full scale by a few dB after gain, mixing or resampling (rarely
# +20 dB); a file far beyond that holds samples in the wrong unit (e.g. int16 values stored as
# float), and from peaks of about 1e16 on its |STFT|² energies overflow float32 (inf features).
MAX_PEAK = 100.0

# Formats libsndfile reads itself: its verdict on such a file is final (FFmpeg, probing a damaged
# WAV or FLAC, could decode noise from it). Any other file libsndfile cannot read goes to FFmpeg.
SNDFILE_SUFFIXES = (".wav", ".wave", ".flac", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64",
                    ".rf64")  # fmt: skip
# File suffixes of audio (and audio tracks of video containers) that folder inputs pick up.
AUDIO_EXTENSIONS = (".wav", ".flac", ".aif", ".aiff", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".mp4",
                    ".webm", ".mka", ".wma")  # fmt: skip

# ----------------------------------------------------------------------------- loading

_logged: set[tuple] = set()  # event kinds log_once has logged in this process (INFO)


def _wav_truncation(path: Path) -> tuple[int, int] | None:
    """(declared, present) bytes of a WAV's ``data`` chunk when the file ends early, else None.

    libsndfile reads a truncated WAV without complaint, returning the samples that are there;
    the header still says how many there should be. Streamed WAVs whose header holds the
    placeholder size 0 or 0xFFFFFFFF are not truncated.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        if f.read(12)[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                present = size - pos - 8
                if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > present:
                    return chunk_size, present
                return None
            pos += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to an even size
    return None


def _unreadable(path: Path, problem: str, readers: str = "neither libsndfile nor FFmpeg reads") -> DataError:
    return DataError(
        path,
        f"cannot read audio ({problem})",
        f"the file is corrupt, truncated or in a format {readers}; "
        "re-create it or convert it to WAV/FLAC (e.g. with ffmpeg or sox)",
    )


def _corrupt(path: Path, what: str) -> DataError:
    return DataError(
        path,
        f"corrupt or truncated audio: {what}",
        "re-copy or re-encode the file (ffprobe shows what FFmpeg makes of it), or leave it out",
    )


def _decode_ffmpeg(path: Path, sndfile_error: str) -> tuple[np.ndarray, int]:
    """The first audio stream of any container FFmpeg reads (PyAV) → ``(samples, channels)`` float32
    and its rate in Hz.

    FFmpeg's error messages while decoding make the file corrupt rather than shorter; so does an
    MP4-family file whose boxes run past its end (frontends/ffmpeg.py). ``sndfile_error`` is
    libsndfile's complaint, named too when FFmpeg cannot open the file either.
    """
    import av

    chunks: list[np.ndarray] = []  # (channels, n) float32 each
    with watched(path, lambda what: _corrupt(path, what)) as messages:
        try:
            container = av.open(str(path))
        except av.FFmpegError as e:
            raise _unreadable(path, f"libsndfile: {sndfile_error}; FFmpeg: {e.strerror or e}") from None
        with container:
            if not container.streams.audio:
                kinds = sorted({st.type for st in container.streams}) or ["no"]
                raise DataError(
                    path,
                    f"has no audio stream (FFmpeg reads it as {container.format.name} with "
                    f"{', '.join(kinds)} streams)",
                    "point the manifest at a file with sound in it",
                )
            stream = container.streams.audio[0]
            if stream.codec_context is None:
                raise _corrupt(path, "its audio stream has no decodable codec")
            stream.codec_context.thread_count = 1  # messages from other threads would escape the capture
            rate = stream.codec_context.sample_rate or stream.rate
            resampler = av.AudioResampler(format="fltp")  # planar float32; channels and rate kept
            try:
                for frame in container.decode(stream):
                    chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
                chunks.extend(f.to_ndarray() for f in resampler.resample(None))
            except av.FFmpegError as e:
                decoded = sum(c.shape[1] for c in chunks)
                raise _corrupt(
                    path, f"decoding stopped after {decoded} sample(s) ({e.strerror or e})"
                ) from None
    if problems := damage(messages):
        decoded = sum(c.shape[1] for c in chunks)
        raise _corrupt(path, f"FFmpeg reported {problems[0]!r} after {decoded} decoded sample(s)")
    if not chunks or not rate:
        return np.zeros((0, 1), dtype=np.float32), int(rate or 1)
    if len({c.shape[0] for c in chunks}) > 1:
        raise _corrupt(path, "its number of channels changes inside the stream")
    return np.concatenate(chunks, axis=1).T, int(rate)


def load_audio(path: str | Path, sample_rate: int) -> Tensor:
    """Read an audio file into a mono float32 waveform ``(samples,)`` at ``sample_rate`` Hz.

    Anything libsndfile reads (WAV, FLAC, OGG, MP3, …), and what it does not (M4A/AAC, Opus or
    Vorbis in WebM, the audio track of an MP4, …) through FFmpeg (PyAV), at any rate; other rates
    are resampled (``torchaudio.functional.resample``, windowed sinc), several channels are averaged,
    the same for both readers. Samples are in full scale ``[-1, 1]``. A missing, unreadable,
    truncated, empty or non-finite file, or one whose peak is more than ``MAX_PEAK`` (+40 dB) over
    full scale, raises :class:`DataError` naming it; so do symlink loops and dangling links.
    """
    path = Path(path)
    check_media_file(path, "audio")
    try:
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)  # (samples, channels)
        truncated = _wav_truncation(path)
    except (sf.SoundFileError, RuntimeError, OSError, struct.error) as e:
        if path.suffix.lower() in SNDFILE_SUFFIXES:
            raise _unreadable(path, f"{type(e).__name__}: {e}", "libsndfile does not read") from e
        data, file_rate = _decode_ffmpeg(path, f"{type(e).__name__}: {e}")
        truncated = None
    if truncated is not None:
        declared, present = truncated
        raise DataError(
            path,
            f"truncated WAV: its header declares {declared} bytes of audio but only {present} are present",
            "re-copy or re-create the file",
        )
    return to_waveform(data, file_rate, sample_rate, path)


def to_waveform(data: np.ndarray | Tensor, rate: int, sample_rate: int, where: str | Path) -> Tensor:
    """Samples ``(samples,)`` or ``(samples, channels)`` at ``rate`` Hz → the checked mono float32
    waveform ``(samples,)`` at ``sample_rate`` Hz that :func:`load_audio` returns.

    Float samples are taken as full scale ``[-1, 1]``; integer PCM is scaled to it (int16 by 2¹⁵,
    int32 by 2³¹, unsigned 8-bit around 128). Empty, non-finite or absurdly loud samples raise
    :class:`DataError` naming ``where``; a non-numeric array raises ``TypeError``.
    """
    if isinstance(data, Tensor):
        data = data.detach().cpu()
        data = (data.float() if data.is_floating_point() else data).numpy()
    data = np.asarray(data)
    if data.dtype == np.uint8:
        data = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.signedinteger):
        data = data.astype(np.float32) / float(2 ** (8 * data.dtype.itemsize - 1))
    elif not np.issubdtype(data.dtype, np.floating):
        raise TypeError(
            f"{where}: samples of dtype {data.dtype} are not audio; pass float or integer PCM samples"
        )
    data = data.astype(np.float32, copy=False)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise ValueError(
            f"{where}: audio samples must be (samples,) or (samples, channels), got shape {data.shape}"
        )
    if not isinstance(rate, int | np.integer) or isinstance(rate, bool) or rate <= 0:
        raise ValueError(f"{where}: sample rate {rate!r} must be a positive whole number of Hz")
    if data.shape[0] == 0:
        raise DataError(where, "has no audio samples", "remove it from the manifest or re-create it")
    if not np.isfinite(data).all():
        raise DataError(
            where, "contains NaN or infinite samples", "re-create the file; float audio must be finite"
        )
    peak = float(np.abs(data).max())
    if peak > MAX_PEAK:
        raise DataError(
            where,
            f"peak sample magnitude {peak:.3g} is far outside full scale [-1, 1] (more than {MAX_PEAK:g})",
            "rescale the samples to [-1, 1] (divide by the peak, or by 32768 for int16 values stored as float)",
        )
    wave = torch.from_numpy(data)
    if wave.shape[1] > 1:
        n = wave.shape[1]
        log_once(log, _logged, ("downmix", n), "downmixing %d-channel audio to mono by averaging", n)
    wave = wave.mean(dim=1)
    rate = int(rate)
    if rate != sample_rate:
        log_once(
            log,
            _logged,
            ("resample", rate, sample_rate),
            "resampling audio from %d Hz to %d Hz",
            rate,
            sample_rate,
        )
        wave = AF.resample(wave, rate, sample_rate)
    return wave.contiguous()

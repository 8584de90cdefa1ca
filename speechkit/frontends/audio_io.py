"""Reading audio files: ``load_audio`` turns any file libsndfile reads into a mono float32
waveform at the frontend's rate, and refuses — naming the file — what would train or decode on
garbage (missing, unreadable, truncated, empty, non-finite or absurdly loud audio)."""

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

log = logging.getLogger("speechkit.frontends.audio")  # the messages users know, under the same name

# Largest peak |sample| accepted, in full-scale units (float audio is in [-1, 1]): 100 = +40 dB.
# Real float recordings overshoot full scale by a few dB after gain, mixing or resampling (rarely
# +20 dB); a file far beyond that holds samples in the wrong unit (e.g. int16 values stored as
# float), and from peaks of about 1e16 on its |STFT|² energies overflow float32 (inf features).
MAX_PEAK = 100.0

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


def load_audio(path: str | Path, sample_rate: int) -> Tensor:
    """Read an audio file into a mono float32 waveform ``(samples,)`` at ``sample_rate`` Hz.

    Anything libsndfile reads (WAV, FLAC, OGG, …) at any rate; other rates are resampled
    (``torchaudio.functional.resample``, windowed sinc), several channels are averaged.
    Samples are in full scale ``[-1, 1]``. A missing, unreadable, truncated, empty or
    non-finite file, or one whose peak is more than ``MAX_PEAK`` (+40 dB) over full scale,
    raises :class:`DataError` naming it; so do symlink loops and dangling links.
    """
    path = Path(path)
    check_media_file(path, "audio")
    try:
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)  # (samples, channels)
        truncated = _wav_truncation(path)
    except (sf.SoundFileError, RuntimeError, OSError, struct.error) as e:
        raise DataError(
            path,
            f"cannot read audio ({type(e).__name__}: {e})",
            "the file is corrupt, truncated or in a format libsndfile does not read; "
            "re-create it or convert it to WAV/FLAC (e.g. with ffmpeg or sox)",
        ) from e
    if truncated is not None:
        declared, present = truncated
        raise DataError(
            path,
            f"truncated WAV: its header declares {declared} bytes of audio but only {present} are present",
            "re-copy or re-create the file",
        )
    if data.shape[0] == 0:
        raise DataError(path, "has no audio samples", "remove it from the manifest or re-create it")
    if not np.isfinite(data).all():
        raise DataError(
            path, "contains NaN or infinite samples", "re-create the file; float audio must be finite"
        )
    peak = float(np.abs(data).max())
    if peak > MAX_PEAK:
        raise DataError(
            path,
            f"peak sample magnitude {peak:.3g} is far outside full scale [-1, 1] (more than {MAX_PEAK:g})",
            "rescale the samples to [-1, 1] (divide by the peak, or by 32768 for int16 values stored as float)",
        )
    wave = torch.from_numpy(data)
    if wave.shape[1] > 1:
        n = wave.shape[1]
        log_once(log, _logged, ("downmix", n), "downmixing %d-channel audio to mono by averaging", n)
    wave = wave.mean(dim=1)
    if file_rate != sample_rate:
        log_once(
            log,
            _logged,
            ("resample", file_rate, sample_rate),
            "resampling audio from %d Hz to %d Hz",
            file_rate,
            sample_rate,
        )
        wave = AF.resample(wave, file_rate, sample_rate)
    return wave.contiguous()



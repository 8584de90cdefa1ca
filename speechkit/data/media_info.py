"""What a media file's header says, read once per file for ``speechkit-manifest``: duration,
sample rate and channels of audio; size of images; frames, frame rate and size of video.

Each reader raises :class:`DataError` naming the file when it cannot be used: unreadable, empty,
truncated (a WAV whose data ends early; an image whose data fails Pillow's check), no stream,
zero duration. These are header reads — fast, and enough for a manifest; ``speechkit-validate``
decodes every file with the frontend's own loader.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from speechkit.data.errors import DataError
from speechkit.data.files import check_media_file
from speechkit.data.listings import SOUNDFILE_SUFFIXES

# libsndfile's note on a WAV whose data chunk ends before its header says: "data : 32000 (should be 15978)"
_SHORT_WAV = re.compile(r"data\s*:\s*(\d+)\s*\(should be (\d+)\)")


def audio_info(path: Path) -> dict:
    """``duration`` (s), ``sample_rate`` (Hz) and ``channels`` from libsndfile, or from PyAV for
    what libsndfile does not read (m4a, aac, …) — when speechkit's own loader reads such files."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        if path.suffix.lower() in SOUNDFILE_SUFFIXES:
            raise DataError(path, f"unreadable audio ({e})") from None
        found = _av_audio_info(path)
        if why := _loader_refuses(path, found["sample_rate"]):
            raise DataError(path, why) from None
        return found
    short = _SHORT_WAV.search(info.extra_info)
    if short and int(short.group(2)) < int(short.group(1)):
        declared, present = short.groups()
        raise DataError(
            path, f"truncated WAV: its header declares {declared} bytes of audio, {present} are present"
        )
    return {
        "duration": info.frames / info.samplerate,
        "sample_rate": info.samplerate,
        "channels": info.channels,
    }


def _av_audio_info(path: Path) -> dict:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DataError(path, "has no audio stream")
            s = container.streams.audio[0]
            if s.duration is not None and s.time_base:
                seconds = float(s.duration * s.time_base)
            elif container.duration is not None:
                seconds = container.duration / av.time_base  # in microseconds
            else:  # the header does not say: add up the packets
                seconds = sum(float(p.duration * p.time_base) for p in container.demux(s) if p.duration)
            ctx = s.codec_context
            return {"duration": seconds, "sample_rate": ctx.sample_rate, "channels": ctx.channels}
    except av.FFmpegError as e:
        raise DataError(path, f"unreadable audio ({e.strerror or e})") from None


def image_info(path: Path) -> dict:
    """``width`` and ``height`` in pixels; the file's data is checked too (Pillow's ``verify``:
    chunk checksums of a PNG, a truncated file)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # decompression-bomb warnings: the size is reported, not decoded
            with Image.open(path) as img:
                width, height = img.size
                img.verify()
    except Exception as e:  # Pillow raises many kinds for a bad file (OSError, SyntaxError, struct.error, …)
        raise DataError(path, f"unreadable image ({type(e).__name__}: {e})") from None
    if not width or not height:
        raise DataError(path, f"zero-size image ({width}×{height} pixels)")
    return {"width": width, "height": height}


def video_info(path: Path) -> dict:
    """``duration`` (s), ``num_frames``, ``fps``, ``width``, ``height`` (PyAV; frames counted from
    the packets where the container does not say). A ``.npy`` frame stack has no frame rate, so
    only its frames and size."""
    if path.suffix.lower() == ".npy":
        import numpy as np

        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except (ValueError, OSError, EOFError) as e:
            raise DataError(path, f"unreadable .npy frame stack ({e})") from None
        if len(shape) not in (3, 4):
            raise DataError(path, f"a frame stack is (frames, height, width[, channels]), this one {shape}")
        return {"num_frames": shape[0], "height": shape[1], "width": shape[2]}
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(path, "has no video stream")
            s = container.streams.video[0]
            fps = float(s.average_rate or s.guessed_rate or 0)
            frames = s.frames or sum(1 for p in container.demux(s) if p.size)
            size = {"width": s.codec_context.width, "height": s.codec_context.height}
    except av.FFmpegError as e:
        raise DataError(path, f"unreadable video ({e.strerror or e})") from None
    timing = (
        {"duration": frames / fps, "num_frames": frames, "fps": fps} if fps > 0 else {"num_frames": frames}
    )
    return {**timing, **size}


_loader_reads: dict[str, str] = {}  # suffix → "" when speechkit's audio loader reads it, else why not


def _loader_refuses(path: Path, sample_rate: int) -> str:
    """Why speechkit's own audio loader (frontends/audio_io.py) cannot read files of ``path``'s
    suffix, "" when it can: asked once per suffix libsndfile does not read, on its first such
    file, so that a manifest lists only audio training can load."""
    suffix = path.suffix.lower()
    if suffix not in _loader_reads:
        from speechkit.frontends.audio_io import load_audio

        try:
            load_audio(path, sample_rate)
            _loader_reads[suffix] = ""
        except DataError:
            _loader_reads[suffix] = (
                f"speechkit's audio loader does not read {suffix} files ({path.name} was tried); "
                f"convert them (e.g. ffmpeg -i x{suffix} x.flac) and list the converted files"
            )
    return _loader_reads[suffix]


def read_media(path: Path, modality: str) -> dict:
    """The header fields of one ``modality`` file (``duration`` in seconds where it has one);
    :class:`DataError` says why it cannot be used."""
    check_media_file(path, modality)
    if path.stat().st_size == 0:
        raise DataError(path, "empty file (0 bytes)")
    info = {"audio": audio_info, "image": image_info, "video": video_info}[modality](path)
    if info.get("num_frames") == 0 or info.get("duration", 1) <= 0:
        raise DataError(path, "zero duration: the file holds no samples or frames")
    return info

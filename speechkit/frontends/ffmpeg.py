"""Decoding through FFmpeg (PyAV) under watch, for audio and video alike.

FFmpeg conceals damage: it logs an error and returns whatever it could rebuild, and it decodes an
MP4 cut inside its frame data without complaint when the index comes first. ``watched`` is the one
place that turns both into an error naming the file: it checks the box sizes of MP4-family files,
captures FFmpeg's log while the caller decodes (``damage`` picks the messages that mean damaged
data), and maps PyAV's failures outside FFmpeg (undecodable metadata strings, …) to the caller's
"corrupt" error. The callers decode with one thread per stream: FFmpeg's messages from other
threads would escape the capture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from speechkit.data.errors import DataError

# Containers made of size-prefixed boxes (ISO base media: MP4, QuickTime, 3GP, M4A audio)
ISO_BMFF_SUFFIXES = (".mp4", ".m4v", ".m4a", ".m4b", ".mov", ".3gp")

Messages = list[tuple[int, str, str]]  # (level, logger name, message) as av.logging.Capture records them


def box_truncation(path: Path) -> tuple[str, int, int] | None:
    """``(box type, declared bytes, present bytes)`` of the first top-level box of an MP4-family file
    that runs past the end of the file, else None (also for a file that is not made of boxes)."""
    size = path.stat().st_size
    pos = 0
    with path.open("rb") as f:
        while pos + 8 <= size:
            f.seek(pos)
            box_size, box_type = int.from_bytes(f.read(4), "big"), f.read(4).decode("latin-1")
            if box_size == 1 and pos + 16 <= size:  # a 64-bit size follows the type
                box_size = int.from_bytes(f.read(8), "big")
            elif box_size == 0:  # the box runs to the end of the file
                return None
            if box_size < 8 or not (box_type.isascii() and box_type.isprintable()):
                return None  # not a box header: leave the verdict to FFmpeg
            if pos + box_size > size:
                return box_type, box_size, size - pos
            pos += box_size
    return None


def damage(messages: Messages) -> list[str]:
    """FFmpeg's captured messages that mean damaged data: errors, and warnings of corrupt packets."""
    import av.logging

    return [m.strip() for level, _, m in messages if level <= av.logging.ERROR or "corrupt" in m.lower()]


@contextmanager
def watched(path: Path | None, corrupt: Callable[[str], DataError]) -> Iterator[Messages]:
    """Decode inside this block; it yields the list FFmpeg's messages are captured into.

    ``path`` (None for bytes in memory) is checked first for a cut MP4-family box; ``corrupt(what)``
    builds the caller's error for a damaged file. ``DataError`` passes through; PyAV's exceptions
    from outside FFmpeg become ``corrupt``. The caller checks ``damage(messages)`` where it decides
    (after the block, or per decoded piece when it streams).
    """
    import av.logging

    if path is not None and path.suffix.lower() in ISO_BMFF_SUFFIXES and (cut := box_truncation(path)):
        box, declared, present = cut
        raise corrupt(f"its {box!r} box declares {declared} bytes but only {present} are present")
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture() as messages:
            yield messages
    except DataError:
        raise
    except (UnicodeDecodeError, ValueError, OverflowError, IndexError, RuntimeError) as e:
        raise corrupt(f"{type(e).__name__} while reading it: {e}") from None
    finally:
        av.logging.set_level(previous)

"""The check every media loader (audio, image, video) makes before it opens a file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from speechkit.data.errors import DataError


def check_media_file(path: Path, kind: str) -> None:
    """Raise :class:`DataError` naming ``path`` unless it is a file that exists; ``kind`` is
    "audio", "image" or "video", for the message.

    A symlink loop and a dangling symlink are named as such (with where the link points), not as
    a missing file: the path is there, what it leads to is not.
    """
    try:
        os.stat(path)
    except ValueError:  # a NUL character: no file name holds one
        raise DataError(
            path, f"{kind} file not found (the path holds a NUL character)", "fix the path"
        ) from None
    except OSError as e:
        missing = e.errno in (errno.ENOENT, errno.ENOTDIR)
        if e.errno == errno.ELOOP:
            raise DataError(
                path,
                f"is a symlink loop: its links point at each other and never reach a file ({e.strerror})",
                f"replace the link with the {kind} file or a link to it (`ls -l` shows where each link points)",
            ) from None
        if missing and path.is_symlink():
            raise DataError(
                path,
                f"is a dangling symlink: it points to {os.path.realpath(path)}, which does not exist",
                f"restore that {kind} file, or re-create the link to where the file is now",
            ) from None
        if missing:
            raise DataError(
                path,
                f"{kind} file not found",
                "check the path (a manifest's relative paths are relative to the manifest's folder)",
            ) from None
        raise DataError(
            path, f"cannot be opened ({e.strerror})", "check the path and the permissions of its folders"
        ) from None
    if not path.is_file():
        raise DataError(path, "is not a file (a directory?)", f"point the manifest at the {kind} file itself")

"""CTC decoders: ``greedy`` and ``beam`` (prefix beam search with LM fusion and lexicon).

The beam search's CPU engine is compiled by numba (beam_compiled.py, best_first.py, ctc_score.py,
all through :func:`cached_njit`); the machine code is cached under :func:`numba_cache_dir`, never
inside the package, which a system or shared install keeps read-only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speechkit.decoders import (
    beam,  # noqa: F401
    greedy,  # noqa: F401  (registers plugins)
)
from speechkit.decoders.base import BLANK, Decoder, Hypothesis

__all__ = ["BLANK", "Decoder", "Hypothesis", "cached_njit", "dispatcher_state", "numba_cache_dir"]


def numba_cache_dir() -> Path:
    """Where the compiled decoders' machine code is cached: ``$NUMBA_CACHE_DIR`` where the user set
    it, else ``$XDG_CACHE_HOME/speechkit/numba`` (``~/.cache/speechkit/numba`` by default)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # XDG: a relative path is ignored
    return base / "speechkit" / "numba"


def cached_njit(**options: Any) -> Callable[[Callable], Any]:
    """``numba.njit(cache=True, **options)`` with its cache in :func:`numba_cache_dir`.

    numba picks a function's cache folder when it decorates it, from ``numba.config.CACHE_DIR``
    (``$NUMBA_CACHE_DIR``, read when numba is imported, maybe by librosa before us); that setting is
    ours only while decorating, so other numba users in the process keep theirs.
    """

    def decorate(func: Callable) -> Any:
        import numba

        saved = numba.config.CACHE_DIR
        numba.config.CACHE_DIR = str(numba_cache_dir())
        try:
            return numba.njit(cache=True, **options)(func)
        finally:
            numba.config.CACHE_DIR = saved

    return decorate


def dispatcher_state(func: Any) -> str:
    """How far a :func:`cached_njit` function is from running: "ready" (compiled in this process),
    "cached" (its machine code for the current source is in the disk cache) or "cold" (its next
    call compiles it)."""
    if func.signatures:
        return "ready"
    try:  # numba's own index check: this numba version, the source file's hash, at least one entry
        return "cached" if func._cache._cache_file._load_index() else "cold"
    except Exception:  # another numba's internals: assume the worst, which only changes a message
        return "cold"

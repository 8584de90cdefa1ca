"""Frontends: one file → raw tensor (``load``), a padded raw batch → features ``(B, T, F)``."""

from speechkit.frontends import (
    audio,  # noqa: F401  (registers plugins)
    image,  # noqa: F401  (registers plugins)
    speech_embedding,  # noqa: F401  (registers plugins)
    video,  # noqa: F401  (registers plugins)
)
from speechkit.frontends.audio import load_audio
from speechkit.frontends.base import Frontend

__all__ = ["Frontend", "load_audio"]

"""Training losses: ``ctc``."""

from speechkit.losses import ctc  # noqa: F401  (registers plugins)

"""Train-only augmentations ``(B, T, F)`` → same."""

from speechkit.augment import specaugment  # noqa: F401  (registers plugins)

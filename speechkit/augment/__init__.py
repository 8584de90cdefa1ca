"""Train-only augmentations ``(B, T, F)`` → same."""

from speechkit.augment import (
    image,  # noqa: F401  (registers plugins)
    specaugment,  # noqa: F401  (registers plugins)
    video,  # noqa: F401  (registers plugins)
)

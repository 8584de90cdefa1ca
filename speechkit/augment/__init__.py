"""Train-only augmentations, chained in order (chain.py): raw ones on the raw batch before the frontend
(waveforms: audio.py, reverb.py; text-line images: image.py; video: video.py), the others on features
``(B, T, F)`` after it (specaugment.py; vtlp.py, which reads the frontend's frequency axis)."""

from speechkit.augment import (
    audio,  # noqa: F401  (registers plugins)
    image,  # noqa: F401  (registers plugins)
    reverb,  # noqa: F401  (registers plugins)
    specaugment,  # noqa: F401  (registers plugins)
    video,  # noqa: F401  (registers plugins)
    vtlp,  # noqa: F401  (registers plugins)
)

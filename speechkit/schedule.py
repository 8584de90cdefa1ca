"""The learning-rate schedule every trainer in speechkit uses: a pure function of step and progress,
so a resumed run needs no scheduler state."""

from __future__ import annotations

import math

#: The shapes of the decay after warm-up (``trainer.lr_decay``).
DECAYS = ("cosine", "linear")


def lr_factor(progress: float, step: int, warmup_steps: int, min_ratio: float, decay: str = "cosine") -> float:
    """Linear warm-up over ``warmup_steps``, then decay to ``min_ratio`` as progress goes 0 → 1: a half cosine,
    or a straight line (``linear``, which keeps the rate higher through the middle of the run and brings it
    down to ``min_ratio`` only at the end)."""
    if decay not in DECAYS:
        raise ValueError(f"trainer.lr_decay={decay!r}: use one of {', '.join(DECAYS)}")
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    p = min(max(progress, 0.0), 1.0)
    shape = 0.5 * (1 + math.cos(math.pi * p)) if decay == "cosine" else 1.0 - p
    return warm * (min_ratio + (1 - min_ratio) * shape)

"""The learning-rate schedule every trainer in speechkit uses: a pure function of step and progress,
so a resumed run needs no scheduler state."""

from __future__ import annotations

import math


def lr_factor(progress: float, step: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_ratio`` as progress goes 0 → 1."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    cosine = min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return warm * cosine

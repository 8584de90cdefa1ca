"""speechkit: sequences of frames to text with recurrent networks trained by CTC.

    from speechkit import build, load_checkpoint
    decoder = build("decoder", "greedy", tokens=["<blank>", " ", "a", "b"])
    pipeline = load_checkpoint("runs/asr_grid/…/checkpoints/best.pt")
    pipeline.transcribe(["a.wav", "b.wav"])
"""

from __future__ import annotations

import os

# Sleeping rather than spinning OpenMP threads: on a busy CPU (data loaders, other jobs) spinning
# threads wait for descheduled peers and a training step measured here took 4-10x longer.
# Set OMP_WAIT_POLICY yourself to override; it must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

from speechkit.registry import build as _build
from speechkit.registry import load_plugins, register


def build(kind: str, node=None, /, **params):
    """Build any registered plugin: ``build("decoder", "beam", tokens=…, beam_size=16)``, or from a
    config node: ``build("encoder", cfg.encoder, input_size=80)``."""
    load_plugins()
    return _build(kind, node, **params)


def load_checkpoint(path, decoder=None, device: str = "cpu", batch_size: int = 16):
    """A ready pipeline (frontend → … → decoder) from a checkpoint file alone."""
    load_plugins()
    from speechkit.checkpoint import load_checkpoint as _load

    return _load(path, decoder=decoder, device=device, batch_size=batch_size)


__all__ = ["__version__", "build", "load_checkpoint", "load_plugins", "register"]

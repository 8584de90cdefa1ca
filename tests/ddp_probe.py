"""``speechkit-train`` with a probe: rank 0 also saves the gradient of the first optimiser step.

    python tests/ddp_probe.py GRADS.pt recipe=demo ...                                # one process
    python -m torch.distributed.run --standalone --nproc-per-node=2 tests/ddp_probe.py GRADS.pt ...

Everything else is the command line's own run (Hydra composition, ``Trainer``, ``fit``, the run
directory); the probe only hooks the optimiser. Right before the first ``optimizer.step`` — after
DistributedDataParallel's all-reduce and after gradient clipping, i.e. exactly the gradient the
update uses — rank 0 writes ``{parameter name: .grad}`` to GRADS.pt (tests/test_distributed.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from speechkit import distributed
from speechkit.train import main
from speechkit.trainer import Trainer


def save_first_gradient(trainer: Trainer, out: Path) -> None:
    """Hook ``trainer.optimizer``: at its first step, rank 0 saves every parameter's gradient to ``out``."""

    def hook(optimizer, args, kwargs) -> None:
        handle.remove()  # the first step only
        if distributed.is_main():
            grads = {
                n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None
            }
            torch.save(grads, out)

    handle = trainer.optimizer.register_step_pre_hook(hook)


if __name__ == "__main__":
    if len(sys.argv) < 2 or "=" in sys.argv[1]:
        sys.exit("usage: ddp_probe.py GRADS.pt [speechkit-train overrides]")
    out = Path(sys.argv.pop(1)).resolve()
    build = Trainer.__init__

    def probed_init(self: Trainer, *args, **kwargs) -> None:
        build(self, *args, **kwargs)
        save_first_gradient(self, out)

    Trainer.__init__ = probed_init  # whichever way speechkit.train imports Trainer, it gets the probe
    main()

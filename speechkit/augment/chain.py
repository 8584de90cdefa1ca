"""The augmentations of a run as one chain, applied in order in training: ``augment=[speed,reverb,specaugment]``.

The config group ``augment`` takes one option or a list of them (Hydra's "selecting multiple configs from
a config group"). Each augment plugin's config is stored under its own name (registry.LIST_KINDS), so the
composed node maps each chosen stage to its parameters, in the order chosen::

    augment:                                # augment=[speed,specaugment] augment.speed.factors=[0.9,1.1]
      speed: {name: speed, factors: [0.9, 1.1]}
      specaugment: {name: specaugment, freq_masks: 2, …}

A checkpoint written before chains holds one stage's node, ``augment: {name: specaugment, …}``;
:func:`stage_nodes` reads both forms. A stage whose ``raw`` attribute is true (waveform, image and
video augmentations) works on the raw batch before the frontend, the others on features after it, so
every raw stage comes before the first feature stage.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from speechkit.registry import build, registry

log = logging.getLogger(__name__)


def _is_mapping(node: Any) -> bool:
    from omegaconf import DictConfig

    return isinstance(node, Mapping | DictConfig)


def stage_nodes(node: Any) -> dict[str, Any]:
    """The stages an ``augment`` config node chooses, in order: stage name → its node (with its ``name``).

    ``node``: the composed mapping of stage name → parameters (a DictConfig or a dict), one stage's
    node with a ``name`` (a checkpoint written before chains), or None or empty (``augment=[]``: no
    augmentation). An entry without a ``name`` holds settings of a stage that is not chosen (a recipe's
    ``augment.speed.factors`` when the command line says ``augment=[specaugment]``) and is left out.
    """
    if node is None:
        return {}
    if not _is_mapping(node):
        raise ValueError(f"augment: expected a mapping of stage name → parameters, got {node!r}")
    if isinstance(node.get("name"), str):  # the single-stage form of checkpoints written before chains
        return {node["name"]: node}
    return {str(key): stage for key, stage in node.items() if _is_mapping(stage) and stage.get("name")}


def _is_raw(stage: nn.Module) -> bool:
    return bool(getattr(stage, "raw", False))


def _stage_name(stage: nn.Module) -> str:
    return getattr(stage, "plugin_name", type(stage).__name__)


class AugmentChain(nn.Module):
    """Augmentations run in order in training: the raw stages before the frontend, the others after it.

    In evaluation mode both halves return their input unchanged.
    """

    def __init__(self, stages: Sequence[nn.Module] = ()) -> None:
        super().__init__()
        names, raw = [_stage_name(s) for s in stages], [_is_raw(s) for s in stages]
        n_raw = raw.index(False) if False in raw else len(raw)
        late = [name for name, r in zip(names[n_raw:], raw[n_raw:]) if r]
        if late:
            order = [n for n, r in zip(names, raw) if r] + [n for n, r in zip(names, raw) if not r]
            raise ValueError(
                f"augment=[{','.join(names)}]: {late[0]!r} works on the raw batch before the frontend, so it "
                f"cannot come after {names[n_raw]!r}, which works on features after it; put the raw stages "
                f"first: augment=[{','.join(order)}]"
            )
        self.stages = nn.ModuleList(stages)
        self.names = names
        self.n_raw = n_raw  # stages[:n_raw] run on the raw batch, the rest on features

    def prepare(self) -> None:
        """Builds what the raw stages cache on first use (reverb's rooms) now, so that loader workers forked
        after it inherit it instead of building it again each (``data.frontend_in_workers``)."""
        for stage in self.stages[: self.n_raw]:
            if hasattr(stage, "prepare"):
                stage.prepare()

    @classmethod
    def from_config(
        cls, node: Any, sample_rate: int | None = None, frontend: nn.Module | None = None
    ) -> AugmentChain:
        """The chain an ``augment`` config node chooses (see :func:`stage_nodes`).

        ``sample_rate``: the frontend's, in Hz (None for images and video), given to the stages whose
        class sets ``needs_sample_rate`` (the waveform augmentations); ``frontend``: the built frontend,
        given to the stages whose class sets ``needs_frontend`` (vtlp reads its frequency axis).
        """
        chosen = stage_nodes(node)
        if _is_mapping(node) and not isinstance(node.get("name"), str):
            unused = [str(k) for k in node.keys() if str(k) not in chosen]
            if unused:
                log.warning(
                    "augment.%s is set but %s not in the chain %s; ignored",
                    ", augment.".join(unused),
                    "it is" if len(unused) == 1 else "they are",
                    list(chosen),
                )
        stages = []
        for stage in chosen.values():
            context = {}
            cls_ = registry("augment").get(stage["name"]).cls
            if getattr(cls_, "needs_frontend", False):
                if frontend is None:
                    raise ValueError(f"augment {stage['name']!r} works on a frontend's features, and none was given")
                context["frontend"] = frontend
            if getattr(cls_, "needs_sample_rate", False):
                if sample_rate is None:
                    raise ValueError(
                        f"augment {stage['name']!r} works on audio waveforms, but the frontend has no sample "
                        "rate (images or video); choose it with an audio frontend only"
                    )
                context["sample_rate"] = sample_rate
            stages.append(build("augment", stage, **context))
        return cls(stages)

    @property
    def summary(self) -> str:
        """The stages in order, for logs: ``speed → reverb → specaugment`` (``none`` when empty)."""
        return " → ".join(self.names) or "none"

    def extra_repr(self) -> str:
        return f"{self.summary}; raw stages: {self.n_raw}"

    def before_frontend(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The raw stages, in order, on the raw batch ``(B, N, …)``: new batch and lengths ``(B,)``."""
        if self.training:
            for stage in self.stages[: self.n_raw]:
                x, lengths = stage(x, lengths)
        return x, lengths

    def after_frontend(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The feature stages, in order, on features ``(B, T, F)``: new features and lengths ``(B,)``."""
        if self.training:
            for stage in self.stages[self.n_raw :]:
                feats, lengths = stage(feats, lengths)
        return feats, lengths

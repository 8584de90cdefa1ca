"""A manifest as a torch Dataset, and the one collate function every modality shares."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from speechkit.data.errors import DataError
from speechkit.data.manifest import Example
from speechkit.data.tokenizer import CharTokenizer, UnknownSymbolError

log = logging.getLogger(__name__)


@dataclass
class Item:
    index: int
    raw: Tensor  # time-first: audio (samples,), image (width, height), video (frames, C, H, W)
    target: Tensor | None  # token ids (L,), None when transcribing


@dataclass
class Skipped:
    index: int
    where: str  # manifest:line
    reason: str


@dataclass
class Batch:
    x: Tensor  # (B, N, ...) raw inputs padded along dim 1
    lengths: Tensor  # (B,) valid size along dim 1
    targets: Tensor  # (sum L,) concatenated token ids (empty when transcribing)
    target_lengths: Tensor  # (B,)
    indices: list[int]  # dataset index of each row
    skipped: list[Skipped] = field(default_factory=list)
    stage: str = "raw"  # what x is (FrontendCollate): raw (as loaded) | augmented (the raw augmentations
    # applied) | features (the frontend's output (B, T, F), lengths its frames)

    def __len__(self) -> int:
        return len(self.indices)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.x.to(device, non_blocking=True),
            self.lengths.to(device),
            self.targets.to(device),
            self.target_lengths.to(device),
            self.indices,
            self.skipped,
            self.stage,
        )


class ManifestDataset(Dataset):
    """Examples of a manifest, loaded by the frontend's ``load`` and tokenised.

    ``on_error='raise'`` stops at the first bad example with an error naming its manifest line;
    ``'skip'`` hands the problem to the collate function, which drops the example and reports
    it in ``Batch.skipped`` so the trainer counts and logs it.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        load: Callable[[Path], Tensor],
        tokenizer: CharTokenizer | None = None,
        on_error: str = "raise",
        load_source: Callable[[object], Tensor] | None = None,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"data.on_error={on_error!r}: use raise or skip")
        self.examples = list(examples)
        self.load = load
        self.tokenizer = tokenizer
        self.on_error = on_error
        self.load_source = load_source  # examples with a ``source`` (a lhotse cut) load through it

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Item | Skipped:
        ex = self.examples[index]
        try:
            target = None
            if self.tokenizer is not None and ex.text is not None:
                try:
                    target = torch.tensor(self.tokenizer.encode(ex.text), dtype=torch.long)
                except UnknownSymbolError as e:
                    raise DataError(ex.where, str(e)) from None
            try:
                if ex.source is not None and self.load_source is not None:
                    raw = self.load_source(ex.source)
                else:
                    raw = self.load(ex.path)
            except DataError as e:  # name the manifest line too, unless the input is the file itself
                raise DataError(ex.where if e.where == ex.where else f"{ex.where}: {e.where}", e.problem,
                                e.fix) from None
            return Item(index, raw, target)
        except DataError as e:
            if self.on_error == "raise":
                raise
            detail = e.where.removeprefix(f"{ex.where}: ") if e.where != ex.where else ""
            return Skipped(index, ex.where, e.problem + (f" ({detail})" if detail else ""))


def pad_time_first(raws: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack time-first tensors ``(N_i, ...)`` into ``(B, max N, ...)`` zero-padded, with lengths ``(B,)``."""
    lengths = torch.tensor([r.shape[0] for r in raws], dtype=torch.long)
    shape = (len(raws), int(lengths.max()) if len(raws) else 0, *raws[0].shape[1:]) if raws else (0, 0)
    x = raws[0].new_zeros(shape) if raws else torch.zeros(shape)
    for i, r in enumerate(raws):
        x[i, : r.shape[0]] = r
    return x, lengths


def collate(items: Sequence[Item | Skipped]) -> Batch:
    good = [it for it in items if isinstance(it, Item)]
    skipped = [it for it in items if isinstance(it, Skipped)]
    if not good:
        return Batch(torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                     torch.zeros(0, dtype=torch.long), [], skipped)
    x, lengths = pad_time_first([it.raw for it in good])
    targets = [it.target for it in good if it.target is not None]
    if len(targets) == len(good):
        target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
        flat = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long)
    else:
        target_lengths = torch.zeros(len(good), dtype=torch.long)
        flat = torch.zeros(0, dtype=torch.long)
    return Batch(x, lengths, flat, target_lengths, [it.index for it in good], skipped)


class FrontendCollate:
    """Training batches as features (or augmented): the raw augmentations and the frontend run where the
    batch is collated, in a loader worker, overlapping the training step (``data.frontend_in_workers``).

    ``augment`` (an ``AugmentChain``, only its raw stages run here) and ``frontend`` are copies of the
    model's, in training mode; neither may have trainable weights. ``frontend`` None: the raw
    augmentations alone run here (a frontend with trainable weights stays in the step), and the batch
    is ``augmented`` instead of ``features``. The random draws of a batch depend on ``seed`` and the
    batch's dataset indices alone, not on the worker, the number of workers or the process's random
    state (which is left as it was): a resumed run draws what the uninterrupted one did.
    """

    def __init__(self, augment: torch.nn.Module, frontend: torch.nn.Module | None, seed: int) -> None:
        self.augment, self.frontend, self.seed = augment, frontend, seed

    def __call__(self, items: Sequence[Item | Skipped]) -> Batch:
        batch = collate(items)
        if not len(batch):
            return batch
        seed = hash((self.seed, *batch.indices)) & 0x7FFF_FFFF_FFFF_FFFF  # tuples of ints hash alike everywhere
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            x, lengths = self.augment.before_frontend(batch.x, batch.lengths)
            if self.frontend is None:
                return replace(batch, x=x, lengths=lengths, stage="augmented")
            x, lengths = self.frontend(x, lengths)
        return replace(batch, x=x, lengths=lengths, stage="features")


def collate_features(items: Sequence[Item | Skipped]) -> Batch:
    """:func:`collate` for items that are features already ``(T, F)`` (:class:`CachedFeatures`)."""
    return replace(collate(items), stage="features")


class CachedFeatures(Dataset):
    """The training set as features computed once (``data.feature_cache``): item ``i`` is the frontend's
    output for example ``i`` (float16 in memory, float32 out), or the :class:`Skipped` its loading gave."""

    def __init__(self, items: Sequence[Item | Skipped]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Item | Skipped:
        it = self.items[index]
        return it if isinstance(it, Skipped) else Item(index, it.raw.float(), it.target)

    @property
    def nbytes(self) -> int:
        return sum(it.raw.nbytes for it in self.items if isinstance(it, Item))

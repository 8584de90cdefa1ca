"""The model (frontend → augment → encoder → head) and the inference pipeline around it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from speechkit.data.dataset import ManifestDataset, Skipped, collate
from speechkit.data.manifest import Example
from speechkit.data.tokenizer import CharTokenizer
from speechkit.decoders.base import Hypothesis
from speechkit.registry import build

log = logging.getLogger(__name__)


class CTCModel(nn.Module):
    """frontend → augment (training only) → encoder → linear head → log-probs ``(B, T', V)``."""

    def __init__(self, frontend: nn.Module, augment: nn.Module, encoder: nn.Module, vocab_size: int) -> None:
        super().__init__()
        self.frontend, self.augment, self.encoder = frontend, augment, encoder
        self.head = nn.Linear(encoder.output_dim, vocab_size)

    @classmethod
    def from_config(cls, cfg: DictConfig | dict, vocab_size: int) -> CTCModel:
        frontend = build("frontend", cfg["frontend"])
        augment = build("augment", cfg["augment"])
        encoder = build("encoder", cfg["encoder"], input_size=frontend.output_dim)
        return cls(frontend, augment, encoder, vocab_size)

    @property
    def frame_shift_s(self) -> float | None:
        """Seconds per output frame (frontend hop × encoder subsampling), None for images."""
        shift = getattr(self.frontend, "frame_shift_s", None)
        return None if shift is None else shift * getattr(self.encoder, "subsampling", 1)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return self.encoder.output_lengths(self.frontend.output_lengths(lengths))

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Raw batch ``(B, N, ...)``, ``lengths`` ``(B,)`` → log-probs ``(B, T', V)``, ``(B,)``.

        An augment whose ``raw`` attribute is true (image or waveform augmentations) works on the
        raw batch before the frontend; the others on features after it. Both only in training.
        """
        raw_augment = getattr(self.augment, "raw", False)
        if self.training and raw_augment:
            x, lengths = self.augment(x, lengths)
        feats, lengths = self.frontend(x, lengths)
        if self.training and not raw_augment:
            feats, lengths = self.augment(feats, lengths)
        hidden, lengths = self.encoder(feats, lengths)
        return self.head(hidden).log_softmax(dim=-1), lengths


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but torch sees no CUDA device; use cpu or auto")
    return torch.device(name)


class Pipeline:
    """A trained model with its tokenizer and a decoder: files in, text out.

    ``load_checkpoint(path)`` returns one; ``transcribe(files)`` gives their text,
    ``decode(files)`` their n-best lists of :class:`Hypothesis` with word times.
    """

    def __init__(
        self,
        model: CTCModel,
        tokenizer: CharTokenizer,
        config: DictConfig,
        decoder: Any = None,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
    ) -> None:
        self.device = torch.device(device) if not isinstance(device, torch.device) else device
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.config = config
        self.batch_size = batch_size
        self.set_decoder(decoder if decoder is not None else config.get("decoder") or {"name": "greedy"})

    def build_decoder(self, node: Any) -> Any:
        return build("decoder", node, tokens=self.tokenizer.tokens, frame_shift_s=self.model.frame_shift_s)

    def set_decoder(self, node: Any) -> None:
        """Swap the decoder: a config node/dict with a ``name``, or a built decoder."""
        self.decoder = self.build_decoder(node) if isinstance(node, dict | DictConfig) else node

    @torch.no_grad()
    def log_probs(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(x.to(self.device), lengths.to(self.device))

    def decode_batches(self, dataset: ManifestDataset, num_workers: int = 0, progress: bool = False):
        """Yield ``(batch, n-best lists)`` for every batch of ``dataset``, in order."""
        from tqdm import tqdm

        loader = torch.utils.data.DataLoader(
            dataset, batch_size=self.batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
        )
        for batch in tqdm(loader, desc="decode", unit="batch", disable=not progress, mininterval=2.0):
            if len(batch) == 0:
                yield batch, []
                continue
            lp, lengths = self.log_probs(batch.x, batch.lengths)
            yield batch, self.decoder(lp.float(), lengths)

    def decode(
        self, inputs: Sequence[str | Path | Example], on_error: str = "raise"
    ) -> list[list[Hypothesis] | Skipped]:
        """n-best hypotheses (with word times) for each input, in order.

        ``inputs``: media file paths, or manifest :class:`Example` s (then errors name the manifest
        and line, ``manifest.jsonl:LINE``; for a path, the file). ``on_error="raise"``: the first
        file that cannot be loaded raises :class:`DataError`; ``"skip"``: its place holds a
        :class:`Skipped` (``where``, ``reason``) and the others are decoded.
        """
        examples = [x if isinstance(x, Example) else _MediaFile(Path(x), None, Path(x), 0) for x in inputs]
        dataset = ManifestDataset(examples, self.model.frontend.load, None, on_error=on_error)
        out: dict[int, list[Hypothesis] | Skipped] = {}
        for batch, hyps in self.decode_batches(dataset):
            out.update(zip(batch.indices, hyps))
            out.update((sk.index, sk) for sk in batch.skipped)
        return [out[i] for i in range(len(examples))]

    def transcribe(self, files: Sequence[str | Path | Example]) -> list[str]:
        """The best hypothesis's text for each file, in order."""
        return [nbest[0].text if isinstance(nbest, list) and nbest else "" for nbest in self.decode(files)]


@dataclass(frozen=True)
class _MediaFile(Example):
    """A media file given by its path rather than a manifest line: errors name the file alone."""

    @property
    def where(self) -> str:
        return str(self.path)

"""Short spans of consecutive words cut from the training examples: a curriculum for CTC's first epochs.

A model that must learn to align ~30 labels in a clip before it writes anything sits for a long time on
CTC's blank plateau; lipreading models are therefore first trained on one or a few words and then on
whole sentences (Chung et al. 2017, "Lip Reading Sentences in the Wild", §4; Afouras et al. 2018).
``data.word_spans_epochs`` > 0 does that here: in each of the first that-many epochs, every example
whose manifest line has word times (``"words": [[word, start_s, end_s], …]``, as the real GRID corpus'
``.align`` files and recipes/lips_grid/prepare.py give; lhotse cuts bring none) is cut to a span of 1 to
``data.word_spans_max`` consecutive words, chosen by ``(seed, epoch, index)``; its transcript becomes
the span's words. Examples without word times stay whole. Later epochs, and dev, see whole examples.

The span is chosen by a pure function of the example and the key, so the trainer batches the spans by
their own lengths and a loader worker cuts the same span, and resume repeats it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from speechkit.data.dataset import Item, ManifestDataset, Skipped
from speechkit.data.errors import DataError
from speechkit.data.manifest import Example
from speechkit.data.tokenizer import UnknownSymbolError

MARGIN_S = 0.08  # s kept on each side of a span (2 video frames at 25 fps): the mouth moves before the sound
# s a word may end past the example's duration (rounding) before the example's word times are distrusted
OVERRUN_S = 0.05


@dataclass(frozen=True)
class Span:
    start_s: float
    end_s: float
    text: str


def word_times(ex: Example) -> list[tuple[str, float, float]] | None:
    """The example's ``words`` field as ``[(word, start_s, end_s), …]``; None where it has none, it is not
    that shape, or a word ends past the example's duration (such examples are trained whole)."""
    words = dict(ex.fields).get("words")
    if not isinstance(words, list | tuple) or not words:
        return None
    out = []
    for w in words:
        if not (isinstance(w, list | tuple) and len(w) == 3 and isinstance(w[0], str)):
            return None
        try:
            start, end = float(w[1]), float(w[2])
        except (TypeError, ValueError):
            return None
        if not (math.isfinite(end) and 0 <= start <= end):
            return None
        if ex.duration is not None and end > ex.duration + OVERRUN_S:
            return None
        out.append((w[0], start, end))
    return out


def choose_span(ex: Example, max_words: int, seed: int, epoch: int, index: int) -> Span | None:
    """The span example ``index`` trains on in ``epoch``: 1 to ``max_words`` consecutive words (uniform),
    starting anywhere (uniform), ``MARGIN_S`` either side, clipped to the example; None: train it whole."""
    words = word_times(ex)
    if words is None:
        return None
    g = torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + index) % 2**63)
    n = 1 + int(torch.randint(min(max_words, len(words)), (1,), generator=g))
    first = int(torch.randint(len(words) - n + 1, (1,), generator=g))
    chosen = words[first : first + n]
    end = chosen[-1][2] + MARGIN_S
    if ex.duration is not None:
        end = min(end, ex.duration)
    return Span(max(chosen[0][1] - MARGIN_S, 0.0), end, " ".join(w for w, _, _ in chosen))


class WordSpans(Dataset):
    """A :class:`ManifestDataset` whose examples can be asked for by ``(index, epoch)``: the span of
    :func:`choose_span` (``index`` alone, or an example without word times: the whole example).
    ``rate``: the raw input's time steps per second (audio samples, video frames)."""

    def __init__(self, base: ManifestDataset, rate: float, max_words: int, seed: int) -> None:
        if max_words < 1:
            raise ValueError(f"data.word_spans_max={max_words}: use 1 or more words")
        self.base, self.rate, self.max_words, self.seed = base, rate, max_words, seed

    def __len__(self) -> int:
        return len(self.base)

    def span(self, index: int, epoch: int) -> Span | None:
        return choose_span(self.base.examples[index], self.max_words, self.seed, epoch, index)

    def __getitem__(self, key: int | tuple[int, int]) -> Item | Skipped:
        index, epoch = key if isinstance(key, tuple) else (key, None)
        item = self.base[index]
        span = None if epoch is None or isinstance(item, Skipped) else self.span(index, epoch)
        first = 0 if span is None else int(span.start_s * self.rate)  # the step holding the start …
        if span is None or first >= item.raw.shape[0]:  # (word times past the media's end: trained whole)
            return item
        last = max(math.ceil(span.end_s * self.rate), first + 1)  # … to the one holding the end
        target = item.target
        if self.base.tokenizer is not None:
            try:
                target = torch.tensor(self.base.tokenizer.encode(span.text), dtype=torch.long)
            except UnknownSymbolError as e:  # the words differ from the transcript (case, punctuation)
                ex = self.base.examples[index]
                problem = f"its word times' words cannot be spelled: {e}"
                if self.base.on_error == "skip":
                    return Skipped(index, ex.where, problem)
                raise DataError(
                    ex.where,
                    problem,
                    'make the "words" field spell the transcript\'s words, or set data.word_spans_epochs=0',
                ) from None
        return Item(index, item.raw[first:last], target)


def raw_rate(frontend: object) -> float | None:
    """Time steps per second of what ``frontend.load`` returns: an audio frontend's ``sample_rate``, a
    video frontend's ``fps``; None for images (a text line has no time to cut)."""
    cfg = getattr(frontend, "cfg", None)
    for name in ("sample_rate", "fps"):
        rate = getattr(cfg, name, None)
        if isinstance(rate, int | float) and rate > 0:
            return float(rate)
    return None

"""Batches of example indices: shuffled by ``(seed, epoch)``, optionally bucketed by length (``durations``:
seconds of audio or video, or an image line's width / height: ``Example.length``) and
capped by total padded seconds rather than count, so padding stops wasting compute.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

BUCKET_WINDOW = 64  # batches' worth of examples sorted together: mixes lengths yet pads little


def make_batches(
    durations: Sequence[float | None],
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    bucket: bool = False,
    batch_seconds: float = 0.0,
    sortagrad: bool = False,
) -> list[list[int]]:
    """Index batches for one epoch, the same for the same ``(seed, epoch)``.

    ``bucket``: shuffle, then sort windows of ``BUCKET_WINDOW`` batches by duration, cut them
    into batches and shuffle the batch order. ``batch_seconds`` > 0: a batch holds as many
    examples as fit in that many padded seconds (longest × count), at most ``batch_size``…
    unless ``batch_size`` is 0, then no count cap. Durations unknown (None) disable both.
    ``sortagrad`` (DeepSpeech 2's curriculum): in epoch 0 the whole epoch is sorted by duration, and
    its batches run shortest first; later epochs are unchanged. Needs durations.
    """
    n = len(durations)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g).tolist() if shuffle else list(range(n))
    known = all(d is not None for d in durations)
    if sortagrad and epoch == 0 and known:
        order.sort(key=lambda i: durations[i])  # stable: equal durations keep the seeded order
        bucket = shuffle = False  # one sorted window, its batches shortest first
    if not known or not (bucket or batch_seconds > 0):
        if batch_size < 1 and not known:  # no count cap, and no durations to cap the seconds by
            raise ValueError(
                f"data.batch_size={batch_size} leaves data.batch_seconds to size the batches, but "
                f"{sum(d is None for d in durations)} of {n} examples have no duration (manifest \"duration\", "
                "or an image's \"width\" and \"height\"): set data.batch_size to 1 or more"
            )
        if batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size}: 0, no count cap, needs data.batch_seconds > 0")
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    cap = batch_size if batch_size > 0 else n
    batches: list[list[int]] = []
    window = max(cap, 1) * BUCKET_WINDOW if bucket else n
    for w in range(0, n, window):
        chunk = order[w : w + window]
        if bucket:
            chunk.sort(key=lambda i: durations[i])
        cur: list[int] = []
        longest = 0.0
        for i in chunk:
            d = float(durations[i])
            fits = len(cur) < cap and (batch_seconds <= 0 or max(longest, d) * (len(cur) + 1) <= batch_seconds)
            if cur and not fits:
                batches.append(cur)
                cur, longest = [], 0.0
            cur.append(i)
            longest = max(longest, d)
        if cur:
            batches.append(cur)
    if shuffle and bucket:
        perm = torch.randperm(len(batches), generator=g).tolist()
        batches = [batches[i] for i in perm]
    return batches


def padding_fraction(batches: Sequence[Sequence[int]], durations: Sequence[float | None]) -> float:
    """Share of the padded batch time that is padding (0 = none)."""
    if not batches or any(d is None for d in durations):
        return float("nan")
    total = sum(max(durations[i] for i in b) * len(b) for b in batches)
    valid = sum(durations[i] for b in batches for i in b)
    return 1.0 - valid / total if total else 0.0


class EpochBatches(torch.utils.data.Sampler):
    """The batches of an epoch, starting after ``skip`` (resume rebuilds the order and skips)."""

    def __init__(self, batches: list[list[int]], skip: int = 0) -> None:
        self.batches = batches[skip:]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

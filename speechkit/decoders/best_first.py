"""Best-first candidate selection for the compiled beam search (numba): a K-entry min-heap of
candidates, and each frame's tokens in order of probability, sorted only as far as they are used.

The search offers each hypothesis' extensions in that order and stops at the first that cannot
beat the heap's worst; on a peaky frame that is after one or two tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from speechkit.decoders import cached_njit


class Heap(NamedTuple):
    """The best K candidates of a frame: a min-heap on ``score`` (see :func:`offer`)."""

    score: np.ndarray  # (K,) fused score
    ctc: np.ndarray  # (K,) its CTC part
    gain: np.ndarray  # (K,) what the step adds to the bonus
    parent: np.ndarray  # (K,) int64: the parent hypothesis' slot
    token: np.ndarray  # (K,) int64: the token appended (0: the parent's prefix stays)


@cached_njit(inline="always")
def offer(heap: Heap, n: int, s: float, x: float, d: float, p: int, c: int) -> int:
    """Offer a candidate to the heap holding ``n`` of at most K; returns the heap's size.

    A candidate: fused score ``s``, its CTC part ``x``, what the step adds to the bonus ``d``,
    parent slot ``p``, token ``c`` (0: the parent's prefix stays).
    """
    # the fields as locals, read once: numba reads a NamedTuple's array field slowly in a loop
    sc, sx, sd, sp, st = heap.score, heap.ctc, heap.gain, heap.parent, heap.token
    K = sc.shape[0]
    if n < K:  # not full: sift up
        i = n
        while i > 0:
            up = (i - 1) >> 1
            if sc[up] <= s:
                break
            sc[i], sx[i], sd[i], sp[i], st[i] = sc[up], sx[up], sd[up], sp[up], st[up]
            i = up
        sc[i], sx[i], sd[i], sp[i], st[i] = s, x, d, p, c
        return n + 1
    if s <= sc[0]:
        return n
    i = 0  # replace the worst: sift down
    while True:
        ch = 2 * i + 1
        if ch >= K:
            break
        if ch + 1 < K and sc[ch + 1] < sc[ch]:
            ch += 1
        if sc[ch] >= s:
            break
        sc[i], sx[i], sd[i], sp[i], st[i] = sc[ch], sx[ch], sd[ch], sp[ch], st[ch]
        i = ch
    sc[i], sx[i], sd[i], sp[i], st[i] = s, x, d, p, c
    return n


@cached_njit(inline="always")
def sort_more(y: np.ndarray, order: np.ndarray, taken: np.ndarray, n_sorted: int) -> int:
    """Extend ``order[:n_sorted]`` (tokens ``1 … V-1`` by ``y``, most likely first) lazily; returns its new length.

    One selection pass per token for the first three (a peaky frame needs one or two), then the
    rest at once: an insertion sort without allocation for small vocabularies, argsort for large.
    """
    V = y.shape[0]
    if n_sorted < 3:
        best = 0
        for v in range(1, V):
            if not taken[v] and (best == 0 or y[v] > y[best]):
                best = v
        order[n_sorted], taken[best] = best, True
        return n_sorted + 1
    first = n_sorted
    if V > 64:
        for v in np.argsort(-y[1:]) + 1:
            if not taken[v]:
                order[n_sorted], taken[v] = v, True
                n_sorted += 1
        return n_sorted
    for v in range(1, V):
        if taken[v]:
            continue
        i = n_sorted
        while i > first and y[order[i - 1]] < y[v]:
            order[i] = order[i - 1]
            i -= 1
        order[i], taken[v] = v, True
        n_sorted += 1
    return n_sorted

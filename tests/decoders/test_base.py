"""decoders/base.py: reading tokens and their frames off per-frame paths."""

from __future__ import annotations

import torch

from speechkit.decoders.base import paths


def reference_paths(emitted: torch.Tensor, nonblank: torch.Tensor) -> list[list[tuple[int, int, int]]]:
    """Per path ``(b, n)``, its ``(token, start, end)`` by a plain loop over the frames."""
    T, B, N = emitted.shape
    out = []
    for b in range(B):
        for n in range(N):
            toks: list[list[int]] = []
            for t in range(T):
                if emitted[t, b, n] > 0:
                    toks.append([int(emitted[t, b, n]), t, t])  # on at least at its start frame
                elif toks and nonblank[t, b, n]:
                    toks[-1][2] = t  # still on: the token lasts to here
            out.append([tuple(x) for x in toks])
    return out


def test_paths_give_each_token_its_start_and_last_frame_still_on():
    g = torch.Generator().manual_seed(0)
    for trial in range(300):
        T, B, N = (int(torch.randint(0, 7, (), generator=g)) for _ in range(3))
        emitted = torch.randint(0, 4, (T, B, N), generator=g) * (torch.rand(T, B, N, generator=g) < 0.4)
        nonblank = torch.rand(T, B, N, generator=g) < 0.5
        toks, starts, ends, offsets = paths(emitted, nonblank)
        assert len(offsets) == B * N + 1 and offsets[0] == 0, trial
        got = [list(zip(toks, starts, ends))[offsets[i] : offsets[i + 1]] for i in range(B * N)]
        assert got == reference_paths(emitted, nonblank), trial

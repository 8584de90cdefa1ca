"""Word and character error rates from Levenshtein distances (phone error rates for phone models)."""

from __future__ import annotations

from collections.abc import Sequence


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    if len(ref) < len(hyp):
        ref, hyp = hyp, ref
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i]
        for j, h in enumerate(hyp, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def matched_words(ref: Sequence, hyp: Sequence) -> list[bool]:
    """For each reference word, whether a Levenshtein alignment of ``hyp`` to ``ref`` pairs it with an equal
    word: the per-slot reading of a WER ("was the letter recognised?") that an error elsewhere in the
    hypothesis, such as a preposition heard as a letter, does not move. Of the alignments with the fewest
    edits, the one with the most matches."""
    n, m = len(ref), len(hyp)
    # cost[i][j]: (edits, -matches) of ref[:i] against hyp[:j]; tuples compare edits first
    cost = [[(i + j, 0) if i == 0 or j == 0 else None for j in range(m + 1)] for i in range(n + 1)]

    def diagonal(i: int, j: int) -> tuple[int, int]:
        same = ref[i - 1] == hyp[j - 1]
        edits, neg_matches = cost[i - 1][j - 1]
        return edits + (not same), neg_matches - same

    for i in range(1, n + 1):
        for j in range(1, m + 1):
            up, left = cost[i - 1][j], cost[i][j - 1]
            cost[i][j] = min(diagonal(i, j), (up[0] + 1, up[1]), (left[0] + 1, left[1]))
    hits = [False] * n
    i, j = n, m
    while i and j:  # walk back along one optimal path
        if cost[i][j] == diagonal(i, j):
            hits[i - 1] = ref[i - 1] == hyp[j - 1]
            i, j = i - 1, j - 1
        elif cost[i][j] == (cost[i - 1][j][0] + 1, cost[i - 1][j][1]):
            i -= 1
        else:
            j -= 1
    return hits


def error_counts(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, int]:
    """Word and character edits and reference lengths, summed over utterances."""
    out = {"word_errors": 0, "words": 0, "char_errors": 0, "chars": 0}
    for r, h in zip(refs, hyps, strict=True):
        rw, hw = r.split(), h.split()
        out["word_errors"] += edit_distance(rw, hw)
        out["words"] += len(rw)
        rc, hc = " ".join(rw), " ".join(hw)
        out["char_errors"] += edit_distance(rc, hc)
        out["chars"] += len(rc)
    return out


def rates(counts: dict[str, int | float]) -> tuple[float, float]:
    """WER and CER as fractions (0.05 = 5 %) from summed :func:`error_counts` (0 for no reference)."""
    return counts["word_errors"] / max(counts["words"], 1), counts["char_errors"] / max(counts["chars"], 1)


def wer_cer(refs: Sequence[str], hyps: Sequence[str]) -> tuple[float, float]:
    """Corpus WER and CER as fractions (0.05 = 5 %)."""
    return rates(error_counts(refs, hyps))


def named_rates(counts: dict[str, int | float], unit: str = "char") -> dict[str, float]:
    """The error rates of :func:`error_counts` named for a model whose tokens are ``unit`` (a tokenizer's
    ``unit``): ``{"per": …}`` for ``"phone"`` (the WER over phone strings is the phone error rate; a
    character rate over phone symbols means nothing), else ``{"wer": …, "cer": …}``."""
    wer, cer = rates(counts)
    return {"per": wer} if unit == "phone" else {"wer": wer, "cer": cer}

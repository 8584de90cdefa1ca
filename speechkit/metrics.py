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

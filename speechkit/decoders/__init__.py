"""CTC decoders: ``greedy`` and ``beam`` (prefix beam search with LM fusion and lexicon)."""

from speechkit.decoders import (
    beam,  # noqa: F401
    greedy,  # noqa: F401  (registers plugins)
)
from speechkit.decoders.base import BLANK, Decoder, Hypothesis

__all__ = ["BLANK", "Decoder", "Hypothesis"]

"""Language models for fusion in the beam decoder: the protocol, ``ngram``, ``kenlm`` and ``char_rnn``."""

from speechkit.lm import char_rnn, kenlm, ngram  # noqa: F401  (registers plugins)
from speechkit.lm.base import LanguageModel

__all__ = ["LanguageModel"]

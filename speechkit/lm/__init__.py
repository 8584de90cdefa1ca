"""Language models for fusion in the beam decoder: the protocol, ``ngram`` and ``kenlm``."""

from speechkit.lm import kenlm, ngram  # noqa: F401  (registers plugins)
from speechkit.lm.base import LanguageModel

__all__ = ["LanguageModel"]

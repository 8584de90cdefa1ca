"""The GRID corpus grammar, shared by the recipes that synthesise GRID-style sentences
(recipes/asr_grid, recipes/lips_grid).

GRID sentences have six slots — command, colour, preposition, letter, digit, adverb — and
51 words (``bin blue at f two now``). The letter slot has no "w".
"""

from __future__ import annotations

import numpy as np

COMMANDS = ("bin", "lay", "place", "set")
COLOURS = ("blue", "green", "red", "white")
PREPOSITIONS = ("at", "by", "in", "with")
LETTERS = tuple("abcdefghijklmnopqrstuvxyz")  # no "w" in GRID
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ADVERBS = ("again", "now", "please", "soon")
SLOTS = (COMMANDS, COLOURS, PREPOSITIONS, LETTERS, DIGITS, ADVERBS)
WORDS = tuple(w for slot in SLOTS for w in slot)  # the 51-word lexicon

# Every English espeak-ng voice reads a lone "a" as the article (a schwa), even inside
# <say-as interpret-as="characters">; espeak's phoneme input ([[...]]) spells the letter's name.
ESPEAK_SPELLING = {"a": "[['eI]]"}


def random_sentence(rng: np.random.Generator) -> list[str]:
    """The words of one sentence of the grammar, each slot drawn uniformly."""
    return [slot[rng.integers(len(slot))] for slot in SLOTS]

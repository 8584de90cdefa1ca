import pytest

from speechkit import build
from speechkit.data.tokenizer import UnknownSymbolError


def test_vocabulary_is_sorted_characters_after_the_blank():
    tok = build("tokenizer", "char").fit(["bin blue", "at c"])
    assert tok.tokens == ["<blank>", " ", "a", "b", "c", "e", "i", "l", "n", "t", "u"]
    assert tok.decode(tok.encode("bin  at")) == "bin at"  # white space runs collapse


def test_unknown_characters_are_named():
    tok = build("tokenizer", "char").fit(["abc"])
    with pytest.raises(UnknownSymbolError, match="'z'") as e:
        tok.encode("abz")
    assert e.value.symbols == ["z"]


def test_lowercase_option():
    tok = build("tokenizer", "char", lowercase=True).fit(["ABC"])
    assert tok.tokens[1:] == ["a", "b", "c"] and tok.encode("Cab") == [3, 1, 2]

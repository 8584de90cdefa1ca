"""Hotwords (decoders/hotwords.py): the matching rules, the list's errors, and both engines' searches."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from speechkit.decoders import beam_compiled
from speechkit.decoders.beam import BeamConfig
from speechkit.decoders.hotwords import HotwordTrie, read_hotwords
from speechkit.lm.ngram import NgramConfig, NgramLM
from speechkit.registry import build

NEG_INF = float("-inf")
CHARS = ["<b>", " "] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
STOI = {t: i for i, t in enumerate(CHARS)}


def ids(text: str) -> list[int]:
    return [STOI[ch] for ch in text]


# --------------------------------------------------------------------------- the matching rules

NAMES = ["ann", "new york", "new", "john smith", "smith"]


@pytest.mark.parametrize(
    ("text", "earned"),
    [
        ("ann", 3),  # a completed hotword: boost per character
        ("x ann y", 3),  # at a word start, ended by a separator
        ("ann ann", 6),
        ("an", 0),  # unfinished at the end: gives back what it earned
        ("anna", 0),  # the word goes on: no hotword
        ("joann", 0),  # not at a word start
        ("new york", 8),  # a phrase
        ("new jersey", 3),  # the phrase fails after "new ", which it locked in
        ("new yorker", 3),
        ("new new york", 11),  # fails at the second "new", which starts the phrase again
        ("john smithers", 0),  # falls back to "smith", which fails too
        ("john smith", 10),
        ("a john smith", 10),
        ("johnny smith", 5),  # "smith" at a word start after a failed match
    ],
)
def test_completed_hotwords_earn_their_boost_per_character_and_partial_matches_nothing(text, earned):
    trie = HotwordTrie.from_spec(NAMES, CHARS, default_boost=1.0)
    assert trie.score(ids(text)) == pytest.approx(earned)


WITH_PUNCTUATION = CHARS + list(".,()\"'-")


@pytest.mark.parametrize(
    ("text", "earned"),
    [
        ("ann.", 3),  # punctuation ends a word as the separator does: the hotword completes
        ("x ann, y", 3),
        ("(ann) y", 3),  # and opening punctuation keeps a word start
        ('"new york".', 8),
        ("new, york", 3),  # "new" completes at the comma, where the phrase cannot go on
        ("ann's", 0),  # an apostrophe or hyphen goes on inside the word
        ("ann-marie", 0),
        ("anna.", 0),
        ("x.ann", 3),
    ],
)
def test_punctuation_is_a_word_boundary_as_the_separator_is(text, earned):
    trie = HotwordTrie.from_spec(NAMES, WITH_PUNCTUATION, default_boost=1.0)
    assert trie.score([WITH_PUNCTUATION.index(ch) for ch in text]) == pytest.approx(earned)


def test_a_failed_match_falls_back_to_a_suffix_after_punctuation_too():
    chars = [*WITH_PUNCTUATION, "&"]
    trie = HotwordTrie.from_spec(["e.on", "ontario", "at&t", "tom"], chars, default_boost=1.0)
    assert trie.score([chars.index(ch) for ch in "e.ontario"]) == pytest.approx(7)  # "e.on" fails at "t"
    assert trie.score([chars.index(ch) for ch in "at&tom"]) == pytest.approx(3)


def test_a_failed_phrase_falls_back_to_the_longest_suffix_at_a_word_start():
    trie = HotwordTrie.from_spec(["a b c", "b d", "new yorkshire", "york"], CHARS, default_boost=1.0)
    assert trie.score(ids("a b d")) == pytest.approx(3)  # "a b c" fails at "d": "b d" completes
    assert trie.score(ids("new york")) == pytest.approx(4)  # "new yorkshire" fails at the end: "york"
    assert trie.score(ids("new york city")) == pytest.approx(4)
    assert trie.score(ids("new yorkshire")) == pytest.approx(13)


def reference_bonus(text: str, hotwords: list[str], boost: float) -> float:
    """What ``text`` earns, word by word: at each word the longest hotword starting there, then after it."""
    words, phrases = text.split(" "), [h.split(" ") for h in hotwords]
    i, total = 0, 0.0
    while i < len(words):
        match = max((p for p in phrases if words[i : i + len(p)] == p), key=len, default=None)
        if match is None:
            i += 1
        else:
            total += boost * len(" ".join(match))
            i += len(match)
    return total


def test_scores_agree_with_a_word_by_word_reference_on_random_texts():
    hotwords = ["ab", "abc", "ba", "ab ba", "c", "ca b"]
    trie = HotwordTrie.from_spec(hotwords, CHARS, default_boost=0.5)
    g = torch.Generator().manual_seed(0)
    vocab = ["ab", "abc", "ba", "b", "a", "c", "bab", "abab", "ca", "cab"]
    for _ in range(400):
        n = int(torch.randint(1, 6, (), generator=g))
        text = " ".join(vocab[int(i)] for i in torch.randint(0, len(vocab), (n,), generator=g))
        assert trie.score(ids(text)) == pytest.approx(reference_bonus(text, hotwords, 0.5)), text


def test_subword_tokens_match_as_the_characters_they_write():
    hotwords = ["ab", "ba ab", "cab"]
    subwords = ["<b>", " ", "a", "b", "c", " ab", "ba", "c ", " c"]
    by_subword = HotwordTrie.from_spec(hotwords, subwords, default_boost=1.0)
    by_char = HotwordTrie.from_spec(hotwords, CHARS, default_boost=1.0)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        seq = torch.randint(
            1, len(subwords), (int(torch.randint(1, 9, (), generator=g)),), generator=g
        ).tolist()
        text = "".join(subwords[v] for v in seq)
        assert by_subword.score(seq) == pytest.approx(by_char.score(ids(text))), repr(text)


def test_each_line_may_set_its_own_boost_and_a_shared_prefix_takes_the_largest(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("anna\t3.0\nann\nbob  smith\t0.5\n")
    entries = read_hotwords(str(path), default_boost=1.0)
    assert [(e.text, e.boost, e.where) for e in entries] == [
        ("anna", 3.0, f"{path}:1"),
        ("ann", 1.0, f"{path}:2"),
        ("bob smith", 0.5, f"{path}:3"),  # inner white space collapsed
    ]
    trie = HotwordTrie(entries, CHARS)
    assert trie.score(ids("anna")) == pytest.approx(12.0)
    assert trie.score(ids("ann")) == pytest.approx(9.0)  # "a", "n", "n" are on the path of "anna" too
    assert trie.score(ids("bob smith")) == pytest.approx(4.5)
    pairs = HotwordTrie.from_spec([("bob", 2.0), "ann\t1.5"], CHARS, default_boost=9.0)
    assert pairs.score(ids("bob ann")) == pytest.approx(6.0 + 4.5)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("anna\n\nbob\n", r"names.txt:2: empty line"),
        ("anna\nbob\tlots\n", r"names.txt:2: the boost of 'bob' must be a number, got 'lots'"),
        ("anna\nbob\tnan\n", r"names.txt:2: the boost of 'bob' must be a number"),
        ("anna\nzoë\n", r"names.txt:2: hotword 'zoë': 'ë' is in none of the model's tokens"),
        ("", r"names.txt is empty"),
    ],
)
def test_a_bad_hotword_file_is_one_error_naming_file_and_line(tmp_path, content, message):
    path = tmp_path / "names.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        build("decoder", "beam", tokens=CHARS, hotwords=str(path))


def test_missing_files_and_unspellable_phrases_are_refused_before_decoding(tmp_path):
    with pytest.raises(ValueError, match=r"no such file: .*missing.txt"):
        build("decoder", "beam", tokens=CHARS, hotwords=str(tmp_path / "missing.txt"))
    no_space = ["<b>", "a", "b"]
    with pytest.raises(ValueError, match=r"decoder.hotwords\[1\]: hotword 'a b': ' ' is in none"):
        build("decoder", "beam", tokens=no_space, hotwords=["ab", "a b"])
    with pytest.raises(ValueError, match=r"decoder.hotwords\[0\]: hotword 'ba': it cannot be spelt"):
        HotwordTrie.from_spec(["ba"], ["<b>", "ab", " "], default_boost=1.0)


# --------------------------------------------------------------------------- the searches

LETTERS = ["<b>", " ", "a", "b", "c", "d"]
HOT = ["ab", "cab", "ab dc", "dd"]


def assert_same_hypotheses(a, b, atol: float, trial: int) -> None:
    """Search results of the torch (``a``) and compiled (``b``) engines hold the same live hypotheses."""
    live = a.scores > NEG_INF
    assert torch.equal(live, b.scores > NEG_INF), trial
    torch.testing.assert_close(b.scores[live], a.scores[live], atol=atol, rtol=0)
    torch.testing.assert_close(b.ctc[live], a.ctc[live], atol=atol, rtol=0)
    paths = live[None].expand_as(a.emitted)
    assert torch.equal(b.emitted[paths], a.emitted[paths]), trial


@pytest.fixture(scope="module")
def resources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hot")
    text = folder / "lm.txt"
    text.write_text("ab cd\nba dc\ncab\nab ab cd\ndad cab\nbad\n")
    (folder / "words.txt").write_text("ab\ncd\nba\ndc\ncab\nbad\ndad\ndd\n")
    return {
        "word": NgramLM(NgramConfig(text=str(text), order=2, unit="word")),
        "words": str(folder / "words.txt"),
    }


SETTINGS = [
    {},
    {"hotword_boost": 4.0},
    {"token_topk": 3, "beam_threshold": 6.0},
    {"blank_skip_logp": -0.5},
    {"beta": 1.0},
    {"lm": "word", "alpha": 0.8, "beta": 1.0},
    {"lexicon": True},
]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "+".join(s) or "hotwords")
def test_both_engines_find_the_same_nbest_with_hotwords(setting, resources):
    kw = dict(setting)
    if "lm" in kw:
        kw["lm"] = resources[kw["lm"]]
    if kw.pop("lexicon", False):
        kw["lexicon"] = resources["words"]
    g = torch.Generator().manual_seed(4)
    for trial in range(12):
        B, T = int(torch.randint(1, 4, (), generator=g)), int(torch.randint(1, 18, (), generator=g))
        K = (2, 5, 8, 16)[trial % 4]
        lp = ((1.5, 3.0, 6.0)[trial % 3] * torch.randn(B, T, len(LETTERS), generator=g)).log_softmax(-1)
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        res = {
            engine: build(
                "decoder", "beam", tokens=LETTERS, beam_size=K, nbest=K, engine=engine, hotwords=HOT, **kw
            ).search(lp, lengths)
            for engine in ("torch", "native")
        }
        assert_same_hypotheses(res["torch"], res["native"], atol=1e-3, trial=trial)


def test_both_engines_agree_on_subword_tokens():
    tokens = ["<b>", " ", "a", "b", " ab", "ba", "b "]
    g = torch.Generator().manual_seed(6)
    lp = (3.0 * torch.randn(3, 14, len(tokens), generator=g)).log_softmax(-1)
    lengths = torch.tensor([14, 9, 4])
    res = {
        e: build(
            "decoder", "beam", tokens=tokens, beam_size=6, nbest=6, engine=e, hotwords=["ab", "ba ab"]
        ).search(lp, lengths)
        for e in ("torch", "native")
    }
    assert_same_hypotheses(res["torch"], res["native"], atol=1e-3, trial=0)


@pytest.mark.parametrize("engine", ["torch", "native"])
def test_every_returned_score_is_the_exact_ctc_score_plus_the_texts_hotword_bonus(engine):
    """Through the search and the exact rescoring, a hypothesis' score is its label sequence's CTC
    log-probability plus exactly what its text earns: nothing for partial matches."""
    g = torch.Generator().manual_seed(8)
    lp = (2.5 * torch.randn(4, 16, len(LETTERS), generator=g)).log_softmax(-1)
    lengths = torch.tensor([16, 12, 7, 3])
    dec = build("decoder", "beam", tokens=LETTERS, beam_size=8, nbest=8, engine=engine, hotwords=HOT)
    trie, checked = dec.hotwords, 0
    for b, nbest in enumerate(dec(lp, lengths)):
        for h in nbest:
            n = len(h.tokens)
            ctc = -torch.nn.functional.ctc_loss(
                lp[b : b + 1, : lengths[b]].transpose(0, 1),
                torch.tensor([h.tokens if n else [1]]),
                lengths[b : b + 1],
                torch.tensor([n]),
                reduction="sum",
            )
            assert h.score == pytest.approx(float(ctc) + trie.score(h.tokens), abs=1e-3), (b, h.text)
            checked += trie.score(h.tokens) > 0
    assert checked >= 3  # some hypotheses do hold completed hotwords


def peaky(text: str, tokens: list[str], confusions: dict[int, tuple[str, float]]) -> torch.Tensor:
    """Log-probs ``(1, T, V)`` spelling ``text`` (a token frame, then a blank frame), where at character
    ``i`` in ``confusions`` the token ``alt`` is ``margin`` nats likelier than the right one."""
    rows = []
    for i, ch in enumerate(text):
        row = torch.full((len(tokens),), -12.0)
        row[tokens.index(ch)] = -0.1
        if i in confusions:
            alt, margin = confusions[i]
            row[tokens.index(alt)] = -0.1 + margin
        rows += [row, torch.tensor([0.0] + [-12.0] * (len(tokens) - 1))]
    return torch.stack(rows)[None].log_softmax(-1)


@pytest.mark.parametrize("engine", ["torch", "native"])
def test_a_boost_recovers_a_misheard_hotword_and_leaves_other_words_alone(engine):
    # "bin anna now" with the second "n" of "anna" heard as "m" by a margin of 2 nats
    lp = peaky("bin anna now", CHARS, {6: ("m", 2.0)})
    length = torch.tensor([lp.shape[1]])
    plain = build("decoder", "beam", tokens=CHARS, beam_size=8, engine=engine)
    boosted = build(
        "decoder", "beam", tokens=CHARS, beam_size=8, engine=engine, hotwords=["anna"], hotword_boost=1.0
    )
    assert plain(lp, length)[0][0].text == "bin anma now"
    assert boosted(lp, length)[0][0].text == "bin anna now"
    # "bin anne now" spelt clearly: the partial match "ann" must not pull it to "anna"
    lp = peaky("bin anne now", CHARS, {})
    assert boosted(lp, torch.tensor([lp.shape[1]]))[0][0].text == "bin anne now"
    # a word that leaves the trie early ("anxa") keeps its acoustic score: nothing earned, nothing lost
    lp = peaky("bin anxa now", CHARS, {})
    top = boosted(lp, torch.tensor([lp.shape[1]]))[0][0]
    assert top.text == "bin anxa now"
    assert top.score == pytest.approx(plain(lp, torch.tensor([lp.shape[1]]))[0][0].score, abs=1e-4)


@pytest.mark.parametrize("engine", ["torch", "native"])
def test_a_boosted_name_keeps_the_punctuation_after_it(engine):
    # "bin anna. now" with a clear full stop after the misheard "anna": a hotword that completed only
    # before a separator made the search write a space for the stop (3 nats worse) to earn its 4 × 2.0
    lp = peaky("bin anna. now", WITH_PUNCTUATION, {6: ("m", 1.0), 8: (" ", -3.0)})
    length = torch.tensor([lp.shape[1]])
    options = {"tokens": WITH_PUNCTUATION, "beam_size": 8, "engine": engine}
    assert build("decoder", "beam", **options)(lp, length)[0][0].text == "bin anma. now"
    boosted = build("decoder", "beam", **options, hotwords=["anna"], hotword_boost=2.0)
    assert boosted(lp, length)[0][0].text == "bin anna. now"


def test_hotwords_come_from_a_config_node_as_a_path_or_a_list(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("anna\t1.5\n")
    schema = OmegaConf.structured(BeamConfig)
    for value in (str(path), "[anna]"):
        node = OmegaConf.merge(schema, OmegaConf.from_dotlist([f"hotwords={value}", "hotword_boost=1.5"]))
        dec = build("decoder", {"name": "beam", **OmegaConf.to_container(node)}, tokens=CHARS)
        assert dec.hotwords.score(ids("anna")) == pytest.approx(6.0)
    for off in (None, "", []):
        assert build("decoder", "beam", tokens=CHARS, hotwords=off).hotwords is None


def test_the_compiled_engine_refuses_hotword_tables_of_another_vocabulary():
    trie = HotwordTrie.from_spec(["ab"], LETTERS, default_boost=1.0)
    lp = torch.randn(1, 5, len(CHARS)).log_softmax(-1)
    with pytest.raises(ValueError, match="hotwords built for 6 tokens, log_probs has 28"):
        beam_compiled.search(lp, torch.tensor([5]), 4, hotwords=trie.to_native())

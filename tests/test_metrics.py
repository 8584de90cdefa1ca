from speechkit.metrics import edit_distance, matched_words, wer_cer


def test_edit_distance_counts_substitutions_insertions_deletions():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], ["a"]) == 1


def test_wer_and_cer_are_corpus_level():
    wer, cer = wer_cer(["bin blue at c", "set red"], ["bin blue at", "set red"])
    assert wer == 1 / 6 and cer == 2 / 20


def test_matched_words_reads_each_reference_slot_through_the_alignment():
    # the preposition heard as a letter: the letter and the digit are still recognised
    assert matched_words("at s nine".split(), "r s nine".split()) == [False, True, True]
    # a deleted preposition shifts nothing
    assert matched_words("with b six".split(), "b six".split()) == [False, True, True]
    # an inserted word before the letter
    assert matched_words("at u five".split(), "t u five".split()) == [False, True, True]
    assert matched_words("at c two".split(), "c q".split()) == [False, True, False]
    # a word heard in the wrong place is not a hit
    assert matched_words("a b".split(), "b a".split()) in ([False, True], [True, False])
    assert matched_words("a b".split(), "c d".split()) == [False, False]
    assert matched_words("b".split(), []) == [False]
    assert matched_words([], "b".split()) == []
    # of two alignments with equal edits, the one with more matches
    assert matched_words("x a".split(), "a".split()) == [False, True]

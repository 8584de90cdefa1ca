from speechkit.metrics import edit_distance, wer_cer


def test_edit_distance_counts_substitutions_insertions_deletions():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], ["a"]) == 1


def test_wer_and_cer_are_corpus_level():
    wer, cer = wer_cer(["bin blue at c", "set red"], ["bin blue at", "set red"])
    assert wer == 1 / 6 and cer == 2 / 20

import torch

from speechkit import build

TOKENS = ["<blank>", " ", "a", "b"]


def _one_hot(path, V=4):
    lp = torch.full((len(path), V), -10.0)
    lp[torch.arange(len(path)), torch.tensor(path)] = 0.0
    return lp


def test_greedy_merges_repeats_drops_blanks_and_times_words():
    path = [2, 2, 0, 2, 1, 1, 3, 0, 3, 0]  # "aa" then space then "bb"
    lp = torch.stack([_one_hot(path), _one_hot([3] * 10)])
    hyps = build("decoder", "greedy", tokens=TOKENS, frame_shift_s=0.02)(lp, torch.tensor([10, 3]))
    best = hyps[0][0]
    assert best.text == "aa bb" and best.token_frames == [0, 3, 4, 6, 8]
    assert best.words == [("aa", 0.0, 0.08), ("bb", 0.12, 0.18)]
    assert hyps[1][0].text == "b"  # only 3 valid frames; padding ignored
    assert best.score == 0.0


def test_greedy_on_all_blank_and_zero_length_input_gives_empty_text():
    lp = _one_hot([0, 0, 0])[None].repeat(2, 1, 1)
    hyps = build("decoder", "greedy", tokens=TOKENS)(lp, torch.tensor([3, 0]))
    assert [h[0].text for h in hyps] == ["", ""] and hyps[0][0].words == []

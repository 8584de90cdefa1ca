"""The character RNN LM: incremental batched scoring, TBPTT training, sampling, fusion, bad input."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from speechkit.checkpoint import CheckpointError
from speechkit.lm.char_rnn import CharRNN, CharRNNConfig, CharRNNLM, Vocabulary, load_lm, save_lm
from speechkit.lm.char_train import TrainLMConfig, bits_per_char, sample, train
from speechkit.registry import build
from tests.conftest import REPO

TEXT = "bin blue at f two now\nlay red by g nine soon\nset white with k one again\n"


@pytest.fixture
def lm_file(tmp_path):
    torch.manual_seed(0)
    vocab = Vocabulary.from_text(TEXT + " ")
    model = CharRNN(len(vocab), embed=8, hidden=16, layers=2, cell="lstm")
    save_lm(tmp_path / "lm.pt", model, vocab)
    return tmp_path / "lm.pt"


@torch.no_grad()
def teacher_forced(model: CharRNN, vocab: Vocabulary, s: str) -> float:
    """Natural-log P(s, then the line boundary | a line boundary) from one forward pass."""
    ids = torch.cat([torch.zeros(1, dtype=torch.long), vocab.encode(s), torch.zeros(1, dtype=torch.long)])
    logits, _ = model(ids[None, :-1])
    return float(logits[0].log_softmax(-1).gather(1, ids[1:, None]).sum())


def test_incremental_scoring_equals_the_full_forward_pass(lm_file):
    lm = build("lm", "char_rnn", path=str(lm_file))
    for s in ["bin blue", "lay red by g", "x"]:  # "x" is unknown: <unk>
        assert lm.sentence_logprob(list(s)) == pytest.approx(teacher_forced(lm.model, lm.vocab, s), abs=1e-4)


def test_select_and_masked_advance_keep_each_hypothesis_its_own_state(lm_file):
    lm = CharRNNLM(CharRNNConfig(path=str(lm_file)))
    st = lm.start(3)
    ids = lm.index(["b", "l", "s"])
    st = lm.advance(st, ids, torch.tensor([True, False, True]))
    one = lm.advance(lm.start(1), lm.index(["b"]), torch.tensor([True]))
    assert torch.allclose(st.logp[0], one.logp[0], atol=1e-6)  # row 0 advanced by "b"
    assert torch.allclose(st.logp[1], lm.start(1).logp[0], atol=1e-6)  # row 1 untouched
    picked = lm.select(st, torch.tensor([2, 2, 0]))
    assert torch.equal(picked.logp[0], st.logp[2]) and torch.equal(picked.logp[2], st.logp[0])
    assert torch.allclose(lm.logprobs(st, ids[None].expand(3, 3)), st.logp.gather(1, ids[None].expand(3, 3)))


def test_tbptt_training_learns_held_out_text_resumes_and_samples(tmp_path):
    text = tmp_path / "train.txt"
    text.write_text(TEXT * 40)
    valid = tmp_path / "valid.txt"
    valid.write_text(TEXT * 2)
    cfg = TrainLMConfig(text=str(text), valid=str(valid), out=str(tmp_path / "run"), embed=16, hidden=32,
                        layers=1, streams=4, unroll=16, lr=1e-2, warmup=5, steps=150, minutes=0, eval_every=75)
    row = train(cfg)
    uniform = math.log2(len(set(TEXT)) + 1)
    assert row["valid_bpc"] < 1.0 < uniform / 4  # a repeated text is nearly certain once learnt
    model, vocab, ckpt = load_lm(tmp_path / "run" / "lm.pt")
    assert ckpt["step"] == 150 and (tmp_path / "run" / "bpc.png").stat().st_size > 1000
    assert bits_per_char(model, vocab.encode(TEXT)) == pytest.approx(row["valid_bpc"], abs=0.05)
    a = sample(model, vocab, "bin", 40, temperature=0.5, seed=3)
    assert a == sample(model, vocab, "bin", 40, temperature=0.5, seed=3) and a.startswith("bin") and len(a) == 43
    cfg.steps, cfg.resume = 160, True  # resume: 10 more steps from step 150
    assert train(cfg)["step"] == 160


def test_fusion_with_a_char_rnn_prefers_the_text_it_learnt(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("red\n" * 200)
    train(TrainLMConfig(text=str(text), out=str(tmp_path / "run"), embed=8, hidden=16, layers=1, streams=4,
                        unroll=8, lr=2e-2, warmup=1, steps=120, minutes=0, eval_every=1000))
    tokens = ["<blank>", " ", "d", "e", "r", "t"]
    # acoustically "ret" narrowly beats "red"
    p = torch.full((3, 6), 1e-3)
    for t, (c, q) in enumerate([("r", 0.9), ("e", 0.9), ("t", 0.5)]):
        p[t, tokens.index(c)] = q
    p[2, tokens.index("d")] = 0.45
    lp = (p / p.sum(1, keepdim=True)).log()[None]
    plain = build("decoder", "beam", tokens=tokens, beam_size=8)(lp, torch.tensor([3]))[0][0]
    lm = build("lm", "char_rnn", path=str(tmp_path / "run" / "lm.pt"))
    fused = build("decoder", "beam", tokens=tokens, beam_size=8, lm=lm, alpha=1.0)(lp, torch.tensor([3]))[0][0]
    assert plain.text == "ret" and fused.text == "red"


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_lm(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_lm(tmp_path / "junk.pt")
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "latin1.txt").write_bytes(b"line one\ncaf\xe9\n")
    for f, msg in [("empty.txt", "the text is empty"), ("latin1.txt", "latin1.txt:2: not UTF-8")]:
        p = subprocess.run([sys.executable, "-m", "speechkit.lm.char_train", f"text={tmp_path / f}", "steps=1"],
                           capture_output=True, text=True, cwd=REPO)
        assert p.returncode != 0 and msg in p.stderr, p.stderr
    p = subprocess.run([sys.executable, "-c", "from speechkit.lm.char_train import main_sample; main_sample()",
                        f"checkpoint={tmp_path / 'nope.pt'}"], capture_output=True, text=True, cwd=REPO)
    assert p.returncode != 0 and "char-LM checkpoint not found" in p.stderr

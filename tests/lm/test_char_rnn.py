"""The character RNN LM: incremental batched scoring, fusion, checkpoints and bad input."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from speechkit.checkpoint import CheckpointError, save_checkpoint
from speechkit.config import CONF_DIR, _rewrite_nested_groups, store_schemas
from speechkit.lm.char_rnn import CharRNN, CharRNNConfig, CharRNNLM, Vocabulary, load_lm, map_state, save_lm
from speechkit.lm.char_train import TrainLMConfig, train
from speechkit.registry import build

TEXT = "bin blue at f two now\nlay red by g nine soon\nset white with k one again\n"


def _lm_file(path, cell="lstm", seed=0, start_state=False):
    torch.manual_seed(seed)
    vocab = Vocabulary.from_text(TEXT)
    model = CharRNN(len(vocab), embed=8, hidden=16, layers=2, cell=cell)
    if start_state:  # a sentence-start state other than zeros, as speechkit-train-lm stores one
        model.start_state = map_state(lambda s: torch.randn_like(s), model.zero_state(1))
    save_lm(path, model, vocab)
    return path


@pytest.fixture
def lm_file(tmp_path):
    return _lm_file(tmp_path / "lm.pt")


@torch.no_grad()
def teacher_forced(model: CharRNN, vocab: Vocabulary, s: str) -> float:
    """Natural-log P(s, then the line boundary | a line boundary) from one forward pass over the whole line."""
    ids = torch.cat([torch.zeros(1, dtype=torch.long), vocab.encode(s), torch.zeros(1, dtype=torch.long)])
    logits, _ = model(ids[None, :-1], model.initial_state(1))
    return float(logits[0].log_softmax(-1).gather(1, ids[1:, None]).sum())


@pytest.mark.parametrize(
    "cell, start_state", [("lstm", False), ("gru", False), ("lstm", True), ("gru", True)]
)
def test_incremental_scoring_equals_the_teacher_forced_forward_pass(tmp_path, cell, start_state):
    lm = build("lm", "char_rnn", path=str(_lm_file(tmp_path / "lm.pt", cell, start_state=start_state)))
    assert (lm.model.start_state is not None) == start_state
    for s in ["bin blue", "lay red by g", "xq z"]:  # x, q, z are not in the vocabulary: <unk>
        assert lm.sentence_logprob(list(s)) == pytest.approx(teacher_forced(lm.model, lm.chars, s), abs=1e-4)


def test_batched_masked_scoring_of_unequal_sentences_equals_one_at_a_time(lm_file):
    lm = CharRNNLM(CharRNNConfig(path=str(lm_file)))
    sents = ["bin blue at f", "lay", "", "set white"]
    n, longest = len(sents), max(map(len, sents))
    st, total = lm.start(n), torch.zeros(n)
    for t in range(longest):  # hypotheses that have ended keep their state: mask False
        mask = torch.tensor([t < len(s) for s in sents])
        ids = lm.index([s[t] if t < len(s) else " " for s in sents])
        total += torch.where(mask, lm.logprobs(st, ids[:, None])[:, 0], 0.0)
        st = lm.advance(st, ids, mask)
    total += lm.end_logprobs(st)
    for i, s in enumerate(sents):
        assert float(total[i]) == pytest.approx(lm.sentence_logprob(list(s)), abs=1e-4)


def test_select_and_masked_advance_keep_each_hypothesis_its_own_state(lm_file):
    lm = CharRNNLM(CharRNNConfig(path=str(lm_file)))
    st = lm.start(3)
    ids = lm.index(["b", "l", "s"])
    st = lm.advance(st, ids, torch.tensor([True, False, True]))
    one = lm.advance(lm.start(1), lm.index(["b"]), torch.tensor([True]))
    assert torch.allclose(st.logp[0], one.logp[0], atol=1e-6)  # row 0 advanced by "b"
    assert torch.equal(st.logp[1], lm.start(1).logp[0])  # row 1 untouched
    assert torch.equal(st.rnn[0][:, 1], lm.start(1).rnn[0][:, 0])
    picked = lm.select(st, torch.tensor([2, 2, 0]))
    assert torch.equal(picked.logp[0], st.logp[2]) and torch.equal(picked.logp[2], st.logp[0])
    assert torch.equal(picked.rnn[1][:, 1], st.rnn[1][:, 2])  # the cell state follows its hypothesis
    assert lm.advance(st, ids, torch.zeros(3, dtype=torch.bool)) is st  # nothing emitted: no step
    grid = ids[None].expand(3, 3)
    assert torch.equal(lm.logprobs(st, grid), st.logp.gather(1, grid))


def test_index_maps_sentence_marks_to_the_boundary_and_unknown_chars_to_unk(lm_file):
    lm = CharRNNLM(CharRNNConfig(path=str(lm_file)))
    ids = lm.index(["<s>", "</s>", "<blank>", "Q", " ", "b"]).tolist()
    assert ids[:4] == [0, 0, 1, 1] and ids[4] == lm.chars.ids[" "] and ids[5] == lm.chars.ids["b"]
    assert lm.vocab == lm.chars.symbols and lm.vocab[:2] == ["\n", "<unk>"]


def test_decoder_lm_char_rnn_on_the_command_line_builds_a_fusing_beam_decoder(lm_file):
    store_schemas()
    args = _rewrite_nested_groups(["decoder=beam", "decoder.lm=char_rnn", f"decoder.lm.path={lm_file}"])
    assert "+decoder/lm=char_rnn" in args
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=["checkpoint=x.pt", *args])
    spec = OmegaConf.to_container(cfg.decoder, resolve=True)
    assert spec["lm"] == {"name": "char_rnn", "path": str(lm_file), "device": "cpu"}
    dec = build("decoder", **spec, tokens=["<blank>", " ", "b", "l"])
    assert isinstance(dec.lm, CharRNNLM) and type(dec.fusion).__name__ == "CharFusion"


def _acoustics_ret_over_red(tokens):
    """(1, 3, V) log-probs whose best path is "ret", with "red" a close second."""
    p = torch.full((3, len(tokens)), 1e-3)
    for t, (c, q) in enumerate([("r", 0.9), ("e", 0.9), ("t", 0.5)]):
        p[t, tokens.index(c)] = q
    p[2, tokens.index("d")] = 0.45
    return (p / p.sum(1, keepdim=True)).log()[None]


def test_fusion_with_an_lm_that_prefers_a_string_changes_the_beam_result(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("red\n" * 200)
    row = train(
        TrainLMConfig(
            text=str(text), out=str(tmp_path / "run"), embed=8, hidden=16, layers=1, streams=4,
            unroll=8, lr=2e-2, warmup=1, steps=120, minutes=0, eval_every=1000,
        )
    )  # fmt: skip
    assert row["train_bpc"] < 0.5
    tokens = ["<blank>", " ", "d", "e", "r", "t"]
    lp, lengths = _acoustics_ret_over_red(tokens), torch.tensor([3])
    plain = build("decoder", "beam", tokens=tokens, beam_size=8)(lp, lengths)[0][0]
    lm = build("lm", "char_rnn", path=str(tmp_path / "run" / "lm.pt"))
    fused = build("decoder", "beam", tokens=tokens, beam_size=8, lm=lm, alpha=1.0)(lp, lengths)[0]
    assert plain.text == "ret" and fused[0].text == "red"
    assert math.isfinite(fused[0].score)


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path, lm_file):
    model, vocab, ckpt = load_lm(lm_file)
    assert ckpt["hparams"]["cell"] == "lstm" and vocab.symbols[:2] == ["\n", "<unk>"]
    save_lm(tmp_path / "again.pt", model, vocab, {"note": "x"})
    again, vocab2, ckpt2 = load_lm(tmp_path / "again.pt")
    x = vocab.encode("bin blue")[None]
    assert torch.equal(model(x)[0], again(x)[0]) and vocab2.symbols == vocab.symbols and ckpt2["note"] == "x"
    assert not any(p.startswith(".") for p in map(lambda f: f.name, tmp_path.iterdir()))  # no temp files left


def test_missing_corrupt_unsafe_and_foreign_lm_checkpoints_are_clear_errors(tmp_path, lm_file):
    with pytest.raises(CheckpointError, match=r"nope\.pt: char-LM checkpoint not found"):
        build("lm", "char_rnn", path=str(tmp_path / "nope.pt"))
    with pytest.raises(ValueError, match="decoder.lm.path"):
        build("lm", "char_rnn")
    (tmp_path / "half.pt").write_bytes(lm_file.read_bytes()[: lm_file.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"half\.pt: truncated or corrupt"):
        load_lm(tmp_path / "half.pt")
    torch.save({"format": "speechkit-char-lm", "hook": pickle.loads}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match=r"code\.pt: refused"):
        load_lm(tmp_path / "code.pt")
    save_checkpoint(tmp_path / "asr.pt", {"format": "speechkit-checkpoint"})
    with pytest.raises(CheckpointError, match="not a char-LM checkpoint"):
        load_lm(tmp_path / "asr.pt")
    ckpt = torch.load(lm_file, weights_only=True)
    ckpt["hparams"]["hidden"] = 32  # weights no longer fit the model
    save_checkpoint(tmp_path / "bad.pt", ckpt)
    with pytest.raises(CheckpointError, match=r"bad\.pt: damaged"):
        load_lm(tmp_path / "bad.pt")

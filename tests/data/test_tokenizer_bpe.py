"""The ``bpe`` tokenizer: sentencepiece units behind id 0 = blank, saved inside the checkpoint, decoded to text."""

from __future__ import annotations

import random

import pytest
import torch
from hydra import compose, initialize_config_dir

from speechkit import build, load_checkpoint
from speechkit.checkpoint import CheckpointError, model_payload, read_checkpoint, save_checkpoint
from speechkit.config import CONF_DIR, store_schemas
from speechkit.data.bpe import main as bpe_main
from speechkit.data.tokenizer import BLANK_SYMBOL, UnknownSymbolError, saved_state
from speechkit.decoders.timing import word_spans
from speechkit.pipeline import CTCModel
from tests.conftest import sample_rows, write_manifest

GRID = [r["text"] for r in sample_rows("train")]  # 240 transcripts of the GRID grammar


def _random_text(rng: random.Random, n: int) -> list[str]:
    """``n`` sentences of made-up words over a small alphabet (accents included)."""
    letters = "abcdeéfgklmnorstu"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 7))) for _ in range(60)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 9))) for _ in range(n)]


@pytest.fixture(scope="module")
def grid_bpe():
    return build("tokenizer", "bpe", vocab_size=64).fit(GRID)


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_round_trip_gives_the_cleaned_text_back(model_type):
    rng = random.Random(0)
    train, held_out = _random_text(rng, 300), _random_text(rng, 50)
    tok = build("tokenizer", "bpe", vocab_size=120, model_type=model_type).fit(train)
    for text in [*train[:50], *held_out, "  maté   sur  tout ", ""]:
        assert tok.decode(tok.encode(text)) == tok.clean(text)
    grid = build("tokenizer", "bpe", vocab_size=64, model_type=model_type, lowercase=True).fit(GRID)
    assert grid.decode(grid.encode("PLACE Blue  at z seven again")) == "place blue at z seven again"


def test_units_are_subwords_and_word_starts_are_written_as_a_space(grid_bpe):
    ids = grid_bpe.encode("place blue at z seven again")
    pieces = [grid_bpe.tokens[i] for i in ids]
    assert len(ids) < len("place blue at z seven again")  # merged units, not characters
    assert sum(p.startswith(" ") for p in pieces) == 6  # one word-initial piece per word
    assert "▁" not in "".join(grid_bpe.tokens)


def test_the_same_text_trains_the_same_model():
    for model_type in ("bpe", "unigram"):
        a = build("tokenizer", "bpe", vocab_size=64, model_type=model_type).fit(GRID)
        b = build("tokenizer", "bpe", vocab_size=64, model_type=model_type).fit(list(GRID))
        assert torch.equal(a.state()["model"], b.state()["model"]) and a.tokens == b.tokens


def test_id_0_is_the_blank_and_encode_never_gives_it_or_unk(grid_bpe):
    assert grid_bpe.tokens[:2] == [BLANK_SYMBOL, "<unk>"] and len(grid_bpe) == 65  # 64 units + blank
    ids = [i for t in GRID for i in grid_bpe.encode(t)]
    assert min(ids) >= 2 and max(ids) < len(grid_bpe)


def test_unknown_characters_are_named(grid_bpe):
    with pytest.raises(UnknownSymbolError, match="'é'") as e:
        grid_bpe.encode("place bléue at z")
    assert e.value.symbols == ["é"]


def test_coverage_below_one_that_drops_a_training_character_is_refused():
    texts = GRID + ["place ß"]
    with pytest.raises(ValueError, match=r"character_coverage=0\.99 left out .*'ß'"):
        build("tokenizer", "bpe", vocab_size=64, character_coverage=0.99).fit(texts)


def test_too_small_a_vocabulary_says_how_large_it_must_be():
    with pytest.raises(ValueError, match="vocab_size=10 is too small.*at least 28"):
        build("tokenizer", "bpe", vocab_size=10).fit(GRID)


def test_tokens_alone_cannot_rebuild_it(grid_bpe):
    with pytest.raises(ValueError, match="tokens alone cannot rebuild it"):
        build("tokenizer", "bpe", tokens=grid_bpe.tokens)


def test_speechkit_bpe_trains_a_model_file_the_tokenizer_uses(tmp_path, capsys):
    text = tmp_path / "train.txt"
    text.write_text("\n".join(GRID) + "\n")
    bpe_main([f"text={text}", f"out={tmp_path / 'bpe.model'}", "vocab_size=64"])
    assert "wrote" in capsys.readouterr().out
    tok = build("tokenizer", "bpe", model=str(tmp_path / "bpe.model")).fit(GRID[:5])  # checks, trains nothing
    trained_here = build("tokenizer", "bpe", vocab_size=64).fit(GRID)
    assert torch.equal(tok.state()["model"], trained_here.state()["model"])
    with pytest.raises(UnknownSymbolError, match="'é'"):
        tok.fit(["place é"])
    with pytest.raises(SystemExit):
        bpe_main([f"text={text}", "out=x.model", "vocab_size=many"])
    assert "vocab_size=many: give a whole number" in capsys.readouterr().err


def _config(*overrides):
    store_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=["encoder.hidden_size=8", "encoder.num_layers=1", *overrides])


def test_the_checkpoint_carries_the_model_and_rebuilds_the_same_tokenizer(grid_bpe, tmp_path):
    cfg = _config("tokenizer=bpe", "tokenizer.vocab_size=64", "tokenizer.model=/nowhere/bpe.model")
    model = CTCModel.from_config(cfg, len(grid_bpe))
    path = tmp_path / "model.pt"
    save_checkpoint(path, model_payload(cfg, grid_bpe.tokens, model, tokenizer_state=saved_state(grid_bpe)))
    ckpt = read_checkpoint(path)
    assert ckpt["tokenizer_state"]["model"].dtype == torch.uint8
    assert "tokenizer_state/model" in ckpt["checksums"]["tensors"]
    tok = load_checkpoint(path).tokenizer  # the saved model, not tokenizer.model's missing file
    assert tok.tokens == grid_bpe.tokens
    for text in GRID[:20]:
        assert tok.encode(text) == grid_bpe.encode(text) and tok.decode(tok.encode(text)) == text

    tampered = torch.load(path, weights_only=True)
    tampered["tokenizer_state"]["model"][-1] ^= 1  # one flipped bit in the sentencepiece model
    torch.save(tampered, path)
    with pytest.raises(CheckpointError, match="tensor tokenizer_state/model does not match its checksum"):
        read_checkpoint(path)


def test_a_checkpoint_without_its_model_is_a_clear_error(grid_bpe, tmp_path):
    cfg = _config("tokenizer=bpe")
    path = tmp_path / "model.pt"
    save_checkpoint(path, model_payload(cfg, grid_bpe.tokens, CTCModel.from_config(cfg, len(grid_bpe))))
    with pytest.raises(
        CheckpointError, match="tokenizer cannot be rebuilt: .*sentencepiece model is missing"
    ):
        load_checkpoint(path)


def _posterior(path: list[int], V: int) -> torch.Tensor:
    """``(T, V)`` log-probabilities: 0.9 on ``path[t]`` at frame ``t``, the rest spread evenly."""
    p = torch.full((len(path), V), 0.1 / (V - 1))
    p[torch.arange(len(path)), torch.tensor(path)] = 0.9
    return p.log()


def test_greedy_and_beam_write_the_text_and_word_times_of_bpe_pieces(grid_bpe):
    ids = grid_bpe.encode("place blue at z seven again")
    path = [0]
    for i in ids:
        path += [i, i, 0]  # each piece twice, then a blank
    lp = _posterior(path, len(grid_bpe))[None]
    lengths = torch.tensor([len(path)])
    for name, options in (("greedy", {}), ("beam", {"engine": "torch"})):  # torch: no numba compile
        (nbest,) = build("decoder", name, tokens=grid_bpe.tokens, frame_shift_s=0.04, **options)(lp, lengths)
        assert nbest[0].text == "place blue at z seven again" and nbest[0].tokens == ids, name
        assert [w for w, _, _ in nbest[0].words] == ["place", "blue", "at", "z", "seven", "again"]
        assert nbest[0].words[0][1] == pytest.approx(0.04)  # the first piece starts at frame 1


def test_word_spans_split_at_word_initial_pieces_and_keep_characters_as_they_were():
    pieces = ["<blank>", " pl", "ace", " ", "z", " again"]
    assert word_spans([1, 2, 3, 4, 5], [0, 2, 4, 5, 7], pieces, None) == [
        ("place", 0, 3), ("z", 5, 6), ("again", 7, 8)]  # fmt: skip
    chars = ["<blank>", " ", "a", "b"]
    assert word_spans([2, 1, 3, 3], [0, 1, 2, 3], chars, None) == [("a", 0, 1), ("bb", 2, 4)]


def test_a_bpe_model_decodes_with_a_lexicon_and_word_bonus_but_refuses_a_char_lm(grid_bpe, tmp_path):
    import torch

    lexicon = tmp_path / "words.txt"
    lexicon.write_text("place\nblue\n")
    # a word is complete where the next token starts one: the lexicon allows only its words
    target = grid_bpe.encode("place blue")
    V, T = len(grid_bpe.tokens), 2 * len(target) + 1
    log_probs = torch.full((1, T, V), -8.0)
    for t in range(T):  # blank, token, blank, token, …: the two words spelled by the tokenizer
        log_probs[0, t, target[t // 2] if t % 2 else 0] = 0.0
    log_probs = log_probs.log_softmax(-1)
    for setting in ({"lexicon": str(lexicon)}, {"beta": 1.0}):
        decoder = build("decoder", "beam", tokens=grid_bpe.tokens, **setting)
        assert decoder(log_probs, torch.tensor([T]))[0][0].text == "place blue"
    from speechkit.lm.ngram import sentence_units, train_kneser_ney, write_arpa

    arpa = tmp_path / "char3.arpa"
    write_arpa(train_kneser_ney([sentence_units(line, "char") for line in GRID], 3), arpa)
    char_lm = {"name": "ngram", "path": str(arpa), "unit": "char"}
    with pytest.raises(ValueError, match="a char LM scores one character a token"):
        build("decoder", "beam", tokens=grid_bpe.tokens, lm=char_lm)


def test_three_training_steps_with_bpe_save_a_checkpoint_that_rebuilds_it(tmp_path, monkeypatch):
    from speechkit.trainer import Trainer

    monkeypatch.setattr(Trainer, "plot", lambda self, final=False: None)  # training.png is not checked here

    store_schemas()
    train = write_manifest(tmp_path / "train.jsonl", sample_rows("train", 8))
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"data.train_manifest={train}", f"data.dev_manifest={train}", "data.num_workers=0",
            "data.batch_size=4", "encoder.hidden_size=16", "encoder.num_layers=1", "trainer.device=cpu",
            "trainer.max_steps=3", "tokenizer=bpe", "tokenizer.vocab_size=40",
        ])  # fmt: skip
    trainer = Trainer(cfg, tmp_path / "run")
    metrics = trainer.fit()
    assert "dev_wer" in metrics and trainer.state.step == 3
    assert len(trainer.tokenizer) == 41 and trainer.model.head.out_features == 41
    pipe = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert pipe.tokenizer.tokens == trainer.tokenizer.tokens
    text = sample_rows("train", 1)[0]["text"]
    assert pipe.tokenizer.encode(text) == trainer.tokenizer.encode(text)
    resumed = Trainer(
        cfg,
        tmp_path / "run",
        resume=(
            read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt"),
            tmp_path / "run" / "checkpoints" / "last.pt",
        ),
    )
    assert resumed.tokenizer.tokens == trainer.tokenizer.tokens

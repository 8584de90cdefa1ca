"""The ``phone`` tokenizer: a phone inventory behind id 0 = blank, phone strings decoded, PER reported."""

from __future__ import annotations

import random

import pytest
import torch
from hydra import compose, initialize_config_dir

from speechkit import build, load_checkpoint
from speechkit.checkpoint import model_payload, read_checkpoint, save_checkpoint
from speechkit.config import CONF_DIR, store_schemas
from speechkit.data.tokenizer import BLANK_SYMBOL, UnknownSymbolError, saved_state
from speechkit.metrics import error_counts, named_rates
from speechkit.pipeline import CTCModel
from tests.conftest import sample_rows, write_manifest

TIMIT = ["sil dh ax s t ao r iy sil", "sil sh iy hh ae d y er sil", "sil dh ax  b ao l sil"]


def test_inventory_is_the_sorted_phones_of_the_training_text():
    tok = build("tokenizer", "phone").fit(TIMIT)
    assert tok.phones == sorted({p for t in TIMIT for p in t.split()}) and tok.tokens[0] == BLANK_SYMBOL
    assert tok.tokens[1:] == [" " + p for p in tok.phones]  # each phone written as a word of the text
    assert tok.encode("sil dh ax sil") == [tok.phones.index(p) + 1 for p in ("sil", "dh", "ax", "sil")]
    assert 0 not in [i for t in TIMIT for i in tok.encode(t)]


def test_round_trip_joins_phones_with_single_spaces():
    rng = random.Random(0)
    phones = ["aa", "ae", "ah", "b", "ch", "dx", "eng", "h#", "q", "sil", "zh"]
    texts = [" ".join(rng.choice(phones) for _ in range(rng.randint(0, 12))) for _ in range(200)]
    tok = build("tokenizer", "phone").fit(texts)
    for text in [*texts, "  sil   aa\tb  "]:
        assert tok.decode(tok.encode(text)) == " ".join(text.split())


def test_a_fixed_inventory_keeps_its_order_and_checks_the_training_text(tmp_path):
    listed = build("tokenizer", "phone", inventory=["sil", "dh", "ax"])
    assert listed.tokens == [BLANK_SYMBOL, " sil", " dh", " ax"] and listed.encode("dh ax") == [2, 3]
    path = tmp_path / "phones.txt"
    path.write_text("sil 1\ndh\n\nax  vowel\n")
    from_file = build("tokenizer", "phone", inventory=str(path)).fit(["sil dh ax sil"])
    assert from_file.tokens == listed.tokens
    with pytest.raises(UnknownSymbolError, match="phones 'iy', 'zz' in .* add them to tokenizer.inventory"):
        from_file.fit(["sil dh iy zz"])
    with pytest.raises(ValueError, match=r"repeated: \['dh'\]"):
        build("tokenizer", "phone", inventory=["sil", "dh", "dh"])


def test_unknown_phones_are_named():
    tok = build("tokenizer", "phone").fit(TIMIT)
    with pytest.raises(UnknownSymbolError, match="phones 'q' in 'sil q sil'") as e:
        tok.encode("sil q sil")
    assert e.value.symbols == ["q"] and e.value.what == "phones"


def test_a_checkpoint_rebuilds_the_inventory_from_its_tokens(tmp_path):
    tok = build("tokenizer", "phone").fit(TIMIT)
    assert saved_state(tok) is None  # the tokens are the whole inventory
    store_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config", overrides=["encoder.hidden_size=8", "encoder.num_layers=1", "tokenizer=phone"]
        )
    path = tmp_path / "model.pt"
    save_checkpoint(path, model_payload(cfg, tok.tokens, CTCModel.from_config(cfg, len(tok))))
    assert "tokenizer_state" not in read_checkpoint(path)
    again = load_checkpoint(path).tokenizer
    assert again.phones == tok.phones and again.encode(TIMIT[1]) == tok.encode(TIMIT[1])


def test_greedy_decoding_writes_phones_and_times_each_one():
    tok = build("tokenizer", "phone").fit(TIMIT)
    ids = tok.encode("sil dh ax sil")
    path = [i for i in ids for _ in range(2)] + [0]
    lp = torch.full((len(path), len(tok)), -8.0)
    lp[torch.arange(len(path)), torch.tensor(path)] = 0.0
    for name, options in (("greedy", {}), ("beam", {"engine": "torch"})):  # torch: no numba compile
        (nbest,) = build("decoder", name, tokens=tok.tokens, frame_shift_s=0.01, **options)(
            lp.log_softmax(-1)[None], torch.tensor([len(path)])
        )
        assert nbest[0].text == "sil dh ax sil", name
        assert [(w, round(s, 3), round(e, 3)) for w, s, e in nbest[0].words] == [
            ("sil", 0.0, 0.02), ("dh", 0.02, 0.04), ("ax", 0.04, 0.06), ("sil", 0.06, 0.08)]  # fmt: skip


def test_phone_models_report_per_named_so():
    refs, hyps = ["sil dh ax sil", "sil b iy"], ["sil dh ah sil", "sil iy"]  # 1 substitution, 1 deletion
    counts = error_counts(refs, hyps)
    assert named_rates(counts, "phone") == {"per": pytest.approx(2 / 7)}
    assert set(named_rates(counts, "char")) == set(named_rates(counts, "subword")) == {"wer", "cer"}
    assert build("tokenizer", "phone").unit == "phone" and build("tokenizer", "char").unit == "char"


def test_three_training_steps_with_phones(tmp_path, monkeypatch):
    from speechkit.trainer import Trainer

    monkeypatch.setattr(Trainer, "plot", lambda self, final=False: None)  # training.png is not checked here

    rows = sample_rows("train", 8)
    for r in rows:  # "real-ish": each letter a phone, silence at both ends
        r["text"] = " ".join(["sil", *r["text"].replace(" ", ""), "sil"])
    train = write_manifest(tmp_path / "train.jsonl", rows)
    store_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"data.train_manifest={train}", f"data.dev_manifest={train}", "data.num_workers=0",
            "data.batch_size=4", "encoder.hidden_size=16", "encoder.num_layers=1", "trainer.device=cpu",
            "trainer.max_steps=3", "tokenizer=phone",
        ])  # fmt: skip
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit()
    assert (
        trainer.state.step == 3 and trainer.tokenizer.phones[-1] == "z" and "sil" in trainer.tokenizer.phones
    )
    pipe = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert pipe.tokenizer.tokens == trainer.tokenizer.tokens and pipe.tokenizer.unit == "phone"

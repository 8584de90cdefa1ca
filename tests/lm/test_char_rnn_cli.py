"""``speechkit-eval … decoder=beam decoder.lm=char_rnn decoder.lm.path=…`` end to end, as users call it."""

from __future__ import annotations

import json

import pytest

from speechkit.lm.char_train import TrainLMConfig, train
from tests.conftest import run_cli, sample_rows, write_manifest

pytestmark = pytest.mark.slow

SMALL = ["encoder.hidden_size=32", "encoder.num_layers=1", "data.num_workers=0", "data.batch_size=8",
         "trainer.device=cpu", "frontend=mfcc", "frontend.n_mfcc=20"]  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("char_rnn_cli")
    rows = sample_rows("train", 16)
    train_m = write_manifest(tmp / "train.jsonl", rows)
    test_m = write_manifest(tmp / "test.jsonl", sample_rows("test", 4))
    run_cli("speechkit-train", "recipe=demo", f"data.train_manifest={train_m}", f"data.dev_manifest={test_m}",
        "trainer.max_steps=2", *SMALL, f"hydra.run.dir={tmp / 'asr'}")  # fmt: skip
    (tmp / "lm.txt").write_text("".join(r["text"] + "\n" for r in rows) * 5)
    train(TrainLMConfig(text=str(tmp / "lm.txt"), out=str(tmp / "lm"), embed=8, hidden=16, layers=1, streams=4,
                        unroll=16, steps=20, minutes=0, eval_every=1000))  # fmt: skip
    return tmp


def test_eval_fuses_a_char_rnn_chosen_on_the_command_line(setup):
    args = [f"checkpoint={setup / 'asr/checkpoints/best.pt'}", f"data.test_manifest={setup / 'test.jsonl'}",
            "decoder=beam", "decoder.beam_size=4", "decoder.lm=char_rnn", f"decoder.lm.path={setup / 'lm/lm.pt'}",
            "decoder.alpha=0.5", "progress=false"]  # fmt: skip
    p = run_cli("speechkit-eval", *args, f"hydra.run.dir={setup / 'eval'}")
    assert "WER" in p.stdout
    metrics = json.loads((setup / "eval" / "metrics.json").read_text())
    assert metrics["num_utterances"] == 4 and metrics["decoder"]["lm"]["name"] == "char_rnn"
    assert metrics["decoder"]["lm"]["path"] == str(setup / "lm/lm.pt")


def test_eval_with_a_missing_char_rnn_checkpoint_is_a_one_line_error(setup):
    p = run_cli("speechkit-eval", f"checkpoint={setup / 'asr/checkpoints/best.pt'}",
            f"data.test_manifest={setup / 'test.jsonl'}", "decoder=beam", "decoder.lm=char_rnn",
            f"decoder.lm.path={setup / 'none.pt'}", f"hydra.run.dir={setup / 'eval_bad'}", check=False)  # fmt: skip
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert f"error: decoder: {setup / 'none.pt'}: char-LM checkpoint not found" in p.stderr

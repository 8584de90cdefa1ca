"""speechkit-train-lm (truncated BPTT, resume) and speechkit-sample."""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys

import pytest
import torch

from speechkit.lm.char_rnn import load_lm
from speechkit.lm.char_train import (
    TextError,
    TrainLMConfig,
    bits_per_char,
    main_sample,
    main_train,
    read_text,
    sample,
    train,
)
from speechkit.registry import build
from tests.conftest import REPO

TEXT = "bin blue at f two now\nlay red by g nine soon\nset white with k one again\n"


def _cfg(tmp_path, **kw) -> TrainLMConfig:
    text = tmp_path / "train.txt"
    if not text.exists():
        text.write_text(TEXT * 40)
    base = dict(
        text=str(text), out=str(tmp_path / "run"), embed=16, hidden=32, layers=1, streams=4, unroll=16,
        lr=1e-2, warmup=5, steps=150, minutes=0, eval_every=75,
    )  # fmt: skip
    return TrainLMConfig(**{**base, **kw})


def test_tbptt_training_overfits_a_tiny_text_far_below_uniform(tmp_path):
    (tmp_path / "valid.txt").write_text(TEXT * 2)
    (tmp_path / "test.txt").write_text(TEXT)
    row = train(_cfg(tmp_path, valid=str(tmp_path / "valid.txt"), test=str(tmp_path / "test.txt")))
    uniform = math.log2(len(set(TEXT)) + 1)  # +1: <unk>
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[0]["valid_bpc"] > 1.0 and row["valid_bpc"] < 1.0 < uniform / 4
    assert row["test_bpc"] == pytest.approx(row["valid_bpc"], abs=0.1) and row["step"] == 150
    assert [h["step"] for h in history] == [45, 75, 90, 135, 150] and history[-1] == row  # epochs: 45 steps
    assert (tmp_path / "run" / "bpc.png").stat().st_size > 1000
    model, vocab, ckpt = load_lm(tmp_path / "run" / "lm.pt")  # the model alone rebuilds from the checkpoint
    assert ckpt["step"] == 150 and ckpt["train_config"]["hidden"] == 32
    assert bits_per_char(model, vocab.encode(TEXT * 2)) == pytest.approx(row["valid_bpc"], abs=1e-4)


def _grammar_lines(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    slots = [["bin", "lay", "set"], ["blue", "red", "white"], ["at", "by", "with"], ["one", "two", "nine"]]
    return [" ".join(rng.choice(w) for w in slots) for _ in range(n)]


def test_the_stored_sentence_start_state_scores_lines_better_than_zeros(tmp_path):
    (tmp_path / "train.txt").write_text("\n".join(_grammar_lines(400, seed=0)) + "\n")
    train(_cfg(tmp_path, steps=300, eval_every=1000))
    model, vocab, _ = load_lm(tmp_path / "run" / "lm.pt")
    assert model.start_state is not None and model.start_state[0].shape == (1, 1, 32)
    lm = build("lm", "char_rnn", path=str(tmp_path / "run" / "lm.pt"))
    lines = _grammar_lines(50, seed=1)  # lines are independent: any sentence start is like another
    with_start = sum(lm.sentence_logprob(list(s)) for s in lines)
    lm.model.start_state = None  # zeros: a state training saw only at the start of each epoch
    assert with_start > sum(lm.sentence_logprob(list(s)) for s in lines) + 0.05 * len(lines)


def test_every_epoch_is_measured_and_the_state_restarts_at_each(tmp_path):
    (tmp_path / "valid.txt").write_text(TEXT)
    per_stream = (len(TEXT * 40) - 1) // 4  # 4 streams: an epoch is ceil(per_stream / 16) steps
    steps_per_epoch = math.ceil(per_stream / 16)
    train(_cfg(tmp_path, valid=str(tmp_path / "valid.txt"), steps=2 * steps_per_epoch, eval_every=1000))
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [(h["step"], h["epoch"]) for h in history] == [(steps_per_epoch, 1.0), (2 * steps_per_epoch, 2.0)]


def test_resumed_training_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    # two layers with dropout: the carried state, the optimiser and the RNG must all be restored
    kw = dict(layers=2, dropout=0.2, steps=40, eval_every=10)
    train(_cfg(tmp_path, **kw, out=str(tmp_path / "straight")))

    def crash_after_step_30(history, path):  # plot() runs right after lm.pt is written
        if history[-1]["step"] == 30:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr("speechkit.lm.char_train.plot", crash_after_step_30)
        with pytest.raises(KeyboardInterrupt):
            train(_cfg(tmp_path, **kw, out=str(tmp_path / "cut")))
    assert load_lm(tmp_path / "cut" / "lm.pt")[2]["step"] == 30
    row = train(_cfg(tmp_path, **kw, out=str(tmp_path / "cut"), resume=True))
    a, _, ca = load_lm(tmp_path / "straight" / "lm.pt")
    b, _, cb = load_lm(tmp_path / "cut" / "lm.pt")
    assert row["step"] == cb["step"] == 40 and ca["position"] == cb["position"]
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert [h["step"] for h in cb["history"]] == [10, 20, 30, 40]


def test_bad_text_files_are_errors_naming_the_file_and_line(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("  \n\n")
    (tmp_path / "latin1.txt").write_bytes(b"line one\ncaf\xe9 au lait\n")
    with pytest.raises(TextError, match=r"empty\.txt: the text is empty"):
        read_text(tmp_path / "empty.txt")
    with pytest.raises(TextError, match=r"latin1\.txt:2: not UTF-8 \(byte b'\\xe9' at column 4\)"):
        read_text(tmp_path / "latin1.txt")
    with pytest.raises(TextError, match="file not found"):
        read_text(tmp_path / "none.txt", "valid")
    for command, args, said in [
        (main_train, [f"text={tmp_path / 'latin1.txt'}", "steps=1"], r"latin1\.txt:2: not UTF-8"),
        (main_train, ["txt=x"], "key one of text, valid"),
        (main_sample, [f"checkpoint={tmp_path / 'nope.pt'}"], r"nope\.pt: char-LM checkpoint not found"),
    ]:
        with pytest.raises(SystemExit) as stopped:
            command(args)
        usage, error = capsys.readouterr().err.splitlines()  # the usage line and one error line, status 2
        assert stopped.value.code == 2 and usage.startswith("usage: speechkit-")
        assert re.match(f"error: .*{said}", error), error


@pytest.mark.parametrize("command, usage", [(main_train, "speechkit-train-lm text=FILE"),
                                            (main_sample, "speechkit-sample checkpoint=")])  # fmt: skip
def test_help_prints_the_usage_and_every_key_with_its_default(command, usage, capsys):
    command(["--help"])
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {usage}") and "\n  seed=0\n" in out  # a key without a comment, no padding
    assert ("  lr=0.002                Adam's peak learning rate" in out) == (command is main_train)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm")
    train(_cfg(tmp, steps=300, eval_every=1000))
    return tmp / "run" / "lm.pt"


def test_sampling_is_seeded_and_top_k_1_is_greedy(trained):
    model, vocab, _ = load_lm(trained)
    a = sample(model, vocab, "bin", 60, temperature=1.5, seed=3)
    assert (
        a == sample(model, vocab, "bin", 60, temperature=1.5, seed=3) and a.startswith("bin") and len(a) == 63
    )
    assert a != sample(model, vocab, "bin", 60, temperature=1.5, seed=4)
    greedy = {sample(model, vocab, "lay", 40, temperature=1.0, top_k=1, seed=s) for s in range(3)}
    assert len(greedy) == 1 and greedy.pop().startswith("lay red by g nine soon\nset")  # the text, learnt
    with pytest.raises(ValueError, match="temperature"):
        sample(model, vocab, "bin", 5, temperature=0)


def test_sample_command_line_is_deterministic_for_a_seed(trained):
    cmd = [sys.executable, "-c", "from speechkit.lm.char_train import main_sample; main_sample()",
           f"checkpoint={trained}", "prime=set white", "length=80", "temperature=0.8", "top_k=5", "seed=7"]  # fmt: skip
    runs = [subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120) for _ in range(2)]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.startswith("set white")
    assert len(runs[0].stdout) == len("set white") + 80 + 1  # + print's newline

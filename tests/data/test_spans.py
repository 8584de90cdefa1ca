"""data.word_spans_epochs: the first epochs train on spans of consecutive words (data/spans.py)."""

from __future__ import annotations

import pytest
import torch

from speechkit.data.dataset import Item, Skipped
from speechkit.data.errors import DataError
from speechkit.data.manifest import Example
from speechkit.data.sampler import EpochBatches
from speechkit.data.spans import MARGIN_S, WordSpans, choose_span, word_times
from speechkit.trainer import Trainer
from tests.conftest import error_line, run_cli, sample_rows, write_manifest
from tests.test_trainer import _cfg

SAMPLE_RATE = 16000  # Hz, the samples' audio and the default frontends'


def timed_rows(n: int) -> list[dict]:
    """Sample rows with word times: the utterance cut into equal parts (the cut, not the timing, is tested)."""
    rows = sample_rows("train", n)
    for r in rows:
        words = r["text"].split()
        step = r["duration"] / len(words)
        r["words"] = [[w, round(k * step, 3), round((k + 1) * step, 3)] for k, w in enumerate(words)]
    return rows


def example(words, duration=3.0) -> Example:
    return Example(path=None, text="x", manifest=None, line=1, duration=duration, fields=(("words", words),))


def test_a_span_is_consecutive_words_with_margins_inside_the_example():
    words = [["bin", 0.5, 0.8], ["blue", 0.8, 1.1], ["at", 1.1, 1.2], ["f", 1.2, 1.5], ["two", 1.5, 1.9],
             ["now", 1.9, 2.95]]  # fmt: skip
    ex = example(words)
    seen = set()
    for epoch in range(4):
        for index in range(50):
            span = choose_span(ex, 3, 1234, epoch, index)
            assert span == choose_span(ex, 3, 1234, epoch, index)  # a pure function of the key
            chosen = span.text.split()
            first = [w for w, _, _ in words].index(chosen[0])
            assert chosen == [w for w, _, _ in words[first : first + len(chosen)]] and 1 <= len(chosen) <= 3
            assert span.start_s == pytest.approx(max(words[first][1] - MARGIN_S, 0.0))
            assert span.end_s == pytest.approx(min(words[first + len(chosen) - 1][2] + MARGIN_S, 3.0))
            seen.add(span.text)
    assert len(seen) == 6 + 5 + 4  # every span of 1, 2 and 3 words turns up


@pytest.mark.parametrize(
    "words",
    [[], [["a", 1.0]], [["a", "x", 1.0]], [["a", 2.0, 1.0]], [[1, 0.0, 1.0]], "a b", [["a", 0.0, float("inf")]],
     [["a", 0.5, 1.0], ["b", 2.9, 3.2]]],  # the last: a word ends past the 3 s example
)  # fmt: skip
def test_missing_or_malformed_word_times_leave_the_example_whole(words):
    assert word_times(example(words)) is None and choose_span(example(words), 3, 0, 0, 0) is None


def test_the_dataset_cuts_the_audio_and_the_transcript_of_the_span(tmp_path):
    rows = timed_rows(4)
    trainer = Trainer(_cfg(tmp_path, 4, f"data.train_manifest={write_manifest(tmp_path / 't.jsonl', rows)}",
                           "data.word_spans_epochs=1", "data.word_spans_max=2"), tmp_path / "run")  # fmt: skip
    spans = trainer.train_set
    assert isinstance(spans, WordSpans) and spans.rate == SAMPLE_RATE
    for index in range(4):
        whole = spans[index]  # an index alone: the whole example
        assert torch.equal(whole.target, torch.tensor(trainer.tokenizer.encode(rows[index]["text"])))
        span = spans.span(index, 0)
        item = spans[(index, 0)]
        first = int(span.start_s * SAMPLE_RATE)
        assert torch.equal(item.raw, whole.raw[first : first + item.raw.shape[0]])
        end = min(span.end_s * SAMPLE_RATE, whole.raw.shape[0])  # the manifest's duration is rounded to 1 ms
        assert abs(item.raw.shape[0] - (end - first)) <= 1
        assert torch.equal(item.target, torch.tensor(trainer.tokenizer.encode(span.text)))
        assert span.text in rows[index]["text"] and len(span.text.split()) <= 2


def test_the_first_epochs_batch_spans_then_whole_examples(tmp_path):
    manifest = write_manifest(tmp_path / "t.jsonl", timed_rows(8))
    trainer = Trainer(_cfg(tmp_path, 8, f"data.train_manifest={manifest}", "data.word_spans_epochs=1",
                           "data.batch_size=4", "encoder.hidden_size=8", "trainer.max_steps=3",
                           "trainer.warmup_steps=1", "trainer.eval_every_epochs=100"), tmp_path / "run")  # fmt: skip
    first, second = trainer.epoch_batches(0), trainer.epoch_batches(1)
    assert all(key[1] == 0 for b in first for key in b) and sorted(k[0] for b in first for k in b) == list(
        range(8)
    )
    assert all(isinstance(i, int) for b in second for i in b)
    batch = next(iter(trainer.train_loader(EpochBatches(first), 0)))
    whole = next(iter(trainer.train_loader(EpochBatches(second), 1)))
    assert batch.lengths.max() < whole.lengths.max()  # spans of at most 3 of 6 words
    trainer.fit()  # epoch 0 on spans, then whole utterances
    assert trainer.state.step == 3 and all(
        torch.isfinite(torch.tensor(loss)) for _, loss in trainer.state.losses
    )


def test_word_spans_without_word_times_is_one_error_line(tmp_path):
    train = write_manifest(tmp_path / "train.jsonl", sample_rows("train", 4))
    p = run_cli(
        "speechkit-train",
        "recipe=demo",
        f"data.train_manifest={train}",
        f"data.dev_manifest={train}",
        "data.word_spans_epochs=1",
        "trainer.device=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert p.returncode != 0
    line = error_line(p.stderr)
    assert "data.word_spans_epochs=1" in line and '"words"' in line and "data.word_spans_epochs=0" in line


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        (["data.feature_cache=true", "augment=none"], "data.feature_cache=true keeps whole utterances"),
        (["data.word_spans_max=0"], "data.word_spans_max=0"),
    ],
)
def test_settings_that_cannot_cut_spans_are_refused(tmp_path, overrides, said):
    manifest = write_manifest(tmp_path / "t.jsonl", timed_rows(4))
    with pytest.raises(ValueError, match=said):
        Trainer(
            _cfg(tmp_path, 4, f"data.train_manifest={manifest}", "data.word_spans_epochs=1", *overrides),
            tmp_path / "run",
        )


def test_a_date_sized_seed_chooses_a_span():
    words = [["bin", 0.5, 0.8], ["blue", 0.8, 1.1]]
    assert choose_span(example(words), 3, 20261205, 7, 2**31).text in ("bin", "blue", "bin blue")


@pytest.mark.parametrize("on_error", ["skip", "raise"])
def test_words_the_vocabulary_cannot_spell_are_a_skip_or_an_error_naming_the_line(tmp_path, on_error):
    rows = timed_rows(4)
    rows[2]["words"] = [[w.upper(), a, b] for w, a, b in rows[2]["words"]]  # the transcript is lower case
    manifest = write_manifest(tmp_path / "t.jsonl", rows)
    trainer = Trainer(_cfg(tmp_path, 4, f"data.train_manifest={manifest}", "data.word_spans_epochs=1",
                           f"data.on_error={on_error}"), tmp_path / "run")  # fmt: skip
    assert isinstance(trainer.train_set[(1, 0)], Item)
    if on_error == "skip":
        skipped = trainer.train_set[(2, 0)]
        assert (
            isinstance(skipped, Skipped)
            and skipped.where.endswith("t.jsonl:3")
            and "spelled" in skipped.reason
        )
    else:
        with pytest.raises(DataError, match="t.jsonl:3"):
            trainer.train_set[(2, 0)]


def test_the_schedule_counts_the_word_span_epochs_own_batches(tmp_path):
    manifest = write_manifest(tmp_path / "t.jsonl", timed_rows(16))
    trainer = Trainer(_cfg(tmp_path, 16, f"data.train_manifest={manifest}", "data.word_spans_epochs=1",
                           "data.batch_size=0", "data.batch_seconds=6", "trainer.max_steps=0",
                           "trainer.max_epochs=3"), tmp_path / "run")  # fmt: skip
    spans, whole = len(trainer.epoch_batches(0)), len(trainer.epoch_batches(1))
    assert spans < whole  # 6 s hold more spans than whole utterances
    assert trainer.total_steps == spans + 2 * whole

import random

import pytest

from speechkit.data.sampler import make_batches, padding_fraction
from speechkit.trainer import Trainer


def _durations(n=500, seed=0):
    rng = random.Random(seed)
    return [rng.uniform(1.0, 4.0) for _ in range(n)]


def test_every_example_is_in_exactly_one_batch_and_order_depends_only_on_seed_and_epoch():
    d = _durations()
    for kw in ({}, {"bucket": True}, {"bucket": True, "batch_seconds": 40.0}):
        b = make_batches(d, 16, seed=3, epoch=2, **kw)
        assert sorted(i for batch in b for i in batch) == list(range(len(d)))
        assert b == make_batches(d, 16, seed=3, epoch=2, **kw)
        assert b != make_batches(d, 16, seed=3, epoch=3, **kw)


def test_bucketing_cuts_padding():
    d = _durations()
    plain = padding_fraction(make_batches(d, 16, 0, 0), d)
    bucketed = padding_fraction(make_batches(d, 16, 0, 0, bucket=True), d)
    assert plain > 0.25 and bucketed < 0.05


def test_batch_seconds_caps_padded_time_and_count():
    d = _durations()
    for b in make_batches(d, 16, 0, 0, bucket=True, batch_seconds=30.0):
        assert len(b) <= 16 and (len(b) == 1 or max(d[i] for i in b) * len(b) <= 30.0)


def test_unknown_durations_fall_back_to_plain_batches():
    b = make_batches([None] * 10, 4, 0, 0, shuffle=False, bucket=True)
    assert b == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_sortagrad_runs_the_first_epoch_shortest_first_and_leaves_later_epochs_alone():
    d = _durations()
    for kw in ({"bucket": True}, {"bucket": True, "batch_seconds": 40.0}, {}):
        first = make_batches(d, 16, 3, 0, sortagrad=True, **kw)
        assert sorted(i for batch in first for i in batch) == list(range(len(d)))
        longest = [max(d[i] for i in b) for b in first]
        assert longest == sorted(longest)  # batch after batch, never shorter than the one before
        assert [d[i] for b in first for i in b] == sorted(d)
        assert make_batches(d, 16, 3, 1, sortagrad=True, **kw) == make_batches(d, 16, 3, 1, **kw)
    # durations unknown: nothing to sort by, the usual shuffled batches
    unknown = [None] * 40
    assert make_batches(unknown, 4, 3, 0, sortagrad=True) == make_batches(unknown, 4, 3, 0)


def test_no_count_cap_without_durations_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match=r"data.batch_size=0 .* 2 of 3 examples have no duration"):
        make_batches([1.0, None, None], 0, 0, 0, batch_seconds=6)
    with pytest.raises(ValueError, match=r"needs data.batch_seconds > 0"):
        make_batches([1.0, 2.0], 0, 0, 0)


def test_dev_evaluation_batches_by_seconds_when_the_count_is_uncapped(tmp_path):
    from tests.test_trainer import _cfg

    # data.batch_size=0 with data.batch_seconds: dev batches were range(0, n, 0) at the first evaluation
    trainer = Trainer(_cfg(tmp_path, 6, "data.batch_size=0", "data.batch_seconds=6", "encoder.hidden_size=8"),
                      tmp_path / "run")  # fmt: skip
    assert set(trainer.evaluate()) >= {"dev_loss", "dev_wer"}

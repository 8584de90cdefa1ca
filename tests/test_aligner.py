"""The aligner (speechkit/aligner.py): a head that sees only ``context_ms`` each side, trained beside the
main one, whose posteriors place the main hypothesis' words in time."""

from __future__ import annotations

import pytest
import torch

from speechkit.aligner import AlignerHead, aligner_config
from speechkit.config import AlignerConfig
from speechkit.decoders.timing import RAW_FRAMES
from tests.test_trainer import _cfg


def _head(context_ms: float = 120.0, factor: int = 4, shift_s: float = 0.04) -> AlignerHead:
    torch.manual_seed(0)
    return AlignerHead(
        6, factor, shift_s, 5, AlignerConfig(weight=0.3, context_ms=context_ms, channels=8)
    ).eval()


def test_an_output_frame_sees_its_context_and_nothing_further():
    """±120 ms at 40 ms frames: 3 convolutions of 3 frames, so output frame 10 reads output frames 7–13,
    input frames 28–55 (4 stacked per frame). Changing input frame 27 or 56 leaves it as it was; 28 or 55
    changes it."""
    head = _head()
    assert len(head.convs) == 3
    x, n = torch.randn(1, 80, 6), torch.tensor([80])
    base, lengths = head(x, n)
    assert base.shape == (1, 20, 5) and lengths.tolist() == [20]
    for t, seen in ((27, False), (28, True), (55, True), (56, False)):
        y = x.clone()
        y[0, t] += 5.0
        changed = (head(y, n)[0][0, 10] - base[0, 10]).abs().max().item() > 1e-6
        assert changed == seen, t


def test_an_utterance_gets_the_same_outputs_alone_and_padded_in_a_batch():
    head = _head()
    short, long = torch.randn(37, 6), torch.randn(80, 6)
    alone, _ = head(short[None], torch.tensor([37]))
    batch = torch.zeros(2, 80, 6)
    batch[0, :37], batch[1] = short, long
    batch[0, 37:] = 9.0  # whatever the padding holds
    both, lengths = head(batch, torch.tensor([37, 80]))
    assert lengths.tolist() == [10, 20]
    torch.testing.assert_close(both[0, :10], alone[0], rtol=1e-5, atol=1e-5)


def test_weight_zero_is_no_aligner_and_a_negative_one_is_refused():
    assert aligner_config(None) is None
    assert aligner_config({"weight": 0.0, "context_ms": 120, "channels": 8}) is None
    assert aligner_config({"weight": 0.3}).context_ms == 80.0
    with pytest.raises(ValueError, match="aligner.weight=-1"):
        aligner_config({"weight": -1.0})


@pytest.mark.slow
def test_training_with_an_aligner_trains_it_and_its_checkpoint_places_words_with_it(tmp_path):
    """Two steps with ``aligner.weight``: the aligner's weights move, dev reports its loss, best.pt
    rebuilds it, and ``Pipeline`` reads word times off its posteriors (a hypothesis aligned to them)."""
    from speechkit.checkpoint import load_checkpoint
    from speechkit.trainer import Trainer
    from tests.conftest import sample_rows

    cfg = _cfg(tmp_path, 4, "encoder.hidden_size=8", "data.batch_size=2", "augment=none", "trainer.max_steps=2",
               "aligner.weight=0.5", "aligner.channels=8")  # fmt: skip
    trainer = Trainer(cfg, tmp_path / "run")
    before = {k: p.detach().clone() for k, p in trainer.model.aligner.named_parameters()}
    metrics = trainer.fit()
    assert all(not torch.equal(before[k], p) for k, p in trainer.model.aligner.named_parameters())
    assert metrics["dev_aligner_loss"] > 0
    pipe = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert pipe.model.aligner is not None
    # the end of training calibrated best.pt's word times on dev (two steps: too few moves to shift)
    shift = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    assert len(shift["timing_shift"]) == 2 and pipe.timing_shift == tuple(shift["timing_shift"])
    for k, v in trainer.model.state_dict().items():
        torch.testing.assert_close(pipe.model.state_dict()[k], v, rtol=0, atol=0)
    path = sample_rows("test", 1)[0]["audio_filepath"]
    x = pipe.load(path)
    lp, frames, placed = pipe.posteriors(x[None], torch.tensor([len(x)]))
    assert placed.shape == lp.shape and torch.allclose(placed.exp().sum(-1), torch.ones(1, frames[0]))
    seen = []
    real = pipe.annotate
    pipe.annotate = lambda *a, **k: (
        seen.append(a[5] if len(a) > 5 else k.get("aligner_log_probs")) or real(*a, **k)
    )
    words = pipe.transcribe(path).words
    assert seen and seen[0] is not None and torch.allclose(seen[0], placed)
    assert all(0 <= w.start <= w.end <= len(x) / pipe.model.frontend.cfg.sample_rate for w in words)


def test_annotate_reads_word_times_off_the_aligner_and_confidences_off_the_main_head(tiny_run):
    """The main head puts "ab c" at frames 5–6 and 9; the aligner at 20–21 and 30: the words' times are
    the aligner's frames, the token frames and confidences the main head's."""
    from speechkit.checkpoint import load_checkpoint
    from tests.test_inference_outputs import posterior

    pipe = load_checkpoint(tiny_run / "run/checkpoints/best.pt")
    pipe.word_timing = RAW_FRAMES
    shift = pipe.model.frame_shift_s
    ids = {s: i for i, s in enumerate(pipe.tokenizer.tokens)}
    V, T = len(ids), 40
    main = posterior(T, V, {5: (ids["a"], 0.9), 6: (ids["b"], 0.9), 7: (ids[" "], 0.9), 9: (ids["c"], 0.9)})
    placed = posterior(
        T, V, {20: (ids["a"], 0.9), 21: (ids["b"], 0.9), 25: (ids[" "], 0.9), 30: (ids["c"], 0.9)}
    )
    greedy = pipe.build_decoder({"name": "greedy"})
    n = torch.tensor([T])
    (alone,) = pipe.annotate(greedy(main[None], n), main[None], n)[0]
    (h,) = pipe.annotate(greedy(main[None], n), main[None], n, aligner_log_probs=placed[None])[0]
    assert [w for w, _, _ in h.words] == ["ab", "c"]
    assert [(s, e) for _, s, e in h.words] == pytest.approx(
        [(20 * shift, 22 * shift), (30 * shift, 31 * shift)]
    )
    assert [(s, e) for _, s, e in alone.words] == pytest.approx(
        [(5 * shift, 7 * shift), (9 * shift, 10 * shift)]
    )
    assert h.token_frames == alone.token_frames and h.word_confidences == alone.word_confidences


@pytest.mark.slow
def test_fine_tuning_adds_an_aligner_to_a_model_trained_without_one_and_keeps_one_it_has(tmp_path):
    """``trainer.init_from`` a checkpoint without an aligner into a run with one: every other weight is
    taken, the aligner starts afresh; from that run into another with the same aligner: it is taken too."""
    from speechkit.trainer import Trainer
    from tests.conftest import sample_rows, write_manifest

    common = ("encoder.hidden_size=8", "data.batch_size=2", "augment=none", "trainer.max_steps=1")
    plain = Trainer(_cfg(tmp_path / "a", 2, *common), tmp_path / "a" / "run")
    plain.fit()
    first = tmp_path / "a" / "run" / "checkpoints" / "last.pt"
    with_aligner = ("aligner.weight=0.3", "aligner.channels=8")
    tuned = Trainer(
        _cfg(tmp_path / "b", 2, *common, *with_aligner, f"trainer.init_from={first}"), tmp_path / "b" / "run"
    )
    for k, v in plain.model.state_dict().items():
        torch.testing.assert_close(tuned.model.state_dict()[k], v, rtol=0, atol=0)
    tuned.fit()
    second = tmp_path / "b" / "run" / "checkpoints" / "last.pt"
    again = Trainer(
        _cfg(tmp_path / "c", 2, *common, *with_aligner, f"trainer.init_from={second}"), tmp_path / "c" / "run"
    )
    for k, v in tuned.model.aligner.state_dict().items():
        torch.testing.assert_close(again.model.aligner.state_dict()[k], v, rtol=0, atol=0)
    # a new vocabulary (the head excluded): the aligner's output layer is sized by it, so it starts afresh
    rows = [dict(r, text=r["text"] + " qu'il") for r in sample_rows("train", 2)]
    (tmp_path / "d").mkdir()
    new = write_manifest(tmp_path / "d" / "new.jsonl", rows)
    renamed = Trainer(
        _cfg(tmp_path / "d", 2, *common, *with_aligner, f"trainer.init_from={second}", "trainer.init_exclude=[head]",
             f"data.train_manifest={new}", f"data.dev_manifest={new}"),
        tmp_path / "d" / "run",
    )  # fmt: skip
    assert (
        renamed.model.aligner.out.out_features
        == len(renamed.tokenizer)
        != tuned.model.aligner.out.out_features
    )


def test_the_aligner_hears_the_features_before_specaugment_masks_them(tmp_path):
    """In training, SpecAugment masks the main head's features; the aligner's outputs are those of
    evaluation, from the unmasked features (a masked stretch would teach it to emit unheard tokens)."""
    from speechkit.pipeline import CTCModel

    cfg = _cfg(tmp_path, 2, "encoder.hidden_size=8", "augment=specaugment", "augment.specaugment.time_masks=4",
               "aligner.weight=0.3", "aligner.channels=8")  # fmt: skip
    torch.manual_seed(0)
    model = CTCModel.from_config(cfg, 28)
    x, n = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 12000])
    model.eval()
    main_eval, _, placed_eval = model(x, n, with_aligner=True)
    model.train()
    model.encoder.eval()  # dropout off: only the augmentation differs
    main_train, _, placed_train = model(x, n, with_aligner=True)
    assert (main_train - main_eval).abs().max() > 1e-3  # the masks reached the main head
    torch.testing.assert_close(placed_train, placed_eval, rtol=1e-5, atol=1e-5)


def test_timing_shift_is_the_median_move_snapping_makes_and_nothing_from_too_few():
    """Starts that snapping moves by +30 ms (and one outlier), ends by −10 ms: the shift is (0.03, −0.01);
    boundaries snapping left alone do not count; under 20 moves of a kind, that kind is not shifted."""
    from speechkit.decoders.timing import MIN_CALIBRATION_BOUNDARIES, timing_shift

    n = MIN_CALIBRATION_BOUNDARIES + 5
    frames = [[("w", 1.0 + i, 1.5 + i), ("x", 2.0 + i, 2.5 + i)] for i in range(n)]
    snapped = [[("w", 1.03 + i, 1.49 + i), ("x", 2.0 + i, 2.5 + i)] for i in range(n)]  # x unmoved
    snapped[0][0] = ("w", 1.4, 1.49)  # one start far off: the median ignores it
    assert timing_shift(frames, snapped) == pytest.approx((0.03, -0.01))
    few = MIN_CALIBRATION_BOUNDARIES - 1
    assert timing_shift(frames[:few], snapped[:few]) == (0.0, 0.0)


def test_a_calibrated_shift_moves_the_default_timing_not_one_the_user_chose(tiny_run):
    from speechkit.checkpoint import load_checkpoint
    from speechkit.decoders.timing import ALIGNER_TIMING, WordTiming

    pipe = load_checkpoint(tiny_run / "run/checkpoints/best.pt")  # no aligner: its main head was calibrated
    pipe.timing_shift = (0.02, -0.03)
    assert pipe.timing(False).start_offset_s == pytest.approx(WordTiming().start_offset_s + 0.02)
    assert pipe.timing(False).end_offset_s == pytest.approx(WordTiming().end_offset_s - 0.03)
    assert pipe.timing(True) == ALIGNER_TIMING  # posteriors it was not measured on: not shifted
    pipe.word_timing = RAW_FRAMES
    assert pipe.timing(False) == RAW_FRAMES

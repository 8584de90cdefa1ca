"""Intermediate CTC (``inter_ctc``, Lee & Watanabe 2021): inner layers' outputs through the main head get a
CTC loss of their own in training; the encoders give those outputs (``forward_taps``) unchanged otherwise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from speechkit.encoders.rnn import BGRU, BLSTM, GRU, LSTM, RNNConfig
from speechkit.pipeline import inter_ctc_layers
from speechkit.registry import build
from tests.conftest import run_cli
from tests.test_trainer import _cfg


@pytest.mark.parametrize("cls", [BLSTM, LSTM, BGRU, GRU])
def test_forward_taps_gives_forward_s_output_and_each_inner_layer_s_own(cls):
    """The last output is ``forward``'s (packed, another implementation); layer k's output is that of a
    stack of the first k layers with the same weights; padding stays zero."""
    torch.manual_seed(0)
    enc = cls(RNNConfig(hidden_size=6, num_layers=3, subsample=2, impl="packed"), input_size=5).eval()
    x, lengths = torch.randn(3, 11, 5), torch.tensor([11, 7, 4])
    y, out_lengths = enc(x, lengths)
    y2, lengths2, taps = enc.forward_taps(x, lengths, (1, 2))
    torch.testing.assert_close(y2, y, rtol=1e-5, atol=1e-5)
    assert torch.equal(lengths2, out_lengths) and [t.shape for t in taps] == [y.shape, y.shape]
    for k, tap in zip((1, 2), taps, strict=True):
        first = cls(RNNConfig(hidden_size=6, num_layers=k, subsample=2, impl="packed"), input_size=5).eval()
        first.load_state_dict({n: p for n, p in enc.state_dict().items() if int(n.split("_l")[1][0]) < k})
        torch.testing.assert_close(tap, first(x, lengths)[0], rtol=1e-5, atol=1e-5)
        assert tap[2, out_lengths[2] :].abs().sum() == 0


def test_in_training_a_tap_is_the_layer_s_output_before_the_next_layer_s_dropout():
    """Train mode, dropout 0.5, the same seed: the last output is ``forward``'s, and layer k's that of a
    stack of the first k layers (which draws the same dropout masks up to layer k, and none after it)."""
    torch.manual_seed(0)
    cfg = RNNConfig(hidden_size=6, num_layers=3, dropout=0.5, impl="reversed")
    enc = BLSTM(cfg, input_size=5).train()
    x, lengths = torch.randn(3, 9, 5), torch.tensor([9, 6, 2])
    torch.manual_seed(1)
    y = enc(x, lengths)[0]
    torch.manual_seed(1)
    y2, _, taps = enc.forward_taps(x, lengths, (1, 2))
    torch.testing.assert_close(y2, y, rtol=1e-5, atol=1e-5)
    for k, tap in zip((1, 2), taps, strict=True):
        first = BLSTM(
            RNNConfig(hidden_size=6, num_layers=k, dropout=0.5, impl="reversed"), input_size=5
        ).train()
        first.load_state_dict({n: p for n, p in enc.state_dict().items() if int(n.split("_l")[1][0]) < k})
        torch.manual_seed(1)
        torch.testing.assert_close(tap, first(x, lengths)[0], rtol=1e-5, atol=1e-5)


def test_layers_default_to_the_middle_and_what_cannot_be_tapped_is_refused():
    def enc(n: int, name: str = "blstm") -> nn.Module:
        return build("encoder", {"name": name, "num_layers": n, "hidden_size": 4}, input_size=3)

    assert (
        inter_ctc_layers(None, enc(3)) == ()
        and inter_ctc_layers({"weight": 0.0, "layers": [9]}, enc(3)) == ()
    )
    assert inter_ctc_layers({"weight": 0.3}, enc(3)) == (2,)
    assert inter_ctc_layers({"weight": 0.3, "layers": []}, enc(4)) == (2,)
    assert inter_ctc_layers({"weight": 0.3}, enc(2)) == (1,)
    assert inter_ctc_layers({"weight": 0.3, "layers": [3, 1, 1]}, enc(4)) == (1, 3)
    with pytest.raises(
        ValueError, match=r"inter_ctc.layers=\[3\]: name inner layers of the encoder's 3, from 1 to 2"
    ):
        inter_ctc_layers({"weight": 0.3, "layers": [3]}, enc(3))
    with pytest.raises(ValueError, match="this encoder has 1; use encoder.num_layers ≥ 2"):
        inter_ctc_layers({"weight": 0.3}, enc(1))
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="inter_ctc.weight=(-1|nan|inf): use 0"):
            inter_ctc_layers({"weight": bad}, enc(3))
    with pytest.raises(ValueError, match="'tcn' gives no inner layers"):
        inter_ctc_layers({"weight": 0.3}, build("encoder", {"name": "tcn"}, input_size=3))


def test_training_adds_the_inner_layer_s_loss_and_reports_the_main_one(tmp_path):
    """One step: the loss function sees the main head's log-probs and layer 1's, for the same targets; the
    step's gradient is that of main + weight × inner, each loss's gradient taken on its own first (no dropout,
    no augmentation: the same forward twice); layer 2 gets nothing from the inner loss; the reported loss is
    the main one."""
    from speechkit.data.sampler import EpochBatches
    from speechkit.trainer import Trainer

    cfg = _cfg(tmp_path, 4, "encoder.hidden_size=8", "encoder.num_layers=2", "encoder.dropout=0", "data.batch_size=4",
               "augment=none", "trainer.max_steps=1", "trainer.precision=fp32", "inter_ctc.weight=0.5")  # fmt: skip
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.model.inter_layers == (1,)
    batch = next(iter(trainer.train_loader(EpochBatches([[0, 1, 2, 3]]), 0))).to(trainer.device)
    named = list(trainer.model.named_parameters())
    trainer.model.train()
    log_probs, lengths, inner = trainer.model(batch.x, batch.lengths, stage=batch.stage, with_inter=True)
    assert len(inner) == 1 and inner[0].shape == log_probs.shape and not torch.allclose(inner[0], log_probs)
    main_loss = trainer.loss_fn(log_probs, lengths, batch.targets, batch.target_lengths)[0]
    inner_loss = trainer.loss_fn(inner[0], lengths, batch.targets, batch.target_lengths)[0]
    g_main = torch.autograd.grad(main_loss, [p for _, p in named], allow_unused=True, retain_graph=True)
    g_inner = dict(zip([n for n, _ in named], torch.autograd.grad(inner_loss, [p for _, p in named], allow_unused=True),
                       strict=True))  # fmt: skip
    assert g_inner["encoder.rnn.weight_ih_l1"] is None and g_inner["encoder.rnn.weight_ih_l0"] is not None
    assert g_inner["head.weight"] is not None
    want = {
        n: a + 0.5 * g_inner[n] if g_inner[n] is not None else a
        for (n, _), a in zip(named, g_main, strict=True)
    }
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in want.values()]))
    scale = min(1.0, cfg.trainer.grad_clip / (float(norm) + 1e-6))  # clip_grad_norm_'s

    seen, got = [], {}
    real = trainer.loss_fn
    trainer.loss_fn = lambda lp, *a: seen.append(lp) or real(lp, *a)
    step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (
        got.update({n: p.grad.clone() for n, p in named}) or step(*a, **k)
    )
    reported = trainer.train_step(batch)
    assert len(seen) == 2 and reported == pytest.approx(float(main_loss.detach()), rel=1e-5)
    for n, g in want.items():
        torch.testing.assert_close(got[n], g * scale, rtol=1e-4, atol=1e-6)


def test_with_an_aligner_each_loss_gets_its_own_log_probs(tmp_path):
    """Aligner and intermediate CTC together: the step's three losses read the main head's, the aligner's
    and the inner layer's log-probs, in that order (each checked against the model's own outputs)."""
    from speechkit.data.sampler import EpochBatches
    from speechkit.trainer import Trainer

    cfg = _cfg(tmp_path, 4, "encoder.hidden_size=8", "encoder.num_layers=2", "encoder.dropout=0", "data.batch_size=4",
               "augment=none", "trainer.precision=fp32", "inter_ctc.weight=0.3", "aligner.weight=0.3",
               "aligner.channels=8")  # fmt: skip
    trainer = Trainer(cfg, tmp_path / "run")
    batch = next(iter(trainer.train_loader(EpochBatches([[0, 1, 2, 3]]), 0))).to(trainer.device)
    trainer.model.train()
    with torch.no_grad():
        main, _, aligned, inner = trainer.model(batch.x, batch.lengths, True, batch.stage, with_inter=True)
    seen = []
    real = trainer.loss_fn
    trainer.loss_fn = lambda lp, *a: seen.append(lp.detach()) or real(lp, *a)
    trainer.train_step(batch)
    assert len(seen) == 3
    for got, want in zip(seen, (main, aligned, inner[0]), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_layer_the_encoder_lacks_is_one_error_line(tmp_path):
    from tests.conftest import sample_rows, write_manifest

    train = write_manifest(tmp_path / "train.jsonl", sample_rows("train", 2))
    r = run_cli("speechkit-train", f"data.train_manifest={train}", f"data.dev_manifest={train}", "encoder.num_layers=3",
                "inter_ctc.weight=0.3", "inter_ctc.layers=[3]", f"hydra.run.dir={tmp_path / 'run'}", check=False)  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "inter_ctc.layers=[3]" in lines[0] and "Traceback" not in r.stderr


def test_self_conditioning_adds_the_inner_layer_s_projected_posteriors_before_the_next_layer():
    """``encode`` with a condition projection: the tap is layer 1's own output; layer 2 reads it plus the
    projection of its posteriors through the head (padding zero), checked against two one-layer stacks with
    the same weights (the second packed, another implementation); without ``with_inter`` the same output."""
    from speechkit.functional import mask_padding
    from speechkit.pipeline import encode

    torch.manual_seed(0)
    enc = BLSTM(RNNConfig(hidden_size=6, num_layers=2, impl="reversed"), input_size=5).eval()
    head, condition = nn.Linear(12, 4), nn.Linear(4, 12)
    x, lengths = torch.randn(3, 9, 5), torch.tensor([9, 6, 2])
    with torch.no_grad():
        y, out_lengths, taps = encode(enc, head, condition, (1,), x, lengths, with_inter=True)
        y_eval, _, none = encode(enc, head, condition, (1,), x, lengths)
        first = BLSTM(RNNConfig(hidden_size=6, num_layers=1, impl="packed"), input_size=5).eval()
        first.load_state_dict({n: p for n, p in enc.state_dict().items() if "_l0" in n})
        second = BLSTM(RNNConfig(hidden_size=6, num_layers=1, impl="packed"), input_size=12).eval()
        second.load_state_dict({n.replace("_l1", "_l0"): p for n, p in enc.state_dict().items() if "_l1" in n})
        h1 = first(x, lengths)[0]
        want = second(mask_padding(h1 + condition(head(h1).softmax(-1)), lengths), lengths)[0]
        plain = encode(enc, head, None, (1,), x, lengths)[0]
    torch.testing.assert_close(taps[0], h1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(out_lengths, lengths) and none == [] and torch.equal(y_eval, y)
    assert not torch.allclose(plain, y, atol=1e-3)  # the conditioning changes what the last layer sees


def test_self_conditioning_needs_intermediate_ctc_and_trains_its_projection(tmp_path, caplog):
    """``inter_ctc.self_condition=true`` without a weight is refused, naming the fix; with one, the model has a
    V × H projection that a training step gives a gradient, and the run log names the setting."""
    from speechkit.data.sampler import EpochBatches
    from speechkit.trainer import Trainer

    cfg = _cfg(tmp_path, 4, "encoder.hidden_size=8", "encoder.num_layers=2", "data.batch_size=4", "augment=none",
               "trainer.precision=fp32", "inter_ctc.self_condition=true")  # fmt: skip
    with pytest.raises(ValueError, match="self_condition=true .* add inter_ctc.weight=0.3"):
        Trainer(cfg, tmp_path / "bad")
    cfg.inter_ctc.weight = 0.3
    with caplog.at_level("INFO", logger="speechkit.trainer"):
        trainer = Trainer(cfg, tmp_path / "run")
    assert "intermediate CTC (layer 1, loss weight 0.3, self-conditioned)" in caplog.text
    cond = trainer.model.condition
    assert cond is not None and tuple(cond.weight.shape) == (trainer.model.encoder.output_dim, cond.in_features)
    batch = next(iter(trainer.train_loader(EpochBatches([[0, 1, 2, 3]]), 0)))
    before = cond.weight.detach().clone()
    assert trainer.train_step(batch) is not None
    assert not torch.equal(cond.weight.detach(), before)

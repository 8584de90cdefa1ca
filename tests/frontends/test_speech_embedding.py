"""frontend=speech_embedding: Google's speech embedding rebuilt in torch (issue 14).

The network runs over a whole utterance at once instead of over 76-frame windows, and at a 40 ms hop
shares everything but its last pool and convolution between the two offsets. Checked here against the
plain form — each output's window cut out and run through the network as published — with random
weights (so no download is needed), and against openWakeWord's own ONNX files in onnxruntime where
the package is installed.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from speechkit.checkpoint import weights_from_checkpoint
from speechkit.data.dataset import pad_time_first
from speechkit.frontends import speech_embedding as se
from speechkit.frontends.audio_io import load_audio
from speechkit.registry import build

from ..conftest import SAMPLES, error_line, run_cli, sample_rows

# Float32 sums in another order over 20 layers: measured ≤ 3e-6 of the largest value; 1e-4 leaves room for
# other CPUs' convolution kernels, far below what a wrong window (a shifted or mis-pooled one) gives (~1).
RELATIVE_TOLERANCE = 1e-4


def random_frontend(hop_ms: int = 40, normalize: str = "none", seed: int = 0) -> se.SpeechEmbedding:
    """The frontend with random weights of the published shapes (and the real DFT and mel matrices'
    shapes), so the tests need no openwakeword."""
    with weights_from_checkpoint():  # weights of its own below, whether or not openwakeword is installed
        fe = build("frontend", "speech_embedding", hop_ms=hop_ms, normalize=normalize)
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, buf in fe.state_dict().items():
        fan_in = math.prod(buf.shape[1:]) if buf.dim() > 1 else 1
        state[name] = torch.randn(buf.shape, generator=g) / math.sqrt(fan_in)
    state["mel_matrix"] = state["mel_matrix"].abs()  # energies stay positive
    fe.load_state_dict(state)
    return fe.eval()


def windowed(fe: se.SpeechEmbedding, wav: torch.Tensor) -> torch.Tensor:
    """The published form: for each output frame ``i``, the 76 mel frames centred on sample ``i * hop``
    through the network with every pool at its own stride → ``(ceil(N / hop), 96)``."""
    n_out = -(-wav.shape[0] // fe.hop)
    half = se.CONTEXT // 2 * se.MEL_HOP
    x = F.pad(wav, (half, half + n_out * fe.hop + se.MEL_WINDOW))
    mel = fe.log_mel(x[None])[0]
    starts = [i * fe.hop // se.MEL_HOP for i in range(n_out)]
    h = torch.stack([mel[s : s + se.CONTEXT] for s in starts])[:, None]  # (n_out, 1, 76, 32)
    for i in range(len(se.CHANNELS) + 1):
        w = getattr(fe, f"conv{i}_weight")
        h = F.conv2d(h, w, getattr(fe, f"conv{i}_bias", None), padding=(0, 1) if w.shape[-1] == 3 else 0)
        if i < len(se.CHANNELS):
            h = F.leaky_relu(h, 0.2).clamp_min(-0.4)
        if i in se.POOL_AFTER:
            h = F.max_pool2d(h, se.POOL_AFTER[i])
    assert h.shape[1:] == (96, 1, 1)
    return h.reshape(n_out, 96)


def waves() -> list[torch.Tensor]:
    """Three sample utterances of different lengths, and one shorter than a hop."""
    rows = sample_rows("test", 3)
    out = [load_audio(r["audio_filepath"], 16000) for r in rows]
    return [out[0][:20000], out[1], out[2][:30001], out[0][:500]]


@pytest.mark.parametrize("hop_ms", [40, 80])
def test_whole_utterance_equals_the_windows(hop_ms):
    fe = random_frontend(hop_ms)
    x, lengths = pad_time_first(waves())
    with torch.no_grad():
        feats, frames = fe(x, lengths)
        for i, wav in enumerate(waves()):
            ref = windowed(fe, wav)
            assert frames[i] == ref.shape[0] == math.ceil(wav.shape[0] / fe.hop)
            scale = float(ref.abs().max())
            assert float((feats[i, : frames[i]] - ref).abs().max()) <= RELATIVE_TOLERANCE * scale
            assert not feats[i, frames[i] :].any()  # padding is zero


@pytest.mark.parametrize("hop_ms", [40, 80])
def test_frames_are_ceil_of_samples_over_the_hop_at_every_length(hop_ms):
    fe = random_frontend(hop_ms)
    hop = hop_ms * 16
    lengths = [1, 159, 160, 161, 639, 640, 641, 1279, 1280, 1281, 5 * hop - 1, 5 * hop, 5 * hop + 1]
    for n in lengths:  # each alone, so the batch's own length is n: no slicing may be needed
        with torch.no_grad():
            feats, frames = fe(torch.randn(1, n) * 0.1, torch.tensor([n]))
        assert feats.shape[1] == int(frames[0]) == math.ceil(n / hop), n


def test_a_row_does_not_depend_on_its_batch():
    fe = random_frontend(normalize="frame")
    alone = [fe(w[None], torch.tensor([w.shape[0]]))[0][0] for w in waves()]
    x, lengths = pad_time_first(waves())
    with torch.no_grad():
        batch, frames = fe(x, lengths)
    for i, a in enumerate(alone):
        assert a.shape[0] == frames[i]
        assert torch.allclose(batch[i, : frames[i]], a, atol=1e-4)  # frame-normalised units


def test_frame_normalisation():
    fe = random_frontend(normalize="frame")
    x, lengths = pad_time_first(waves())
    with torch.no_grad():
        feats, frames = fe(x, lengths)
    valid = feats[0, : frames[0]]
    assert torch.allclose(valid.mean(-1), torch.zeros(frames[0]), atol=1e-4)
    assert torch.allclose(valid.std(-1, unbiased=False), torch.ones(frames[0]), atol=1e-3)


def test_a_checkpoint_brings_the_weights(monkeypatch):
    trained = random_frontend(seed=3)
    monkeypatch.setattr(se, "default_weights_dir", lambda: None)  # as on a machine without openwakeword
    with pytest.raises(
        RuntimeError, match="from the openwakeword package, which is not installed: pip install onnx"
    ):
        build("frontend", "speech_embedding")  # training from scratch: said at once, in the main process
    with weights_from_checkpoint():  # as checkpoint.build_from_checkpoint does
        bare = build("frontend", "speech_embedding", normalize="none")
    x, lengths = pad_time_first(waves()[:2])
    with pytest.raises(
        RuntimeError, match="no weights: pip install onnx && pip install --no-deps openwakeword"
    ):
        bare(x, lengths)  # built for a checkpoint that did not bring them
    bare.load_state_dict(trained.state_dict())
    with torch.no_grad():
        assert torch.equal(bare.eval()(x, lengths)[0], trained(x, lengths)[0])


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"hop_ms": 30}, "hop_ms=30 is invalid; allowed: 40 or 80"),
        ({"normalize": "speech"}, "normalize='speech' is invalid; allowed: frame, utterance, none"),
        ({"sample_rate": 8000}, "sample_rate=8000 is invalid; allowed: 16000"),
    ],
)
def test_bad_settings(setting, message):
    with pytest.raises(ValueError, match=message):
        build("frontend", "speech_embedding", **setting)


def test_a_weights_folder_without_the_files(tmp_path):
    with pytest.raises(
        RuntimeError, match=f"{tmp_path}/melspectrogram.onnx, {tmp_path}/embedding_model.onnx not found"
    ):
        build("frontend", "speech_embedding", weights=str(tmp_path))


def test_matches_openwakeword_in_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    folder = se.default_weights_dir()
    if folder is None or not (folder / "embedding_model.onnx").is_file():
        pytest.skip("openwakeword 0.5.1 is not installed (pip install --no-deps openwakeword==0.5.1)")
    fe = build("frontend", "speech_embedding", normalize="none").eval()
    wav = waves()[1]
    with torch.no_grad():
        got = fe(wav[None], torch.tensor([wav.shape[0]]))[0][0].numpy()
    # openWakeWord's way: the mel model over the padded waveform (16-bit scale), its scaling, then
    # the embedding model on each 76-frame window, one every 4 mel frames
    mel_s, emb_s = (ort.InferenceSession(str(folder / f), providers=["CPUExecutionProvider"])
                    for f in ("melspectrogram.onnx", "embedding_model.onnx"))  # fmt: skip
    pad = np.zeros(se.CONTEXT // 2 * se.MEL_HOP, np.float32)
    audio = np.concatenate([pad, wav.numpy(), pad, np.zeros(2 * fe.hop, np.float32)])
    mel = mel_s.run(None, {"input": audio[None] * 32767})[0][0, 0] / 10 + 2
    n_out = got.shape[0]
    windows = np.stack([mel[4 * i : 4 * i + se.CONTEXT] for i in range(n_out)])[..., None]
    ref = emb_s.run(None, {"input_1": windows.astype(np.float32)})[0].reshape(n_out, 96)
    assert np.abs(got - ref).max() <= RELATIVE_TOLERANCE * np.abs(ref).max()


def test_training_without_openwakeword_is_one_error_line(tmp_path):
    code = (
        "import sys; sys.modules['openwakeword'] = None  # as if not installed\n"
        "from speechkit.train import main; main()"
    )
    p = run_cli(sys.executable, "-c", code, "recipe=demo", "frontend=speech_embedding", "augment=none",
                f"data.train_manifest={SAMPLES / 'train.jsonl'}", f"data.dev_manifest={SAMPLES / 'dev.jsonl'}",
                "trainer.max_steps=1", f"hydra.run.dir={tmp_path}", check=False)  # fmt: skip
    assert p.returncode == 2
    assert error_line(p.stderr) == (
        "error: frontend 'speech_embedding' reads Google's speech embedding from the openwakeword package, which is "
        "not installed: pip install onnx && pip install --no-deps openwakeword==0.5.1 (or frontend.weights=FOLDER "
        "holding its two .onnx files)"
    )


def test_unreadable_or_foreign_onnx_files_are_named(tmp_path):
    (tmp_path / "melspectrogram.onnx").write_bytes(b"not a model")
    (tmp_path / "embedding_model.onnx").write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match="melspectrogram.onnx is not a readable ONNX model"):
        build("frontend", "speech_embedding", weights=str(tmp_path))
    onnx = pytest.importorskip("onnx")
    empty = onnx.helper.make_model(onnx.helper.make_graph([], "empty", [], []))
    for name in ("melspectrogram.onnx", "embedding_model.onnx"):
        onnx.save(empty, str(tmp_path / name))
    with pytest.raises(
        RuntimeError, match=r"holds other ONNX models \(no weight '0.stft.conv_real.weight'\)"
    ):
        build("frontend", "speech_embedding", weights=str(tmp_path))
    with weights_from_checkpoint():  # a checkpoint trained with weights=FOLDER loads where FOLDER is not
        build("frontend", "speech_embedding", weights=str(tmp_path / "gone"))

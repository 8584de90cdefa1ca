"""Streaming recognition (speechkit/streaming.py) against the whole utterance.

Tolerance of the log-probability comparisons: atol 1e-5. Streaming computes the same float32
operations on the same values, frame by frame; only the matrix products (mel filterbank, input
projections, convolutions) run over a different number of rows, and BLAS may block their sums
differently, which moves a result by an ulp or so (6e-8 relative). Measured: at most 5e-7 on
these log-probabilities (magnitude ≤ ~10). 1e-5 leaves 20× margin, while any real mistake — a frame
cut at the wrong sample, a state lost at a chunk boundary, a subsampling group shifted — changes
log-probabilities by 1e-2 or more (see the checks that a lost state is caught).
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from speechkit import build
from speechkit.data.tokenizer import CharConfig, CharTokenizer
from speechkit.pipeline import CTCModel, Pipeline
from speechkit.streaming import FeatureStream, wav_stream
from tests.conftest import REPO

TOKENS = ["<blank>", " ", "a", "b", "c", "d", "e"]
RATE = 16000  # Hz
ATOL = 1e-5  # see the module docstring

# the unidirectional encoders, with subsampling (stack, conv and conv2d) spread over them
UNIDIRECTIONAL = {
    "lstm": {"subsample": 3, "lookahead": 2},  # right context: 2 frames past each group of 3
    "gru": {"subsample": 2, "subsample_mode": "conv", "lookahead": 1},
    "elman": {"bidirectional": False, "subsample": 4, "subsample_mode": "conv2d", "subsample_channels": 3},
    "jordan": {"bidirectional": False, "subsample": 2, "hidden_size": 8},
    "lstm_peephole": {"bidirectional": False},
    "lstm_coupled": {"bidirectional": False, "subsample": 3, "subsample_mode": "conv"},
    "tcn": {"causal": True, "subsample": 2, "kernel_size": 2},
}
# chunks of samples: shorter than a hop (160) and a window (400), not aligned to the hop, 200 ms, whole
CHUNKS = [37, 250, 3200, 16000]


def audio(seconds: float = 0.6, seed: int = 0) -> torch.Tensor:
    """``(N,)`` float32 at 16 kHz: 50 ms segments, each a tone or noise at a level from -60 to -6 dB, so
    the features (and a random model's most likely tokens) change as speech's do."""
    g = torch.Generator().manual_seed(seed)
    n, seg = int(seconds * RATE), 800  # samples; 50 ms
    k = torch.arange(n) // seg  # segment of each sample
    level = 10 ** (-3 + 2.7 * torch.rand(k[-1] + 1, generator=g))
    freq = 100 + 3000 * torch.rand(k[-1] + 1, generator=g)  # Hz
    tone = torch.rand(k[-1] + 1, generator=g) < 0.5
    t = torch.arange(n) / RATE
    noise = torch.randn(n, generator=g)
    return level[k] * torch.where(tone[k], torch.sin(2 * torch.pi * freq[k] * t), noise)


def frontend(kind: str = "fbank", normalize: str = "global") -> torch.nn.Module:
    params = {"n_mels": 16, "normalize": normalize}
    if kind == "mfcc":
        params["n_mfcc"] = 8
    fe = build("frontend", kind, **params)
    if normalize in ("global", "online"):
        fe.update_stats(audio(1.0, seed=5)[None], torch.tensor([RATE]))
    return fe


def pipeline(encoder: str, fe: torch.nn.Module | None = None, **params) -> Pipeline:
    """A tiny random model in eval mode; the head scaled so that many tokens win some frames."""
    torch.manual_seed(0)
    fe = fe if fe is not None else frontend()
    params = {"hidden_size": 16, "num_layers": 2, "dropout": 0.0, **params}
    enc = build("encoder", encoder, input_size=fe.output_dim, **params)
    model = CTCModel(fe, build("augment", "none"), enc, len(TOKENS))
    with torch.no_grad():
        model.head.weight.mul_(30.0)
    return Pipeline(model, CharTokenizer(CharConfig(), TOKENS), {}, decoder={"name": "greedy"})


def streamed(pipe: Pipeline, x: torch.Tensor, chunk: int):
    """Push ``x`` in chunks of ``chunk`` samples: (log-probs (T, V), partials, final transcript)."""
    s = pipe.stream(sample_rate=RATE)
    partials = [s.push(x[k : k + chunk]) for k in range(0, x.shape[0], chunk)]
    final = s.finish()
    return s.log_probs(), [*partials, s.partial()], final  # the last: after finish flushed the end


def whole(pipe: Pipeline, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        lp, n = pipe.model(x[None], torch.tensor([x.shape[0]]))
    return lp[0, : n[0]]


@pytest.mark.parametrize("encoder", list(UNIDIRECTIONAL))
def test_streamed_log_probs_and_greedy_text_equal_the_whole_utterances(encoder):
    pipe = pipeline(encoder, **UNIDIRECTIONAL[encoder])
    x = audio()
    expected = whole(pipe, x)
    transcript = pipe.transcribe(x.numpy(), sample_rate=RATE)
    text, words = transcript.text, [(w.word, w.start, w.end) for w in transcript.words]
    assert expected.shape[0] == pipe.model.output_lengths(torch.tensor([x.shape[0]])).item()
    assert len(text.replace(" ", "")) >= 2  # a text worth comparing
    for chunk in CHUNKS:
        lp, partials, final = streamed(pipe, x, chunk)
        torch.testing.assert_close(lp, expected, atol=ATOL, rtol=0, msg=f"chunks of {chunk} samples")
        assert final.text == partials[-1].text == text, chunk
        # snapped to the same pauses (a window's level may differ in its last bits: a boundary by 2.5 ms)
        got = [(w.word, w.start, w.end) for w in final.words]
        assert [w for w, _, _ in got] == [w for w, _, _ in words]
        assert [t for _, s, e in got for t in (s, e)] == pytest.approx(
            [t for _, s, e in words for t in (s, e)], abs=3e-3
        )
        # partials only grow: each one's tokens begin the next one's
        for a, b in zip(partials, partials[1:]):
            assert b.tokens[: len(a.tokens)] == a.tokens
        assert final.duration == pytest.approx(x.shape[0] / RATE)


def test_a_state_lost_between_chunks_is_caught_by_the_tolerance():
    """The tolerance is tight enough to see a stream that forgets its recurrent state at a chunk."""
    pipe = pipeline("lstm")
    x = audio()
    expected = whole(pipe, x)
    s = pipe.stream()
    s.push(x[:4800])
    s.state.carry = pipe.model.encoder.stream_init(1).carry  # as if the state were dropped
    s.push(x[4800:])
    s.finish()
    assert (s.log_probs() - expected).abs().max().item() > 100 * ATOL


def test_the_encoder_step_api_streams_a_batch():
    torch.manual_seed(0)
    for name, params in UNIDIRECTIONAL.items():
        params = {**params, "hidden_size": 6, "num_layers": 2, "dropout": 0.0}
        enc = build("encoder", name, input_size=5, **params).eval()
        x = torch.randn(2, 23, 5)
        with torch.no_grad():
            y, n = enc(x, torch.tensor([23, 23]))
            state, parts = enc.stream_init(2), []
            for a, b in [(0, 1), (1, 1), (1, 8), (8, 15), (15, 23)]:  # an empty chunk too
                part, state = enc.stream_step(x[:, a:b], state, final=b == 23)
                parts.append(part)
        torch.testing.assert_close(torch.cat(parts, 1), y, atol=ATOL, rtol=0, msg=name)


@pytest.mark.parametrize(
    "kind,normalize",
    [("fbank", "global"), ("fbank", "online"), ("mfcc", "online"), ("mfcc", "none"), ("spectrogram", "none")],
)
def test_streamed_features_equal_the_whole_utterances_for_any_chunking(kind, normalize):
    fe = frontend(kind, normalize) if kind != "spectrogram" else build("frontend", kind, normalize="none")
    x = audio(0.5)
    with torch.no_grad():
        expected, n = fe(x[None], torch.tensor([x.shape[0]]))
    rng = np.random.default_rng(0)
    sizes = [0, 1, 399, 1, 160, *rng.integers(0, 700, 40).tolist()]
    stream, out, k = FeatureStream(fe), [], 0
    for size in sizes:
        out.append(stream.push(x[k : k + size]))
        k += size
    out.append(stream.push(x[k:]))
    out.append(stream.finish())
    got = torch.cat(out, 1)
    assert got.shape == expected.shape and n.item() == got.shape[1]
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    assert stream.lookahead == (4 if kind == "mfcc" else 0)  # Δ and ΔΔ: 2 frames each


@pytest.mark.parametrize(
    "encoder,params,why",
    [
        ("blstm", {}, "'blstm' is bidirectional"),
        ("bgru", {}, "'bgru' is bidirectional"),
        ("elman", {}, "'elman' is bidirectional"),  # the custom cells default to both directions
        ("lstm_peephole", {"bidirectional": True}, "'lstm_peephole' is bidirectional"),
        ("tcn", {"causal": False}, "'tcn' is centred"),
    ],
)
def test_encoders_that_look_ahead_are_refused_with_one_clear_error(encoder, params, why):
    pipe = pipeline(encoder, **params)
    with pytest.raises(ValueError, match=f"streaming needs a unidirectional encoder: encoder=lstm.*{why}"):
        pipe.stream()


def test_a_self_conditioned_model_is_refused_with_one_clear_error():
    """Its layers read inner layers' posteriors (``inter_ctc.self_condition``), which the stack's one call skips."""
    fe = frontend()
    enc = build("encoder", "lstm", input_size=fe.output_dim, hidden_size=16, num_layers=2)
    model = CTCModel(fe, build("augment", "none"), enc, len(TOKENS), inter_layers=(1,), self_condition=True)
    pipe = Pipeline(model, CharTokenizer(CharConfig(), TOKENS), {}, decoder={"name": "greedy"})
    with pytest.raises(ValueError, match=r"inter_ctc.self_condition=true\): transcribe the whole file"):
        pipe.stream()


@pytest.mark.parametrize("normalize", ["utterance", "speech"])
def test_per_utterance_normalisation_is_refused_naming_the_settings_that_stream(normalize):
    pipe = pipeline("lstm", frontend("fbank", normalize))
    with pytest.raises(
        ValueError, match=rf"streaming needs frontend.normalize=online, global or none.*'{normalize}'"
    ):
        pipe.stream()


def test_online_normalisation_streams_the_whole_utterances_log_probs_and_text():
    """The running mean and variance travel across chunks: every chunking gives the whole utterance's
    log-probabilities, and a stream that restarted them at a chunk would be caught."""
    pipe = pipeline("lstm", frontend("fbank", "online"), subsample=3)
    x = audio(1.0)
    expected = whole(pipe, x)
    text = pipe.transcribe(x.numpy(), sample_rate=RATE).text
    for chunk in CHUNKS:
        lp, partials, final = streamed(pipe, x, chunk)
        torch.testing.assert_close(lp, expected, atol=ATOL, rtol=0, msg=f"chunks of {chunk} samples")
        assert final.text == partials[-1].text == text, chunk
    s = pipe.stream()
    s.push(x[:4800])
    s.features.moments = None  # as if the running sums were dropped
    s.push(x[4800:])
    s.finish()
    assert (s.log_probs() - expected).abs().max().item() > 100 * ATOL


def test_a_stream_takes_the_models_rate_only_and_ends_once():
    pipe = pipeline("gru")
    with pytest.raises(
        ValueError, match="sample_rate=8000: streaming takes samples at the model's rate, 16000"
    ):
        pipe.stream(sample_rate=8000)
    s = pipe.stream()
    assert s.push(np.zeros(0, np.float32)).text == ""  # an empty chunk is no chunk
    s.push((audio(0.1).numpy() * 32767).astype(np.int16))  # integer PCM is scaled as files are
    assert s.finish().duration == pytest.approx(0.1)
    with pytest.raises(RuntimeError, match="finished"):
        s.push(audio(0.1))
    short = pipe.stream()
    short.push(audio(0.01))  # shorter than a window: no frame, no text, as for the whole utterance
    assert short.finish().text == "" and whole(pipe, audio(0.01)).shape[0] == 0


class Trickle(io.RawIOBase):
    """A pipe that hands out at most a few bytes per read, as a live stream does."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.step if n < 0 else min(n, self.step)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


@pytest.mark.parametrize("subtype,unknown_size", [("PCM_16", True), ("PCM_24", False), ("FLOAT", True)])
def test_wav_from_a_pipe_is_read_as_it_arrives(subtype, unknown_size):
    x = np.stack([audio(0.2).numpy(), audio(0.2, seed=1).numpy()], 1) * 0.5  # stereo
    buf = io.BytesIO()
    sf.write(buf, x, RATE, subtype=subtype, format="WAV")
    data = bytearray(buf.getvalue())
    if unknown_size:  # what a writer to a pipe leaves: it cannot seek back to fill in the sizes
        at = data.index(b"data") + 4
        data[at : at + 4] = struct.pack("<I", 0xFFFFFFFF)
    wav = wav_stream(Trickle(bytes(data)))
    assert (wav.rate, wav.channels) == (RATE, 2)
    blocks = list(wav.chunks(1000))
    assert [len(b) for b in blocks] == [1000, 1000, 1000, 200]
    got = np.concatenate(blocks).astype(np.float64)
    scale = {"PCM_16": 2**15, "PCM_24": 2**31, "FLOAT": 1.0}[subtype]  # 24-bit comes as the top of an int32
    expected = sf.read(io.BytesIO(buf.getvalue()), dtype="float64")[0]
    np.testing.assert_allclose(got / scale, expected, atol=1e-7)


def test_cli_streams_a_wav_on_stdin_printing_partials_then_the_final_text(tmp_path):
    from hydra import compose, initialize_config_dir

    from speechkit.checkpoint import model_payload, save_checkpoint
    from speechkit.config import CONF_DIR, store_schemas

    store_schemas()
    overrides = ["encoder=lstm", "encoder.hidden_size=8", "encoder.num_layers=1", "frontend.n_mels=16",
                 "frontend.normalize=global", "augment=none"]  # fmt: skip
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    torch.manual_seed(0)
    model = CTCModel.from_config(cfg, len(TOKENS)).eval()
    model.frontend.update_stats(audio(1.0, seed=5)[None], torch.tensor([RATE]))
    with torch.no_grad():
        model.head.weight.mul_(30.0)
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, model_payload(cfg, TOKENS, model))
    x = audio(1.0)
    wav = tmp_path / "a.wav"
    sf.write(wav, x.numpy(), RATE, subtype="FLOAT")
    pipe = Pipeline(model, CharTokenizer(CharConfig(), TOKENS), cfg)
    expected = pipe.transcribe(wav)
    s = pipe.stream()
    shown = []  # the partials as the CLI prints them: each change once
    for k in range(0, x.shape[0], 1600):
        text = s.push(x[k : k + 1600]).text
        if text != (shown[-1] if shown else ""):
            shown.append(text)
    assert len(shown) >= 2
    cmd = [sys.executable, "-m", "speechkit.transcribe", f"checkpoint={ckpt}", "input=-", "streaming=true",
           "chunk_ms=100", "device=cpu"]  # fmt: skip
    p = subprocess.run(cmd, input=wav.read_bytes(), capture_output=True, cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stderr.decode()
    lines = p.stdout.decode().splitlines()
    assert lines == [*shown, expected.text]  # not a terminal: one line per change, then the final text
    assert "streamed 1.00 s in 10 chunk(s) of 100 ms" in p.stderr.decode()


@pytest.mark.parametrize("chunk", [1, 37, 160, 4000])
def test_the_energy_of_a_stream_is_the_energy_of_the_whole(chunk):
    """What the final word times snap to: the stream's energy windows equal the whole audio's."""
    from speechkit.decoders.timing import EnergyMeter, energy_levels

    x = audio()[: RATE // 2 + 123]
    meter = EnergyMeter(RATE)
    for i in range(0, x.shape[0], chunk):
        meter.push(x[i : i + chunk])
    got, want = meter.levels(), energy_levels(x, RATE)
    assert got.num_samples == want.num_samples == x.shape[0] and got.sample_rate == RATE
    np.testing.assert_allclose(got.level_db, want.level_db, atol=1e-4)  # dB; float32 sums of a window

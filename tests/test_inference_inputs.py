"""What Pipeline.transcribe/decode take: paths, bytes, arrays at any rate, manifests, lists of these;
clear errors for anything else; containers libsndfile cannot read (m4a, webm, mp4) through FFmpeg;
``speechkit-transcribe input=-`` from stdin."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechkit.checkpoint import load_checkpoint
from speechkit.data.errors import DataError
from speechkit.frontends.audio_io import load_audio
from speechkit.pipeline import Transcript
from tests.conftest import MODULES, REPO, sample_rows

pytestmark = pytest.mark.slow

SR = 16000  # Hz, the tiny run's rate (and the sample files')


def encode_audio(path: Path, wave: np.ndarray, rate: int, codec: str = "aac", channels: int = 1) -> Path:
    """``wave`` ``(samples,)`` in [-1, 1] at ``rate`` Hz encoded by FFmpeg (PyAV) into ``path``'s container."""
    import av

    layout = "mono" if channels == 1 else "stereo"
    planes = np.repeat(wave[None].astype(np.float32), channels, axis=0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=stream.format.name, layout=layout, rate=rate)
        for f in resampler.resample(frame):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def similarity(a: np.ndarray, b: np.ndarray, max_lag: int = 4000) -> float:
    """Peak normalised cross-correlation of two waveforms within ``max_lag`` samples (codec delays)."""
    from scipy.signal import correlate

    n = min(len(a), len(b))
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    c = correlate(a, b, mode="full", method="fft")[n - 1 - max_lag : n + max_lag]
    return float(np.abs(c).max() / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def pipe(tiny_run):
    return load_checkpoint(tiny_run / "run/checkpoints/best.pt")


@pytest.fixture(scope="module")
def flac() -> Path:
    return Path(sample_rows("test", 1)[0]["audio_filepath"])


def _same(a: Transcript, b: Transcript) -> None:
    assert a.text == b.text and [(w.word, w.start, w.end) for w in a.words] == [
        (w.word, w.start, w.end) for w in b.words
    ]


def test_a_path_bytes_and_an_array_of_one_file_give_the_same_transcript(pipe, flac):
    x, rate = sf.read(flac, dtype="float32")
    by_path = pipe.transcribe(str(flac))
    assert isinstance(by_path, Transcript) and by_path.fields == {"audio_filepath": str(flac)}
    assert by_path.duration == pytest.approx(len(x) / SR)
    for other in (
        pipe.transcribe(flac),
        pipe.transcribe(flac.read_bytes()),
        pipe.transcribe(x, sample_rate=rate),
        pipe.transcribe(torch.from_numpy(x), sample_rate=rate),
    ):
        _same(other, by_path)
    pcm = np.round(x * 32768).astype(np.int16)  # integer PCM: scaled to full scale
    assert torch.allclose(pipe.load(pcm, sample_rate=rate), pipe.load(flac), atol=1 / 32768)
    listed = pipe.transcribe([flac, flac.read_bytes(), x], sample_rate=rate)
    assert isinstance(listed, list) and len(listed) == 3
    for t in listed:
        _same(t, by_path)
    assert pipe.decode(flac)[0].text == by_path.text  # one input: its n-best list


def test_an_array_at_another_rate_is_resampled_as_a_file_at_that_rate_would_be(pipe, flac, tmp_path):
    x, _ = sf.read(flac, dtype="float32")
    x8 = x[::2].copy()  # 8 kHz (aliasing does not matter: both paths get the same samples)
    sf.write(tmp_path / "x8.wav", x8, 8000, subtype="FLOAT")
    loaded = pipe.load(x8, sample_rate=8000)
    assert loaded.shape == (2 * len(x8),) and torch.equal(loaded, pipe.load(tmp_path / "x8.wav"))
    _same(pipe.transcribe(x8, sample_rate=8000), pipe.transcribe(tmp_path / "x8.wav"))


def test_a_jsonl_path_is_a_manifest_of_inputs_and_any_other_path_a_file(pipe, tiny_run):
    manifest = tiny_run / "test.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    out = pipe.transcribe(str(manifest))
    assert [t.fields["text"] for t in out] == [r["text"] for r in rows]
    assert [t.fields["audio_filepath"] for t in out] == [r["audio_filepath"] for r in rows]
    with pytest.raises(DataError, match="cannot read audio"):  # a manifest read as a media file
        pipe.transcribe(tiny_run / "run/config.yaml")
    with pytest.raises(ValueError, match=r"input 1 .* is a manifest: pass its path alone"):
        pipe.transcribe([rows[0]["audio_filepath"], str(manifest)])


@pytest.mark.parametrize(
    "given, kwargs, error, says",
    [
        (3, {}, TypeError, r"cannot take int; it takes a media file's path \(str or Path"),
        ({"audio": 1}, {}, TypeError, "cannot take dict"),
        ([0.1, 0.2], {"sample_rate": SR}, TypeError, "input 0: float; .* pass an array"),
        (np.zeros((2, 800), np.float32), {"sample_rate": SR}, ValueError, r"1-D samples, got shape \(2, 8"),
        (np.zeros(800, bool), {"sample_rate": SR}, TypeError, "an array of bool is not audio"),
        (np.zeros(800, np.float32), {}, ValueError, "needs sample_rate= .* the model takes 16000 Hz"),
        (np.zeros(800, np.float32), {"sample_rate": 0}, ValueError, "sample_rate=0: give a positive"),
        ("a.wav", {"sample_rate": 8000}, ValueError, "no array was given .* leave it out"),
    ],
)
def test_inputs_of_the_wrong_kind_are_refused_saying_what_was_given_and_what_is_accepted(
    pipe, given, kwargs, error, says
):
    with pytest.raises(error, match=says):
        pipe.transcribe(given, **kwargs)


def test_unusable_bytes_and_arrays_are_data_errors_naming_them_or_skipped(pipe, flac):
    with pytest.raises(DataError, match="^<bytes>: cannot read audio") as e:
        pipe.transcribe(b"RIFF but not really a wave file")
    assert "speechkit-" not in str(e.value)  # the temporary file is not named
    x, _ = sf.read(flac, dtype="float32")
    bad = np.full(400, np.nan, np.float32)
    with pytest.raises(DataError, match="^<array 1>: contains NaN"):
        pipe.transcribe([x, bad], sample_rate=SR)
    out = pipe.transcribe([x, bad, np.zeros(0, np.float32)], sample_rate=SR, on_error="skip")
    assert isinstance(out[0], Transcript)
    assert [(s.index, s.where) for s in out[1:]] == [(1, "<array 1>"), (2, "<array 2>")]
    assert "no audio samples" in out[2].reason


def test_load_audio_reads_containers_libsndfile_cannot_through_ffmpeg(tmp_path, flac):
    x, _ = sf.read(flac, dtype="float32")
    files = {
        "m4a": encode_audio(tmp_path / "a.m4a", x, SR),  # AAC in MP4
        "mp4": encode_audio(tmp_path / "a.mp4", x, SR),  # an MP4's audio track
        "webm": encode_audio(tmp_path / "a.webm", x, 48000, "libopus"),  # the samples as if at 48 kHz
        "stereo": encode_audio(tmp_path / "b.m4a", x, 22050, channels=2),  # … as if at 22.05 kHz
    }
    for name, path in files.items():
        with pytest.raises(sf.LibsndfileError):
            sf.read(path)
        wave = load_audio(path, SR)
        assert wave.dtype == torch.float32 and wave.dim() == 1, name
        if name in ("m4a", "mp4"):  # the same rate: the same samples, up to the codec's delay and loss
            assert abs(len(wave) - len(x)) < 0.1 * len(x) and similarity(wave.numpy(), x) > 0.9, name
    # other rates and channels: 16 kHz mono, as long as the encoded samples last
    assert abs(len(load_audio(files["stereo"], SR)) / SR - len(x) / 22050) < 0.1
    assert abs(len(load_audio(files["webm"], SR)) / SR - len(x) / 48000) < 0.1


def test_a_damaged_container_is_an_error_naming_the_file(tmp_path, flac):
    x, _ = sf.read(flac, dtype="float32")
    good = encode_audio(tmp_path / "good.m4a", x, SR).read_bytes()
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="corrupt or truncated audio: its 'mdat' box declares") as e:
        load_audio(cut, SR)
    assert e.value.where == str(cut)
    junk = tmp_path / "junk.webm"
    junk.write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(DataError, match="cannot read audio .*libsndfile.*FFmpeg") as e:
        load_audio(junk, SR)
    assert e.value.where == str(junk) and "neither libsndfile nor FFmpeg" in e.value.fix


def test_transcribe_reads_one_file_from_stdin_and_writes_one_json_object(pipe, tiny_run, flac, tmp_path):
    out = tmp_path / "one.json"
    p = subprocess.run(
        [sys.executable, "-m", MODULES["speechkit-transcribe"], f"checkpoint={tiny_run / 'run/checkpoints/best.pt'}",
         "input=-", f"output={out}", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"],
        input=flac.read_bytes(), capture_output=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr.decode()
    row = json.loads(out.read_text())
    expected = pipe.transcribe(flac).to_dict()
    assert isinstance(row, dict) and row["pred_text"] == expected["pred_text"]
    assert row["words"] == expected["words"] and row["duration"] == expected["duration"]
    assert "audio_filepath" not in row  # bytes have no path
    assert b"transcribed 1 file(s)" in p.stdout and b"real-time factor" in p.stderr

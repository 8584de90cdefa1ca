"""Long-form audio (speechkit/longform.py, vad.py, frontends/audio_blocks.py): blocks read equal the
whole file, the VAD finds utterances laid end to end with silences of known lengths (and low noise)
within ±50 ms, segments stay under max_segment_s, word times are on the file's clock, and the long path
gives the per-utterance path's words when its segments are the utterances; a 10-minute file is read
holding a block at a time."""

from __future__ import annotations

import io
import json
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
import yaml

from speechkit.checkpoint import load_checkpoint
from speechkit.data.errors import DataError
from speechkit.frontends.audio_blocks import StreamResampler, read_blocks
from speechkit.frontends.audio_io import load_audio
from speechkit.longform import LongFormConfig, SegmentStream, config_defaults
from speechkit.vad import FRAME_S, EnergyVAD, frame_log_energy
from tests.conftest import REPO, run_cli, sample_rows
from tests.test_inference_inputs import encode_audio

RATE = 16000  # Hz, samples/grid's rate and the tiny model's
FRAME = round(RATE * FRAME_S)  # samples per VAD frame


def clean_utterances(n: int) -> list[np.ndarray]:
    """The first ``n`` samples/grid train utterances with no noise added (digital silence at both ends),
    each trimmed to its speech: the 10-ms frames from the first to the last within 40 dB of its loudest."""
    out = []
    for row in sample_rows("train"):
        x, _ = sf.read(row["audio_filepath"], dtype="float32")
        if x[0] != 0 or x[-1] != 0:
            continue
        e = frame_log_energy(torch.from_numpy(x), FRAME).numpy()
        on = np.flatnonzero(e > e.max() - 40)
        out.append(x[on[0] * FRAME : (on[-1] + 1) * FRAME])
        if len(out) == n:
            return out
    raise AssertionError("too few clean utterances in samples/grid")


def lay_out(utterances: list[np.ndarray], gaps_s: list[float], noise_db: float | None, seed: int = 0):
    """``gaps_s[0]`` of silence, then each utterance followed by its gap; white noise at ``noise_db`` dB re
    full scale over all of it. Returns the samples and each utterance's ``(start, end)`` sample."""
    parts, truth, pos = [np.zeros(round(gaps_s[0] * RATE), np.float32)], [], round(gaps_s[0] * RATE)
    for u, gap in zip(utterances, gaps_s[1:], strict=True):
        parts += [u, np.zeros(round(gap * RATE), np.float32)]
        truth.append((pos, pos + len(u)))
        pos += len(u) + round(gap * RATE)
    x = np.concatenate(parts)
    if noise_db is not None:
        x += np.random.default_rng(seed).normal(0, 10 ** (noise_db / 20), len(x)).astype(np.float32)
    return x, truth


def segments_of(x: np.ndarray, cfg: LongFormConfig, block: int = 3 * RATE + 7):
    blocks = (torch.from_numpy(x[i : i + block]) for i in range(0, len(x), block))
    stream = SegmentStream(blocks, cfg, RATE)
    return [s for s in stream], stream


@pytest.fixture(scope="module")
def pipe(tiny_run):
    return load_checkpoint(tiny_run / "run/checkpoints/best.pt", device="cpu")


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize("orig", [44100, 8000, 22050])
def test_the_streaming_resampler_gives_torchaudios_samples_for_the_whole_signal(orig):
    x = torch.randn(orig * 2 + 17, generator=torch.Generator().manual_seed(orig))
    r, pos, out = StreamResampler(orig, RATE), 0, []
    for n in (1000, 5, 9999, 333, 1):
        out.append(r(x[pos : pos + n]))
        pos += n
    out.append(r(x[pos:], final=True))
    torch.testing.assert_close(torch.cat(out), AF.resample(x, orig, RATE), atol=1e-6, rtol=0)


def test_blocks_put_together_are_what_load_audio_reads(tmp_path):
    stereo = np.random.default_rng(0).uniform(-0.5, 0.5, (44100 * 2 + 3, 2)).astype(np.float32)
    sf.write(tmp_path / "a.wav", stereo, 44100, subtype="FLOAT")
    flac = sample_rows("test", 1)[0]["audio_filepath"]
    x, _ = sf.read(flac, dtype="float32")
    m4a = encode_audio(tmp_path / "b.m4a", x, RATE)
    for path in (tmp_path / "a.wav", flac, m4a):
        whole = load_audio(path, RATE)
        torch.testing.assert_close(torch.cat(list(read_blocks(path, RATE, 0.3))), whole, atol=1e-6, rtol=0)
    in_memory = torch.cat(list(read_blocks((tmp_path / "a.wav").read_bytes(), RATE, 0.5)))
    torch.testing.assert_close(in_memory, load_audio(tmp_path / "a.wav", RATE), atol=1e-6, rtol=0)


def test_a_truncated_or_empty_file_is_a_data_error_naming_it(tmp_path):
    sf.write(tmp_path / "ok.wav", np.zeros(RATE, np.float32), RATE)
    data = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), RATE)
    for name, problem in (("cut.wav", "truncated WAV"), ("empty.wav", "no audio samples")):
        with pytest.raises(DataError, match=problem) as e:
            list(read_blocks(tmp_path / name, RATE))
        assert e.value.where == str(tmp_path / name)


def test_a_10_minute_file_is_read_holding_one_block_and_one_segment(tmp_path):
    """10 min of utterances and pauses on disk (19 MB as float32): reading and cutting it holds a block,
    the VAD's lookahead and the open segment, never the file."""
    utts = clean_utterances(20)
    path, rng = tmp_path / "ten.flac", np.random.default_rng(1)
    with sf.SoundFile(path, "w", RATE, 1) as f:
        written = 0
        while written < 600 * RATE:
            x = lay_out(utts, list(rng.uniform(0.3, 1.5, len(utts) + 1)), -60, seed=written)[0]
            f.write(x)
            written += len(x)
    cfg = LongFormConfig(block_s=5.0, max_segment_s=8.0)
    tracemalloc.start()
    stream = SegmentStream(read_blocks(path, RATE, cfg.block_s), cfg, RATE)
    n = sum(1 for _ in stream)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert stream.total >= 600 * RATE and n > 150
    bound_s = (
        cfg.block_s + cfg.floor_window_s / 2 + cfg.floor_smooth_s + cfg.max_segment_s
    )  # see SegmentStream
    assert stream.max_held <= bound_s * RATE < stream.total / 30
    assert peak < 4 * cfg.block_s * RATE * 4  # bytes: a few float32 blocks (numpy's, traced), not 38 MB


# ----------------------------------------------------------------------------- voice activity, segments


def test_the_energy_vad_finds_each_utterance_within_50_ms_between_known_silences():
    utts = clean_utterances(20)
    gaps = list(np.random.default_rng(2).uniform(0.35, 1.5, len(utts) + 1))
    x, truth = lay_out(utts, gaps, noise_db=-65)
    found, _ = segments_of(x, LongFormConfig(pad_s=0.0))
    assert len(found) == len(truth)
    errors_ms = np.abs(np.array([(s.start, s.end) for s in found]) - np.array(truth)) / RATE * 1000
    assert errors_ms.max() <= 50, errors_ms.max(axis=1)


def test_silero_finds_each_utterance_and_nothing_else():
    """silero-vad is optional (an extra); its boundaries lag the energy VAD's on this synthetic speech
    (ends ~55 ms late), so only the regions are checked."""
    pytest.importorskip("silero_vad")
    utts = clean_utterances(8)
    x, truth = lay_out(utts, list(np.random.default_rng(3).uniform(0.4, 1.2, len(utts) + 1)), noise_db=-65)
    found, _ = segments_of(x, LongFormConfig(vad="silero", pad_s=0.0))
    assert len(found) == len(truth)
    assert np.abs(np.array([(s.start, s.end) for s in found]) - np.array(truth)).max() < 0.3 * RATE


def test_the_energy_vad_decides_the_same_frames_in_blocks_as_on_the_whole_file():
    x, _ = lay_out(clean_utterances(6), [0.5, 0.3, 2.0, 0.4, 0.6, 1.1, 0.2], noise_db=-50)
    e = frame_log_energy(torch.from_numpy(x), FRAME)
    whole = EnergyVAD(LongFormConfig(floor_window_s=2.0), RATE).push(torch.empty(0), e, final=True)
    vad, pieces = EnergyVAD(LongFormConfig(floor_window_s=2.0), RATE), []
    for a, b in [(0, 7), (7, 150), (150, 151), (151, 900), (900, len(e))]:
        pieces.append(vad.push(torch.empty(0), e[a:b], final=b == len(e)))
    assert torch.equal(torch.cat(pieces), whole) and 0.2 < whole.float().mean() < 0.9


def test_long_speech_is_cut_under_max_segment_s_at_its_quietest_frame():
    """30 s of loud noise (as speech) with a 0.15-s dip every 2.9 s, too short to end a segment: the
    cuts fall in the dips, and every segment is at most max_segment_s long."""
    rng = np.random.default_rng(4)
    x = rng.normal(0, 0.1, 30 * RATE).astype(np.float32)
    dips = [round((1.3 + 2.9 * k) * RATE) for k in range(10)]
    for d in dips:
        x[d : d + round(0.15 * RATE)] *= 0.01
    x = np.concatenate([np.zeros(RATE // 2, np.float32), x, np.zeros(RATE // 2, np.float32)])
    x += rng.normal(0, 1e-4, len(x)).astype(np.float32)
    cfg = LongFormConfig(max_segment_s=5.0, cut_search_s=3.0)
    found, _ = segments_of(x, cfg)
    assert max(s.end - s.start for s in found) <= cfg.max_segment_s * RATE
    assert len(found) >= 6 and found[0].start < RATE // 2 and found[-1].end > 30.5 * RATE
    for a, b in zip(found, found[1:]):  # no gap, no overlap: each cut lies in a dip
        assert a.end == b.start and any(d + RATE // 2 <= a.end < d + RATE // 2 + 0.15 * RATE for d in dips)


# ----------------------------------------------------------------------------- transcription


def test_with_the_utterances_as_segments_the_long_path_gives_the_per_utterance_words(pipe, tmp_path):
    """The tiny model's words are garbage, but the same garbage: the long path on the utterances laid end
    to end (segments = utterances) gives each utterance's words, shifted by where it starts."""
    rows = sample_rows("test", 6)
    utts = [sf.read(r["audio_filepath"], dtype="float32")[0] for r in rows]
    x, truth = lay_out(utts, [0.7, 1.3, 0.4, 2.0, 0.9, 0.5, 0.3], noise_db=None)
    sf.write(tmp_path / "long.flac", x, RATE)
    alone = pipe.transcribe([r["audio_filepath"] for r in rows])
    long = pipe.transcribe_long(tmp_path / "long.flac", segments=[(a / RATE, b / RATE) for a, b in truth])
    assert long.text == " ".join(t.text for t in alone if t.text) and long.text
    shifted = [
        (w.word, round(w.start + a / RATE, 3), round(w.end + a / RATE, 3), w.confidence)
        for t, (a, _) in zip(alone, truth)
        for w in t.words
    ]
    got = [(w.word, round(w.start, 3), round(w.end, 3), w.confidence) for w in long.words]
    assert got == pytest.approx(shifted, abs=1.5e-3)
    row = long.to_dict()
    assert [s["text"] for s in row["segments"]] == [t.text for t in alone]
    assert [(s["start"], s["end"]) for s in row["segments"]] == [
        (round(a / RATE, 3), round(b / RATE, 3)) for a, b in truth
    ]
    assert list(row)[:5] == ["audio_filepath", "duration", "pred_text", "confidence", "score"]


def test_words_found_by_the_vad_path_lie_in_their_segments_on_the_file_clock(pipe):
    x, truth = lay_out(clean_utterances(5), [1.0, 0.8, 1.6, 0.5, 1.2, 0.7], noise_db=-60)
    wav = io.BytesIO()
    sf.write(wav, x, RATE, format="WAV")
    long = pipe.transcribe_long(wav.getvalue())
    vad, _ = segments_of(x, LongFormConfig())  # the same cuts, whatever the blocks
    assert [(s["start"], s["end"]) for s in long.segments] == [(s.start / RATE, s.end / RATE) for s in vad]
    assert len(vad) == len(truth) and long.duration == pytest.approx(len(x) / RATE)
    inside = [any(s["start"] <= w.start <= w.end <= s["end"] for s in long.segments) for w in long.words]
    assert long.words and all(inside)
    assert long.text == " ".join(s["text"] for s in long.segments if s["text"])


def test_the_cli_takes_the_long_path_for_long_files_only_and_writes_segments(tiny_run, tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    x, _ = lay_out(clean_utterances(4), [0.5, 0.8, 1.2, 0.6, 0.5], noise_db=-60)
    sf.write(folder / "long.flac", x, RATE)
    sf.write(folder / "short.flac", clean_utterances(1)[0], RATE)
    out = tmp_path / "preds.jsonl"
    p = run_cli("speechkit-transcribe", f"checkpoint={tiny_run / 'run/checkpoints/best.pt'}", f"input={folder}",
                f"output={out}", "device=cpu", "long_form.min_s=5", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert p.returncode == 0, p.stderr
    long, short = [json.loads(line) for line in out.read_text().splitlines()]
    assert long["audio_filepath"].endswith("long.flac") and len(long["segments"]) == 4
    assert "segments" not in short and short["duration"] < 5
    assert long["pred_text"] == " ".join(s["text"] for s in long["segments"] if s["text"])


def test_conf_transcribe_yaml_holds_the_long_form_defaults_of_the_config_dataclass():
    conf = yaml.safe_load((REPO / "conf" / "transcribe.yaml").read_text())
    assert conf["long_form"] == config_defaults()


def test_settings_that_cannot_work_are_refused_naming_the_key():
    with pytest.raises(ValueError, match="long_form.vad='webrtc'"):
        LongFormConfig.from_node({"vad": "webrtc"})
    with pytest.raises(ValueError, match="unknown key"):
        LongFormConfig.from_node({"max_seconds": 3})
    with pytest.raises(ValueError, match="min_silence_s"):
        LongFormConfig.from_node({"pad_s": 0.3, "min_silence_s": 0.2})

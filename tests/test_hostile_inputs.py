"""Hostile inputs, checked against exact expectations rather than "did not crash".

``tests/test_fuzz_inputs.py`` accepts "a DataError or some usable result" for damaged media and
"text the alphabet can spell" from the decoders. Here: a file cut short anywhere, or random bytes,
must be a DataError naming the file within a time limit (never a partial waveform or image);
manifest rows round-trip exactly, bad lines are named by number; greedy decoding equals a
plain-Python best path, beam scores equal the CTC loss of their text, word times run forwards,
and a frame on which every token is impossible is refused.
"""

from __future__ import annotations

import io
import json
import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speechkit.data.errors import DataError
from speechkit.data.manifest import ManifestError, read_manifest
from speechkit.frontends.audio import load_audio
from speechkit.frontends.image import load_image
from speechkit.frontends.video import load_video
from speechkit.registry import build
from tests.conftest import sample_rows
from tests.frontends.test_video import pattern, write_video

# a loader on a small file takes milliseconds; 10 s even on a busy 2-core machine means a hang
HOSTILE = settings(max_examples=30, deadline=timedelta(seconds=10),
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TOKENS = ["<blank>", " ", "a", "b", "c"]
LOADERS = {
    "wav": lambda p: load_audio(p, 16000), "flac": lambda p: load_audio(p, 16000),
    "png": lambda p: load_image(p), "jpg": lambda p: load_image(p),
    "mp4": lambda p: load_video(p, fps=25.0),
}


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, bytes]:
    """One valid file of each kind (checked to load), as bytes to cut."""
    import soundfile as sf
    from PIL import Image

    tmp = tmp_path_factory.mktemp("originals")
    flac = Path(sample_rows("dev", 1)[0]["audio_filepath"])
    wave, rate = sf.read(flac)
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV")
    (tmp / "a.wav").write_bytes(buf.getvalue())
    (tmp / "a.flac").write_bytes(flac.read_bytes())
    img = Image.fromarray((np.random.default_rng(1).random((32, 160)) * 255).astype(np.uint8))
    img.save(tmp / "a.png")
    img.save(tmp / "a.jpg", quality=90)
    write_video(tmp / "a.mp4", pattern(12, 32, 64))
    for suffix, load in LOADERS.items():
        assert torch.isfinite(load(tmp / f"a.{suffix}")).all()  # the uncut file is usable
    return Originals({s: (tmp / f"a.{s}").read_bytes() for s in LOADERS})


class Originals(dict):
    def __repr__(self) -> str:  # hypothesis prints its arguments: not the files' bytes
        return f"Originals({', '.join(f'{k}: {len(v)} bytes' for k, v in self.items())})"


def assert_data_error_naming(path: Path, suffix: str) -> None:
    with pytest.raises(DataError) as e:
        LOADERS[suffix](path)
    assert str(path) in str(e.value), e.value
    assert e.value.problem and e.value.fix  # says what is wrong and what to do


@HOSTILE
@given(suffix=st.sampled_from(sorted(LOADERS)), fraction=st.floats(0.0, 0.97))
def test_a_media_file_cut_short_anywhere_is_a_data_error_naming_it(originals, tmp_path, suffix, fraction):
    data = originals[suffix]
    path = tmp_path / f"cut.{suffix}"
    path.write_bytes(data[: int(fraction * len(data))])
    assert_data_error_naming(path, suffix)


@HOSTILE
@given(suffix=st.sampled_from(sorted(LOADERS)), blob=st.binary(min_size=0, max_size=4096),
       keep_header=st.integers(0, 64))
def test_random_bytes_behind_a_real_header_are_a_data_error_naming_the_file(originals, tmp_path, suffix, blob,
                                                                           keep_header):
    # the first bytes of a real file get past format sniffing, so the decoder itself meets the garbage
    path = tmp_path / f"junk.{suffix}"
    path.write_bytes(originals[suffix][:keep_header] + blob)
    assert_data_error_naming(path, suffix)


# ----------------------------------------------------------------------------- manifests

good_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(str.strip)
bad_value = st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.booleans(),
                      st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
line = st.one_of(
    st.tuples(st.just("good"), good_text),
    st.tuples(st.just("text"), bad_value),  # transcript of another type
    st.tuples(st.just("path"), bad_value),  # media path of another type
    st.tuples(st.just("missing"), st.sampled_from(["audio_filepath", "text"])),
    st.tuples(st.just("not an object"), st.one_of(bad_value, good_text)),
)


@settings(max_examples=50, deadline=timedelta(seconds=10))
@given(lines=st.lists(line, min_size=1, max_size=12))
def test_manifest_rows_round_trip_exactly_and_every_bad_line_is_named(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("m") / "m.jsonl"
    rows, bad = [], []
    for n, (kind, value) in enumerate(lines, start=1):
        row = {"audio_filepath": f"a/{n}.wav", "text": "x", "duration": 1.5}
        if kind == "good":
            row["text"] = value
        elif kind == "text":
            row["text"] = value
        elif kind == "path":
            row["audio_filepath"] = value
        elif kind == "missing":
            del row[value]
        else:
            row = value
        if kind != "good":
            bad.append(n)
        rows.append(json.dumps(row, ensure_ascii=False))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    if bad:
        with pytest.raises(ManifestError) as e:
            read_manifest(path)
        assert [n for n, _ in e.value.problems] == bad
        assert f"{path}:{bad[0]}:" in str(e.value)
        return
    examples = read_manifest(path)
    assert [(ex.line, ex.text, ex.path, ex.duration) for ex in examples] == [
        (n, v, path.parent / f"a/{n}.wav", 1.5) for n, (_, v) in enumerate(lines, start=1)
    ]


def test_a_one_megabyte_transcript_is_read_whole_and_a_megabyte_of_junk_is_named_by_line(tmp_path):
    text = "bin blue " * (2**20 // 9)
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"audio_filepath": "a.wav", "text": "one"}) + "\n"
                    + json.dumps({"audio_filepath": "b.wav", "text": text}) + "\n")
    assert [ex.text for ex in read_manifest(path)] == ["one", text]
    path.write_text(json.dumps({"audio_filepath": "a.wav", "text": "one"}) + "\n" + "{" * 2**20 + "\n")
    with pytest.raises(ManifestError, match=r"big\.jsonl:2: not valid JSON") as e:
        read_manifest(path)
    assert len(str(e.value)) < 2000  # the message names the line; it does not repeat a megabyte of it


# ----------------------------------------------------------------------------- decoders

def best_path(lp: torch.Tensor, length: int) -> tuple[str, list[int]]:
    """The greedy answer written out in Python: argmax per frame (first on ties), merge, drop blanks."""
    ids = [max(range(lp.shape[1]), key=lambda v: (lp[t, v].item(), -v)) for t in range(length)]
    toks = [i for t, i in enumerate(ids) if i != 0 and (t == 0 or ids[t - 1] != i)]
    return " ".join("".join(TOKENS[i] for i in toks).split()), toks


def ctc_log_prob(lp: torch.Tensor, length: int, toks: list[int]) -> float:
    loss = torch.nn.functional.ctc_loss(lp[:length, None].double(), torch.tensor([toks or [1]]),
                                        torch.tensor([length]), torch.tensor([len(toks)]),
                                        reduction="sum", zero_infinity=False)
    return -float(loss)


frames = st.integers(0, 7)
row_kind = st.sampled_from(["random", "random", "random", "all equal", "one -inf", "blank only"])


@st.composite
def posteriors(draw):
    """(B, T, V) log-probabilities: random rows, all-equal rows, -inf entries; lengths within [0, T]."""
    B, T = draw(st.integers(1, 3)), draw(frames)
    seed = draw(st.integers(0, 2**31 - 1))
    lp = torch.log_softmax(torch.randn(B, T, len(TOKENS), generator=torch.Generator().manual_seed(seed)) * 3, -1)
    for b in range(B):
        for t in range(T):
            kind = draw(row_kind)
            if kind == "all equal":
                lp[b, t] = -math.log(len(TOKENS))
            elif kind == "one -inf":
                lp[b, t, draw(st.integers(0, len(TOKENS) - 1))] = -math.inf
            elif kind == "blank only":
                lp[b, t] = -math.inf
                lp[b, t, 0] = 0.0
    lp = lp.log_softmax(-1)  # an impossible token leaves a row to renormalise: log-probabilities again
    lengths = torch.tensor([draw(st.integers(0, T)) for _ in range(B)])
    return lp, lengths


@settings(max_examples=60, deadline=timedelta(seconds=10))
@given(case=posteriors())
def test_greedy_decoding_equals_the_best_path_written_out_in_python(case):
    lp, lengths = case
    out = build("decoder", "greedy", tokens=TOKENS, frame_shift_s=0.04)(lp, lengths)
    for b, nbest in enumerate(out):
        n = int(lengths[b])
        text, toks = best_path(lp[b], n)
        assert (nbest[0].text, nbest[0].tokens) == (text, toks)
        assert nbest[0].score == pytest.approx(float(lp[b, :n].max(-1).values.sum()) if n else 0.0, abs=1e-4)
        assert all(0 <= s < e <= n * 0.04 + 1e-9 for _, s, e in nbest[0].words)


@settings(max_examples=40, deadline=timedelta(seconds=20))
@given(case=posteriors())
def test_beam_scores_are_the_ctc_log_probability_of_their_text_and_words_run_forwards(case):
    lp, lengths = case
    out = build("decoder", "beam", tokens=TOKENS, beam_size=8, nbest=3, frame_shift_s=0.04)(lp, lengths)
    for b, nbest in enumerate(out):
        n = int(lengths[b])
        assert nbest and [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)
        for h in nbest:
            assert not math.isnan(h.score)
            if n == 0:
                assert (h.text, h.score) == ("", 0.0)
                continue
            assert h.score == pytest.approx(ctc_log_prob(lp[b], n, h.tokens), abs=1e-3)
            assert all(0 <= s < e <= n * 0.04 + 1e-9 for _, s, e in h.words), h


@pytest.mark.parametrize("name", ["greedy", "beam"])
def test_decoders_refuse_nan_impossible_frames_and_lengths_beyond_the_tensor(name):
    decoder = build("decoder", name, tokens=TOKENS)
    lp = torch.log_softmax(torch.randn(2, 6, len(TOKENS)), -1)
    with pytest.raises(ValueError, match=r"lengths\[1\] = 7 is outside \[0, 6\]"):
        decoder(lp, torch.tensor([6, 7]))
    with pytest.raises(ValueError, match="outside"):
        decoder(lp, torch.tensor([-1, 3]))
    nan = lp.clone()
    nan[1, 4, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN.*utterance 1, frame 4"):
        decoder(nan, torch.tensor([6, 6]))
    impossible = lp.clone()
    impossible[0, 2] = -math.inf  # every token impossible at frame 2: no label sequence has a path
    with pytest.raises(ValueError, match="utterance 0, frame 2"):
        decoder(impossible, torch.tensor([6, 6]))
    padded = decoder(impossible, torch.tensor([2, 6]))  # beyond an utterance's length such a frame is padding
    assert padded[0][0].text == best_path(lp[0], 2)[0] or name == "beam"
    assert padded[0][0].score > -math.inf
    zero = decoder(torch.zeros(2, 0, len(TOKENS)), torch.tensor([0, 0]))
    assert [(h[0].text, h[0].score, h[0].words) for h in zero] == [("", 0.0, [])] * 2

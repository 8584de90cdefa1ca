"""Hostile and odd inputs, property-based: damaged media files, odd manifests, broken decoder inputs.

Every case must end in a clear error (a DataError naming the file or manifest line, a ValueError
saying what is wrong) or a correct result — never another exception, a crash or a hang.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speechkit.data.errors import DataError
from speechkit.data.manifest import read_manifest
from speechkit.frontends.audio import load_audio
from speechkit.frontends.image import load_image
from speechkit.frontends.video import load_video
from speechkit.registry import build
from tests.conftest import sample_rows
from tests.frontends.test_video import pattern, write_video

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TOKENS = ["<blank>", " ", "a", "b", "c"]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, bytes]:
    """One valid file of each kind, as bytes to damage."""
    from PIL import Image

    tmp = tmp_path_factory.mktemp("media")
    flac = Path(sample_rows("train", 1)[0]["audio_filepath"])
    wav = tmp / "a.wav"
    import soundfile as sf

    x, sr = sf.read(flac)
    sf.write(wav, x, sr)
    img = Image.fromarray((np.random.default_rng(0).random((32, 120)) * 255).astype(np.uint8))
    img.save(tmp / "a.png")
    img.save(tmp / "a.jpg")
    write_video(tmp / "a.mp4", pattern(12, 32, 64))
    return Media({s: (tmp / f"a.{s}").read_bytes() if s != "flac" else flac.read_bytes()
                  for s in ("flac", "wav", "png", "jpg", "mp4")})


class Media(dict):
    def __repr__(self) -> str:  # hypothesis prints its arguments: not the files' bytes
        return f"Media({', '.join(f'{k}: {len(v)} bytes' for k, v in self.items())})"


def damaged(data: bytes, draw) -> bytes:
    """Truncated, or with random bytes overwritten, or both."""
    cut = draw(st.integers(0, len(data)))
    out = bytearray(data[:cut] if draw(st.booleans()) else data)
    for _ in range(draw(st.integers(0, 8))):
        if out:
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    return bytes(out)


def check(load, path: Path) -> None:
    try:
        x = load(path)
    except DataError as e:
        assert str(path) in str(e)  # names the file
        return
    assert torch.isfinite(x).all() and x.numel() > 0  # or a usable result


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["flac", "wav"]))
def test_damaged_audio_is_a_data_error_or_a_usable_waveform(media, tmp_path, data, kind):
    path = tmp_path / f"x.{kind}"
    path.write_bytes(damaged(media[kind], data.draw))
    check(lambda p: load_audio(p, 16000), path)


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["png", "jpg"]))
def test_damaged_images_are_a_data_error_or_a_usable_image(media, tmp_path, data, kind):
    path = tmp_path / f"x.{kind}"
    path.write_bytes(damaged(media[kind], data.draw))
    check(load_image, path)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_video_is_a_data_error_or_a_usable_clip(media, tmp_path, data):
    path = tmp_path / "x.mp4"
    path.write_bytes(damaged(media["mp4"], data.draw))
    check(lambda p: load_video(p, fps=25, size=(32, 64)), path)


@FUZZ
@given(blob=st.binary(max_size=2000), suffix=st.sampled_from([".wav", ".flac", ".png", ".jpg", ".mp4", ".npy"]))
def test_random_bytes_under_any_name_are_a_data_error(tmp_path, blob, suffix):
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(blob)
    loader = {".wav": lambda p: load_audio(p, 16000), ".flac": lambda p: load_audio(p, 16000),
              ".png": load_image, ".jpg": load_image}.get(suffix, lambda p: load_video(p, fps=25, default_fps=25))
    check(loader, path)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(lines=st.lists(
    st.one_of(
        st.text(max_size=60),  # not JSON, odd Unicode
        json_values.map(json.dumps),  # JSON of any type
        st.fixed_dictionaries({"audio_filepath": json_values, "text": json_values, "duration": json_values}).map(json.dumps),
        st.fixed_dictionaries({"audio_filepath": st.text(min_size=1, max_size=30), "text": st.text(max_size=30)}).map(
            json.dumps),
    ),
    max_size=8,
))
def test_odd_manifests_give_every_bad_line_or_the_examples(tmp_path, lines):
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(ln.replace("\n", " ").replace("\r", " ") for ln in lines) + "\n", encoding="utf-8")
    try:
        examples = read_manifest(path)
    except DataError as e:
        assert str(path) in str(e)
        for line, _ in getattr(e, "problems", []):
            assert 1 <= line <= len(lines)
        return
    assert examples and all(isinstance(ex.text, str) and ex.text.strip() for ex in examples)


def test_a_megabyte_line_and_a_non_utf8_manifest(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"audio_filepath": "a.wav", "text": "ab " * 350_000}) + "\n")
    assert len(read_manifest(path)[0].text) > 1_000_000
    path.write_bytes(b'{"audio_filepath": "a.wav", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        read_manifest(path)


log_prob_batches = st.tuples(st.integers(0, 3), st.integers(0, 6)).flatmap(
    lambda bt: st.tuples(
        st.just(bt),
        st.lists(st.sampled_from([0.0, -1.0, -5.0, -math.inf, math.nan, 3.0]), min_size=bt[0] * bt[1] * len(TOKENS),
                 max_size=bt[0] * bt[1] * len(TOKENS)),
        st.lists(st.integers(-1, bt[1] + 2), min_size=bt[0], max_size=bt[0]),
    )
)


@settings(max_examples=60, deadline=None)
@given(case=log_prob_batches, name=st.sampled_from(["greedy", "beam"]))
def test_decoders_refuse_broken_inputs_or_decode_them(case, name):
    (B, T), values, lengths = case
    lp = torch.tensor(values, dtype=torch.float32).view(B, T, len(TOKENS))
    lengths = torch.tensor(lengths, dtype=torch.long)
    decoder = build("decoder", name, tokens=TOKENS, **({"beam_size": 4} if name == "beam" else {}))
    broken = bool(torch.isnan(lp).any()) or bool(((lengths < 0) | (lengths > T)).any())
    if not broken and B and T:  # a frame inside its utterance on which every token is impossible
        valid = torch.arange(T)[None, :] < lengths[:, None]
        broken = bool(((lp == -math.inf).all(-1) & valid).any())
    if broken:
        with pytest.raises(ValueError, match="NaN|outside|-inf for every token"):
            decoder(lp, lengths)
        return
    out = decoder(lp, lengths)
    assert len(out) == B and all(len(nbest) >= 1 for nbest in out)
    for nbest in out:
        assert set(nbest[0].text) <= set("abc ")


def test_decoders_name_a_vocabulary_mismatch_and_bad_shapes():
    for name in ("greedy", "beam"):
        d = build("decoder", name, tokens=TOKENS)
        with pytest.raises(ValueError, match="tokens per frame"):
            d(torch.zeros(1, 3, 7), torch.tensor([3]))
        with pytest.raises(ValueError, match="batch, frames, tokens"):
            d(torch.zeros(3, 5), torch.tensor([3]))
        with pytest.raises(ValueError, match="integers"):
            d(torch.zeros(1, 3, 5), torch.tensor([3.0]))


def test_all_equal_rows_decode_to_something_the_alphabet_can_spell():
    lp = torch.full((2, 5, len(TOKENS)), -math.log(len(TOKENS)))
    for name in ("greedy", "beam"):
        out = build("decoder", name, tokens=TOKENS)(lp, torch.tensor([5, 0]))
        assert out[1][0].text == "" and set(out[0][0].text) <= set("abc ")


import pytest
import soundfile as sf
import torch

from speechkit import build
from speechkit.data import DataError, ManifestDataset, collate, read_manifest
from tests.conftest import write_manifest


def _ds(tmp_path, rows, on_error="raise"):
    m = write_manifest(tmp_path / "m.jsonl", rows)
    fe = build("frontend", "fbank")
    tok = build("tokenizer", "char").fit(["abc def"])
    return ManifestDataset(read_manifest(m), fe.load, tok, on_error)


def _wav(path, n):
    sf.write(path, 0.1 * torch.randn(n).numpy(), 16000)
    return str(path)


def test_collate_pads_time_first_and_keeps_exact_lengths(tmp_path):
    rows = [{"audio_filepath": _wav(tmp_path / f"{i}.wav", n), "text": t} for i, (n, t) in enumerate([(800, "abc"), (1600, "de")])]
    batch = collate([_ds(tmp_path, rows)[i] for i in range(2)])
    assert batch.x.shape == (2, 1600) and batch.lengths.tolist() == [800, 1600]
    assert batch.target_lengths.tolist() == [3, 2] and batch.targets.tolist() == [2, 3, 4, 5, 6]
    assert batch.x[0, 800:].abs().sum() == 0


def test_missing_audio_names_the_manifest_line(tmp_path):
    ds = _ds(tmp_path, [{"audio_filepath": str(tmp_path / "gone.wav"), "text": "abc"}])
    with pytest.raises(DataError, match=r"m.jsonl:1: .*gone.wav"):
        ds[0]


def test_unknown_characters_name_the_manifest_line(tmp_path):
    ds = _ds(tmp_path, [{"audio_filepath": _wav(tmp_path / "a.wav", 800), "text": "xyz"}])
    with pytest.raises(DataError, match=r"m.jsonl:1: characters 'x', 'y', 'z'"):
        ds[0]


def test_skip_mode_reports_bad_examples_in_the_batch(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00garbage")
    rows = [{"audio_filepath": _wav(tmp_path / "a.wav", 800), "text": "abc"},
            {"audio_filepath": str(tmp_path / "bad.wav"), "text": "abc"}]
    ds = _ds(tmp_path, rows, on_error="skip")
    batch = collate([ds[0], ds[1]])
    assert len(batch) == 1 and batch.indices == [0]
    assert [s.where for s in batch.skipped] == [f"{tmp_path / 'm.jsonl'}:2"]

"""lhotse recordings and supervisions → speechkit manifest lines: only whole, single-channel,
single-file utterances become lines; everything else is returned and listed with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechkit.corpora.lhotse_io import read_skipped, skipped_path, write_lm_text, write_manifest_from_lhotse
from speechkit.data.errors import DataError

lhotse = pytest.importorskip("lhotse")

RATE = 16000  # Hz


def recording(path: Path, rid: str, seconds: float = 1.0, channels=(0,), sources: int = 1):
    n = int(seconds * RATE)
    src = [lhotse.AudioSource(type="file", channels=list(channels), source=str(path)) for _ in range(sources)]
    return lhotse.Recording(id=rid, sources=src, sampling_rate=RATE, num_samples=n, duration=n / RATE)


def sup(sid: str, rid: str, start: float = 0.0, duration: float = 1.0, text: str = "a cat", **kw):
    return lhotse.SupervisionSegment(
        id=sid, recording_id=rid, start=start, duration=duration, text=text, **kw
    )


@pytest.fixture
def wav(tmp_path) -> Path:
    path = tmp_path / "audio" / "one.wav"
    path.parent.mkdir()
    sf.write(path, np.zeros(RATE, np.float32), RATE)
    return path


def test_only_whole_file_utterances_become_lines_and_every_other_one_is_listed_with_its_reason(tmp_path, wav):
    recs = [
        recording(wav, "whole"),
        recording(wav, "late"),
        recording(wav, "short"),
        recording(wav, "nearly"),
        recording(wav, "stereo", channels=(0, 1)),
        recording(wav, "split", sources=2),
        recording(tmp_path / "gone.wav", "gone"),
        recording(wav, "untranscribed"),
        recording(wav, "silent"),
    ]
    sups = [
        sup("u1", "whole", speaker="s1", language="English"),
        sup("u2", "late", start=0.5, duration=0.5),
        sup("u3", "short", duration=0.9),
        sup("u4", "nearly", duration=0.995),  # 5 ms short: within the tolerance
        sup("u5", "stereo"),
        sup("u6", "split"),
        sup("u7", "gone"),
        sup("u8", "nowhere"),
        sup("u9", "silent", text="  "),
    ]
    manifest = tmp_path / "train.jsonl"
    n, skipped = write_manifest_from_lhotse(
        recs,
        sups,
        manifest,
        extra=lambda s, r: {"rate": r.sampling_rate},
        also_skipped=[("u0", "found first")],
    )
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert n == 2 and rows == [
        {"audio_filepath": "audio/one.wav", "duration": 1.0, "text": "a cat", "id": "u1", "speaker": "s1"}
        | {"language": "English", "rate": RATE},
        {"audio_filepath": "audio/one.wav", "duration": 1.0, "text": "a cat", "id": "u4", "rate": RATE},
    ]
    reasons = dict(skipped)
    assert list(reasons) == ["u0", "u2", "u3", "u5", "u6", "u7", "u8", "u9", "untranscribed"]
    assert "covers 0.500–1.000 s of a 1.000 s recording" in reasons["u2"]
    assert "covers 0.000–0.900 s" in reasons["u3"]
    assert "2 channels" in reasons["u5"] and "2 sources" in reasons["u6"]
    assert f"audio file not found: {tmp_path / 'gone.wav'}" == reasons["u7"]
    assert "no audio for this transcript" in reasons["u8"] and reasons["u9"] == "empty transcript"
    assert reasons["untranscribed"] == "audio without transcript"
    assert read_skipped(manifest) == skipped  # the listing beside the manifest


def test_paths_outside_the_manifest_folder_are_absolute_and_video_keeps_its_audio_channels(tmp_path, wav):
    manifest = tmp_path / "elsewhere" / "dev.jsonl"
    n, skipped = write_manifest_from_lhotse(
        [recording(wav, "r", channels=(0, 1))], [sup("u", "r")], manifest, modality="video"
    )
    (row,) = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert (n, skipped, row["video_filepath"]) == (1, [], wav.as_posix())
    assert not skipped_path(manifest).exists()


def test_a_duplicated_supervision_id_is_an_error_naming_it(tmp_path, wav):
    with pytest.raises(DataError, match="1 utterance id\\(s\\) occur more than once in the corpus: u"):
        write_manifest_from_lhotse(
            [recording(wav, "r")], [sup("u", "r"), sup("u", "r")], tmp_path / "x.jsonl"
        )
    assert not (tmp_path / "x.jsonl").exists()


def test_a_rerun_without_skips_removes_the_old_listing(tmp_path, wav):
    manifest = tmp_path / "dev.jsonl"
    write_manifest_from_lhotse([recording(wav, "r")], [sup("u", "r", duration=0.5)], manifest)
    assert len(read_skipped(manifest)) == 1
    write_manifest_from_lhotse([recording(wav, "r")], [sup("u", "r")], manifest)
    assert read_skipped(manifest) == [] and not skipped_path(manifest).exists()


def test_lm_text_is_one_transcript_a_line_and_words_the_sorted_vocabulary(tmp_path):
    lm, words = write_lm_text([{"text": "the  cat\tsat"}, {"text": "a cat"}], tmp_path)
    assert lm.read_text() == "the cat sat\na cat\n"
    assert words.read_text() == "a\ncat\nsat\nthe\n"

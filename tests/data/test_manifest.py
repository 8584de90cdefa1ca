import pytest

from speechkit.data.errors import DataError
from speechkit.data.manifest import ManifestError, read_manifest


def test_relative_paths_are_resolved_against_the_manifests_folder(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"audio_filepath": "a/b.wav", "duration": 1.5, "text": "hi", "speaker": "s1"}\n')
    (ex,) = read_manifest(tmp_path / "m.jsonl")
    assert ex.path == tmp_path / "a" / "b.wav" and ex.duration == 1.5 and ex.line == 1
    assert dict(ex.fields) == {"speaker": "s1"}


def test_length_is_the_duration_or_an_images_width_over_height(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        '{"audio_filepath": "a.wav", "duration": 1.5, "text": "hi", "width": 9, "height": 3}\n'
    )
    (tmp_path / "i.jsonl").write_text(
        '{"image_filepath": "1.png", "text": "hi", "width": 320, "height": 32}\n'
        '{"image_filepath": "2.png", "text": "hi"}\n'
        '{"image_filepath": "3.png", "text": "hi", "width": 320, "height": 0}\n'
        '{"image_filepath": "4.png", "text": "hi", "width": "320", "height": 32}\n'
    )
    assert [ex.length for ex in read_manifest(tmp_path / "a.jsonl")] == [1.5]
    assert [ex.length for ex in read_manifest(tmp_path / "i.jsonl", "image")] == [10.0, None, None, None]


def test_every_bad_line_is_reported_with_its_line_number(tmp_path):
    m = tmp_path / "bad.jsonl"
    m.write_text(
        '{"audio_filepath": "a.wav", "text": "ok"}\n'
        "not json\n"
        '{"audio_filepath": "b.wav", "text": "  "}\n'
        '["a list"]\n'
        '{"image_filepath": "c.png", "text": "x"}\n'
        '{"audio_filepath": "d.wav", "text": 3}\n'
    )
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    lines = [line for line, _ in e.value.problems]
    assert lines == [2, 3, 4, 5, 6]
    msg = str(e.value)
    assert f"{m}:2: not valid JSON" in msg and "empty transcript" in msg and "another modality" in msg


def test_missing_manifest_says_how_to_make_one(tmp_path):
    with pytest.raises(DataError, match="manifest not found.*prepare.py"):
        read_manifest(tmp_path / "nope.jsonl")


def test_transcripts_are_optional_for_transcription(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"audio_filepath": "a.wav"}\n')
    assert read_manifest(tmp_path / "m.jsonl", require_text=False)[0].text is None

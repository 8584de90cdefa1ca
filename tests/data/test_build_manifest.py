"""speechkit-manifest: a folder, a CSV/TSV or a Kaldi data folder of real media files becomes a
manifest line per usable utterance; every other one is a counted, listed skip or one error line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from speechkit.data import media_info
from speechkit.data.build_manifest import main, split_rows
from speechkit.data.errors import DataError
from tests.conftest import REPO, error_line


def _audio(path: Path, seconds: float = 0.25, rate: int = 16000, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * rate))
    wave = 0.1 * np.sin(np.arange(n) * 0.05)[:, None].repeat(channels, axis=1)
    sf.write(path, wave, rate)
    return path


def _text(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _m4a(path: Path, seconds: float = 0.5, rate: int = 16000) -> Path:
    """An AAC-in-MP4 file (what phones record), which libsndfile does not read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="ipod") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        samples = (0.1 * np.sin(np.arange(int(seconds * rate)) * 0.05)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def _mp4(path: Path, frames: int = 5, fps: int = 25) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for i in range(frames):
            image = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 40 * i, np.uint8), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _build(capsys, *args: str) -> str:
    """Run the command in-process; its stdout (it must succeed)."""
    main([str(a) for a in args])
    return capsys.readouterr().out


def _refused(capsys, *args: str) -> str:
    """Run the command in-process expecting a user's mistake: exit 2, the usage line, one error line."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: speechkit-manifest")
    return error_line(err)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _skipped(out: Path) -> dict[str, str]:
    """``<out stem>.skipped.tsv`` as {file name or listing:line → reason}; {} when there is none."""
    listing = out.with_name(out.name.replace(".jsonl", ".skipped.tsv"))
    lines = listing.read_text(encoding="utf-8").splitlines() if listing.exists() else []
    return {Path(w).name: r for w, r in (line.split("\t") for line in lines)}


def test_a_folder_of_wav_and_flac_with_txt_and_lab_transcripts_gives_one_line_each(tmp_path, capsys):
    _audio(tmp_path / "rec" / "alice" / "u1.wav", 1.5, 16000)
    _text(tmp_path / "rec" / "alice" / "u1.txt", "\ufeff hello\n  world \n")  # BOM, newlines, runs of spaces
    _audio(tmp_path / "rec" / "bob" / "u2.flac", 0.5, 8000, channels=2)
    _text(tmp_path / "rec" / "bob" / "u2.lab", "good bye")
    _audio(tmp_path / "rec" / "u3.wav", 0.25)
    _text(tmp_path / "rec" / "u3.txt", "top level")
    _text(tmp_path / "rec" / "u3.lab", "the .txt wins")
    _audio(tmp_path / "rec" / ".hidden" / "x.wav")  # hidden folders (.git, macOS ._ files) are not looked in
    out = tmp_path / "all.jsonl"
    stdout = _build(capsys, f"dir={tmp_path / 'rec'}", f"out={out}")
    assert _lines(out) == [
        {"audio_filepath": "rec/alice/u1.wav", "duration": 1.5, "text": "hello world", "id": "alice/u1",
         "sample_rate": 16000, "channels": 1, "speaker": "alice"},
        {"audio_filepath": "rec/bob/u2.flac", "duration": 0.5, "text": "good bye", "id": "bob/u2",
         "sample_rate": 8000, "channels": 2, "speaker": "bob"},
        {"audio_filepath": "rec/u3.wav", "duration": 0.25, "text": "top level", "id": "u3",
         "sample_rate": 16000, "channels": 1},
    ]  # fmt: skip
    assert _skipped(out) == {}
    assert stdout.splitlines()[-1] == "3 utterances, 0.0 minutes, 2 speakers, 0 skipped"


def test_every_unusable_file_is_skipped_with_its_reason_counted_shown_and_listed(tmp_path, capsys):
    rec = tmp_path / "rec"
    _text(rec / "good.txt", "fine")
    _audio(rec / "good.wav")
    _audio(rec / "untranscribed.wav")
    _text(rec / "orphan.txt", "no audio")
    _text(rec / "empty.wav", b"")
    _text(rec / "empty.txt", "x")
    sf.write(rec / "silent.wav", np.zeros(0), 16000)  # a valid header, no samples
    _text(rec / "silent.txt", "x")
    whole = _audio(tmp_path / "whole.wav").read_bytes()
    _text(rec / "cut.wav", whole[: len(whole) // 2])  # a copy that stopped half-way
    _text(rec / "cut.txt", "x")
    _text(rec / "noise.wav", b"RIFF but not really a wav file" * 4)
    _text(rec / "noise.txt", "x")
    _audio(rec / "twice.flac")
    _audio(rec / "twice.wav")  # the same id as twice.flac: both would read twice.txt
    _text(rec / "twice.txt", "x")
    _audio(rec / "blank.wav")
    _text(rec / "blank.txt", " \n ")
    _audio(rec / "latin1.wav")
    _text(rec / "latin1.txt", "caf\xe9".encode("latin-1"))
    (rec / "dangling.wav").symlink_to(tmp_path / "gone.wav")
    _text(rec / "dangling.txt", "x")
    out = tmp_path / "m.jsonl"
    stdout = _build(capsys, f"dir={rec}", f"out={out}", "show=3")

    assert [r["id"] for r in _lines(out)] == ["good", "twice"]
    assert _lines(out)[1]["audio_filepath"] == "rec/twice.flac"  # the first of the duplicates is kept
    skipped = _skipped(out)
    expected = {
        "untranscribed.wav": "missing transcript: no untranscribed.txt or untranscribed.lab beside it",
        "orphan.txt": "transcript without media: no audio file orphan.* beside it",
        "empty.wav": "empty file (0 bytes)",
        "silent.wav": "zero duration: the file holds no samples or frames",
        "cut.wav": "truncated WAV: its header declares 8000 bytes of audio, 3978 are present",
        "twice.wav": f"duplicate id 'twice': {rec / 'twice.flac'} has it too (the first is kept)",
        "blank.wav": "empty transcript; CTC needs at least one label",
    }
    assert {k: skipped[k] for k in expected} == expected
    assert skipped["noise.wav"].startswith("unreadable audio (Error opening")
    assert skipped["latin1.txt"].startswith("transcript is not readable UTF-8 text (UnicodeDecodeError")
    assert skipped["dangling.wav"].startswith("is a dangling symlink: it points to")
    assert len(skipped) == 10
    shown = stdout.splitlines()
    assert shown[0] == f"skipped 10 (all listed in {tmp_path / 'm.skipped.tsv'}):"
    assert len([s for s in shown if s.startswith("  ") and ": " in s]) == 3 and "  … and 7 more" in shown
    assert shown[-1] == "2 utterances, 0.0 minutes, 10 skipped"


def test_strict_turns_any_skip_into_one_error_line_and_writes_no_manifest(tmp_path, capsys):
    _audio(tmp_path / "rec" / "a.wav")
    _text(tmp_path / "rec" / "a.txt", "a")
    _audio(tmp_path / "rec" / "b.wav")
    out = tmp_path / "m.jsonl"
    line = _refused(capsys, f"dir={tmp_path / 'rec'}", f"out={out}", "strict=true")
    assert line == (
        f"error: {out}: strict=true and 1 skipped (first: {tmp_path / 'rec' / 'b.wav'}: missing transcript: "
        f"no b.txt or b.lab beside it); nothing written — see {tmp_path / 'm.skipped.tsv'} for all"
    )
    assert not out.exists() and list(_skipped(out)) == ["b.wav"]


def test_a_folder_where_nothing_is_usable_is_one_error_line_naming_the_first_reason(tmp_path, capsys):
    _audio(tmp_path / "rec" / "a.wav")
    line = _refused(capsys, f"dir={tmp_path / 'rec'}", f"out={tmp_path / 'm.jsonl'}")
    assert "no usable audio files: 1 skipped (first:" in line and "missing transcript" in line
    assert not (tmp_path / "m.jsonl").exists()


def test_a_folder_of_images_named_as_audio_says_what_it_holds_and_which_modality(tmp_path, capsys):
    for name in ("a", "b"):
        Image.new("L", (40, 10), 255).save(tmp_path / f"{name}.png")
        _text(tmp_path / f"{name}.txt", name)
    line = _refused(capsys, f"dir={tmp_path}", f"out={tmp_path / 'm.jsonl'}")
    assert "holds no audio files (.wav" in line and "it holds 2 .png — give modality=image" in line


def test_images_get_their_size_and_a_damaged_png_is_skipped(tmp_path, capsys):
    lines = tmp_path / "lines"
    lines.mkdir()
    Image.new("L", (120, 30), 255).save(lines / "l1.png")
    _text(lines / "l1.txt", "first line")
    Image.new("RGB", (64, 32), "white").save(lines / "l2.jpg")
    _text(lines / "l2.txt", "second")
    Image.new("L", (200, 40), 0).save(lines / "cut.png")
    (lines / "cut.png").write_bytes((lines / "cut.png").read_bytes()[:-30])  # its last chunks lost
    _text(lines / "cut.txt", "x")
    out = tmp_path / "ocr.jsonl"
    stdout = _build(capsys, f"dir={lines}", f"out={out}", "modality=image")
    assert _lines(out) == [
        {"image_filepath": "lines/l1.png", "text": "first line", "id": "l1", "width": 120, "height": 30},
        {"image_filepath": "lines/l2.jpg", "text": "second", "id": "l2", "width": 64, "height": 32},
    ]
    assert _skipped(out)["cut.png"].startswith("unreadable image")
    assert stdout.splitlines()[-1] == "2 lines, 1 skipped"


def test_videos_get_frames_and_frame_rate_from_pyav(tmp_path, capsys):
    _mp4(tmp_path / "clips" / "s1" / "c1.mp4", frames=5, fps=25)
    _text(tmp_path / "clips" / "s1" / "c1.txt", "bin blue")
    _text(tmp_path / "clips" / "s1" / "bad.mp4", b"\x00\x00\x00\x18ftypisom" + b"\x00" * 40)
    _text(tmp_path / "clips" / "s1" / "bad.txt", "x")
    out = tmp_path / "v.jsonl"
    _build(capsys, f"dir={tmp_path / 'clips'}", f"out={out}", "modality=video")
    assert _lines(out) == [
        {"video_filepath": "clips/s1/c1.mp4", "duration": 0.2, "text": "bin blue", "id": "s1/c1",
         "num_frames": 5, "fps": 25.0, "width": 32, "height": 24, "speaker": "s1"},
    ]  # fmt: skip
    assert list(_skipped(out)) == ["bad.mp4"]


def test_an_m4a_is_read_with_pyav_and_listed_as_long_as_speechkits_loader_finds_it(
    tmp_path, capsys, monkeypatch
):
    from speechkit.frontends.audio_io import load_audio

    monkeypatch.setattr(media_info, "_loader_reads", {})  # what this process learnt of other .m4a files
    _m4a(tmp_path / "rec" / "phone.m4a", seconds=0.5)
    _text(tmp_path / "rec" / "phone.txt", "from a phone")
    out = tmp_path / "m.jsonl"
    try:
        samples = len(load_audio(tmp_path / "rec" / "phone.m4a", 16000))
    except DataError:
        samples = None  # a loader without FFmpeg: the next test's case
    if samples is not None:
        _build(capsys, f"dir={tmp_path / 'rec'}", f"out={out}")
        (row,) = _lines(out)
        assert (row["sample_rate"], row["channels"]) == (16000, 1)
        assert row["duration"] == pytest.approx(samples / 16000, abs=0.05)  # AAC pads a few ms


def test_audio_speechkits_loader_does_not_read_is_a_listed_skip_saying_how_to_convert_it(
    tmp_path, capsys, monkeypatch
):
    import speechkit.frontends.audio_io as audio_io

    def refuse(path, sample_rate):
        raise DataError(path, "cannot read audio (Format not recognised)")

    monkeypatch.setattr(media_info, "_loader_reads", {})
    monkeypatch.setattr(audio_io, "load_audio", refuse)
    _m4a(tmp_path / "rec" / "phone.m4a")
    _text(tmp_path / "rec" / "phone.txt", "from a phone")
    _audio(tmp_path / "rec" / "desk.wav")
    _text(tmp_path / "rec" / "desk.txt", "from a desk")
    out = tmp_path / "m.jsonl"
    _build(capsys, f"dir={tmp_path / 'rec'}", f"out={out}")
    assert [r["id"] for r in _lines(out)] == ["desk"]
    assert _skipped(out) == {
        "phone.m4a": "speechkit's audio loader does not read .m4a files (phone.m4a was tried); "
        "convert them (e.g. ffmpeg -i x.m4a x.flac) and list the converted files"
    }


def test_a_csv_keeps_its_other_columns_and_a_tsv_keeps_quotes_in_sentences(tmp_path, capsys):
    _audio(tmp_path / "wavs" / "a.wav", 0.5)
    _audio(tmp_path / "wavs" / "b.wav", 0.25)
    (tmp_path / "list.csv").write_text(
        "File,Transcript,speaker_id,age\n"
        "wavs/a.wav,hello  there,s1,31\n"
        "wavs/b.wav,bye,s2,40\n"
        "wavs/a.wav,again,s1,31\n"  # the same file twice
        ",no file,s3,1\n"
        "wavs/c.wav,missing file,s3,1\n"
        "wavs/b.wav,too,many,cells,here\n"
    )
    out = tmp_path / "csv.jsonl"
    _build(capsys, f"csv={tmp_path / 'list.csv'}", f"out={out}")
    assert _lines(out) == [
        {"audio_filepath": "wavs/a.wav", "duration": 0.5, "text": "hello there", "id": "wavs/a.wav",
         "sample_rate": 16000, "channels": 1, "speaker_id": "s1", "age": "31", "speaker": "s1"},
        {"audio_filepath": "wavs/b.wav", "duration": 0.25, "text": "bye", "id": "wavs/b.wav",
         "sample_rate": 16000, "channels": 1, "speaker_id": "s2", "age": "40", "speaker": "s2"},
    ]  # fmt: skip
    csv_path = tmp_path / "list.csv"
    assert _skipped(out) == {
        "list.csv:4": f"duplicate id 'wavs/a.wav': {csv_path}:2 has it too (the first is kept)",
        "list.csv:5": "empty 'File' cell",
        "list.csv:6": f"{tmp_path / 'wavs' / 'c.wav'}: audio file not found",
        "list.csv:7": "5 cells, the header has 4 (a stray delimiter or quote?)",
    }

    # Common Voice's layout: a TSV beside clips/, sentences with quotes in them, read unquoted
    _audio(tmp_path / "cv" / "clips" / "x.flac")
    (tmp_path / "cv" / "train.tsv").write_text(
        'client_id\tpath\tsentence\nabc\tx.flac\tHe said "hi", twice.\n'
    )
    out = tmp_path / "cv.jsonl"
    _build(
        capsys, f"csv={tmp_path / 'cv' / 'train.tsv'}", f"media_dir={tmp_path / 'cv' / 'clips'}", f"out={out}"
    )
    (row,) = _lines(out)
    assert row["text"] == 'He said "hi", twice.' and row["speaker"] == "abc"
    assert row["audio_filepath"] == "cv/clips/x.flac"


def test_a_csv_column_that_is_not_there_is_one_error_line_listing_the_columns(tmp_path, capsys):
    (tmp_path / "l.csv").write_text("path,words\na.wav,hi\n")
    line = _refused(capsys, f"csv={tmp_path / 'l.csv'}", f"out={tmp_path / 'o.jsonl'}")
    assert (
        line == f"error: {tmp_path / 'l.csv'}: no text column among path, words — name it with text_column="
    )
    line = _refused(
        capsys, f"csv={tmp_path / 'l.csv'}", "text_column=sentence", f"out={tmp_path / 'o.jsonl'}"
    )
    assert "has no column 'sentence'; its columns: path, words" in line


def test_a_kaldi_folder_reads_files_refuses_pipes_and_takes_speakers_from_utt2spk(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # Kaldi's relative paths are read from the working directory (the recipe's)
    _audio(tmp_path / "audio" / "u1.wav", 0.5)
    _audio(tmp_path / "audio" / "u2.flac", 0.25)
    data = tmp_path / "data" / "train"
    _text(data / "wav.scp", f"u1 {tmp_path / 'audio' / 'u1.wav'}\nu2 audio/u2.flac\n"
                            "u3 sox audio/u3.sph -t wav - |\nu4 raw.ark:1234\nu5 audio/u1.wav\nu1 audio/u2.flac\n"
                            "u6\n")  # fmt: skip
    _text(data / "text", "u1 HELLO  WORLD\nu2 GOOD BYE\nu3 PIPED\nu4 ARK\nu9 NO AUDIO\n")
    _text(data / "utt2spk", "u1 spk1\nu2 spk2\n")
    out = tmp_path / "k.jsonl"
    _build(capsys, f"kaldi={data}", f"out={out}")
    assert _lines(out) == [
        {"audio_filepath": "audio/u1.wav", "duration": 0.5, "text": "HELLO WORLD", "id": "u1",
         "sample_rate": 16000, "channels": 1, "speaker": "spk1"},
        {"audio_filepath": "audio/u2.flac", "duration": 0.25, "text": "GOOD BYE", "id": "u2",
         "sample_rate": 16000, "channels": 1, "speaker": "spk2"},
    ]  # fmt: skip
    scp = data / "wav.scp"
    assert _skipped(out) == {
        "wav.scp:7": "'u6' has nothing after its id",
        "wav.scp:3": "'u3' is a command, not a file (sox audio/u3.sph -t wav - |); run it to write a file and "
        "list that",
        "wav.scp:4": "'u4' is an offset into an archive (raw.ark:1234); extract it to a file and list that",
        "wav.scp:5": f"missing transcript: 'u5' is not in {data / 'text'}",
        "text:5": "transcript without media: 'u9' is not in wav.scp",
        "wav.scp:6": f"duplicate id 'u1': {scp}:1 has it too (the first is kept)",
    }

    _text(data / "segments", "u1 rec1 0.0 1.0\n")
    line = _refused(capsys, f"kaldi={data}", f"out={out}")
    assert "segments: utterances are segments of longer recordings" in line


def _speaker_folders(root: Path, speakers: int, each: int) -> None:
    for s in range(speakers):
        for u in range(each):
            _audio(root / f"spk{s}" / f"u{u}.wav", 0.05)
            _text(root / f"spk{s}" / f"u{u}.txt", f"s{s} u{u}")


def test_split_by_speaker_keeps_each_speaker_in_one_split_and_the_same_seed_gives_the_same_split(
    tmp_path, capsys
):
    _speaker_folders(tmp_path / "rec", speakers=8, each=3)
    out = tmp_path / "m.jsonl"
    args = (f"dir={tmp_path / 'rec'}", f"out={out}", "split=0.5,0.25,0.25", "split_by=speaker", "seed=3")
    stdout = _build(capsys, *args)
    parts = {n: _lines(tmp_path / f"m.{n}.jsonl") for n in ("train", "dev", "test")}
    speakers = {n: {r["speaker"] for r in rows} for n, rows in parts.items()}
    assert [len(s) for s in speakers.values()] == [4, 2, 2]
    assert set.union(*speakers.values()) == {f"spk{i}" for i in range(8)}  # disjoint: 4 + 2 + 2 = 8
    assert sorted(r["id"] for rows in parts.values() for r in rows) == sorted(r["id"] for r in _lines(out))
    assert f"wrote {tmp_path / 'm.dev.jsonl'}: 6 utterances, 0.0 minutes, 2 speakers" in stdout
    first = {n: (tmp_path / f"m.{n}.jsonl").read_text() for n in parts}
    _build(capsys, *args)
    assert {n: (tmp_path / f"m.{n}.jsonl").read_text() for n in parts} == first


def test_split_by_utterance_fills_every_split_and_split_by_a_field_groups_its_values():
    rows = [{"id": str(i), "book": f"b{i % 5}"} for i in range(20)]
    assert [len(p) for p in split_rows(rows, [0.9, 0.05, 0.05], seed=0)] == [18, 1, 1]
    parts = split_rows(rows, [0.6, 0.4], key="book", seed=1)
    assert [len(p) for p in parts] == [12, 8]
    assert not {r["book"] for r in parts[0]} & {r["book"] for r in parts[1]}


def test_speaker_pattern_names_speakers_and_a_path_it_does_not_match_is_skipped(tmp_path, capsys):
    for name in ("ann_01", "ann_02", "bob_01", "README"):
        _audio(tmp_path / "flat" / f"{name}.wav", 0.05)
        _text(tmp_path / "flat" / f"{name}.txt", "x")
    out = tmp_path / "m.jsonl"
    _build(capsys, f"dir={tmp_path / 'flat'}", f"out={out}", "speaker_pattern=^(?P<speaker>[a-z]+)_")
    assert [(r["id"], r["speaker"]) for r in _lines(out)] == [
        ("ann_01", "ann"),
        ("ann_02", "ann"),
        ("bob_01", "bob"),
    ]
    assert _skipped(out) == {
        "README.wav": "speaker_pattern '^(?P<speaker>[a-z]+)_' does not match 'README.wav'"
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "missing out=…"),
        (("out=m.jsonl",), "give one input: dir=FOLDER, csv=FILE or kaldi=FOLDER"),
        (("dir=a", "csv=b", "out=m.jsonl"), "(got dir= and csv=)"),
        (("dir=.", "out=m.jsonl", "modality=text"), "modality=text: give one of audio, image, video"),
        (("dir=.", "out=m.jsonl", "split=0.5,0.6"), "split=0.5,0.6: give 2 or 3 fractions"),
        (("dir=.", "out=m.jsonl", "split_by=speaker"), "split_by=speaker needs split=…"),
        (("dir=.", "out=m.jsonl", "strict=maybe"), "strict=maybe: give true or false"),
        (("--dir", "rec", "out=m.jsonl"), "not --flags: speechkit-manifest dir=rec out=m.jsonl"),
    ],
)
def test_a_mistake_in_the_command_is_one_error_line(capsys, args, message):
    assert message in _refused(capsys, *args)


def test_split_by_speaker_with_one_speaker_is_one_error_line(tmp_path, capsys):
    _speaker_folders(tmp_path / "rec", speakers=1, each=4)
    line = _refused(
        capsys, f"dir={tmp_path / 'rec'}", f"out={tmp_path / 'm.jsonl'}", "split=0.9,0.1", "split_by=speaker"
    )
    assert line == "error: split_by=speaker: 1 value(s) of 'speaker' cannot fill 2 splits — give fewer splits, or split by something with more values"  # fmt: skip


def test_the_console_entry_exits_2_with_one_error_line_for_a_folder_that_is_not_there(tmp_path):
    p = subprocess.run(
        [sys.executable, "-c", "from speechkit.data.build_manifest import main; main()",
         f"dir={tmp_path / 'nowhere'}", f"out={tmp_path / 'm.jsonl'}"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert p.returncode == 2 and p.stdout == ""
    assert error_line(p.stderr) == (
        f"error: {tmp_path / 'nowhere'}: is not a folder — give dir= the folder that holds your recordings"
    )

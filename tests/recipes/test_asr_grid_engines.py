"""recipes/asr_grid/prepare.py with flite, Festival, MBROLA, Pico and RHVoice next to espeak-ng, fragments
and uneven levels."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "recipes" / "asr_grid" / "prepare.py"
BINARIES = {"espeak": "espeak-ng", "flite": "flite", "festival": "text2wave", "mbrola": "mbrola",
            "pico": "pico2wave", "rhvoice": "RHVoice-test"}  # fmt: skip
PRESENT = [e for e, b in BINARIES.items() if shutil.which(b)]
BY_EAR = ("pico", "rhvoice")  # their letter check takes ~1 s (Pico) and ~5 s (RHVoice) per voice
MIXED = [e for e in PRESENT if e not in BY_EAR]  # prepare.py runs in a test: engines it checks quickly
GRAMMAR = [
    ["bin", "lay", "place", "set"],
    ["blue", "green", "red", "white"],
    ["at", "by", "in", "with"],
    list("abcdefghijklmnopqrstuvxyz"),
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    ["again", "now", "please", "soon"],
]

MIXED_FLAGS = ("--num-train=6", "--num-dev=2", "--num-test=3", f"--engines={','.join(MIXED)}",
               "--fragment-prob=0.5", "--level-prob=0.5")  # fmt: skip

pytestmark = pytest.mark.skipif(
    "espeak" not in PRESENT, reason="espeak-ng is not installed (babble, espeak voices)"
)


def load_prepare():
    spec = importlib.util.spec_from_file_location("asr_grid_prepare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_engines():
    """recipes/asr_grid/engines.py (the synthesisers and their voices), as prepare.py imports it."""
    load_prepare()
    return sys.modules["engines"]


def load_checks():
    """recipes/asr_grid/checks.py (engines installed, letters said as their names), as prepare.py imports it."""
    load_prepare()
    return sys.modules["checks"]


def run(out: Path, *flags: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), "--lm-sentences=5", "--seed=5", "--jobs=1", *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny corpus from every installed engine, fragments and uneven levels at high rates."""
    out = tmp_path_factory.mktemp("mix")
    run(out, *MIXED_FLAGS)
    return out


@pytest.mark.parametrize("engine", ["flite", "festival", "mbrola"])
def test_each_installed_engine_speaks_utterances(tmp_path: Path, engine: str) -> None:
    if engine not in PRESENT:
        pytest.skip(f"{BINARIES[engine]} is not installed (apt-get install {engine})")
    if engine == "mbrola":  # the only engine without a dev or test voice: its people are all train
        voices = {"us1_mbrola", "us2_mbrola", "us3_mbrola"}
        if "festival" not in PRESENT or not voices <= load_checks().festival_voices():
            pytest.skip("Festival's MBROLA voices are not installed (festvox-us1 .. us3, Debian non-free)")
        run(tmp_path, "--num-train=2", "--num-dev=0", "--num-test=0", "--engines=mbrola")
        got = rows(tmp_path / "train.jsonl")
        assert {r["speaker"].partition(":")[0] for r in got} == {"mbrola"}
        assert all(sf.info(tmp_path / r["audio_filepath"]).duration > 0.5 for r in got)
        return
    run(tmp_path, "--num-train=2", "--num-dev=0", "--num-test=1", f"--engines={engine}")
    got = rows(tmp_path / "train.jsonl") + rows(tmp_path / "test.jsonl")
    assert {r["speaker"].partition(":")[0] for r in got} == {engine}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["train"]["engines"] == {engine: 2}
    for r in got:
        audio, sr = sf.read(tmp_path / r["audio_filepath"])
        assert sr == 16000 and 0.5 < len(audio) / sr < 8
        assert np.sqrt(np.mean(audio**2)) > 0.01  # speech, not silence


def test_output_is_deterministic_given_the_arguments(mixed: Path, tmp_path: Path) -> None:
    run(tmp_path, *MIXED_FLAGS)  # the fixture's arguments again
    for split in ("train", "dev", "test"):
        assert (tmp_path / f"{split}.jsonl").read_text() == (mixed / f"{split}.jsonl").read_text()
        for r in rows(tmp_path / f"{split}.jsonl"):
            a, _ = sf.read(tmp_path / r["audio_filepath"], dtype="int16")
            b, _ = sf.read(mixed / r["audio_filepath"], dtype="int16")
            assert np.array_equal(a, b), r


def test_fragments_are_consecutive_slots_of_the_grammar(mixed: Path) -> None:
    texts = [r["text"].split() for split in ("train", "dev", "test") for r in rows(mixed / f"{split}.jsonl")]
    assert any(len(t) < 6 for t in texts), "fragment-prob 0.5 gave no fragment in 11 utterances"
    for words in texts:
        assert 1 <= len(words) <= 6
        starts = [i for i in range(7 - len(words)) if all(w in GRAMMAR[i + j] for j, w in enumerate(words))]
        assert starts, words


def test_planned_silences_floors_and_gains_lie_in_their_ranges() -> None:
    prepare = load_prepare()
    args = prepare.parse_args(["--out", "/nonexistent", "--fragment-prob=0.5", "--level-prob=0.5",
                               f"--engines={','.join(MIXED)}"])  # fmt: skip
    pools = {
        "espeak": ["en-us", "en-gb+f3"],
        "flite": ["flite:awb+low"],
        "festival": ["festival:kal_diphone+high"],
        "mbrola": ["mbrola:us2_mbrola+mid"],
    }
    utts = prepare.plan_split("train", 400, pools["espeak"], args, pools)
    uneven = [u for u in utts if u.gain_db is not None]
    assert 150 < len(uneven) < 250
    for u in uneven:
        assert all(0.0 <= s <= 1.0 for s in u.pads_s)
        assert -70.0 <= u.floor_dbfs <= -45.0 and -20.0 <= u.gain_db <= 6.0
    sizes = [len(u.text.split()) for u in utts]
    assert set(sizes) == {1, 2, 3, 4, 5, 6} and 150 < sum(s < 6 for s in sizes) < 250


def test_rendered_silence_and_level_follow_the_plan(mixed: Path) -> None:
    prepare = load_prepare()
    got = {r["audio_filepath"]: r for r in rows(mixed / "train.jsonl")}
    args = prepare.parse_args(["--out", str(mixed), "--num-train=6", "--seed=5", "--fragment-prob=0.5",
                               "--level-prob=0.5", f"--engines={','.join(MIXED)}"])  # fmt: skip
    pools = {"espeak": json.loads((mixed / "speakers.json").read_text())["train"]}
    for engine in set(MIXED) - {"espeak"}:
        pools[engine] = load_engines().other_speakers(engine)["train"]
    pools["espeak"] = [s for s in pools["espeak"] if ":" not in s]
    checked = 0
    for u in prepare.plan_split("train", 6, pools["espeak"], args, pools):
        if u.gain_db is None or u.relpath not in got:
            continue
        audio, _ = sf.read(mixed / u.relpath)
        lead = audio[: int(u.pads_s[0] * 16000)]
        if lead.size > 800:  # the leading silence holds the noise floor (and any SNR noise), no speech
            floor = 20 * np.log10(np.sqrt(np.mean(lead[:800] ** 2)) + 1e-12)
            assert floor >= u.floor_dbfs - 3 or u.snr_db is not None
            assert u.snr_db is not None or floor <= u.floor_dbfs + 3
            checked += 1
    assert checked, "no utterance with an uneven level and a leading silence to measure"


def test_held_out_voices_are_unseen_in_training_across_engines(mixed: Path) -> None:
    pools = json.loads((mixed / "speakers.json").read_text())
    engines = load_engines()
    person = {(v.engine, v.name): v.person for v in engines.OTHER_VOICES}

    def people(split: str) -> set[str]:
        out = set()
        for s in pools[split]:
            if ":" in s:
                engine, _, rest = s.partition(":")
                out.add(person[engine, rest.partition("+")[0]])
        return out

    assert not set(pools["train"]) & (set(pools["dev"]) | set(pools["test"]))
    assert not people("train") & (people("dev") | people("test"))
    if "flite" in PRESENT:
        assert "slt" in people("test") and "rms" in people("dev")
    used = {
        split: {r["speaker"] for r in rows(mixed / f"{split}.jsonl")} for split in ("train", "dev", "test")
    }
    for split, speakers in used.items():
        assert speakers <= set(pools[split])


# --- Pico and RHVoice: voices of real people without phone output (letters checked by ear) -------------
SENTENCE = "bin blue at eigh five now"  # spelled as engine_text spells "bin blue at a five now"
FIRST_VOICE = {"pico": "en-US", "rhvoice": "slt"}


def by_ear_voice(engine: str):
    if engine not in PRESENT:
        pytest.skip(
            f"{BINARIES[engine]} is not installed (apt-get install {load_checks().PACKAGES[engine]})"
        )
    return next(v for v in load_engines().OTHER_VOICES if (v.engine, v.name) == (engine, FIRST_VOICE[engine]))


def speech_seconds(audio: np.ndarray) -> float:
    active = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
    return (active[-1] - active[0]) / 16000


def median_f0(audio: np.ndarray) -> float:
    """Median F0 (Hz) over the loud frames (YIN, 60-400 Hz; 16 kHz audio)."""
    import librosa

    f0 = librosa.yin(audio, fmin=60, fmax=400, sr=16000, frame_length=1024, hop_length=160)
    rms = librosa.feature.rms(y=audio, frame_length=1024, hop_length=160)[0][: f0.size]
    return float(np.median(f0[rms > 0.3 * rms.max()]))


@pytest.mark.parametrize("engine", BY_EAR)
def test_by_ear_engine_speaks_an_utterance_as_float32_at_16khz(engine: str) -> None:
    voice = by_ear_voice(engine)
    utt = sys.modules["rendering"].Utterance(
        split="train", index=1, text="bin blue at a five now", voice=f"{engine}:{voice.name}", variant="mid",
        rate_wpm=0, pitch=0, word_gap=0, breaks_ms=(), seed=0, noise="clean", snr_db=None, babble_clips=(),
        engine=engine,
    )  # fmt: skip
    audio = load_engines().synthesize_other(utt)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.8 < speech_seconds(audio) < 3.0  # 16 kHz: a 24 kHz file read as 16 kHz would last 1.5 × longer
    assert np.sqrt(np.mean(audio**2)) > 0.01


@pytest.mark.parametrize("engine", BY_EAR)
def test_by_ear_engine_stretches_duration_and_scales_f0(engine: str) -> None:
    voice, speak = by_ear_voice(engine), load_engines().speak
    slow, fast = (speech_seconds(speak(voice, SENTENCE, stretch=s)) for s in (1.25, 0.8))
    assert slow / fast == pytest.approx(1.25 / 0.8, rel=0.1)
    high, low = (median_f0(speak(voice, SENTENCE, f0_factor=k)) for k in (1.2, 0.85))
    assert high / low == pytest.approx(1.2 / 0.85, rel=0.1)
    assert median_f0(speak(voice, SENTENCE)) == pytest.approx(voice.f0_hz, rel=0.1)


def test_every_engine_holds_out_the_same_people() -> None:
    engines = load_engines()
    person = {(v.engine, v.name): v.person for v in engines.OTHER_VOICES}
    people = {split: set() for split in ("train", "dev", "test")}
    for engine in engines.ENGINES[1:]:
        for split, speakers in engines.other_speakers(engine).items():
            for s in speakers:
                people[split].add(person[engine, s.partition(":")[2].partition("+")[0]])
    assert not people["train"] & (people["dev"] | people["test"]) and not people["dev"] & people["test"]
    assert people["test"] == {"slt", "clb"} and people["dev"] == {"rms", "kh0"}
    slt = [v for v in engines.OTHER_VOICES if v.person == "slt"]
    assert {v.engine for v in slt} == {"flite", "festival", "rhvoice"}
    assert all(f"{v.engine}:{v.name}+mid" in engines.other_speakers(v.engine)["test"] for v in slt)
    assert "rhvoice:alan+mid" in engines.other_speakers("rhvoice")["train"]  # awb, as flite's awb


@pytest.mark.parametrize("engine", BY_EAR)
def test_letter_check_by_ear_passes_the_spelling_and_fails_a_wrong_one(engine: str) -> None:
    voice, engines, checks = by_ear_voice(engine), load_engines(), load_checks()
    # "dee" for b is nearer d's name; a lone "a" (no spelling) is the article, nearer "uh" than "eigh"
    wrong = {"b": "dee"} if engine == "pico" else {**engines.SPELLING, "b": "dee"}
    assert checks.check_letters_by_ear(voice, wrong) == (["a", "b"] if engine == "pico" else ["b"])
    if engine == "pico":  # ~1 s a check here, ~5 s for RHVoice: its only check shows 24 letters pass
        assert checks.check_letters_by_ear(voice) == []


def test_mix6_is_mix_with_all_six_engines() -> None:
    prepare = load_prepare()
    mix, mix6 = (vars(prepare.parse_args(["--out", "/x", "--preset", p])) for p in ("mix", "mix6"))
    assert mix["engines"] == {"espeak": 0.35, "flite": 0.3, "festival": 0.15, "mbrola": 0.2}  # as before
    assert set(mix6["engines"]) == set(load_engines().ENGINES) and sum(mix6["engines"].values()) == 1.0
    same = {k for k in mix if k not in ("engines", "preset")}  # counts, fragments, levels, noise, ...
    assert {k: mix6[k] for k in same} == {k: mix[k] for k in same}


def test_words_preset_plans_mostly_short_utterances_and_a_third_said_a_word_at_a_time() -> None:
    prepare = load_prepare()
    args = prepare.parse_args(["--out", "/nonexistent", "--preset", "words", "--engines=espeak"])
    assert args.fragment_sizes == {1: 4.0, 2: 2.0, 3: 2.0, 4: 1.0, 5: 1.0} and args.spaced_prob == 0.35
    utts = prepare.plan_split("train", 1000, ["en-us", "en-gb+f3"], args, {"espeak": ["en-us", "en-gb+f3"]})
    sizes = [len(u.text.split()) for u in utts]
    assert 170 < sizes.count(1) < 310  # 0.6 × 0.4 of 1 000 = 240
    assert 350 < sizes.count(6) < 450  # not cut: 400
    spaced = [u for u in utts if u.spaced_ms is not None]
    assert 290 < len(spaced) < 410
    for u in spaced:
        assert len(u.spaced_ms) == len(u.text.split()) - 1 and u.breaks_ms == ()
        assert all(60 <= ms < 600 for ms in u.spaced_ms)
    mix = prepare.parse_args(["--out", "/nonexistent", "--preset", "mix6"])
    assert mix.fragment_sizes is None and mix.spaced_prob == 0.0
    for bad in ("6:1", "1:nan", "1:2,1:3", "x"):  # a fragment is 1..5 slots; finite weights; each size once
        with pytest.raises(SystemExit):
            prepare.parse_args(["--out", "/x", "--fragment-sizes", bad])


def test_spelled_preset_plans_codes_of_letters_and_digits() -> None:
    from speechkit.corpora.grid import DIGITS, LETTERS

    prepare = load_prepare()
    args = prepare.parse_args(["--out", "/nonexistent", "--preset", "spelled", "--engines=espeak"])
    assert args.spelled_prob == 0.4 and args.spaced_prob == 0.35 and args.fragment_prob == 0.6
    utts = prepare.plan_split("train", 1000, ["en-us", "en-gb+f3"], args, {"espeak": ["en-us", "en-gb+f3"]})
    grid = [u for u in utts if set(u.text.split()) & (set(prepare.WORDS) - set(LETTERS) - set(DIGITS))]
    codes = [u for u in utts if u not in grid]
    assert 330 < len(codes) < 480  # 0.4 of 1 000 (and a few fragments of letters and digits alone)
    sizes = [len(u.text.split()) for u in codes]
    assert set(sizes) <= {1, 2, 3, 4} and all(sizes.count(n) > 60 for n in (1, 2, 3, 4))
    words = [w for u in codes for w in u.text.split()]
    assert set(words) <= set(LETTERS) | set(DIGITS) and len(set(words) & set(LETTERS)) == len(LETTERS)
    assert 0.2 < sum(w in DIGITS for w in words) / len(words) < 0.45  # 0.3, plus fragments' digits
    for u in codes:  # said together: no extra pauses (a grammar fragment "b two" may have one); else the gaps
        n = len(u.text.split())
        if u.spaced_ms is not None:
            assert u.breaks_ms == () and len(u.spaced_ms) == n - 1
        else:
            assert len(u.breaks_ms) == n - 1 and (not any(u.breaks_ms) or n == 2)


def test_the_earlier_presets_plan_the_same_corpora_as_before_the_words_preset() -> None:
    """The corpora and figures of the READMEs were made with these plans (digests taken with the code
    before --fragment-sizes and --spaced-prob; their rendering was checked byte for byte the same way)."""
    import hashlib

    prepare = load_prepare()
    pools = {"espeak": ["en-us", "en-gb+f3"], "flite": ["flite:awb+low"], "festival": ["festival:kal_diphone+high"],
             "mbrola": ["mbrola:us2_mbrola+mid"], "pico": ["pico:en-US+high"], "rhvoice": ["rhvoice:bdl+low"]}  # fmt: skip
    for preset, digest in (("full", "467cafa05879159d"), ("mix6", "95468908d8552f92")):
        args = prepare.parse_args(["--out", "/x", "--preset", preset])
        utts = prepare.plan_split("train", 300, pools["espeak"], args, pools)
        assert all(u.spaced_ms is None for u in utts)
        fields = [{k: v for k, v in u.__dict__.items() if k != "spaced_ms"} for u in utts]
        text = json.dumps(fields, sort_keys=True, default=str).encode()
        assert hashlib.sha256(text).hexdigest()[:16] == digest, preset


def test_a_spaced_utterance_is_its_words_said_alone_with_the_planned_pauses_between() -> None:
    prepare = load_prepare()
    rendering = sys.modules["rendering"]
    args = prepare.parse_args(["--out", "/nonexistent", "--engines=espeak", "--spaced-prob=1", "--clean-prob=1"])
    utt = prepare.plan_split("train", 1, ["en-us"], args, {"espeak": ["en-us"]})[0]
    utt = rendering.replace(utt, text="bin blue at", breaks_ms=(), pads_s=(0.2, 0.2), spaced_ms=(500, 500))
    spaced = rendering.render(utt)
    together = rendering.render(rendering.replace(utt, spaced_ms=None))
    assert len(spaced) - len(together) > 0.8 * 16000  # two half-second pauses (less the words' own gaps)
    frames = np.sqrt(np.mean(spaced[: len(spaced) // 320 * 320].reshape(-1, 320) ** 2, axis=1))  # 20 ms RMS
    quiet = frames < 1e-3 * frames.max()
    runs, n = [], 0
    for q in quiet:
        n = n + 1 if q else (runs.append(n) or 0)
    inner = [r for r in runs if r >= 20]  # ≥ 400 ms of silence between words (the pads end the list)
    assert len(inner) >= 2, runs

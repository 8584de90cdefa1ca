"""Synthesise a GRID-grammar speech corpus offline with espeak-ng.

GRID sentences have six slots: command, colour, preposition, letter, digit, adverb
("bin blue at c five please"); 51 words in all. Every utterance is spoken by one
*speaker*, a (voice, variant) pair such as ``en-us+f3``, at a random rate, pitch and
word spacing, then mixed with white, pink, brown or babble noise at a random SNR (or
left clean), given a small random gain, resampled to 16 kHz mono and written as FLAC.

Speakers are split by *variant family*: the variants of the dev and test splits (and
their near-copies, e.g. ``iven`` .. ``iven4``) never occur in train, so dev and test
voices are unseen in training. Every split uses all English accents.

``--preset mix`` (or ``--engines``, ``--fragment-prob``, ``--level-prob``) adds flite and Festival
voices built from recordings of real people (speakers ``flite:awb+low``; the split holds out whole
people across engines: slt test, rms dev), fragments of 1-5 consecutive slots, and uneven silences,
noise floors and levels; see README.md. ``<out>/summary.json`` counts utterances per engine.

Output (paths in the manifests are relative to ``--out``)::

    <out>/audio/{train,dev,test}/00001.flac
    <out>/{train,dev,test}.jsonl   {"audio_filepath", "duration", "text", "speaker"}
    <out>/words.txt  <out>/lm_train.txt  <out>/speakers.json  [<out>/failures.jsonl]

Example::

    python recipes/asr_grid/prepare.py --out data/asr_grid --jobs 2
    python recipes/asr_grid/prepare.py --sample --out samples/grid
    python recipes/asr_grid/prepare.py --preset mix --out data/asr_grid_mix --jobs 2

The output depends only on the arguments (``--jobs`` included or not).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly
from tqdm import tqdm

# --- grammar -------------------------------------------------------------------------------
from speechkit.corpora.grid import (  # the shared GRID grammar
    ESPEAK_SPELLING,
    LETTERS,
    SLOTS,
    WORDS,
    random_sentence,
)
from speechkit.data.manifest import write_manifest

# --- speakers ------------------------------------------------------------------------------
VOICES = (  # English espeak-ng voices (accents); the mbrola ones (mb/...) are not installed
    "en-gb",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
DEFAULT_VARIANT = ""  # the voice's own default male voice
EXCLUDED_VARIANTS = ("fast", "Mr serious")  # "fast": a speed test, same voice; space in name
# Variants that share formant tables (near copies of one voice) form one family; a family
# lies wholly in one split. Variants not listed here are families of their own.
VARIANT_FAMILIES = {
    "john": ("", "john", "Tweaky", "norbert"),
    "m7": ("m7", "m8", "Nguyen", *(f"robosoft{i}" for i in ("", 2, 3, 4, 5, 6))),
    "max": ("max", "RicishayMax", "RicishayMax2", "RicishayMax3", "robosoft7", "robosoft8"),
    "iven": ("iven", "iven2", "iven3", "iven4"),
    "steph": ("steph", "steph2", "steph3"),
    "brazil": ("Diogo", "Henrique", "Hugo", "michel", "miguel"),
    "anika": ("anika", "anikaRobot"),
    "gene": ("Gene", "Gene2"),
    "mario": ("Mario", "Michael", "gustave", "marcelo"),
    "rob": ("rob", "robert", "quincy"),
    "klatt": (
        *(f"klatt{i}" for i in ("", 2, 3, 4, 5, 6)),
        *("adam", "benjamin", "caleb", "david", "edward", "edward2", "announcer", "UniRobot"),
    ),
    "linda": ("f4", "aunty", "belinda", "linda"),
    "andy": ("Andy", "AnxiousAndy", "Lee"),
    "f2": ("f2", "whisperf"),
    "storm": ("Storm", "victor"),
    "grandparents": ("grandma", "grandpa", "Denis", "shelby"),
}
HELD_OUT_FAMILIES = {  # everything else is train
    "dev": ("gene", "m5", "f3", "kaukovalta", "Annie", "sandro"),
    "test": ("iven", "steph", "m3", "m6", "f5", "travis", "Alicia", "boris"),
}
SPLITS = ("train", "dev", "test")

# --- audio ---------------------------------------------------------------------------------
ESPEAK_RATE_SR = 22050  # Hz, espeak-ng's output rate
SAMPLE_RATE = 16000  # Hz, what we write
RATE_WPM = (120, 220)  # words per minute (espeak -s)
PITCH = (20, 80)  # espeak -p, 0..99
WORD_GAP = (0, 3)  # espeak -g, units of 10 ms
BREAK_PROB = 0.15  # chance of an extra pause between two words
BREAK_MS = (20, 150)  # ms, length of such a pause
AMPLITUDE = 60  # espeak -a (default 100 clips a few variants)
PAD_S = (0.05, 0.3)  # s, silence (then noise) added before and after the speech
LEVEL_DBFS = -22.0  # dBFS, RMS of the active speech before the random gain
GAIN_DB = (-6.0, 3.0)  # dB, random gain
PEAK = 0.95  # full scale, peak limit after gain
FILE_BITS = 16  # the FLAC files are 16-bit; --bits < 16 zeroes low bits, which FLAC stores for free
NOISE_TYPES = ("white", "pink", "brown", "babble")
BABBLE_TALKERS = (3, 6)  # how many sentences are summed into babble noise
BABBLE_BANK = 48  # sentences per split (by its speakers) that babble noise is made of
SYNTH_TIMEOUT_S = 30  # s, per synthesiser call
# --level-prob: utterances recorded "as found" rather than as set up: long, uneven silences, a
# noise floor, a level far from LEVEL_DBFS (real recordings; the model should not key on ours)
LEVEL_PAD_S = (0.0, 1.0)  # s, leading and trailing silence, each
FLOOR_DBFS = (-70.0, -45.0)  # dBFS, RMS of the white noise floor under the whole utterance
LEVEL_GAIN_DB = (-20.0, 6.0)  # dB, gain instead of GAIN_DB

PRESETS = {  # defaults that the command-line flags override
    "full": dict(
        num_train=6000, num_dev=300, num_test=500, lm_sentences=20000,
        snr_db=(5.0, 30.0), clean_prob=0.2, max_speakers=None, bits=16,
    ),
    "sample": dict(
        num_train=240, num_dev=16, num_test=16, lm_sentences=2000,
        snr_db=(20.0, 35.0), clean_prob=0.5, max_speakers=24, bits=10,
    ),
    "mix": dict(  # full, spoken by three synthesisers, with fragments and uneven levels
        num_train=6000, num_dev=300, num_test=500, lm_sentences=20000,
        snr_db=(5.0, 30.0), clean_prob=0.2, max_speakers=None, bits=16,
        engines="espeak:0.4,flite:0.35,festival:0.25", fragment_prob=0.2, level_prob=0.3,
    ),
}  # fmt: skip
for _preset in ("full", "sample"):  # the espeak-only corpora, as before
    PRESETS[_preset].update(engines="espeak", fragment_prob=0.0, level_prob=0.0)


@dataclass(frozen=True)
class Utterance:
    """Everything needed to synthesise one utterance (drawn up front, so the result does
    not depend on which worker runs it)."""

    split: str
    index: int
    text: str
    voice: str
    variant: str
    rate_wpm: int
    pitch: int
    word_gap: int
    breaks_ms: tuple[int, ...]  # pause after each of the first five words, 0 = none
    seed: int  # for noise, gain and padding
    noise: str  # "clean" or one of NOISE_TYPES
    snr_db: float | None  # None when clean
    babble_clips: tuple[int, ...]  # which of the split's BABBLE_BANK sentences make its babble
    # drawn from a separate stream (plan_extras), so that espeak-only plans stay as they were
    engine: str = "espeak"
    stretch: float = 1.0  # duration factor (flite, festival)
    f0_factor: float = 1.0  # times the voice's mean F0 (flite, festival)
    pads_s: tuple[float, float] | None = None  # s, leading/trailing silence; None: PAD_S
    floor_dbfs: float | None = None  # dBFS, RMS of a white noise floor added after the gain
    gain_db: float | None = None  # dB; None: GAIN_DB

    @property
    def speaker(self) -> str:
        return speaker_name(self.voice, self.variant)

    @property
    def relpath(self) -> str:
        return f"audio/{self.split}/{self.index:05d}.flac"


def speaker_name(voice: str, variant: str) -> str:
    return f"{voice}+{variant}" if variant else voice


def split_speaker(speaker: str) -> tuple[str, str]:
    voice, _, variant = speaker.partition("+")
    return voice, variant


# --- espeak-ng -----------------------------------------------------------------------------
def espeak_data_dir() -> Path:
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"Data at:\s*(\S+)", out.stdout)
    if not match:
        raise RuntimeError(f"cannot find espeak-ng's data folder in {out.stdout!r}")
    return Path(match.group(1))


def installed_voices() -> set[str]:
    """Languages of the installed espeak-ng English voices, mbrola ones left out."""
    out = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True, check=True)
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    return {row[1] for row in rows if len(row) > 4 and not row[4].startswith("mb/")}


def installed_variants() -> set[str]:
    return {p.name for p in (espeak_data_dir() / "voices" / "!v").iterdir()} | {DEFAULT_VARIANT}


def espeak_phonemes(voice: str, text: str, ssml: bool = False) -> str:
    cmd = ["espeak-ng", "-q", "-x", "-v", voice, *(["-m"] if ssml else []), text]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def check_letter_names(voice: str) -> list[str]:
    """Letters that ``voice`` does not say as their names in "at <letter> five" (should be none).

    The reference is espeak's own name of each letter, spelled alone (SSML say-as characters);
    paragraphs (blank lines) come back as separate lines of phonemes."""
    spelled = "\n\n".join(f'<say-as interpret-as="characters">{c}</say-as>.' for c in LETTERS)
    names = [re.sub(r"[',]|_!", "", n) for n in espeak_phonemes(voice, spelled, ssml=True).split()]
    sentences = "\n\n".join(f"at {ESPEAK_SPELLING.get(c, c)} five." for c in LETTERS)
    lines = [line.split() for line in espeak_phonemes(voice, sentences).splitlines() if line.strip()]
    said = [re.sub(r"[',]", "", words[1]) if len(words) == 3 else "?" for words in lines]
    if len(names) != len(LETTERS) or len(said) != len(LETTERS):
        return list(LETTERS)
    return [c for c, name, got in zip(LETTERS, names, said) if name != got]


def espeak_text(words: list[str], breaks_ms: tuple[int, ...]) -> str:
    """SSML input for espeak-ng: letters spelled as names, optional pauses between words."""
    parts = []
    for i, word in enumerate(words):
        parts.append(ESPEAK_SPELLING.get(word, word))
        if i < len(breaks_ms) and breaks_ms[i]:
            parts.append(f'<break time="{breaks_ms[i]}ms"/>')
    return " ".join(parts)


def synthesize(text: str, voice: str, variant: str, rate: int, pitch: int, gap: int) -> np.ndarray:
    """Speak SSML ``text``; returns float32 mono at SAMPLE_RATE. Raises RuntimeError on failure."""
    cmd = ["espeak-ng", "-m", "--stdout", "-v", speaker_name(voice, variant)]
    cmd += ["-s", str(rate), "-p", str(pitch), "-g", str(gap), "-a", str(AMPLITUDE), text]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=SYNTH_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"espeak-ng timed out after {SYNTH_TIMEOUT_S} s") from err
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"espeak-ng exit {proc.returncode}: {proc.stderr.decode(errors='replace')[:200]}")
    audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if sr != ESPEAK_RATE_SR:
        raise RuntimeError(f"espeak-ng gave {sr} Hz, expected {ESPEAK_RATE_SR}")
    return resample_poly(audio, 320, 441).astype(np.float32)  # 22050 Hz -> 16000 Hz


# --- flite and Festival --------------------------------------------------------------------
@dataclass(frozen=True)
class Voice:
    """A flite or Festival voice: the person whose recordings it was built from, and its own
    mean F0 (Hz, measured on a GRID sentence; None where the engine ignores an F0 target)."""

    engine: str
    name: str
    person: str
    f0_hz: float | None
    stretch: bool = True  # whether the engine honours a duration stretch for this voice


# flite's "kal" is the 8 kHz build of kal16; "awb_time" (a clock-time limited-domain voice) is left
# out. rms ignores int_f0_target_mean and Festival's HTS voice ignores both Duration_Stretch and
# F0 targets (measured): their pitch changes by resampling (RESAMPLE_RANGE).
OTHER_VOICES = (
    Voice("flite", "kal", "kal", 96.0),
    Voice("flite", "kal16", "kal", 96.0),
    Voice("flite", "awb", "awb", 136.0),
    Voice("flite", "rms", "rms", None),
    Voice("flite", "slt", "slt", 178.0),
    Voice("festival", "kal_diphone", "kal", 105.0),
    Voice("festival", "ked_diphone", "ked", 105.0),
    Voice("festival", "cmu_us_slt_arctic_hts", "slt", None, stretch=False),
)
# Split by the recorded person, across engines (flite slt and Festival's slt HTS are one woman).
HELD_OUT_PEOPLE = {"dev": ("rms",), "test": ("slt",)}
ENGINES = ("espeak", "flite", "festival")
F0_VARIANTS = {"low": 0.85, "mid": 1.0, "high": 1.2}  # × the voice's mean F0: the speaker's variant
F0_JITTER = (0.93, 1.07)  # × per utterance
STRETCH = (0.8, 1.25)  # duration factor per utterance (flite duration_stretch, Festival Duration_Stretch)
RESAMPLE_RANGE = (0.9, 1.12)  # pitch (and tempo) factor by resampling, for voices without an F0 target
SPELLING = {"a": "eigh"}  # flite and Festival read a lone "a" as the article (phones "ax")


def voice_of(speaker: str) -> Voice:
    """The flite/Festival voice of a speaker named ``engine:voice+variant``."""
    engine, _, rest = speaker.partition(":")
    name = rest.partition("+")[0]
    return next(v for v in OTHER_VOICES if (v.engine, v.name) == (engine, name))


def engine_of(speaker: str) -> str:
    return speaker.partition(":")[0] if ":" in speaker else "espeak"


def other_speakers(engine: str) -> dict[str, list[str]]:
    """Speakers ``engine:voice+variant`` of each split, voices held out by person."""
    held_out = {person: split for split, people in HELD_OUT_PEOPLE.items() for person in people}
    speakers: dict[str, list[str]] = {split: [] for split in SPLITS}
    for v in (v for v in OTHER_VOICES if v.engine == engine):
        speakers[held_out.get(v.person, "train")] += [f"{engine}:{v.name}+{var}" for var in F0_VARIANTS]
    return speakers


def engine_text(words: list[str]) -> str:
    return " ".join(SPELLING.get(w, w) for w in words)


def run_synth(cmd: list[str], name: str, stdin: str | None = None) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=SYNTH_TIMEOUT_S, input=stdin, text=True)
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"{name} timed out after {SYNTH_TIMEOUT_S} s") from err
    if proc.returncode != 0:
        raise RuntimeError(f"{name} exit {proc.returncode}: {proc.stderr[:200]}")


def synthesize_other(utt: Utterance) -> np.ndarray:
    """Speak ``utt`` with flite or Festival; float32 mono at SAMPLE_RATE. Raises RuntimeError."""
    voice = voice_of(utt.speaker)
    f0 = voice.f0_hz * utt.f0_factor if voice.f0_hz else None
    resample = 1.0 if f0 else float(np.clip(utt.f0_factor, *RESAMPLE_RANGE))
    stretch = utt.stretch * resample if voice.stretch else 1.0  # resampling shortens by 1/resample
    text = engine_text(utt.text.split())
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        if voice.engine == "flite":
            cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={stretch:.3f}"]
            cmd += ["--setf", f"int_f0_target_mean={f0:.1f}"] if f0 else []
            run_synth([*cmd, "-t", text, "-o", str(wav)], "flite")
        else:
            evals = [f"(voice_{voice.name})", f"(Parameter.set 'Duration_Stretch {stretch:.3f})"]
            if f0:  # the diphone voices' intonation model reads its target mean from int_lr_params
                evals.append(f"(set! int_lr_params (cons (list 'target_f0_mean {f0:.1f}) int_lr_params))")
            cmd = ["text2wave", *(a for e in evals for a in ("-eval", e)), "-o", str(wav)]
            run_synth(cmd, "festival", stdin=text + "\n")
        audio, sr = sf.read(wav, dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    target = round(sr / resample)  # resample: played at sr, read as if recorded at sr / resample
    audio = resample_poly(audio, SAMPLE_RATE, target) if target != SAMPLE_RATE else audio
    return audio.astype(np.float32)


def engine_phones(voice: Voice, texts: list[str]) -> list[list[str]]:
    """The phones each engine says for each of ``texts`` (its own analysis, not the audio)."""
    if voice.engine == "flite":
        cmd = ["flite", "-voice", voice.name, "-ps", "-o", "none", "-t"]
        return [run_text(cmd + [t]).split() for t in texts]
    body = " ".join(f'(phones "{t}")' for t in texts)
    script = (
        f"(voice_{voice.name})(define (phones text) (format t \"%l\\n\" (mapcar (lambda (s) (item.name s))"
        f" (utt.relation.items (utt.synth (eval (list 'Utterance 'Text text))) 'Segment)))) {body}"
    )
    lines = run_text(["festival", "--pipe"], script).splitlines()
    return [re.findall(r'"([^"]*)"', line) for line in lines if line.startswith("(")]


def run_text(cmd: list[str], stdin: str | None = None) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, input=stdin, check=True).stdout


# Letter names in the CMU/radio phone set that flite and these Festival voices share (written out
# here, not taken from either engine; flite's phones of each letter spoken alone agree).
LETTER_PHONES = {
    "a": "ey", "b": "b iy", "c": "s iy", "d": "d iy", "e": "iy", "f": "eh f", "g": "jh iy",
    "h": "ey ch", "i": "ay", "j": "jh ey", "k": "k ey", "l": "eh l", "m": "eh m", "n": "eh n",
    "o": "ow", "p": "p iy", "q": "k y uw", "r": "aa r", "s": "eh s", "t": "t iy", "u": "y uw",
    "v": "v iy", "x": "eh k s", "y": "w ay", "z": "z iy",
}  # fmt: skip


def check_other_letters(voice: Voice) -> list[str]:
    """Letters that ``voice`` does not say as LETTER_PHONES inside "at <letter> five" (should be
    none), by the engine's own phone output: a round trip through its text analysis."""
    said = engine_phones(voice, [f"at {engine_text([c])} five" for c in LETTERS])
    if len(said) != len(LETTERS):
        return list(LETTERS)
    bad = []
    for c, phones in zip(LETTERS, said):
        core = [p for p in phones if p != "pau"]
        if core != ["ae", "t", *LETTER_PHONES[c].split(), "f", "ay", "v"]:
            bad.append(c)
    return bad


def festival_voices() -> set[str]:
    out = run_text(["festival", "--pipe"], '(format t "%l\\n" (voice.list))')
    return set(re.findall(r"[\w-]+", out))


def check_engines(engines: set[str]) -> None:
    """Fail early if an engine or voice is missing or says a letter as anything but its name."""
    binary = {"flite": "flite", "festival": "text2wave"}
    for engine in sorted(engines - {"espeak"}):
        if shutil.which(binary[engine]) is None:
            raise SystemExit(f"--engines names {engine}, but {binary[engine]} is not installed "
                             "(apt-get install flite festival festvox-kallpc16k ...)")  # fmt: skip
    if engines <= {"espeak"}:
        return
    have = {"flite": set(), "festival": set()}
    if "flite" in engines:
        have["flite"] = set(run_text(["flite", "-lv"]).split()[2:])
    if "festival" in engines:
        have["festival"] = festival_voices()
    for voice in (v for v in OTHER_VOICES if v.engine in engines):
        if voice.name not in have[voice.engine]:
            raise SystemExit(
                f"{voice.engine} lacks voice {voice.name} (has {sorted(have[voice.engine])}): install "
                "flite, festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts"
            )
        if bad := check_other_letters(voice):
            raise SystemExit(f"{voice.engine} voice {voice.name} does not say letters {bad} as their names")


# --- signal processing ---------------------------------------------------------------------
def trim_silence(x: np.ndarray, rel_threshold: float = 1e-3) -> np.ndarray:
    active = np.flatnonzero(np.abs(x) > rel_threshold * np.abs(x).max())
    if active.size == 0:
        raise RuntimeError("espeak-ng produced silence")
    return x[active[0] : active[-1] + 1]


def colored_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1] if n > 1 else 1.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n)
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def babble_clip(speakers: list[str], rng: np.random.Generator) -> np.ndarray:
    """A random grammar sentence by a random one of ``speakers``, trimmed, unit RMS."""
    speaker, words = speakers[rng.integers(len(speakers))], random_sentence(rng)
    rate, pitch = int(rng.integers(*RATE_WPM)), int(rng.integers(*PITCH))
    try:
        talk = trim_silence(synthesize(espeak_text(words, ()), *split_speaker(speaker), rate, pitch, 0))
    except RuntimeError as err:
        raise SystemExit(f"babble noise: speaker {speaker} failed on {' '.join(words)!r}: {err}") from err
    return talk / (np.sqrt(np.mean(talk**2)) + 1e-12)


_BABBLE_BANK: dict[int, np.ndarray] = {}  # the current split's babble clips, set in every worker


def set_babble_bank(bank: dict[int, np.ndarray]) -> None:
    _BABBLE_BANK.clear()
    _BABBLE_BANK.update(bank)


def babble_noise(rng: np.random.Generator, n: int, clips: tuple[int, ...]) -> np.ndarray:
    """Sum of sentences from the babble bank, each looped to length ``n`` and shifted, unit RMS."""
    noise = np.zeros(n, np.float32)
    for clip in clips:
        noise += np.roll(np.resize(_BABBLE_BANK[clip], n), int(rng.integers(n)))
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def make_noise(utt: Utterance, rng: np.random.Generator, n: int) -> np.ndarray:
    if utt.noise == "babble":
        return babble_noise(rng, n, utt.babble_clips)
    exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[utt.noise]
    return colored_noise(rng, n, exponent)


def render(utt: Utterance) -> np.ndarray:
    """Synthesise, pad, add noise and gain: the final 16 kHz waveform of ``utt``."""
    rng = np.random.default_rng(utt.seed)
    if utt.engine == "espeak":
        speech = synthesize(
            espeak_text(utt.text.split(), utt.breaks_ms),
            utt.voice,
            utt.variant,
            utt.rate_wpm,
            utt.pitch,
            utt.word_gap,
        )
    else:
        speech = synthesize_other(utt)
    speech = trim_silence(speech)
    speech *= 10 ** (LEVEL_DBFS / 20) / (np.sqrt(np.mean(speech**2)) + 1e-12)
    pads = (rng.uniform(*PAD_S, size=2) * SAMPLE_RATE).astype(int)
    if utt.pads_s is not None:
        pads = (np.array(utt.pads_s) * SAMPLE_RATE).astype(int)
    audio = np.concatenate([np.zeros(pads[0], np.float32), speech, np.zeros(pads[1], np.float32)])
    if utt.snr_db is not None:
        noise_rms = np.sqrt(np.mean(speech**2)) * 10 ** (-utt.snr_db / 20)
        audio += noise_rms * make_noise(utt, rng, audio.size)
    gain_db = rng.uniform(*GAIN_DB)
    audio *= 10 ** ((gain_db if utt.gain_db is None else utt.gain_db) / 20)
    if utt.floor_dbfs is not None:  # a recording's noise floor: a level, not a ratio to the speech
        audio += 10 ** (utt.floor_dbfs / 20) * colored_noise(rng, audio.size, 0.0)
    peak = np.abs(audio).max()
    return audio * (PEAK / peak) if peak > PEAK else audio


def quantize(audio: np.ndarray, bits: int) -> np.ndarray:
    """int16 samples with only the top ``bits`` bits used (quantisation SNR ~ 6 dB per bit)."""
    step = 2 ** (FILE_BITS - bits)
    return (np.round(audio * 2 ** (FILE_BITS - 1) / step) * step).clip(-(2**15), 2**15 - 1).astype(np.int16)


# --- corpus plan ---------------------------------------------------------------------------
def make_rng(seed: int, *purpose: str) -> np.random.Generator:
    """An independent random stream per (seed, purpose), e.g. ("plan", "train")."""
    return np.random.default_rng([seed, *(int.from_bytes(p.encode(), "little") for p in purpose)])


def variant_family(variant: str) -> str:
    return next((fam for fam, members in VARIANT_FAMILIES.items() if variant in members), variant)


def split_speakers(variants: set[str]) -> dict[str, list[str]]:
    """Speakers of each split: every voice with the variants whose family is in that split."""
    held_out = {fam: split for split, fams in HELD_OUT_FAMILIES.items() for fam in fams}
    speakers: dict[str, list[str]] = {split: [] for split in SPLITS}
    for variant in sorted(variants - set(EXCLUDED_VARIANTS), key=str.lower):
        split = held_out.get(variant_family(variant), "train")
        speakers[split] += [speaker_name(voice, variant) for voice in VOICES]
    return speakers


def limit_speakers(speakers: list[str], max_speakers: int | None, rng: np.random.Generator) -> list[str]:
    if max_speakers is None or len(speakers) <= max_speakers:
        return speakers
    return sorted(rng.choice(speakers, size=max_speakers, replace=False).tolist())


def plan_utterance(
    split: str, index: int, speakers: list[str], args: argparse.Namespace, rng: np.random.Generator
) -> Utterance:
    voice, variant = split_speaker(speakers[rng.integers(len(speakers))])
    noisy = rng.random() >= args.clean_prob
    noise = NOISE_TYPES[rng.integers(len(NOISE_TYPES))] if noisy else "clean"
    talkers = int(rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1)) if noise == "babble" else 0
    return Utterance(
        split=split,
        index=index,
        text=" ".join(random_sentence(rng)),
        voice=voice,
        variant=variant,
        rate_wpm=int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
        pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
        word_gap=int(rng.integers(WORD_GAP[0], WORD_GAP[1] + 1)),
        breaks_ms=tuple(
            int(rng.integers(*BREAK_MS)) if rng.random() < BREAK_PROB else 0 for _ in range(len(SLOTS) - 1)
        ),
        seed=int(rng.integers(2**63)),
        noise=noise,
        snr_db=round(float(rng.uniform(*args.snr_db)), 1) if noisy else None,
        babble_clips=tuple(rng.choice(BABBLE_BANK, size=talkers, replace=False).tolist()),
    )


def plan_extras(
    utt: Utterance, pools: dict[str, list[str]], args: argparse.Namespace, rng: np.random.Generator
) -> Utterance:
    """Engine, fragment and level of one utterance, from a stream of their own (espeak-only plans
    without fragments or level changes stay exactly as plan_utterance made them)."""
    engines = [e for e in args.engines if pools.get(e)]  # Festival has no dev voice: dev skips it
    weights = np.array([args.engines[e] for e in engines], float)
    engine = engines[rng.choice(len(engines), p=weights / weights.sum())]
    change = {}
    if engine != "espeak":
        voice, variant = split_speaker(pools[engine][rng.integers(len(pools[engine]))])
        jitter = rng.uniform(*F0_JITTER)
        change.update(
            engine=engine, voice=voice, variant=variant, stretch=round(float(rng.uniform(*STRETCH)), 3),
            f0_factor=round(float(F0_VARIANTS[variant] * jitter), 3),
        )  # fmt: skip
    if rng.random() < args.fragment_prob:
        size = int(rng.integers(1, len(SLOTS)))  # 1..5 consecutive slots
        start = int(rng.integers(len(SLOTS) - size + 1))
        change.update(
            text=" ".join(utt.text.split()[start : start + size]),
            breaks_ms=utt.breaks_ms[start : start + size - 1],
        )
    if rng.random() < args.level_prob:
        change.update(
            pads_s=tuple(round(float(x), 3) for x in rng.uniform(*LEVEL_PAD_S, size=2)),
            floor_dbfs=round(float(rng.uniform(*FLOOR_DBFS)), 1),
            gain_db=round(float(rng.uniform(*LEVEL_GAIN_DB)), 1),
        )
    return replace(utt, **change)


def plan_split(
    split: str, num: int, speakers: list[str], args: argparse.Namespace, pools: dict[str, list[str]] | None = None
) -> list[Utterance]:
    """The split's utterances; ``pools``: its speakers of each engine (None: espeak's ``speakers``)."""
    rng = make_rng(args.seed, "plan", split)
    utts = [plan_utterance(split, i, speakers, args, rng) for i in range(1, num + 1)]
    if set(args.engines) == {"espeak"} and args.fragment_prob == 0 and args.level_prob == 0:
        return utts
    extra = make_rng(args.seed, "extras", split)
    return [plan_extras(u, pools or {"espeak": speakers}, args, extra) for u in utts]


# --- running -------------------------------------------------------------------------------
def run_one(job: tuple[Utterance, str, int]) -> dict:
    """Render and write one utterance; returns its manifest row, or a failure record."""
    utt, out, bits = job
    try:
        audio = quantize(render(utt), bits)
        sf.write(Path(out) / utt.relpath, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    except Exception as err:  # any error: reported to the user and counted, never skipped silently
        error = f"{type(err).__name__}: {err}"
        return {
            "failed": True,
            "utterance": utt.relpath,
            "speaker": utt.speaker,
            "error": error,
            **asdict(utt),
        }
    duration = round(audio.size / SAMPLE_RATE, 3)
    return {"audio_filepath": utt.relpath, "duration": duration, "text": utt.text, "speaker": utt.speaker}


def run_split(
    split: str, utts: list[Utterance], args: argparse.Namespace, bank: dict[int, np.ndarray]
) -> list[dict]:
    """Synthesise one split with ``args.jobs`` workers and a progress bar; results in order."""
    folder = args.out / "audio" / split
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.flac"):  # from an earlier, larger run
        stale.unlink()
    work = [(u, str(args.out), args.bits) for u in utts]
    results = []
    with tqdm(total=len(work), desc=f"{split:5s}", unit="utt", dynamic_ncols=True) as bar:
        if args.jobs <= 1 or len(work) <= 1:
            set_babble_bank(bank)
            for job in work:
                results.append(run_one(job))
                bar.update()
        else:
            with multiprocessing.Pool(args.jobs, initializer=set_babble_bank, initargs=(bank,)) as pool:
                for result in pool.imap_unordered(run_one, work, chunksize=4):
                    results.append(result)
                    bar.update()
    return sorted(results, key=lambda r: r.get("audio_filepath") or r["utterance"])


def write_text_files(out: Path, lm_sentences: int, seed: int) -> None:
    (out / "words.txt").write_text("".join(w + "\n" for w in WORDS))
    rng = make_rng(seed, "lm")
    lines = (" ".join(random_sentence(rng)) + "\n" for _ in range(lm_sentences))
    (out / "lm_train.txt").write_text("".join(lines))


def check_espeak(variants_needed: set[str]) -> None:
    """Fail early if a voice or variant is missing (espeak-ng silently falls back) or if a
    voice does not say the letters as their names."""
    missing_voices = set(VOICES) - installed_voices()
    missing_variants = variants_needed - installed_variants()
    if missing_voices or missing_variants:
        raise SystemExit(
            f"espeak-ng lacks voices {sorted(missing_voices)} variants {sorted(missing_variants)}"
        )
    for voice in VOICES:
        if bad := check_letter_names(voice):
            raise SystemExit(f"espeak-ng voice {voice} does not say letters {bad} as their names")


def summarize(
    split: str, utts: list[Utterance], rows: list[dict], failures: list[dict], speakers: list[str]
) -> str:
    hours = sum(r["duration"] for r in rows) / 3600
    mean = hours * 3600 / max(len(rows), 1)
    used = len({r["speaker"] for r in rows})
    written = {r["audio_filepath"] for r in rows}
    noises = Counter(u.noise for u in utts if u.relpath in written)
    noise = ", ".join(f"{k} {v}" for k, v in sorted(noises.items()))
    return (
        f"{split:5s}: {len(rows)} utterances, {hours:.2f} h (mean {mean:.2f} s), "
        f"{used} of {len(speakers)} speakers, {len(failures)} failed; noise: {noise}"
    )


# --- command line --------------------------------------------------------------------------
def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} < 0")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--sample", action="store_true", help="defaults of the small committed sample set")
    p.add_argument(
        "--preset", choices=sorted(PRESETS),
        help="defaults: full (espeak only; the default), sample (= --sample), mix (three engines,\n"
        "fragments, uneven levels: --engines espeak:0.4,flite:0.35,festival:0.25 --fragment-prob 0.2\n"
        "--level-prob 0.3)",
    )  # fmt: skip
    p.add_argument(
        "--engines", type=engine_weights,
        help="synthesisers and their shares, e.g. espeak,flite,festival (equal) or espeak:2,flite:1\n"
        "(full, sample: espeak)",
    )  # fmt: skip
    p.add_argument(
        "--fragment-prob", type=probability,
        help="share of utterances cut to 1-5 consecutive slots of a sentence (full: 0, mix: 0.2)",
    )  # fmt: skip
    p.add_argument(
        "--level-prob", type=probability,
        help=f"share with {LEVEL_PAD_S[0]:g}-{LEVEL_PAD_S[1]:g} s silences, a {FLOOR_DBFS[0]:g}..{FLOOR_DBFS[1]:g}"
        f" dBFS noise floor\nand a {LEVEL_GAIN_DB[0]:g}..{LEVEL_GAIN_DB[1]:+g} dB gain (full: 0, mix: 0.3)",
    )  # fmt: skip
    p.add_argument("--num-train", type=non_negative, help="utterances (full: 6000, sample: 240)")
    p.add_argument("--num-dev", type=non_negative, help="utterances (full: 300, sample: 16)")
    p.add_argument("--num-test", type=non_negative, help="utterances (full: 500, sample: 16)")
    p.add_argument(
        "--lm-sentences", type=non_negative, help="sentences in lm_train.txt (full: 20000, sample: 2000)"
    )
    p.add_argument(
        "--snr-db", type=float, nargs=2, metavar=("LOW", "HIGH"),
        help="SNR range of the noisy utterances, dB (full: 5 30, sample: 20 35)",
    )  # fmt: skip
    p.add_argument(
        "--clean-prob", type=float, help="share of utterances without noise (full: 0.2, sample: 0.5)"
    )
    p.add_argument(
        "--max-speakers", type=non_negative, help="use at most this many speakers per split (sample: 24)"
    )
    p.add_argument(
        "--bits",
        type=int,
        choices=range(8, 17),
        metavar="8..16",
        help="significant bits per sample, to shrink the files (full: 16, sample: 10)",
    )
    p.add_argument("--seed", type=non_negative, default=0, help="the output depends only on the arguments")
    p.add_argument(
        "--jobs", type=non_negative, default=multiprocessing.cpu_count(), help="parallel workers (all cores)"
    )
    p.add_argument("--max-failures", type=int, default=0, help="exit with status 1 above this many failures")
    args = p.parse_args(argv)
    if args.sample and args.preset not in (None, "sample"):
        p.error(f"--sample and --preset {args.preset} contradict each other")
    preset = "sample" if args.sample else args.preset or "full"
    for key, value in PRESETS[preset].items():
        if getattr(args, key) is None:
            setattr(args, key, engine_weights(value) if key == "engines" else value)
    return args


def engine_weights(text: str) -> dict[str, float]:
    """``espeak:0.4,flite:0.35,festival`` → {engine: weight} (a missing weight is 1)."""
    weights = {}
    for item in text.split(","):
        name, _, weight = item.strip().partition(":")
        if name not in ENGINES:
            raise argparse.ArgumentTypeError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
        try:
            weights[name] = float(weight) if weight else 1.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: the weight after ':' must be a number") from None
        if weights[name] <= 0:
            raise argparse.ArgumentTypeError(f"{item!r}: weights must be > 0")
    return weights


def probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not in 0..1")
    return value


def prepare_split(
    split: str, num: int, pools: dict[str, list[str]], args: argparse.Namespace, summary: dict
) -> list[dict]:
    """Synthesise one split and write its manifest; prints its summary and adds it to ``summary``,
    returns its failures. ``pools``: the split's speakers of each engine."""
    speakers = pools["espeak"]
    utts = plan_split(split, num, speakers, args, pools)
    clips = sorted({clip for u in utts for clip in u.babble_clips})  # synthesised once, shared
    bank = {clip: babble_clip(speakers, make_rng(args.seed, "babble", split, str(clip))) for clip in clips}
    results = run_split(split, utts, args, bank)
    rows = [r for r in results if not r.get("failed")]
    failures = [r for r in results if r.get("failed")]
    write_manifest(args.out / f"{split}.jsonl", rows)
    tqdm.write(summarize(split, utts, rows, failures, [s for spk in pools.values() for s in spk]))
    written = {r["audio_filepath"] for r in rows}
    done = [u for u in utts if u.relpath in written]
    summary[split] = {
        "utterances": len(rows),
        "hours": round(sum(r["duration"] for r in rows) / 3600, 3),
        "failed": len(failures),
        "engines": dict(sorted(Counter(u.engine for u in done).items())),
        "speakers_used": dict(sorted(Counter(engine_of(s) for s in {r["speaker"] for r in rows}).items())),
        "fragments": sum(len(u.text.split()) < len(SLOTS) for u in done),
        "uneven_level": sum(u.gain_db is not None for u in done),
    }
    if set(args.engines) != {"espeak"} or args.fragment_prob or args.level_prob:
        tqdm.write(
            f"       engines: {', '.join(f'{k} {v}' for k, v in summary[split]['engines'].items())}; "
            f"fragments {summary[split]['fragments']}, uneven level {summary[split]['uneven_level']}"
        )
    return failures


def report_failures(out: Path, failures: list[dict]) -> None:
    """List every failed utterance on stderr and in <out>/failures.jsonl (removed when none)."""
    path = out / "failures.jsonl"
    if not failures:
        path.unlink(missing_ok=True)
        return
    write_manifest(path, failures)
    for f in failures:
        print(
            f"FAILED {f['utterance']} speaker={f['speaker']} text={f['text']!r}: {f['error']}",
            file=sys.stderr,
        )
    print(f"{len(failures)} utterances failed, listed in {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    all_speakers = split_speakers(installed_variants())
    check_espeak({split_speaker(s)[1] for spk in all_speakers.values() for s in spk})  # babble needs espeak
    check_engines(set(args.engines))
    speakers = {
        split: limit_speakers(spk, args.max_speakers, make_rng(args.seed, "speakers", split))
        for split, spk in all_speakers.items()
    }
    if empty := [split for split, spk in speakers.items() if not spk]:
        raise SystemExit(f"no speakers for {empty}: check espeak-ng's variants and --max-speakers")
    pools = {split: {"espeak": spk} for split, spk in speakers.items()}
    for engine in set(args.engines) - {"espeak"}:
        for split, spk in other_speakers(engine).items():
            pools[split][engine] = spk
    listed = {split: [s for e in ENGINES if e in args.engines for s in pools[split][e]] for split in SPLITS}
    (args.out / "speakers.json").write_text(json.dumps(listed, indent=1) + "\n")
    write_text_files(args.out, args.lm_sentences, args.seed)

    sizes = {"train": args.num_train, "dev": args.num_dev, "test": args.num_test}
    start, failures, summary = time.perf_counter(), [], {}
    for split in SPLITS:
        failures += prepare_split(split, sizes[split], pools[split], args, summary)
    elapsed, total = time.perf_counter() - start, sum(sizes.values())
    print(
        f"synthesised {total} utterances in {elapsed:.1f} s ({total / elapsed:.1f} utt/s, {args.jobs} jobs)"
    )
    summary["args"] = {
        "engines": args.engines, "fragment_prob": args.fragment_prob, "level_prob": args.level_prob,
        "seed": args.seed,
    }  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(
        f"wrote {args.out}/{{train,dev,test}}.jsonl, audio/, words.txt, lm_train.txt, speakers.json, summary.json"
    )
    report_failures(args.out, failures)
    return 1 if len(failures) > args.max_failures else 0


if __name__ == "__main__":
    sys.exit(main())

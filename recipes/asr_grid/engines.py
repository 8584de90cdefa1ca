"""The synthesisers of the asr_grid corpus and their voices.

espeak-ng speaks with (voice, variant) speakers such as ``en-us+f3``: the installed voices and
variants, the variant families that decide which split hears each speaker, and SSML text with letters
spelled as names. flite, Festival, MBROLA, SVOX Pico and RHVoice speak with voices built from
recordings of real people (:class:`Voice`, ``OTHER_VOICES``; speakers ``flite:awb+low``, split by
person across engines). :func:`synthesize` and :func:`synthesize_other` return one utterance's
speech, float32 mono at ``SAMPLE_RATE``. checks.py checks that the engines and voices are installed
and say every letter as its name; prepare.py plans and writes the corpus; rendering.py turns the
speech into the final waveform.
"""

from __future__ import annotations

import io
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from speechkit.corpora.grid import ESPEAK_SPELLING  # the shared GRID grammar

if TYPE_CHECKING:
    from rendering import Utterance

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
AMPLITUDE = 60  # espeak -a (default 100 clips a few variants)
SYNTH_TIMEOUT_S = 30  # s, per synthesiser call


def speaker_name(voice: str, variant: str) -> str:
    return f"{voice}+{variant}" if variant else voice


def split_speaker(speaker: str) -> tuple[str, str]:
    voice, _, variant = speaker.partition("+")
    return voice, variant


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


# --- flite, Festival, MBROLA, Pico, RHVoice ------------------------------------------------
@dataclass(frozen=True)
class Voice:
    """A voice of an engine other than espeak-ng: the person whose recordings it was built from, and
    its own mean F0 (Hz, measured on a GRID sentence; None where the engine ignores an F0 target).
    Pico and RHVoice take their F0 and tempo as a percentage of the voice's own; for them f0_hz only
    records what the voice sounds like."""

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
    # MBROLA diphone databases spoken through Festival (engine "mbrola"), each cut from one person's
    # recordings: us1 a woman, us2 and us3 men. Debian has them in its non-free component only, so
    # they are an engine of their own that a corpus can leave out. Mean F0 measured on a GRID sentence.
    Voice("mbrola", "us1_mbrola", "us1", 163.0),
    Voice("mbrola", "us2_mbrola", "us2", 92.0),
    Voice("mbrola", "us3_mbrola", "us3", 107.0),
    # SVOX Pico (Debian non-free libttspico-utils): one woman per language, each voice cut from her
    # recordings (lingware en-US_lh0, en-GB_kh0). F0: median on four GRID sentences (librosa pyin).
    Voice("pico", "en-US", "lh0", 169.0),
    Voice("pico", "en-GB", "kh0", 176.0),
    # RHVoice HTS voices (Debian non-free rhvoice-english): alan, bdl, clb and slt are trained on the
    # CMU ARCTIC recordings of awb (Alan W Black, Scottish; flite's awb is the same man), bdl, clb and
    # slt. Its evgeniy-eng and lyubov voices are left out: their licence (CC BY-NC-ND) would bind the
    # models trained on them. F0: median on four GRID sentences (librosa pyin).
    Voice("rhvoice", "alan", "awb", 137.0),
    Voice("rhvoice", "bdl", "bdl", 120.0),
    Voice("rhvoice", "clb", "clb", 187.0),
    Voice("rhvoice", "slt", "slt", 178.0),
)
# Split by the recorded person, across engines (flite slt, Festival's slt HTS and RHVoice's slt are one
# woman; flite's and RHVoice's awb one man). Pico's kh0 and RHVoice's clb (mix6 only) give dev and test a
# person beyond rms and slt, so that test is not two thirds one woman.
HELD_OUT_PEOPLE = {"dev": ("rms", "kh0"), "test": ("slt", "clb")}
ENGINES = ("espeak", "flite", "festival", "mbrola", "pico", "rhvoice")
FESTIVAL = ("festival", "mbrola")  # the engines Festival speaks for
F0_VARIANTS = {"low": 0.85, "mid": 1.0, "high": 1.2}  # × the voice's mean F0: the speaker's variant
F0_JITTER = (0.93, 1.07)  # × per utterance
STRETCH = (0.8, 1.25)  # duration factor per utterance (flite duration_stretch, Festival Duration_Stretch,
# Pico <speed level>, RHVoice -r: both percent of the voice's own tempo, measured: 100/level × duration)
RESAMPLE_RANGE = (0.9, 1.12)  # pitch (and tempo) factor by resampling, for voices without an F0 target
SPELLING = {"a": "eigh"}  # every engine reads a lone "a" as the article (flite/Festival phones "ax")


def voice_of(speaker: str) -> Voice:
    """The voice of a speaker named ``engine:voice+variant`` (any engine but espeak-ng)."""
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


def engine_text(words: list[str], spelling: dict[str, str] = SPELLING) -> str:
    return " ".join(spelling.get(w, w) for w in words)


def run_synth(cmd: list[str], name: str, stdin: str | None = None) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=SYNTH_TIMEOUT_S, input=stdin, text=True)
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"{name} timed out after {SYNTH_TIMEOUT_S} s") from err
    if proc.returncode != 0:
        raise RuntimeError(f"{name} exit {proc.returncode}: {proc.stderr[:200]}")


def synthesize_other(utt: Utterance) -> np.ndarray:
    """Speak ``utt`` with its engine (not espeak-ng); float32 mono at SAMPLE_RATE. Raises RuntimeError."""
    return speak(voice_of(utt.speaker), engine_text(utt.text.split()), utt.stretch, utt.f0_factor)


def speak(voice: Voice, text: str, stretch: float = 1.0, f0_factor: float = 1.0) -> np.ndarray:
    """``voice`` says ``text`` (spelled already) ``stretch`` times as long as its own, at ``f0_factor``
    times its own F0; float32 mono at SAMPLE_RATE. Raises RuntimeError."""
    f0 = voice.f0_hz * f0_factor if voice.f0_hz else None
    resample = 1.0 if f0 else float(np.clip(f0_factor, *RESAMPLE_RANGE))
    stretch = stretch * resample if voice.stretch else 1.0  # resampling shortens by 1/resample
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        if voice.engine == "flite":
            cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={stretch:.3f}"]
            cmd += ["--setf", f"int_f0_target_mean={f0:.1f}"] if f0 else []
            run_synth([*cmd, "-t", text, "-o", str(wav)], "flite")
        elif voice.engine == "pico":  # markup levels: percent of the voice's own tempo and F0
            markup = f"<speed level='{round(100 / stretch)}'><pitch level='{round(100 * f0_factor)}'>{text}"
            run_synth(["pico2wave", "-l", voice.name, "-w", str(wav), markup + "</pitch></speed>"], "pico")
        elif voice.engine == "rhvoice":  # -r, -t: percent of the voice's own rate and F0
            cmd = ["RHVoice-test", "-p", voice.name, "-r", str(round(100 / stretch))]
            cmd += ["-t", str(round(100 * f0_factor)), "-o", str(wav)]
            run_synth(cmd, "rhvoice", stdin=text + "\n")
            if not wav.is_file():  # RHVoice-test exits 0 even when it writes nothing
                raise RuntimeError(f"rhvoice wrote no audio for {text!r} with voice {voice.name}")
        else:
            evals = [f"(voice_{voice.name})", f"(Parameter.set 'Duration_Stretch {stretch:.3f})"]
            if f0:  # the diphone voices' intonation model reads its target mean from int_lr_params
                evals.append(f"(set! int_lr_params (cons (list 'target_f0_mean {f0:.1f}) int_lr_params))")
            cmd = ["text2wave", *(a for e in evals for a in ("-eval", e)), "-o", str(wav)]
            run_synth(cmd, voice.engine, stdin=text + "\n")
        audio, sr = sf.read(wav, dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    target = round(sr / resample)  # resample: played at sr, read as if recorded at sr / resample
    audio = resample_poly(audio, SAMPLE_RATE, target) if target != SAMPLE_RATE else audio
    return audio.astype(np.float32)


def run_text(cmd: list[str], stdin: str | None = None) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, input=stdin, check=True).stdout

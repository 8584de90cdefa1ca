"""Checks that the asr_grid engines are installed and say every letter as its name.

A voice that reads "b" as anything but "bee" would teach the model a wrong letter, so prepare.py
stops before it synthesises anything. espeak-ng and the engines that tell their phones (flite,
Festival, MBROLA) are checked through their own text analysis; Pico and RHVoice, which do not, by ear
(:func:`check_letters_by_ear`). A missing engine or voice names the Debian packages to install.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
from engines import (
    ENGINES,
    FESTIVAL,
    OTHER_VOICES,
    SAMPLE_RATE,
    SPELLING,
    VOICES,
    Voice,
    engine_text,
    espeak_phonemes,
    installed_variants,
    installed_voices,
    run_text,
    speak,
)

from speechkit.corpora.grid import ESPEAK_SPELLING, LETTERS  # the shared GRID grammar

PICO_LANG = Path("/usr/share/pico/lang")  # Pico's lingware, <lang>_ta.bin and <lang>_<speaker>_sg.bin
RHVOICE_VOICES = Path("/usr/share/RHVoice/voices")  # RHVoice's voices, <name>/voice.info


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


def engine_phones(voice: Voice, texts: list[str]) -> list[list[str]]:
    """The phones each engine says for each of ``texts`` (its own analysis, not the audio)."""
    if voice.engine == "flite":
        cmd = ["flite", "-voice", voice.name, "-ps", "-o", "none", "-t"]
        return [run_text(cmd + [t]).split() for t in texts]
    body = " ".join(f'(phones "{t}")' for t in texts)
    script = (
        f'(voice_{voice.name})(define (phones text) (format t "%l\\n" (mapcar (lambda (s) (item.name s))'
        f" (utt.relation.items (utt.synth (eval (list 'Utterance 'Text text))) 'Segment)))) {body}"
    )
    lines = run_text(["festival", "--pipe"], script).splitlines()
    return [re.findall(r'"([^"]*)"', line) for line in lines if line.startswith("(")]


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


# Texts that each engine without phone output says as each letter's name, the references of
# check_letters_by_ear. Pico reads a capital initial ("B.") as the letter's name (measured: the same
# samples as a lone "b" for every letter but "a", and "A." the same as "eigh"); its respellings are
# less sure ("gee" differs from "G.", "aitch" from "H."). RHVoice reads lone letters and respellings
# alike ("b" and "bee": the same samples) but "eff", "aitch" and "are" otherwise ("f", "ef", "eph" and
# "ehf" agree; "h" and "aych"; "r", "ar", "aar" and "ahr"); "eigh" and "ay" agree (the lone "a" is the
# article). Its initials ("B.") end a phrase.
RESPELLINGS = {
    "a": ("eigh", "ay"), "b": ("bee",), "c": ("see",), "d": ("dee",), "e": ("ee",), "f": ("ef",),
    "g": ("gee",), "h": ("aych",), "i": ("eye",), "j": ("jay",), "k": ("kay",), "l": ("ell",),
    "m": ("em",), "n": ("en",), "o": ("oh",), "p": ("pee",), "q": ("cue",), "r": ("ar",), "s": ("ess",),
    "t": ("tee",), "u": ("you",), "v": ("vee",), "x": ("ex",), "y": ("why",), "z": ("zee",),
}  # fmt: skip
LETTER_NAMES = {
    "pico": {c: (f"{c.upper()}.", *(("eigh",) if c == "a" else ())) for c in LETTERS},
    "rhvoice": RESPELLINGS,
}
ARTICLE = "uh"  # the wrong reading a lone "a" risks, a reference of no letter
CARRIER = "at {} five"  # letters are heard inside the carrier, as in a GRID command


def check_letters_by_ear(voice: Voice, spelling: dict[str, str] = SPELLING) -> list[str]:
    """Letters that ``voice`` does not say as their names in "at <letter> five" (should be none), by
    ear: for engines that do not tell their phones (Pico, RHVoice).

    Each letter, spelled with ``spelling`` as the corpus spells it, is said in the carrier by the
    voice, and so is every reference: each letter's names in LETTER_NAMES and the article "uh". A
    letter passes when the reference nearest to its utterance (DTW distance between MFCC sequences,
    :func:`heard_distance`) is one of its own names, strictly; a name with the very text of the
    letter's spelling is left out, so that a spelling never vouches for itself. Both engines are
    deterministic: the same phones give the same samples (distance 0), one phone apart lies 5-40
    apart. A wrong spelling ("dee" for b) or reading (the article for a lone "a") is thus nearer a
    wrong reference and fails. About 50 utterances: ~1 s per Pico voice, ~5 s per RHVoice voice."""
    names = LETTER_NAMES[voice.engine]
    refs = [(c, name) for c in LETTERS for name in names[c]] + [("", ARTICLE)]
    texts = {spelling.get(c, c) for c in LETTERS} | {name for _, name in refs}
    heard = {text: mfcc_frames(speak(voice, CARRIER.format(text))) for text in sorted(texts)}
    bad = []
    for c in LETTERS:
        said = spelling.get(c, c)
        own = [heard_distance(heard[said], heard[n]) for letter, n in refs if letter == c and n != said]
        wrong = [heard_distance(heard[said], heard[n]) for letter, n in refs if letter != c]
        if not own or min(own) >= min(wrong):
            bad.append(c)
    return bad


def mfcc_frames(audio: np.ndarray) -> np.ndarray:
    """MFCCs 1-12 (c0, the level, left out) of ``audio`` (SAMPLE_RATE) without leading and trailing
    silence: shape (12, frames), 10 ms a frame."""
    import librosa  # here: only the letter check needs it, and it is slow to import

    active = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
    if active.size == 0:
        raise RuntimeError("the letter check heard silence: the engine said nothing")
    audio = audio[active[0] : active[-1] + 1]
    return librosa.feature.mfcc(y=audio, sr=SAMPLE_RATE, n_mfcc=13, n_fft=512, hop_length=160)[1:]


def heard_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Euclidean distance between the frames of ``a`` (12, n) and ``b`` (12, m) along their best
    DTW alignment: 0 for the same samples."""
    import librosa

    cost, path = librosa.sequence.dtw(X=a, Y=b, metric="euclidean")
    return float(cost[-1, -1] / len(path))


def pico_voices() -> set[str]:
    """Languages whose Pico lingware is installed, e.g. {"en-US", "en-GB"}."""
    return {p.name.split("_")[0] for p in PICO_LANG.glob("*_sg.bin")}


def rhvoice_voices() -> set[str]:
    """Installed RHVoice voices (RHVoice-test silently speaks with another voice for a missing one)."""
    return {p.parent.name for p in RHVOICE_VOICES.glob("*/voice.info")}


def festival_voices() -> set[str]:
    out = run_text(["festival", "--pipe"], '(format t "%l\\n" (voice.list))')
    return set(re.findall(r"[\w-]+", out))


BINARIES = {
    "flite": ("flite",), "festival": ("text2wave",), "mbrola": ("mbrola", "text2wave"),
    "pico": ("pico2wave",), "rhvoice": ("RHVoice-test",),
}  # fmt: skip
PACKAGES = {  # what to install for each engine's voices
    "flite": "flite",
    "festival": "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
    "mbrola": "festival mbrola mbrola-us1 mbrola-us2 mbrola-us3 festvox-us1 festvox-us2 festvox-us3 "
    "(Debian's non-free component: add 'contrib non-free' to the apt sources first)",
    "pico": "libttspico-utils (Debian's non-free component)",
    "rhvoice": "rhvoice rhvoice-english (Debian's non-free component)",
}


def check_engines(engines: set[str]) -> None:
    """Fail early if an engine or voice is missing or says a letter as anything but its name."""
    for engine in sorted(engines - {"espeak"}):
        if missing := [b for b in BINARIES[engine] if shutil.which(b) is None]:
            raise SystemExit(f"--engines names {engine}, but {' and '.join(missing)} is not installed: "
                             f"apt-get install {PACKAGES[engine]}")  # fmt: skip
    if engines <= {"espeak"}:
        return
    have = {engine: set() for engine in ENGINES}
    if "flite" in engines:
        have["flite"] = set(run_text(["flite", "-lv"]).split()[2:])
    if engines & set(FESTIVAL):
        have["festival"] = have["mbrola"] = festival_voices()
    if "pico" in engines:
        have["pico"] = pico_voices()
    if "rhvoice" in engines:
        have["rhvoice"] = rhvoice_voices()
    for voice in (v for v in OTHER_VOICES if v.engine in engines):
        if voice.name not in have[voice.engine]:
            raise SystemExit(
                f"{voice.engine} lacks voice {voice.name} (has {sorted(have[voice.engine])}): "
                f"apt-get install {PACKAGES[voice.engine]}"
            )
        check = check_letters_by_ear if voice.engine in LETTER_NAMES else check_other_letters
        if bad := check(voice):
            raise SystemExit(f"{voice.engine} voice {voice.name} does not say letters {bad} as their names")

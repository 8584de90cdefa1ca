"""One utterance of the asr_grid corpus: what is drawn for it (:class:`Utterance`) and its final waveform.

:func:`render` speaks the utterance with its engine (engines.py), trims it, sets its level, pads it
with silence, mixes in white, pink, brown or babble noise at its SNR, applies its gain and noise floor
and limits the peak; :func:`quantize` keeps the top bits of the 16-bit samples. Babble noise is summed
from a bank of sentences per split (:func:`babble_clip`), set in every worker with
:func:`set_babble_bank`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from engines import (  # beside this file: prepare.py puts this folder on sys.path
    PITCH,
    RATE_WPM,
    SAMPLE_RATE,
    espeak_text,
    speaker_name,
    split_speaker,
    synthesize,
    synthesize_other,
)

from speechkit.corpora.grid import random_sentence  # the shared GRID grammar

# --- audio ---------------------------------------------------------------------------------
PAD_S = (0.05, 0.3)  # s, silence (then noise) added before and after the speech
LEVEL_DBFS = -22.0  # dBFS, RMS of the active speech before the random gain
GAIN_DB = (-6.0, 3.0)  # dB, random gain
PEAK = 0.95  # full scale, peak limit after gain
FILE_BITS = 16  # the FLAC files are 16-bit; --bits < 16 zeroes low bits, which FLAC stores for free
NOISE_TYPES = ("white", "pink", "brown", "babble")


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
    babble_clips: tuple[int, ...]  # which of the split's BABBLE_BANK (prepare.py) sentences make its babble
    # drawn from a separate stream (plan_extras), so that espeak-only plans stay as they were
    engine: str = "espeak"
    stretch: float = 1.0  # duration factor (flite, festival)
    f0_factor: float = 1.0  # times the voice's mean F0 (flite, festival)
    pads_s: tuple[float, float] | None = None  # s, leading/trailing silence; None: PAD_S
    floor_dbfs: float | None = None  # dBFS, RMS of a white noise floor added after the gain
    gain_db: float | None = None  # dB; None: GAIN_DB
    spaced_ms: tuple[int, ...] | None = None  # words said one at a time, these pauses between; None: together

    @property
    def speaker(self) -> str:
        return speaker_name(self.voice, self.variant)

    @property
    def relpath(self) -> str:
        return f"audio/{self.split}/{self.index:05d}.flac"


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


def speak_words(utt: Utterance) -> np.ndarray:
    """``utt``'s words as its engine says them in one go (espeak-ng with the planned breaks)."""
    if utt.engine == "espeak":
        text = espeak_text(utt.text.split(), utt.breaks_ms)
        return synthesize(text, utt.voice, utt.variant, utt.rate_wpm, utt.pitch, utt.word_gap)
    return synthesize_other(utt)


def render(utt: Utterance) -> np.ndarray:
    """Synthesise, pad, add noise and gain: the final 16 kHz waveform of ``utt``."""
    rng = np.random.default_rng(utt.seed)
    if utt.spaced_ms is not None:  # each word alone, trimmed, then joined by the planned pauses
        alone = [replace(utt, text=w, breaks_ms=(), spaced_ms=None) for w in utt.text.split()]
        words = [trim_silence(speak_words(u)) for u in alone]
        gaps = [np.zeros(int(ms * SAMPLE_RATE / 1000), np.float32) for ms in (*utt.spaced_ms, 0)]
        speech = np.concatenate([x for pair in zip(words, gaps) for x in pair])  # trimmed: the last gap is 0
        voiced = np.concatenate(words)  # level and SNR are the words', not diluted by the pauses
    else:
        speech = voiced = trim_silence(speak_words(utt))
    scale = 10 ** (LEVEL_DBFS / 20) / (np.sqrt(np.mean(voiced**2)) + 1e-12)
    speech, voiced = speech * scale, voiced * scale
    pads = (rng.uniform(*PAD_S, size=2) * SAMPLE_RATE).astype(int)
    if utt.pads_s is not None:
        pads = (np.array(utt.pads_s) * SAMPLE_RATE).astype(int)
    audio = np.concatenate([np.zeros(pads[0], np.float32), speech, np.zeros(pads[1], np.float32)])
    if utt.snr_db is not None:
        noise_rms = np.sqrt(np.mean(voiced**2)) * 10 ** (-utt.snr_db / 20)
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

"""Synthesise a GRID-grammar speech corpus offline with espeak-ng.

GRID sentences have six slots: command, colour, preposition, letter, digit, adverb
("bin blue at c five please"); 51 words in all. Every utterance is spoken by one
*speaker*, a (voice, variant) pair such as ``en-us+f3``, at a random rate, pitch and
word spacing, then mixed with white, pink, brown or babble noise at a random SNR (or
left clean), given a small random gain, resampled to 16 kHz mono and written as FLAC.

Speakers are split by *variant family*: the variants of the dev and test splits (and
their near-copies, e.g. ``iven`` .. ``iven4``) never occur in train, so dev and test
voices are unseen in training. Every split uses all English accents.

Output (paths in the manifests are relative to ``--out``)::

    <out>/audio/{train,dev,test}/00001.flac
    <out>/{train,dev,test}.jsonl   {"audio_filepath", "duration", "text", "speaker"}
    <out>/words.txt  <out>/lm_train.txt  <out>/speakers.json  [<out>/failures.jsonl]

Example::

    python recipes/asr_grid/prepare.py --out data/asr_grid --jobs 2
    python recipes/asr_grid/prepare.py --sample --out samples/grid

The output depends only on the arguments (``--jobs`` included or not).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
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
SYNTH_TIMEOUT_S = 30  # s, per espeak-ng call

PRESETS = {  # defaults that the command-line flags override
    "full": dict(
        num_train=6000, num_dev=300, num_test=500, lm_sentences=20000,
        snr_db=(5.0, 30.0), clean_prob=0.2, max_speakers=None, bits=16,
    ),
    "sample": dict(
        num_train=240, num_dev=16, num_test=16, lm_sentences=2000,
        snr_db=(20.0, 35.0), clean_prob=0.5, max_speakers=24, bits=10,
    ),
}  # fmt: skip


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
    speech = synthesize(
        espeak_text(utt.text.split(), utt.breaks_ms),
        utt.voice,
        utt.variant,
        utt.rate_wpm,
        utt.pitch,
        utt.word_gap,
    )
    speech = trim_silence(speech)
    speech *= 10 ** (LEVEL_DBFS / 20) / (np.sqrt(np.mean(speech**2)) + 1e-12)
    pads = (rng.uniform(*PAD_S, size=2) * SAMPLE_RATE).astype(int)
    audio = np.concatenate([np.zeros(pads[0], np.float32), speech, np.zeros(pads[1], np.float32)])
    if utt.snr_db is not None:
        noise_rms = np.sqrt(np.mean(speech**2)) * 10 ** (-utt.snr_db / 20)
        audio += noise_rms * make_noise(utt, rng, audio.size)
    audio *= 10 ** (rng.uniform(*GAIN_DB) / 20)
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


def plan_split(split: str, num: int, speakers: list[str], args: argparse.Namespace) -> list[Utterance]:
    rng = make_rng(args.seed, "plan", split)
    return [plan_utterance(split, i, speakers, args, rng) for i in range(1, num + 1)]


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
    for key, value in PRESETS["sample" if args.sample else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def prepare_split(split: str, num: int, speakers: list[str], args: argparse.Namespace) -> list[dict]:
    """Synthesise one split and write its manifest; prints its summary, returns its failures."""
    utts = plan_split(split, num, speakers, args)
    clips = sorted({clip for u in utts for clip in u.babble_clips})  # synthesised once, shared
    bank = {clip: babble_clip(speakers, make_rng(args.seed, "babble", split, str(clip))) for clip in clips}
    results = run_split(split, utts, args, bank)
    rows = [r for r in results if not r.get("failed")]
    failures = [r for r in results if r.get("failed")]
    write_manifest(args.out / f"{split}.jsonl", rows)
    tqdm.write(summarize(split, utts, rows, failures, speakers))
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
    check_espeak({split_speaker(s)[1] for spk in all_speakers.values() for s in spk})
    speakers = {
        split: limit_speakers(spk, args.max_speakers, make_rng(args.seed, "speakers", split))
        for split, spk in all_speakers.items()
    }
    if empty := [split for split, spk in speakers.items() if not spk]:
        raise SystemExit(f"no speakers for {empty}: check espeak-ng's variants and --max-speakers")
    (args.out / "speakers.json").write_text(json.dumps(speakers, indent=1) + "\n")
    write_text_files(args.out, args.lm_sentences, args.seed)

    sizes = {"train": args.num_train, "dev": args.num_dev, "test": args.num_test}
    start, failures = time.perf_counter(), []
    for split in SPLITS:
        failures += prepare_split(split, sizes[split], speakers[split], args)
    elapsed, total = time.perf_counter() - start, sum(sizes.values())
    print(
        f"synthesised {total} utterances in {elapsed:.1f} s ({total / elapsed:.1f} utt/s, {args.jobs} jobs)"
    )
    print(f"wrote {args.out}/{{train,dev,test}}.jsonl, audio/, words.txt, lm_train.txt, speakers.json")
    report_failures(args.out, failures)
    return 1 if len(failures) > args.max_failures else 0


if __name__ == "__main__":
    sys.exit(main())

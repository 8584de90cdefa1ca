"""Synthesise a GRID-grammar speech corpus offline with espeak-ng.

GRID sentences have six slots: command, colour, preposition, letter, digit, adverb
("bin blue at c five please"); 51 words in all. Every utterance is spoken by one
*speaker*, a (voice, variant) pair such as ``en-us+f3``, at a random rate, pitch and
word spacing, then mixed with white, pink, brown or babble noise at a random SNR (or
left clean), given a small random gain, resampled to 16 kHz mono and written as FLAC.

Speakers are split by *variant family*: the variants of the dev and test splits (and
their near-copies, e.g. ``iven`` .. ``iven4``) never occur in train, so dev and test
voices are unseen in training. Every split uses all English accents.

``--preset mix`` (or ``--engines``, ``--fragment-prob``, ``--level-prob``) adds flite, Festival and
MBROLA (through Festival) voices built from recordings of real people (speakers ``flite:awb+low``;
the split holds out whole people across engines: slt test, rms dev), fragments of 1-5 consecutive slots, and uneven silences,
noise floors and levels; see README.md. ``--preset mix6`` is mix with SVOX Pico and RHVoice voices too
(more real people). ``--preset words`` is mix6 with words alone: 60 % fragments, mostly of one to three
words (a quarter of all utterances is a single word), and 35 % said a word at a time (each word
synthesised alone, pauses between them: ``--spaced-prob``).
``<out>/summary.json`` counts utterances per engine.

Output (paths in the manifests are relative to ``--out``)::

    <out>/audio/{train,dev,test}/00001.flac
    <out>/{train,dev,test}.jsonl   {"audio_filepath", "duration", "text", "speaker"}
    <out>/words.txt  <out>/lm_train.txt  <out>/speakers.json  [<out>/failures.jsonl]

Example::

    python recipes/asr_grid/prepare.py --out data/asr_grid --jobs 2
    python recipes/asr_grid/prepare.py --sample --out samples/grid
    python recipes/asr_grid/prepare.py --preset mix --out data/asr_grid_mix --jobs 2
    python recipes/asr_grid/prepare.py --preset mix6 --out data/asr_grid_mix6 --jobs 2
    python recipes/asr_grid/prepare.py --preset words --out data/asr_grid_words --jobs 2

The output depends only on the arguments (``--jobs`` included or not).

This file plans the corpus, runs the synthesis and writes the manifests; engines.py holds the
synthesisers and their voices (which speakers exist, which split hears each), rendering.py one
utterance's waveform (level, silences, noise, gain).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from speechkit.corpora.grid import DIGITS, LETTERS, SLOTS, WORDS, random_sentence  # the shared GRID grammar
from speechkit.data.manifest import write_manifest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # engines.py, checks.py, rendering.py beside it
from checks import check_engines, check_espeak  # noqa: E402
from engines import (  # noqa: E402
    ENGINES,
    F0_JITTER,
    F0_VARIANTS,
    PITCH,
    RATE_WPM,
    SAMPLE_RATE,
    SPLITS,
    STRETCH,
    WORD_GAP,
    engine_of,
    installed_variants,
    other_speakers,
    split_speaker,
    split_speakers,
)
from rendering import (  # noqa: E402
    NOISE_TYPES,
    Utterance,
    babble_clip,
    quantize,
    render,
    set_babble_bank,
)

# --- corpus plan ---------------------------------------------------------------------------
BREAK_PROB = 0.15  # chance of an extra pause between two words
BREAK_MS = (20, 150)  # ms, length of such a pause
BABBLE_TALKERS = (3, 6)  # how many sentences are summed into babble noise
BABBLE_BANK = 48  # sentences per split (by its speakers) that babble noise is made of
# --level-prob: utterances recorded "as found" rather than as set up: long, uneven silences, a
# noise floor, a level far from LEVEL_DBFS (real recordings; the model should not key on ours)
LEVEL_PAD_S = (0.0, 1.0)  # s, leading and trailing silence, each
FLOOR_DBFS = (-70.0, -45.0)  # dBFS, RMS of the white noise floor under the whole utterance
LEVEL_GAIN_DB = (-20.0, 6.0)  # dB, gain instead of GAIN_DB
# --spaced-prob: the words said one at a time (each synthesised alone, in its citation form) and
# joined by pauses, as a person reads out a code or a spelling; the model should know a word alone
SPACED_GAP_MS = (60, 600)  # ms, pause between two words said one at a time
# --spelled-prob: a code of letters and digits instead of a sentence ("b x four"), as a person spells a name
# or reads out a reference; GRID's letter and digit slots are the words a model hears least often alone
SPELLED_WORDS = (1, 4)  # words in a code, uniform
SPELLED_DIGIT_PROB = 0.3  # a code's word is a digit with this chance, else a letter

PRESETS = {  # defaults that the command-line flags override
    "full": dict(
        num_train=12000, num_dev=300, num_test=500, lm_sentences=20000,
        snr_db=(5.0, 30.0), clean_prob=0.2, max_speakers=None, bits=16,
    ),
    "sample": dict(
        num_train=240, num_dev=16, num_test=16, lm_sentences=2000,
        snr_db=(20.0, 35.0), clean_prob=0.5, max_speakers=24, bits=10,
    ),
    "mix": dict(  # full, spoken by four synthesisers, with fragments and uneven levels
        num_train=10000, num_dev=300, num_test=500, lm_sentences=20000,
        snr_db=(5.0, 30.0), clean_prob=0.2, max_speakers=None, bits=16,
        engines="espeak:0.35,flite:0.3,festival:0.15,mbrola:0.2", fragment_prob=0.2, level_prob=0.3,
        fragment_sizes=None, spaced_prob=0.0, spelled_prob=0.0,
    ),
}  # fmt: skip
# mix with all six engines: Pico's two women and RHVoice's six people (slt test) take shares from the rest
PRESETS["mix6"] = {
    **PRESETS["mix"], "engines": "espeak:0.3,flite:0.2,festival:0.1,mbrola:0.15,pico:0.1,rhvoice:0.15"
}  # fmt: skip
# mix6 where most utterances are short and a third are said a word at a time: words alone
PRESETS["words"] = {
    **PRESETS["mix6"], "fragment_prob": 0.6, "fragment_sizes": "1:4,2:2,3:2,4:1,5:1", "spaced_prob": 0.35
}  # fmt: skip
# words where 40 % of the utterances are codes of letters and digits: the letters alone, many times over
PRESETS["spelled"] = {**PRESETS["words"], "spelled_prob": 0.4}
for _preset in ("full", "sample"):  # the espeak-only corpora, as before
    PRESETS[_preset].update(
        engines="espeak", fragment_prob=0.0, level_prob=0.0, fragment_sizes=None, spaced_prob=0.0, spelled_prob=0.0
    )


def make_rng(seed: int, *purpose: str) -> np.random.Generator:
    """An independent random stream per (seed, purpose), e.g. ("plan", "train")."""
    return np.random.default_rng([seed, *(int.from_bytes(p.encode(), "little") for p in purpose)])


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
    """Engine, fragment, level and spacing of one utterance, from a stream of their own (espeak-only
    plans without fragments, level changes or spacing stay exactly as plan_utterance made them; a
    setting at 0 or None draws nothing, so older presets' plans stay as they were)."""
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
        if args.fragment_sizes is None:  # 1..5 consecutive slots, uniform (the mix presets' draw)
            size = int(rng.integers(1, len(SLOTS)))
        else:
            sizes, weights = zip(*sorted(args.fragment_sizes.items()))
            size = int(sizes[rng.choice(len(sizes), p=np.array(weights) / sum(weights))])
        start = int(rng.integers(len(SLOTS) - size + 1))
        change.update(
            text=" ".join(utt.text.split()[start : start + size]),
            breaks_ms=utt.breaks_ms[start : start + size - 1],
        )
    if args.spelled_prob and rng.random() < args.spelled_prob:  # no draw at 0: older plans stay as they were
        n = int(rng.integers(SPELLED_WORDS[0], SPELLED_WORDS[1] + 1))
        words = [DIGITS[rng.integers(len(DIGITS))] if rng.random() < SPELLED_DIGIT_PROB
                 else LETTERS[rng.integers(len(LETTERS))] for _ in range(n)]  # fmt: skip
        change.update(text=" ".join(words), breaks_ms=(0,) * (n - 1))
    if rng.random() < args.level_prob:
        change.update(
            pads_s=tuple(round(float(x), 3) for x in rng.uniform(*LEVEL_PAD_S, size=2)),
            floor_dbfs=round(float(rng.uniform(*FLOOR_DBFS)), 1),
            gain_db=round(float(rng.uniform(*LEVEL_GAIN_DB)), 1),
        )
    if args.spaced_prob and rng.random() < args.spaced_prob:  # no draw at 0: older plans stay as they were
        words = len(change.get("text", utt.text).split())
        change.update(
            spaced_ms=tuple(int(g) for g in rng.integers(*SPACED_GAP_MS, size=words - 1)), breaks_ms=()
        )
    return replace(utt, **change)


def plan_split(
    split: str,
    num: int,
    speakers: list[str],
    args: argparse.Namespace,
    pools: dict[str, list[str]] | None = None,
) -> list[Utterance]:
    """The split's utterances; ``pools``: its speakers of each engine (None: espeak's ``speakers``)."""
    rng = make_rng(args.seed, "plan", split)
    utts = [plan_utterance(split, i, speakers, args, rng) for i in range(1, num + 1)]
    if set(args.engines) == {"espeak"} and not (
        args.fragment_prob or args.level_prob or args.spaced_prob or args.spelled_prob
    ):
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
        help="defaults: full (espeak only; the default), sample (= --sample), mix (four engines,\n"
        "fragments, uneven levels: --engines espeak:0.35,flite:0.3,festival:0.15,mbrola:0.2 --fragment-prob 0.2\n"
        "--level-prob 0.3), mix6 (mix with six engines: --engines espeak:0.3,flite:0.2,festival:0.1,\n"
        "mbrola:0.15,pico:0.1,rhvoice:0.15), words (mix6 with words alone: --fragment-prob 0.6\n"
        "--fragment-sizes 1:4,2:2,3:2,4:1,5:1 --spaced-prob 0.35), spelled (words with codes of letters\n"
        "and digits: --spelled-prob 0.4)",
    )  # fmt: skip
    p.add_argument(
        "--engines", type=engine_weights,
        help="synthesisers and their shares, e.g. espeak,flite,festival (equal) or espeak:2,flite:1\n"
        "(full, sample: espeak)",
    )  # fmt: skip
    p.add_argument(
        "--fragment-prob", type=probability,
        help="share of utterances cut to 1-5 consecutive slots of a sentence (full: 0, mix: 0.2, words: 0.6)",
    )  # fmt: skip
    p.add_argument(
        "--fragment-sizes", type=size_weights,
        help="how often each fragment size is drawn, e.g. 1:4,2:2,3:2,4:1,5:1 (words: that; otherwise 1-5 uniform)",
    )  # fmt: skip
    p.add_argument(
        "--spaced-prob", type=probability,
        help=f"share of utterances said a word at a time, each word synthesised alone, {SPACED_GAP_MS[0]}-"
        f"{SPACED_GAP_MS[1]} ms\npauses between them (words: 0.35, others: 0)",
    )  # fmt: skip
    p.add_argument(
        "--spelled-prob", type=probability,
        help=f"share of utterances that are a code of {SPELLED_WORDS[0]}-{SPELLED_WORDS[1]} letters and digits "
        f"(\"b x four\";\n{SPELLED_DIGIT_PROB:g} digits) instead of a sentence (spelled: 0.4, others: 0)",
    )  # fmt: skip
    p.add_argument(
        "--level-prob", type=probability,
        help=f"share with {LEVEL_PAD_S[0]:g}-{LEVEL_PAD_S[1]:g} s silences, a {FLOOR_DBFS[0]:g}..{FLOOR_DBFS[1]:g}"
        f" dBFS noise floor\nand a {LEVEL_GAIN_DB[0]:g}..{LEVEL_GAIN_DB[1]:+g} dB gain (full: 0, mix: 0.3)",
    )  # fmt: skip
    p.add_argument("--num-train", type=non_negative, help="utterances (full: 12000, sample: 240)")
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
            parse = {"engines": engine_weights, "fragment_sizes": size_weights}.get(key)
            setattr(args, key, parse(value) if parse and value is not None else value)
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


def size_weights(text: str) -> dict[int, float]:
    """``1:4,2:2,3`` → {fragment size: weight} (a missing weight is 1); sizes 1..5."""
    weights = {}
    for item in text.split(","):
        size, _, weight = item.strip().partition(":")
        try:
            size, weight = int(size), float(weight) if weight else 1.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: write SIZE or SIZE:WEIGHT, e.g. 1:4") from None
        if not 1 <= size < len(SLOTS) or not (math.isfinite(weight) and weight > 0):
            raise argparse.ArgumentTypeError(
                f"{item!r}: sizes are 1..{len(SLOTS) - 1}, weights finite and > 0"
            )
        if size in weights:
            raise argparse.ArgumentTypeError(f"size {size} is given twice")
        weights[size] = weight
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
        "codes": sum(not set(u.text.split()) - set(LETTERS) - set(DIGITS) and len(u.text.split()) < len(SLOTS)
                     for u in done),  # fmt: skip
        "uneven_level": sum(u.gain_db is not None for u in done),
        "single_words": sum(len(u.text.split()) == 1 for u in done),
        "spaced": sum(u.spaced_ms is not None for u in done),
    }
    if set(args.engines) != {"espeak"} or args.fragment_prob or args.level_prob or args.spaced_prob or args.spelled_prob:
        tqdm.write(
            f"       engines: {', '.join(f'{k} {v}' for k, v in summary[split]['engines'].items())}; "
            f"fragments {summary[split]['fragments']} (single words {summary[split]['single_words']}), "
            f"codes {summary[split]['codes']}, spaced {summary[split]['spaced']}, uneven level {summary[split]['uneven_level']}"
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
        "fragment_sizes": args.fragment_sizes, "spaced_prob": args.spaced_prob, "spelled_prob": args.spelled_prob,
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

"""How far speechkit's word times are from the true word boundaries of the asr_grid test set.

Reference boundaries come from the synthesiser itself, not from any model: every test utterance is
re-planned with recipes/asr_grid/prepare.py's own plan (same seed and preset, checked against the
manifest's text and speaker), spoken again by libespeak-ng with the same voice, rate, pitch, word gap
and SSML, and its word and phoneme events give each word's first phoneme and the pause (or the next
word) that ends it, in samples. Inside that span the word is trimmed to its first and last sample
above prepare.py's own silence threshold (1e-3 of the utterance's peak), so a word starts where it
becomes audible; the samples are then mapped through prepare.py's resampling, silence trim and
leading pad onto the file's clock. The re-synthesis is checked to be sample-identical to the
espeak-ng command line's (prepare.synthesize) for every utterance. Caveats: a boundary between two words with no
pause between them is where espeak-ng switches phonemes (coarticulation puts some of each word on
both sides); the noise added afterwards hides quiet word edges from any model (5–30 dB SNR).

The model's word times come from ``Pipeline.annotate`` given the files' samples (what ``transcribe``
returns), for greedy and beam (with GRID's 51-word lexicon) decoding. Only words decoded correctly
(matched to the reference by edit distance) are scored: mean absolute error of their start and end
times, in ms.

    python benchmarks/timestamps.py --checkpoint runs/asr_grid/mix/checkpoints/best.pt \\
        --manifest data/asr_grid/test.jsonl [--pad-s 1.0] [--word-timing frames|raw] \\
        [--placed-by aligner|main] [--calibrate-on data/asr_grid/dev.jsonl] [--timing snap_s=0.1 ...]

``--calibrate-on DEV_MANIFEST``: first measure the model's own word-time offsets on that audio, with no
references (``Pipeline.calibrate_timing``: where snapping to the pauses moves its boundaries), as
training now does for best.pt; the figures then use them.
``--placed-by``: for a model trained with an aligner (``aligner.weight``), whose posteriors the
hypothesis is aligned to for its word times: the aligner's (the default, as ``Pipeline`` does) or the
main head's.

``--word-timing frames``: ``WordTiming`` read off the frames alone, not snapped to the audio's pauses
(``snap_s=None``); ``raw``: word times as speechkit gave them before ``WordTiming`` (its tokens' frames).
``--timing FIELD=VALUE ...``: other ``WordTiming`` settings (to fit them on dev).
``--pad-s``: seconds of digital silence added before and after every file (the references move
with it), the case of a recording with long silences at its ends.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import importlib.util
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("timestamps")
ROOT = Path(__file__).resolve().parents[1]
PREPARE = ROOT / "recipes" / "asr_grid" / "prepare.py"
ESPEAK_SR = 22050  # Hz, libespeak-ng's output rate (prepare.ESPEAK_RATE_SR)


# --- reference boundaries -------------------------------------------------------------------
RECIPE_NAMES = (  # what the references need from the recipe
    *("parse_args", "split_speakers", "installed_variants", "plan_split", "espeak_text", "synthesize"),
    *("AMPLITUDE", "PAD_S", "SAMPLE_RATE"),
)


def load_prepare() -> SimpleNamespace:
    """The recipe's planning and espeak-ng helpers (prepare.py, or the modules it imports them from)."""
    spec = importlib.util.spec_from_file_location("asr_grid_prepare", PREPARE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    where = [module, *(sys.modules[m] for m in ("engines", "rendering") if m in sys.modules)]
    missing = [n for n in RECIPE_NAMES if not any(hasattr(m, n) for m in where)]
    if missing:
        raise SystemExit(
            f"{PREPARE} (and the modules it imports) lack {missing}: update RECIPE_NAMES' lookup"
        )
    return SimpleNamespace(**{n: next(getattr(m, n) for m in where if hasattr(m, n)) for n in RECIPE_NAMES})


class _Event(ctypes.Structure):  # espeak_EVENT of speak_lib.h
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # samples from the start of the synthesis
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),  # phoneme name (phoneme events)
    ]


class _Voice(ctypes.Structure):  # espeak_VOICE of speak_lib.h
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


EVENT_WORD, EVENT_PHONEME = 1, 7
SYNCHRONOUS, PHONEME_EVENTS, DONT_EXIT = 2, 0x0001, 0x8000
RATE, VOLUME, PITCH, WORDGAP = 1, 2, 3, 7  # espeak_PARAMETER
POS_CHARACTER = 1
SSML, PHONEMES, ENDPAUSE = 0x10, 0x100, 0x1000  # espeak-ng's command line: -m → SSML | PHONEMES | ENDPAUSE


class Espeak:
    """libespeak-ng in synchronous mode: samples and word spans (first phoneme → pause or next word).

    An engine that has spoken once speaks the next text slightly differently from a fresh one (and
    it cannot be re-initialised in the same process), so :func:`speak_fresh` runs each utterance in
    a process of its own, as the command line does."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libespeak-ng.so.1")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, str]] = []
        self._callback = ctypes.CFUNCTYPE(
            ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
        )(self._collect)

    def _collect(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != 0:
            e = events[i]
            self._events.append((e.type, e.sample, bytes(e.id).split(b"\0")[0].decode(errors="replace")))
            i += 1
        return 0

    def speak(self, text: str, speaker: str, rate: int, pitch: int, gap: int, amplitude: int):
        """``(samples at 22.05 kHz as float32, [(first, end) sample of each word]``)."""
        self._chunks, self._events = [], []
        hz = self.lib.espeak_Initialize(SYNCHRONOUS, 0, None, PHONEME_EVENTS | DONT_EXIT)
        if hz != ESPEAK_SR:
            raise RuntimeError(f"libespeak-ng runs at {hz} Hz, expected {ESPEAK_SR}")
        self.lib.espeak_SetSynthCallback(self._callback)
        if self.lib.espeak_SetVoiceByName(speaker.encode()) != 0:  # a language ("en-gb+iven3"), as the CLI
            voice = _Voice(languages=speaker.encode())
            if self.lib.espeak_SetVoiceByProperties(ctypes.byref(voice)) != 0:
                raise RuntimeError(f"libespeak-ng has no voice {speaker!r}")
        for param, value in ((RATE, rate), (VOLUME, amplitude), (PITCH, pitch), (WORDGAP, gap)):
            self.lib.espeak_SetParameter(param, value, 0)
        data = text.encode()
        self.lib.espeak_Synth(
            data, len(data) + 1, 0, POS_CHARACTER, 0, SSML | PHONEMES | ENDPAUSE, None, None
        )
        self.lib.espeak_Synchronize()
        audio = np.concatenate(self._chunks).astype(np.float32) / 32768
        spans: list[list[int | None]] = []  # [first phoneme, end]
        for kind, sample, name in self._events:
            if kind == EVENT_WORD:
                if spans and spans[-1][1] is None:
                    spans[-1][1] = sample
                spans.append([None, None])
            elif kind == EVENT_PHONEME and spans:
                word = spans[-1]
                if name.startswith("_"):  # a pause ends the word
                    if word[0] is not None and word[1] is None:
                        word[1] = sample
                elif word[0] is None:
                    word[0] = sample
                else:
                    word[1] = None  # a pause inside the word: it goes on
        if spans and spans[-1][1] is None:
            spans[-1][1] = len(audio)
        return audio, [(a, b) for a, b in spans if a is not None]  # not the phoneme-less event at the end


def speak_fresh(job: tuple) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """``Espeak().speak(*job)`` in a new process (this script with ``--speak``; torch is not loaded)."""
    cmd = [sys.executable, __file__, "--speak"]
    proc = subprocess.run(cmd, input=json.dumps(job).encode(), capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"libespeak-ng on {job}: {proc.stderr.decode(errors='replace')[-500:]}")
    header, _, pcm = proc.stdout.partition(b"\n")
    return np.frombuffer(pcm, dtype=np.float32), [tuple(span) for span in json.loads(header)]


def _speak_main() -> None:
    """``--speak``: one job (JSON on stdin) → a JSON line of word spans, then float32 samples, on stdout."""
    audio, spans = Espeak().speak(*json.loads(sys.stdin.read()))
    sys.stdout.buffer.write(json.dumps(spans).encode() + b"\n" + audio.astype(np.float32).tobytes())


def reference_words(manifest: Path, out: Path) -> list[dict]:
    """``{audio_filepath, words: [{word, start, end}]}`` (seconds on the file's clock) for every row
    of the asr_grid ``manifest``; written to ``out`` as JSON lines."""
    prep = load_prepare()
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    split = Path(rows[0]["audio_filepath"]).parent.name
    args = prep.parse_args(["--out", str(manifest.parent), "--jobs", "1"])
    speakers = prep.split_speakers(prep.installed_variants())[split]
    size = {"train": args.num_train, "dev": args.num_dev, "test": args.num_test}[split]
    plan = {u.relpath: u for u in prep.plan_split(split, size, speakers, args)}
    from scipy.signal import resample_poly
    from tqdm import tqdm

    refs = []
    for row in tqdm(rows, desc="references", unit="utt", mininterval=2.0):
        utt = plan.get(row["audio_filepath"])
        if utt is None or utt.text != row["text"] or utt.speaker != row["speaker"]:
            raise SystemExit(
                f"{manifest}: {row['audio_filepath']} is not what prepare.py's full preset (seed 0) plans "
                f"({utt and (utt.text, utt.speaker)} vs {(row['text'], row['speaker'])}); the references "
                "need the corpus made with the default arguments"
            )
        ssml = prep.espeak_text(utt.text.split(), utt.breaks_ms)
        job = (ssml, utt.speaker, utt.rate_wpm, utt.pitch, utt.word_gap, prep.AMPLITUDE)
        raw, spans = speak_fresh(job)
        speech = resample_poly(raw, 320, 441).astype(np.float32)  # as prepare.synthesize
        cli = prep.synthesize(ssml, utt.voice, utt.variant, utt.rate_wpm, utt.pitch, utt.word_gap)
        if cli.shape != speech.shape or np.abs(cli - speech).max() > 1e-6:  # the very samples of the file
            raise SystemExit(f"libespeak-ng's synthesis of {row['audio_filepath']} differs from the CLI's")
        words = utt.text.split()
        if len(spans) != len(words):
            raise SystemExit(f"{row['audio_filepath']}: {len(spans)} word events for {len(words)} words")
        loud = np.abs(speech) > 1e-3 * np.abs(speech).max()  # prepare.trim_silence's threshold
        pad = int(np.random.default_rng(utt.seed).uniform(*prep.PAD_S, size=2)[0] * prep.SAMPLE_RATE)
        offset = pad - int(np.flatnonzero(loud)[0])  # file sample of speech sample 0
        scale = prep.SAMPLE_RATE / ESPEAK_SR
        out_words = []
        for word, (a, b) in zip(words, spans):
            lo, hi = round(a * scale), min(round(b * scale), len(speech))
            on = np.flatnonzero(loud[lo:hi])
            first, last = (lo + on[0], lo + on[-1] + 1) if on.size else (lo, hi)
            out_words.append(
                {
                    "word": word,
                    "start": round((first + offset) / prep.SAMPLE_RATE, 4),
                    "end": round((last + offset) / prep.SAMPLE_RATE, 4),
                }
            )
        refs.append({"audio_filepath": row["audio_filepath"], "words": out_words})
    out.write_text("".join(json.dumps(r) + "\n" for r in refs))
    return refs


# --- the model's word times -------------------------------------------------------------------
def posteriors(pipe, manifest: Path, pad_s: float = 0.0, limit: int | None = None):
    """Log-probs ``[(T, V)]``, durations (s) and samples ``[(n,)]`` of the manifest's files, ``pad_s`` of
    silence added to both ends of each; rows as read."""
    import soundfile as sf
    import torch

    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()][:limit]
    sr = pipe.model.frontend.cfg.sample_rate
    lps, durations, audio, aligner_lps = [], [], [], []
    for i in range(0, len(rows), pipe.batch_size):
        waves = []
        for row in rows[i : i + pipe.batch_size]:
            x, rate = sf.read(manifest.parent / row["audio_filepath"], dtype="float32")
            if rate != sr:
                raise SystemExit(f"{row['audio_filepath']}: {rate} Hz, the model reads {sr} Hz")
            pad = np.zeros(round(pad_s * sr), np.float32)
            waves.append(torch.from_numpy(np.concatenate([pad, x, pad])))
        lengths = torch.tensor([len(w) for w in waves])
        x = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
        lp, frames, aligned = pipe.posteriors(x, lengths)
        lps += [lp[b, : frames[b]].float() for b in range(len(waves))]
        if aligned is not None:
            aligner_lps += [aligned[b, : frames[b]].float() for b in range(len(waves))]
        durations += [len(w) / sr for w in waves]
        audio += waves
    return rows, lps, durations, audio, aligner_lps or None


def decode(
    pipe,
    decoder,
    lps: list[torch.Tensor],
    durations: list[float],
    audio: list[torch.Tensor],
    aligner_lps: list[torch.Tensor] | None = None,
):
    """The best hypothesis of each utterance, annotated by ``Pipeline.annotate`` (word times, confidence);
    ``aligner_lps``: the aligner's log-probs, which place the words (None: the main head's)."""
    import torch

    from speechkit.decoders.timing import energy_levels

    best = []
    for i in range(0, len(lps), pipe.batch_size):
        chunk = lps[i : i + pipe.batch_size]
        lengths = torch.tensor([len(lp) for lp in chunk])
        lp = torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True)
        span = slice(i, i + pipe.batch_size)
        levels = [energy_levels(a, pipe.model.frontend.cfg.sample_rate) for a in audio[span]]
        aligned = None if aligner_lps is None else torch.nn.utils.rnn.pad_sequence(aligner_lps[span], batch_first=True)
        nbests = pipe.annotate(decoder(lp, lengths), lp, lengths, durations[span], levels, aligned)
        best += [nbest[0] for nbest in nbests]
    return best


def boundary_errors(hyps, refs, pad_s: float = 0.0) -> dict[str, float]:
    """Errors (ms) of the correctly decoded words' start and end times against the references."""
    from speechkit.decoders.confidence import word_matches

    start, end, first, last = [], [], [], []
    for hyp, ref in zip(hyps, refs):
        ref_words = ref["words"]
        pairs = word_matches([w["word"] for w in ref_words], [w for w, _, _ in hyp.words])
        for i, j in pairs:
            r = ref_words[i]
            _, s, e = hyp.words[j]
            start.append(s - (r["start"] + pad_s))
            end.append(e - (r["end"] + pad_s))
            if i == 0:
                first.append(start[-1])
            if i == len(ref_words) - 1:
                last.append(end[-1])
    start_ms, end_ms = 1000 * np.array(start), 1000 * np.array(end)
    both = np.abs(np.concatenate([start_ms, end_ms]))
    return {
        "words": len(start),
        "mae_ms": float(both.mean()),
        "start_mae_ms": float(np.abs(start_ms).mean()),
        "end_mae_ms": float(np.abs(end_ms).mean()),
        "start_bias_ms": float(start_ms.mean()),
        "end_bias_ms": float(end_ms.mean()),
        "median_ms": float(np.median(both)),
        "within_40ms": float((both <= 40).mean()),
        "first_start_mae_ms": float(1000 * np.abs(first).mean()) if first else float("nan"),
        "last_end_mae_ms": float(1000 * np.abs(last).mean()) if last else float("nan"),
    }


DECODERS = {
    "greedy": {"name": "greedy"},
    "beam": {"name": "beam", "beam_size": 16, "lexicon": "{root}/words.txt"},
}


def main() -> None:
    if sys.argv[1:] == ["--speak"]:  # a child of speak_fresh: no torch
        return _speak_main()
    import torch

    from speechkit import load_checkpoint
    from speechkit.decoders.timing import RAW_FRAMES, WordTiming

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="runs/asr_grid/mix/checkpoints/best.pt")
    ap.add_argument("--manifest", type=Path, default=Path("data/asr_grid/test.jsonl"))
    ap.add_argument(
        "--refs", type=Path, help="reference word times (default: <manifest>.words.jsonl; made if absent)"
    )
    ap.add_argument("--pad-s", type=float, default=0.0, help="s of silence added to both ends of every file")
    ap.add_argument("--limit", type=int, help="first N utterances")
    ap.add_argument("--decoders", nargs="+", default=list(DECODERS), choices=list(DECODERS))
    ap.add_argument(
        "--word-timing",
        choices=["default", "frames", "raw"],
        default="default",
        help="default: Pipeline's WordTiming(); frames: it without snapping to the audio (snap_s=None); "
        "raw: the tokens' frames as they are (speechkit before WordTiming)",
    )
    ap.add_argument(
        "--placed-by",
        choices=["aligner", "main"],
        default="aligner",
        help="whose posteriors place the words: the model's aligner (where it has one; speechkit/aligner.py) "
        "or its main head",
    )
    ap.add_argument(
        "--calibrate-on",
        type=Path,
        metavar="DEV_MANIFEST",
        help="first calibrate the model's word-time offsets on this manifest's audio "
        "(Pipeline.calibrate_timing, as training does for best.pt), replacing any it has",
    )
    ap.add_argument(
        "--timing",
        nargs="+",
        default=[],
        metavar="FIELD=VALUE",
        help="other WordTiming settings (none: None)",
    )
    ap.add_argument("--json", type=Path, help="write the figures here too")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    refs_path = a.refs or a.manifest.with_suffix(".words.jsonl")
    if refs_path.exists():
        refs = [json.loads(line) for line in refs_path.read_text().splitlines()]
    else:
        t0 = time.perf_counter()
        refs = reference_words(a.manifest, refs_path)
        log.info(
            "wrote %s: reference word times of %d utterances (%.0f s)",
            refs_path,
            len(refs),
            time.perf_counter() - t0,
        )
    pipe = load_checkpoint(a.checkpoint)
    aligned = pipe.model.aligner is not None and a.placed_by == "aligner"
    if a.placed_by == "aligner" and not aligned:
        log.info("%s has no aligner: words placed by its main head", a.checkpoint)
    if a.calibrate_on:
        log.info("calibrated on %s: starts %+.3f s, ends %+.3f s", a.calibrate_on, *pipe.calibrate_timing(a.calibrate_on))
    log.info("timing shift %s", pipe.timing_shift)
    default = pipe.timing(aligned)
    timing = {"default": default, "frames": dataclasses.replace(default, snap_s=None), "raw": RAW_FRAMES}[a.word_timing]
    fields = {f.name for f in dataclasses.fields(WordTiming)}
    for item in a.timing:
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(
                f"--timing {item}: WordTiming has no {key!r}; it has {', '.join(sorted(fields))}"
            )
        try:
            timing = dataclasses.replace(timing, **{key: None if value == "none" else float(value)})
        except ValueError:
            raise SystemExit(f"--timing {item}: {value!r} is not a number (or none)") from None
    pipe.word_timing = timing
    log.info("%s", timing)
    t0 = time.perf_counter()
    rows, lps, durations, audio, aligner_lps = posteriors(pipe, a.manifest, a.pad_s, a.limit)
    if not aligned:
        aligner_lps = None
    log.info("log-probs of %d utterances in %.0f s", len(rows), time.perf_counter() - t0)
    refs = refs[: len(rows)]
    figures = {}
    for name in a.decoders:
        node = {
            k: v.format(root=a.manifest.parent) if isinstance(v, str) else v
            for k, v in DECODERS[name].items()
        }
        hyps = decode(pipe, pipe.build_decoder(node), lps, durations, audio, aligner_lps)
        figures[name] = boundary_errors(hyps, refs, a.pad_s)
        f = figures[name]
        print(
            f"{name:7s} {f['words']:5d} words  MAE {f['mae_ms']:6.1f} ms (start {f['start_mae_ms']:6.1f}, end "
            f"{f['end_mae_ms']:6.1f}; bias start {f['start_bias_ms']:+6.1f}, end {f['end_bias_ms']:+6.1f})  "
            f"median {f['median_ms']:5.1f}  ≤40 ms {100 * f['within_40ms']:5.1f} %  "
            f"first start {f['first_start_mae_ms']:6.1f}  last end {f['last_end_mae_ms']:6.1f}"
        )
    if a.json:
        a.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()

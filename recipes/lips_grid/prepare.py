"""Make a synthetic GRID-grammar lip-reading corpus offline: mouth-region MP4 clips at 25 fps.

No real lip video can be fetched here, so this script *renders* one. For each sentence
("bin blue at c five please", GRID's six-slot grammar, 51 words):

1. espeak-ng says it (through libespeak-ng, in process) with the speaker's espeak voice at a
   random rate; its phoneme events give every phoneme and its start time in ms;
2. each phoneme maps to one of 13 visemes (mouth shapes: rest, p/b/m, f/v, th, t/d/n/l,
   s/z, sh/ch, k/g, r/w, and open, spread, rounded, neutral vowels; diphthongs glide between
   two) and each viseme to mouth parameters (opening, width, rounding, teeth, tongue, lower
   lip tucked under the teeth);
3. the parameters follow the phoneme targets in time, smoothed by a Gaussian (co-articulation:
   neighbouring shapes blend), and are sampled at 25 fps frame centres;
4. every frame is drawn as a mouth-region image (lips, mouth cavity, teeth, tongue on skin)
   with the speaker's appearance — lip shape, thickness, colours, scale, position, head
   motion, lighting gradient, skin texture, sensor noise — and written as H.264 MP4.

Speakers are disjoint across train, dev and test: each has its own random appearance and an
espeak voice, so dev and test faces are never seen in training. Clips are 3 s (75 frames)
like GRID's, with the speech at a random offset.

Output (paths in the manifests are relative to ``--out``)::

    <out>/video/{train,dev,test}/00001.mp4     50 × 100 RGB (height × width), 25 fps, 75 frames
    <out>/{train,dev,test}.jsonl   {"video_filepath", "duration", "num_frames", "fps", "text",
                                    "speaker", "words": [[word, start_s, end_s], ...]}
    <out>/speakers.json  <out>/words.txt

Example::

    python recipes/lips_grid/prepare.py --out data/lips_grid --jobs 2

The output depends only on the arguments (not on ``--jobs``).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import multiprocessing
import sys
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

# --- grammar -------------------------------------------------------------------------------
from speechkit.corpora.grid import ESPEAK_SPELLING, WORDS, random_sentence  # the shared GRID grammar
from speechkit.data.manifest import write_manifest

# --- video ---------------------------------------------------------------------------------
FPS = 25  # frames per second, as GRID
NUM_FRAMES = 75  # frames per clip: 3 s, as GRID
HEIGHT, WIDTH = 50, 100  # pixels of the mouth-region crop (LipNet's size)
CRF = 20  # H.264 constant rate factor (lower = better quality)
SUPERSAMPLE = 1  # frames are drawn at this multiple of the size, then averaged down (edges are soft anyway)
SMOOTH_MS = 22.0  # ms, standard deviation of the co-articulation Gaussian
STEP_MS = 5.0  # ms, time grid the mouth trajectory is computed on
LEAD_S = 0.12  # s, least silence before and after the speech
RATE_WPM = (130, 200)  # espeak words per minute, drawn per utterance
MAX_SPEECH_S = NUM_FRAMES / FPS - 2 * LEAD_S  # longer speech is said again, faster

# --- speakers ------------------------------------------------------------------------------
VOICES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
VARIANTS = ("", "m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4")
SPLITS = ("train", "dev", "test")
SPEAKERS = {"train": 32, "dev": 6, "test": 8}  # speakers per split, disjoint

# --- visemes: mouth parameters --------------------------------------------------------------
# open: lip aperture (0 closed … 1 wide); width: mouth width factor; round: rounding/protrusion;
# teeth: upper teeth showing; tongue: tongue tip visible; tuck: lower lip under the upper teeth.
PARAMS = ("open", "width", "round", "teeth", "tongue", "tuck")
VISEMES = {
    "rest": (0.02, 1.00, 0.10, 0.0, 0.0, 0.0),
    "pbm": (0.00, 0.95, 0.15, 0.0, 0.0, 0.0),  # lips pressed together
    "fv": (0.12, 1.00, 0.05, 1.0, 0.0, 1.0),  # lower lip tucked under the upper teeth
    "th": (0.28, 1.02, 0.00, 0.9, 1.0, 0.0),  # tongue between the teeth
    "tdnl": (0.26, 1.02, 0.05, 0.6, 0.3, 0.0),
    "sz": (0.10, 1.08, 0.00, 1.0, 0.0, 0.0),  # teeth almost closed, lips spread
    "sh": (0.24, 0.86, 0.65, 0.8, 0.0, 0.0),  # sh, zh, ch, j: rounded, protruded
    "kg": (0.36, 1.00, 0.10, 0.3, 0.1, 0.0),
    "rw": (0.14, 0.72, 0.95, 0.0, 0.0, 0.0),  # tight rounding
    "open": (0.90, 1.02, 0.05, 0.5, 0.2, 0.0),  # a, aa, ah
    "spread": (0.40, 1.16, 0.00, 0.8, 0.1, 0.0),  # ee, i, ei
    "rounded": (0.48, 0.74, 0.85, 0.2, 0.0, 0.0),  # oo, o, aw
    "neutral": (0.45, 1.00, 0.10, 0.4, 0.1, 0.0),  # schwa, er, uh
}
VISEME_NAMES = tuple(VISEMES)
DIPHTHONGS = {"aI": ("open", "spread"), "aU": ("open", "rounded"), "eI": ("neutral", "spread"),
              "OI": ("rounded", "spread"), "oU": ("rounded", "rounded"), "@U": ("neutral", "rounded"),
              "e@": ("spread", "neutral"), "I@": ("spread", "neutral"), "U@": ("rounded", "neutral"),
              "aI@": ("open", "neutral"), "aU@": ("open", "neutral")}  # fmt: skip
CONSONANTS = {"p": "pbm", "b": "pbm", "m": "pbm", "f": "fv", "v": "fv", "T": "th", "D": "th",
              "t": "tdnl", "d": "tdnl", "n": "tdnl", "l": "tdnl", "s": "sz", "z": "sz", "S": "sh",
              "Z": "sh", "tS": "sh", "dZ": "sh", "k": "kg", "g": "kg", "N": "kg", "h": "kg",
              "j": "kg", "x": "kg", "r": "rw", "w": "rw", "?": "rest"}  # fmt: skip


def phoneme_visemes(phoneme: str) -> tuple[str, ...]:
    """espeak-ng phoneme mnemonic (``'b'``, ``'u:'``, ``'aI'``, ``'t#'``, ``'_:'``) → 1 or 2 visemes."""
    p = phoneme.strip("'\",%=:;#!/-").replace(":", "")
    if not p or p.startswith("_"):
        return ("rest",)
    if p in DIPHTHONGS:
        return DIPHTHONGS[p]
    if p in CONSONANTS:
        return (CONSONANTS[p],)
    if p[:2] in CONSONANTS:
        return (CONSONANTS[p[:2]],)
    first = p[0]
    if first in "aAV":
        return ("open",)
    if first in "iIeE":
        return ("spread",)
    if first in "uUoO0w":
        return ("rounded",)
    if first in "@3":
        return ("neutral",)
    if first in CONSONANTS:
        return (CONSONANTS[first],)
    return ("neutral",)


# --- utterances and speakers ------------------------------------------------------------------
@dataclass(frozen=True)
class Speaker:
    name: str
    split: str
    voice: str  # espeak-ng voice+variant
    seed: int  # draws the appearance


@dataclass(frozen=True)
class Utterance:
    split: str
    index: int
    text: str
    speaker: Speaker
    rate_wpm: int
    seed: int

    @property
    def relpath(self) -> str:
        return f"video/{self.split}/{self.index:05d}.mp4"


def make_speakers(seed: int) -> dict[str, list[Speaker]]:
    rng = np.random.default_rng([seed, 1])
    out: dict[str, list[Speaker]] = {}
    n = 0
    for split in SPLITS:
        out[split] = []
        for _ in range(SPEAKERS[split]):
            n += 1
            voice = VOICES[rng.integers(len(VOICES))]
            variant = VARIANTS[rng.integers(len(VARIANTS))]
            out[split].append(Speaker(f"s{n:02d}", split, f"{voice}+{variant}" if variant else voice,
                                      int(rng.integers(2**31))))  # fmt: skip
    return out


def make_utterances(sizes: dict[str, int], seed: int) -> list[Utterance]:
    speakers = make_speakers(seed)
    utts = []
    for split in SPLITS:
        rng = np.random.default_rng([seed, 2, SPLITS.index(split)])
        for i in range(sizes[split]):
            text = " ".join(random_sentence(rng))
            spk = speakers[split][i % len(speakers[split])]
            utts.append(
                Utterance(split, i + 1, text, spk, int(rng.integers(*RATE_WPM)), int(rng.integers(2**31)))
            )
    return utts


# --- espeak-ng through libespeak-ng: phonemes and their times ------------------------------------
class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):  # espeak_EVENT of speak_lib.h
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]  # fmt: skip


EV_WORD, EV_END, EV_PHONEME = 1, 5, 7  # espeak_EVENT_TYPE values
AUDIO_OUTPUT_SYNCHRONOUS, INIT_PHONEME_EVENTS = 2, 0x0001
POS_CHARACTER, ESPEAK_PHONEMES = 1, 0x100  # espeakPHONEMES: allow [[phoneme]] input
PARAM_RATE = 1  # espeakRATE, words per minute
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class Espeak:
    """libespeak-ng in this process, synchronous, reporting word and phoneme events."""

    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL("libespeak-ng.so.1")
        except OSError as e:
            raise SystemExit(
                f"error: cannot load libespeak-ng ({e}); install it: apt-get install libespeak-ng1"
            ) from None
        self.events: list[tuple[int, int, int, str]] = []
        self._cb = _CALLBACK(self._on_events)  # kept alive as long as the library may call it
        if self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None, INIT_PHONEME_EVENTS) <= 0:
            raise SystemExit("error: espeak_Initialize failed")
        self.lib.espeak_SetSynthCallback(self._cb)
        self.voice = ""

    def _on_events(self, wav, n, events) -> int:
        i = 0
        while events[i].type != 0:
            e = events[i]
            name = (
                bytes(e.id.string).split(b"\0")[0].decode("ascii", "replace") if e.type == EV_PHONEME else ""
            )
            self.events.append((e.type, e.audio_position, e.text_position, name))
            i += 1
        return 0

    def phonemes(
        self, text: str, voice: str, rate_wpm: int
    ) -> tuple[list[tuple[str, float, float]], list, float]:
        """(phoneme, start_s, end_s) of every phoneme, (word, start_s, end_s), and the total seconds."""
        if voice != self.voice:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise RuntimeError(f"espeak-ng has no voice {voice!r}")
            self.voice = voice
        self.lib.espeak_SetParameter(PARAM_RATE, rate_wpm, 0)
        words = text.split()
        spoken = " ".join(ESPEAK_SPELLING.get(w, w) for w in words).encode()
        self.events = []
        if (
            self.lib.espeak_Synth(spoken, len(spoken) + 1, 0, POS_CHARACTER, 0, ESPEAK_PHONEMES, None, None)
            != 0
        ):
            raise RuntimeError(f"espeak_Synth failed on {text!r}")
        end = max((t for kind, t, _, _ in self.events if kind == EV_END), default=None)
        phones = [(name, t) for kind, t, _, name in self.events if kind == EV_PHONEME]
        if end is None or not phones:
            raise RuntimeError(f"espeak-ng reported no phonemes for {text!r}")
        out = []
        for (name, t0), (_, t1) in zip(phones, [*phones[1:], ("", end)]):
            if t1 > t0:
                out.append((name, t0 / 1000, t1 / 1000))
        starts = [t / 1000 for kind, t, _, _ in self.events if kind == EV_WORD]
        word_times = []
        if len(starts) == len(words):  # words end where the next one starts, the last at the end
            word_times = [(w, s, e) for w, s, e in zip(words, starts, [*starts[1:], end / 1000])]
        return out, word_times, end / 1000


# --- mouth trajectory and rendering ----------------------------------------------------------
def trajectory(phones: list[tuple[str, float, float]], offset_s: float) -> np.ndarray:
    """Mouth parameters ``(NUM_FRAMES, len(PARAMS))`` at frame centres: viseme targets held over
    each phoneme (a diphthong glides: its two halves), smoothed by a Gaussian (co-articulation)."""
    total = NUM_FRAMES / FPS
    grid = np.arange(0, total, STEP_MS / 1000)  # s
    rest = np.array(VISEMES["rest"])
    target = np.tile(rest, (len(grid), 1))
    for name, t0, t1 in phones:
        shapes = phoneme_visemes(name)
        bounds = np.linspace(t0, t1, len(shapes) + 1) + offset_s
        for shape, a, b in zip(shapes, bounds[:-1], bounds[1:]):
            target[(grid >= a) & (grid < b)] = VISEMES[shape]
    sigma = SMOOTH_MS / STEP_MS  # in grid steps
    k = np.arange(-int(4 * sigma), int(4 * sigma) + 1)
    kernel = np.exp(-0.5 * (k / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.concatenate([np.tile(rest, (len(k) // 2, 1)), target, np.tile(rest, (len(k) // 2, 1))])
    smooth = np.stack([np.convolve(padded[:, j], kernel, mode="valid") for j in range(len(PARAMS))], axis=1)
    centres = (np.arange(NUM_FRAMES) + 0.5) / FPS
    idx = np.clip(np.round(centres / (STEP_MS / 1000)).astype(int), 0, len(grid) - 1)
    return smooth[idx]


def appearance(seed: int) -> dict:
    """A speaker's look, drawn from ``seed``: lip shape and colours, placement, lighting, noise."""
    rng = np.random.default_rng(seed)
    skin = np.array([0.92, 0.72, 0.58]) * rng.uniform(0.35, 1.05)  # light to dark skin
    skin = np.clip(skin + rng.normal(0, 0.03, 3), 0.05, 1)
    lip = np.clip(
        skin * np.array([0.85, 0.55, 0.55]) * rng.uniform(0.75, 1.05) + rng.normal(0, 0.03, 3), 0, 1
    )
    return {
        "skin": skin,
        "lip": lip,
        "cavity": np.array([0.25, 0.06, 0.08]) * rng.uniform(0.6, 1.3),
        "teeth": np.array([0.93, 0.91, 0.84]) * rng.uniform(0.8, 1.0),
        "tongue": np.array([0.80, 0.38, 0.40]) * rng.uniform(0.8, 1.1),
        "half_width": rng.uniform(0.30, 0.40),  # of the frame width, at width factor 1
        "upper_thick": rng.uniform(0.08, 0.16),  # of the frame height
        "lower_thick": rng.uniform(0.10, 0.20),
        "max_open": rng.uniform(0.32, 0.46),  # aperture at open = 1, of the frame height
        "bow": rng.uniform(0.0, 0.5),  # cupid's bow depth
        "centre": (rng.uniform(0.42, 0.58), rng.uniform(0.45, 0.58)),  # (x, y) of the frame
        "scale": rng.uniform(0.85, 1.15),
        "tilt": rng.uniform(-0.08, 0.08),  # radians
        "motion": rng.uniform(0.005, 0.03),  # head motion amplitude, of the frame size
        "light_dir": rng.uniform(0, 2 * np.pi),
        "light_amount": rng.uniform(0.0, 0.35),
        "brightness": rng.uniform(0.75, 1.15),
        "noise": rng.uniform(0.005, 0.03),
        "texture_seed": int(rng.integers(2**31)),
    }


def render(params: np.ndarray, look: dict, rng: np.random.Generator) -> np.ndarray:
    """Mouth-region frames ``(T, HEIGHT, WIDTH, 3)`` uint8 from mouth parameters ``(T, 6)``."""
    T = params.shape[0]
    H, W = HEIGHT * SUPERSAMPLE, WIDTH * SUPERSAMPLE
    o, wf, rnd, teeth, tongue, tuck = (params[:, j][:, None, None] for j in range(len(PARAMS)))
    t = np.arange(T) / FPS
    phase = rng.uniform(0, 2 * np.pi, 6)
    sway = lambda i, f: np.sin(2 * np.pi * f * t + phase[i])[:, None, None]  # noqa: E731
    m = look["motion"]
    cx = look["centre"][0] * W + m * W * (0.7 * sway(0, 0.31) + 0.3 * sway(1, 0.83))
    cy = look["centre"][1] * H + m * H * (0.7 * sway(2, 0.27) + 0.3 * sway(3, 0.71))
    angle = look["tilt"] + 0.03 * sway(4, 0.23)
    scale = look["scale"] * (1 + 0.02 * sway(5, 0.19))
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    xr = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)  # (T, H, W) mouth coordinates, px
    yr = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    half_w = look["half_width"] * W * scale * wf * (1 - 0.15 * rnd)
    u = np.clip(xr / half_w, -1, 1)
    inside_w = 1 - u**2
    shape_pow = 0.5 - 0.25 * rnd  # rounder opening when rounded
    gap = look["max_open"] * H * scale * o * (1 + 0.3 * rnd)
    env = inside_w ** (shape_pow + 0.1)
    in_top = -0.4 * gap * env - tuck * 0.05 * H * scale
    in_bot = 0.6 * gap * env + 1e-3
    in_bot = in_bot - tuck * 0.6 * gap * env  # the tucked lower lip rises under the teeth
    bow = 1 - look["bow"] * np.exp(-((u / 0.18) ** 2))
    thick = 1 + 0.5 * rnd  # protruded lips look thicker
    out_top = in_top - look["upper_thick"] * H * scale * thick * np.sqrt(inside_w) * bow
    out_bot = in_bot + look["lower_thick"] * H * scale * thick * np.sqrt(inside_w)
    soft = 0.9 * SUPERSAMPLE  # px, edge softness

    def cover(d: np.ndarray) -> np.ndarray:  # 1 inside (d > 0), 0 outside, smooth edge
        return 1 / (1 + np.exp(-np.clip(d / soft, -30, 30)))

    side = cover(half_w - np.abs(xr))
    mouth = side * cover(out_bot - yr) * cover(yr - out_top)  # lips and opening
    opening = side * cover(in_bot - yr) * cover(yr - in_top)
    teeth_band = opening * cover(in_top + teeth * 0.12 * H * scale + tuck * 0.08 * H * scale - yr)
    tongue_blob = (
        opening * tongue * cover(yr - (in_bot - 0.35 * gap - 0.02 * H)) * cover(0.55 * half_w - np.abs(xr))
    )
    rx = np.random.default_rng(look["texture_seed"])
    coarse = Image.fromarray(rx.normal(0, 1, (6, 12)).astype(np.float32), mode="F")
    texture = np.asarray(coarse.resize((W, H), Image.BICUBIC))  # smooth blotches
    texture = (texture - texture.mean()) * 0.03
    c = lambda k: np.asarray(look[k], np.float32)[None, None, None, :]  # noqa: E731
    img = c("skin") * (1 + texture[None, :, :, None])
    img = img * (1 - mouth[..., None]) + c("lip") * mouth[..., None]
    img = img * (1 - opening[..., None]) + c("cavity") * opening[..., None]
    img = img * (1 - tongue_blob[..., None]) + c("tongue") * tongue_blob[..., None]
    img = img * (1 - teeth_band[..., None]) + c("teeth") * teeth_band[..., None]
    d = look["light_dir"]
    light = 1 + look["light_amount"] * ((xx / W - 0.5) * np.cos(d) + (yy / H - 0.5) * np.sin(d))
    img = img * light[None, :, :, None] * look["brightness"]
    img = img.reshape(T, HEIGHT, SUPERSAMPLE, WIDTH, SUPERSAMPLE, 3).mean((2, 4))
    img = img + rng.normal(0, look["noise"], img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_mp4(path: Path, frames: np.ndarray) -> None:
    """``(T, H, W, 3)`` uint8 RGB → H.264 MP4 (yuv420p) at ``FPS``."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": str(CRF), "preset": "fast"}
        stream.codec_context.thread_count = 1
        for img in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode(None))
    tmp.replace(path)


# --- workers -----------------------------------------------------------------------------------
_espeak: Espeak | None = None


def make_clip(job: tuple[Utterance, str]) -> dict:
    """Render and write one utterance; its manifest row (or ``{"error": …}``)."""
    global _espeak
    utt, out = job
    try:
        if _espeak is None:
            _espeak = Espeak()
        rng = np.random.default_rng(utt.seed)
        rate = utt.rate_wpm
        for _ in range(8):  # too long for the clip: say it faster
            phones, words, total = _espeak.phonemes(utt.text, utt.speaker.voice, rate)
            if total <= MAX_SPEECH_S:
                break
            rate = int(rate * 1.15) + 1
        else:
            raise RuntimeError(f"speech still {total:.2f} s long at {rate} wpm")
        offset = rng.uniform(LEAD_S, NUM_FRAMES / FPS - LEAD_S - total)
        frames = render(trajectory(phones, offset), appearance(utt.speaker.seed), rng)
        write_mp4(Path(out) / utt.relpath, frames)
        return {
            "video_filepath": utt.relpath,
            "duration": NUM_FRAMES / FPS,
            "num_frames": NUM_FRAMES,
            "fps": FPS,
            "text": utt.text,
            "speaker": utt.speaker.name,
            "words": [[w, round(s + offset, 3), round(e + offset, 3)] for w, s, e in words],
        }
    except Exception as e:  # reported with the utterance, never silently dropped
        return {"error": f"{type(e).__name__}: {e}", "split": utt.split, "index": utt.index, "text": utt.text}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("data/lips_grid"))
    ap.add_argument("--num-train", type=int, default=2400)
    ap.add_argument("--num-dev", type=int, default=120)
    ap.add_argument("--num-test", type=int, default=240)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=max(1, multiprocessing.cpu_count()))
    args = ap.parse_args(argv)
    sizes = {"train": args.num_train, "dev": args.num_dev, "test": args.num_test}
    utts = make_utterances(sizes, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    jobs = [(u, str(args.out)) for u in utts]
    if args.jobs > 1:
        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            rows = list(
                tqdm(pool.imap(make_clip, jobs, chunksize=4), total=len(jobs), desc="render", unit="clip")
            )
    else:
        rows = [make_clip(j) for j in tqdm(jobs, desc="render", unit="clip")]
    failures = [r for r in rows if "error" in r]
    for split in SPLITS:
        write_manifest(args.out / f"{split}.jsonl",
                       [r for u, r in zip(utts, rows) if u.split == split and "error" not in r])
    speakers = make_speakers(args.seed)
    (args.out / "speakers.json").write_text(
        json.dumps({s: [asdict(p) for p in speakers[s]] for s in SPLITS}, indent=1) + "\n"
    )
    (args.out / "words.txt").write_text("\n".join(WORDS) + "\n")
    for f in failures:
        print(f"failed: {f}", file=sys.stderr)
    print(f"rendered {len(rows) - len(failures)} clips ({', '.join(f'{s} {n}' for s, n in sizes.items())}) "
          f"into {args.out} in {time.monotonic() - t0:.0f} s")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

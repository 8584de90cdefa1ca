"""Hotwords on a task with rare names: recall of the boosted names, WER elsewhere, and the speed cost.

GRID sentences whose letter slot is a person's name ("place red at carmen five soon"), 20 names
in all, decoded with and without the 20 names as hotwords (beam 16, no LM, no lexicon), beside
ordinary GRID sentences (no name: the list must not hurt them). Reported per boost
(``decoder.hotword_boost``, log-score per character):

- names recall: share of name sentences whose best hypothesis holds the name as a word;
- WER of the name sentences and of the ordinary ones, and how many names the list put into
  ordinary sentences.

Two sources of log-probabilities:

- **real**: the trained asr_grid model on speech synthesised by espeak-ng through the asr_grid
  recipe's own rendering (recipes/asr_grid/prepare.py, unchanged: held-out voices, random rate,
  pitch and word gaps, white, pink or brown noise at 5-30 dB or clean, 16 kHz 16-bit FLAC), and on
  the recipe's own test sentences. Also counted: name sentences whose name is anywhere in the
  32-best without hotwords (what a boost could at best recover).
- **simulated**: peaky CTC posteriors as benchmarks/decode_bench.py draws them (random alignment,
  noise; on 6 % of the labels the label barely beats blank, on 4 % another letter narrowly wins),
  where a name's letters, as a model would spell a word it never heard, are unsure on 10 % and
  lose to another letter on 30 %. Two draws: dev (where the default boost was chosen) and test.

And the speed: ms per utterance of both engines with and without the list on the real ordinary
test sentences (process CPU time, one thread, batches of 32, best of ``--repeats``; the exact
rescoring and the text included). Log-probabilities of the real sets are kept in ``--out``.

    python benchmarks/hotwords.py --checkpoint runs/asr_grid/mix/checkpoints/best.pt \\
        --data data/asr_grid --out /tmp/hotwords
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from speechkit.data.dataset import ManifestDataset, collate
from speechkit.data.manifest import read_manifest, write_manifest
from speechkit.decoders.beam import BeamConfig
from speechkit.metrics import wer_cer

ROOT = Path(__file__).resolve().parents[1]
NAMES = (  # none of them is a GRID word; all spelt with a-z
    "anna", "boris", "carmen", "dmitri", "elena", "farid", "greta", "hugo", "ingrid", "jonas",
    "kenji", "lucia", "marco", "nadia", "oskar", "priya", "rafael", "sofia", "tomas", "yusuf",
)  # fmt: skip
LETTER_SLOT = 3  # the word a name replaces: "bin blue at <name> two now"
NOISES = ("white", "pink", "brown")  # the recipe's noises but babble (its bank is built per corpus)
SNR_DB = (5.0, 30.0)  # dB, as the recipe's full preset
CLEAN_PROB = 0.2
BOOSTS = (1.0, 2.0, 3.0, 4.0, 6.0)  # decoder.hotword_boost values tried
BEAM = 16
BATCH = 32  # utterances per decoder call
# simulated posteriors: the share of labels that are unsure (barely beat blank) or confused (another
# letter narrowly wins), in ordinary words (decode_bench.py's rates) and in a name
UNSURE, CONFUSED = 0.06, 0.04
NAME_UNSURE, NAME_CONFUSED = 0.10, 0.30


# --------------------------------------------------------------------------- real: espeak-ng + the model


def recipe() -> object:
    """recipes/asr_grid/prepare.py as a module (its rendering and grammar; the file is not changed)."""
    path = ROOT / "recipes" / "asr_grid" / "prepare.py"
    spec = importlib.util.spec_from_file_location("asr_grid_prepare", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def synthesise(out: Path, split: str, voices_of: str, count: int, data: Path, seed: int) -> Path:
    """``count`` name sentences spoken by the ``voices_of`` split's speakers; returns their manifest."""
    manifest = out / f"{split}_{count}.jsonl"
    if manifest.is_file():
        return manifest
    prep = recipe()
    speakers = json.loads((data / "speakers.json").read_text())[voices_of]
    rng = np.random.default_rng([seed, int.from_bytes(split.encode(), "little")])
    (out / "audio" / split).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        words = prep.random_sentence(rng)
        words[LETTER_SLOT] = NAMES[i % len(NAMES)]
        voice, variant = prep.split_speaker(speakers[rng.integers(len(speakers))])
        noisy = rng.random() >= CLEAN_PROB
        utt = prep.Utterance(
            split=split, index=i + 1, text=" ".join(words), voice=voice, variant=variant,
            rate_wpm=int(rng.integers(prep.RATE_WPM[0], prep.RATE_WPM[1] + 1)),
            pitch=int(rng.integers(prep.PITCH[0], prep.PITCH[1] + 1)),
            word_gap=int(rng.integers(prep.WORD_GAP[0], prep.WORD_GAP[1] + 1)),
            breaks_ms=(0,) * (len(words) - 1), seed=int(rng.integers(2**63)),
            noise=NOISES[rng.integers(len(NOISES))] if noisy else "clean",
            snr_db=round(float(rng.uniform(*SNR_DB)), 1) if noisy else None, babble_clips=(),
        )  # fmt: skip
        audio = prep.quantize(prep.render(utt), 16)
        sf.write(out / utt.relpath, audio, prep.SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        rows.append({"audio_filepath": utt.relpath, "duration": round(len(audio) / prep.SAMPLE_RATE, 3),
                     "text": utt.text, "speaker": utt.speaker})  # fmt: skip
    return write_manifest(manifest, rows)


def log_probs(pipe, manifest: Path, limit: int, cache: Path) -> dict:
    """The model's log-probabilities ``(B, T, V)``, lengths and reference texts of a manifest's first
    ``limit`` utterances (kept in ``cache``)."""
    if cache.is_file():
        return torch.load(cache)
    examples = read_manifest(manifest, pipe.model.frontend.modality)[:limit]
    loader = torch.utils.data.DataLoader(
        ManifestDataset(examples, pipe.model.frontend.load), batch_size=16, collate_fn=collate
    )
    rows, refs = [], []
    for batch in loader:
        lp, lengths = pipe.log_probs(batch.x, batch.lengths)
        rows += [lp[i, :n].float() for i, n in enumerate(lengths.tolist())]
        refs += [pipe.tokenizer.clean(examples[i].text) for i in batch.indices]
    out = {
        "log_probs": torch.nn.utils.rnn.pad_sequence(rows, batch_first=True),
        "lengths": torch.tensor([len(r) for r in rows]),
        "refs": refs,
    }
    torch.save(out, cache)
    return out


# --------------------------------------------------------------------------- simulated posteriors


def simulated(tokens: list[str], count: int, names: bool, seed: int) -> dict:
    """Peaky CTC posteriors of ``count`` GRID sentences (with a name in the letter slot if ``names``)."""
    prep = recipe()
    rng, g = random.Random(seed), torch.Generator().manual_seed(seed)
    ix = {t: i for i, t in enumerate(tokens)}
    letters = [i for t, i in ix.items() if t.isalpha() and len(t) == 1]
    refs, rows = [], []
    for i in range(count):
        words = prep.random_sentence(np.random.default_rng([seed, i]))
        if names:
            words[LETTER_SLOT] = NAMES[i % len(NAMES)]
        ref = " ".join(words)
        name_at = len(" ".join(words[:LETTER_SLOT])) + 1 if names else -1  # the name's first character
        labels = [ix[c] for c in ref]
        T = 4 * len(labels) + rng.randint(0, 10)  # frames: about a real model's 30 ms per frame
        starts = sorted(rng.sample(range(2, T - 2, 2), len(labels)))  # blanks between the labels
        target = torch.zeros(T, dtype=torch.long)  # blank, but where a label is
        spans = []
        for k, (s, lab) in enumerate(zip(starts, labels)):
            end = min(s + rng.randint(1, 4), starts[k + 1] - 1 if k + 1 < len(starts) else T)
            target[s:end] = lab
            spans.append((s, end))
        logits = 0.5 * torch.randn(T, len(tokens), generator=g)
        logits[torch.arange(T), target] += 5.0 + 5.0 * torch.rand(T, generator=g)
        for k, ((s, end), lab) in enumerate(zip(spans, labels)):
            in_name = name_at <= k < name_at + len(words[LETTER_SLOT]) if names else False
            unsure, confused = (NAME_UNSURE, NAME_CONFUSED) if in_name else (UNSURE, CONFUSED)
            r = rng.random()
            if r < unsure:  # the label barely beats blank (or loses to it)
                logits[s:end, lab] = logits[s:end, 0] + rng.uniform(-1.0, 1.5)
            elif r < unsure + confused and lab != ix[" "]:  # another letter narrowly wins
                logits[s:end, rng.choice(letters)] = logits[s:end, lab] + rng.uniform(0.1, 1.5)
        rows.append(logits.log_softmax(-1))
        refs.append(ref)
    return {
        "log_probs": torch.nn.utils.rnn.pad_sequence(rows, batch_first=True),
        "lengths": torch.tensor([len(r) for r in rows]),
        "refs": refs,
    }


# --------------------------------------------------------------------------- decoding and scores


def decode(decoder, d: dict) -> tuple[list[list], float]:
    """n-best lists of ``d``'s utterances, and the process CPU seconds the decoder took."""
    nbests, seconds = [], 0.0
    for lo in range(0, len(d["refs"]), BATCH):
        lp, lengths = d["log_probs"][lo : lo + BATCH], d["lengths"][lo : lo + BATCH]
        start = time.process_time()
        nbests += decoder(lp, lengths)
        seconds += time.process_time() - start
    return nbests, seconds


def evaluate(decoder, names: dict, ordinary: dict) -> dict:
    """Names recall and WER on the name sentences; WER and names put in on the ordinary ones (%)."""
    hyps = [nb[0].text for nb in decode(decoder, names)[0]]
    hits = [ref.split()[LETTER_SLOT] in hyp.split() for ref, hyp in zip(names["refs"], hyps)]
    plain = [nb[0].text for nb in decode(decoder, ordinary)[0]]
    return {
        "recall": 100 * sum(hits) / len(hits),
        "wer_names": 100 * wer_cer(names["refs"], hyps)[0],
        "wer_ordinary": 100 * wer_cer(ordinary["refs"], plain)[0],
        "inserted": sum(w in NAMES for hyp in plain for w in hyp.split()),
    }


def table(title: str, results: dict) -> None:
    print(f"\n{title}")
    print("| decoding | names recall % | WER name sentences % | WER ordinary % | names put in ordinary |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, r in results.items():
        print(
            f"| {label} | {r['recall']:.1f} | {r['wer_names']:.2f} | {r['wer_ordinary']:.2f} | {r['inserted']} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="runs/asr_grid/mix/checkpoints/best.pt")
    ap.add_argument(
        "--data", type=Path, default=Path("data/asr_grid"), help="asr_grid's data (manifests, speakers)"
    )
    ap.add_argument(
        "--out", type=Path, default=Path("/tmp/hotwords"), help="audio, manifests, log-prob cache"
    )
    ap.add_argument("--names", type=int, default=60, help="name sentences (real and simulated)")
    ap.add_argument("--ordinary", type=int, default=200, help="ordinary sentences (real and simulated)")
    ap.add_argument("--repeats", type=int, default=3, help="timing rounds (the best is reported)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)

    from speechkit import build, load_checkpoint

    a.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pipe = load_checkpoint(a.checkpoint, batch_size=16)
    tokens = pipe.tokenizer.tokens
    manifest = synthesise(a.out, "names_test", "test", a.names, a.data, a.seed)
    real_names = log_probs(pipe, manifest, a.names, a.out / f"logprobs_names_{a.names}.pt")
    real = log_probs(pipe, a.data / "test.jsonl", a.ordinary, a.out / f"logprobs_test_{a.ordinary}.pt")
    print(f"speech and log-probabilities: {time.perf_counter() - started:.0f} s", file=sys.stderr)

    def beam(boost: float | None = None, engine: str = "auto", **options):
        hot = {} if boost is None else {"hotwords": list(NAMES), "hotword_boost": boost}
        dec = build(
            "decoder", "beam", tokens=tokens, **{"beam_size": BEAM, "engine": engine, **hot, **options}
        )
        dec.warm_up()
        return dec

    default = BeamConfig().hotword_boost

    def sweep(names: dict, ordinary: dict) -> dict:
        results = {"greedy": evaluate(build("decoder", "greedy", tokens=tokens), names, ordinary)}
        results[f"beam {BEAM}"] = evaluate(beam(), names, ordinary)
        for b in BOOSTS:
            results[f"beam {BEAM} + 20 hotwords, boost {b}"] = evaluate(beam(b), names, ordinary)
        results["beam 64"] = evaluate(beam(beam_size=64), names, ordinary)
        results["beam 64 + 20 hotwords, default boost"] = evaluate(
            beam(default, beam_size=64), names, ordinary
        )
        return results

    wide = decode(beam(beam_size=32, nbest=32), real_names)[0]
    reachable = sum(
        any(ref.split()[LETTER_SLOT] in h.text.split() for h in nb)
        for ref, nb in zip(real_names["refs"], wide)
    )
    table(
        f"real: {a.checkpoint} on {a.names} espeak-ng name sentences (test voices) and the first "
        f"{a.ordinary} of {a.data / 'test.jsonl'}; the name in the 32-best without hotwords: "
        f"{reachable} of {a.names}",
        sweep(real_names, real),
    )

    dev = sweep(
        simulated(tokens, a.names, True, a.seed + 1), simulated(tokens, a.ordinary, False, a.seed + 2)
    )
    table("simulated, dev draw (where BeamConfig's default boost was chosen)", dev)
    test = sweep(
        simulated(tokens, a.names, True, a.seed + 3), simulated(tokens, a.ordinary, False, a.seed + 4)
    )
    table(f"simulated, test draw ({a.names} name sentences, {a.ordinary} ordinary ones)", test)

    boost = default
    print(
        f"\nspeed on the {a.ordinary} real ordinary sentences, beam {BEAM}, ms per utterance (boost {boost}):"
    )
    print("| engine | no hotwords | 20 hotwords |")
    print("| --- | ---: | ---: |")
    for engine in ("native", "torch"):
        ms = []
        for b in (None, boost):
            dec = beam(b, engine)
            ms.append(1000 * min(decode(dec, real)[1] for _ in range(a.repeats)) / len(real["refs"]))
        print(f"| {engine} | {ms[0]:.3f} | {ms[1]:.3f} |")
    print(f"\ntotal {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()

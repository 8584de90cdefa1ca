"""CTC decoding benchmark: speechkit greedy/beam against pyctcdecode and torchaudio's flashlight decoder.

Every decoder gets the same log-probabilities and is timed on the same batch (milliseconds per
utterance, best of ``--repeats``) and scored by WER against the reference texts.

Posteriors are either synthetic (default: GRID-like sentences, random alignments, peaky
frames with noise, confusions and uncertain frames, as a trained CTC model's look) or real,
from ``--posteriors FILE.pt``: a dict with ``log_probs`` ``(B, T, V)``, ``lengths`` ``(B,)``,
``tokens`` (id 0 the blank, ``" "`` the word separator) and ``refs`` (texts).

The LM rows use a word 3-gram (speechkit's Kneser-Ney, written as ARPA so that every decoder
reads the same file) trained on ``--lm-text`` (default for synthetic data: other sentences of
the same grammar) and the lexicon ``--lexicon`` (default: the 51 GRID words).

Peers are optional (``benchmarks/requirements-peers.txt``); a missing one is skipped::

    python benchmarks/decode_bench.py                       # synthetic, batch 32 × 200 frames
    python benchmarks/decode_bench.py --posteriors grid_test_posteriors.pt --lm-text lm.txt
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# the plugin classes directly (not registry.build, which imports every plugin and its dependencies),
# so that this script also runs in a peers' environment with only torch + hydra-core installed
from speechkit.decoders.beam import BeamConfig, BeamDecoder  # noqa: E402
from speechkit.decoders.greedy import GreedyConfig, GreedyDecoder  # noqa: E402
from speechkit.lm.ngram import NgramConfig, NgramLM  # noqa: E402

TOKENS = ["<blank>", " "] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["'"]  # 29 symbols
GRID = [
    ["bin", "lay", "place", "set"],
    ["blue", "green", "red", "white"],
    ["at", "by", "in", "with"],
    [chr(c) for c in range(ord("a"), ord("z") + 1) if chr(c) != "w"],
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    ["again", "now", "please", "soon"],
]  # GRID's grammar: 51 words, six slots


def grid_sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(slot) for slot in GRID)


def peaky(labels: list[int], V: int, frames: int, rng: random.Random, g: torch.Generator,
          never_confused: frozenset[int] = frozenset()) -> tuple[Tensor, int]:
    """One utterance's peaky CTC log-probs ``(frames, V)`` for the label ids ``labels`` and its length
    ``T`` (padding after it): a random alignment, noise, 6 % unsure labels, 4 % confusions with another
    symbol (not for the labels in ``never_confused``). Id 0 is the blank, id 1 never replaces a label."""
    T = rng.randint(int(frames * 0.8), frames)
    # alignment: label starts spread over the utterance, 1-4 frames each, blanks between
    while True:
        starts = sorted(rng.sample(range(2, T - 2), len(labels)))
        if all(b - a >= 2 for a, b in zip(starts, starts[1:])):
            break
    target = torch.zeros(frames, dtype=torch.long)  # blank
    which = torch.full((frames,), -1)  # index of the label a frame belongs to
    for i, (s, lab) in enumerate(zip(starts, labels)):
        end = min(s + rng.randint(1, 4), starts[i + 1] - 1 if i + 1 < len(starts) else T)
        target[s:end] = lab
        which[s:end] = i
    logits = 0.5 * torch.randn(frames, V, generator=g)
    logits[torch.arange(frames), target] += 5.0 + 5.0 * torch.rand(frames, generator=g)
    for i, lab in enumerate(labels):
        at = (which == i).nonzero().squeeze(1)
        r = rng.random()
        if r < 0.06:  # unsure: the label barely beats blank (or loses to it) on its frames
            logits[at, lab] = logits[at, 0] + rng.uniform(-1.0, 1.5)
        elif r < 0.10 and lab not in never_confused:  # confusion: another symbol narrowly wins
            logits[at, rng.randrange(2, V)] = logits[at, lab] + rng.uniform(0.1, 1.5)
    logits[T:] = 0.0
    return logits.log_softmax(-1), T


def synthetic(batch: int, frames: int, seed: int = 0) -> dict:
    """Peaky CTC posteriors for GRID sentences: random alignment, noise, confusions, unsure frames."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    ix = {t: i for i, t in enumerate(TOKENS)}
    refs, rows, lengths = [], [], []
    for _ in range(batch):
        ref = grid_sentence(rng)
        row, T = peaky([ix[c] for c in ref], len(TOKENS), frames, rng, g, frozenset({ix[" "]}))
        rows.append(row)
        refs.append(ref)
        lengths.append(T)
    lm_rng = random.Random(seed + 1)
    lm_text = "\n".join(grid_sentence(lm_rng) for _ in range(5000)) + "\n"
    lexicon = "\n".join(w for slot in GRID for w in slot) + "\n"
    return {
        "log_probs": torch.stack(rows),
        "lengths": torch.tensor(lengths),
        "tokens": TOKENS,
        "refs": refs,
        "lm_text": lm_text,
        "lexicon": lexicon,
    }


def wer(refs: list[str], hyps: list[str]) -> float:
    """Word error rate in percent: word-level Levenshtein distance over reference words."""
    errors = words = 0
    for r, h in zip(refs, hyps):
        r, h = r.split(), h.split()
        d = list(range(len(h) + 1))
        for i in range(1, len(r) + 1):
            prev, d[0] = d[0], i
            for j in range(1, len(h) + 1):
                prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
        errors += d[len(h)]
        words += len(r)
    return 100.0 * errors / max(words, 1)


# --------------------------------------------------------------------------- decoders


def speechkit_decoders(tokens, beams, lm_path, lexicon_path, alpha, beta, device) -> dict[str, Callable]:
    def run(dec):
        def f(lp, lengths):
            out = dec(lp.to(device), lengths.to(device))
            return [nb[0].text for nb in out]

        return f

    out = {"speechkit greedy": run(GreedyDecoder(GreedyConfig(), tokens))}
    for k in beams:  # engine=auto: the compiled engine on CPU tensors, the batched torch search on GPU
        out[f"speechkit beam {k}"] = run(BeamDecoder(BeamConfig(beam_size=k), tokens))
    if torch.device(device).type == "cpu":
        for k in beams:
            out[f"speechkit beam {k}, torch engine"] = run(
                BeamDecoder(BeamConfig(beam_size=k, engine="torch"), tokens)
            )
    for k in beams:  # pyctcdecode's default pruning (tokens below -5, beams 10 below the best)
        cfg = BeamConfig(beam_size=k, token_min_logp=-5.0, beam_threshold=10.0)
        out[f"speechkit beam {k}, pruned"] = run(BeamDecoder(cfg, tokens))
    for k in beams:  # ... and runs of frames with P(blank) ≥ 0.999 searched as one step
        cfg = BeamConfig(beam_size=k, token_min_logp=-5.0, beam_threshold=10.0, blank_skip_logp=-0.001)
        out[f"speechkit beam {k}, pruned + blank runs"] = run(BeamDecoder(cfg, tokens))
    if lm_path:
        lm = NgramLM(NgramConfig(path=lm_path, unit="word"))
        for k in beams:
            cfg = BeamConfig(beam_size=k, lm=lm, alpha=alpha, beta=beta, lexicon=lexicon_path)
            out[f"speechkit beam {k} + lexicon + LM"] = run(BeamDecoder(cfg, tokens))
            if torch.device(device).type == "cpu":
                cfg = BeamConfig(
                    beam_size=k, lm=lm, alpha=alpha, beta=beta, lexicon=lexicon_path, engine="torch"
                )
                out[f"speechkit beam {k} + lexicon + LM, torch engine"] = run(BeamDecoder(cfg, tokens))
    return out


def pyctcdecode_decoders(tokens, beams, lm_path, words, alpha, beta) -> dict[str, Callable]:
    try:
        import pyctcdecode
    except ImportError:
        print("# pyctcdecode not installed: skipped", file=sys.stderr)
        return {}
    labels = [""] + list(tokens[1:])

    def run(decoder, k, **prune):
        def f(lp, lengths):
            x = lp.numpy()
            return [
                decoder.decode(x[b, : int(lengths[b])], beam_width=k, **prune).strip() for b in range(len(x))
            ]

        return f

    out = {}
    plain = pyctcdecode.build_ctcdecoder(labels)
    for k in beams:  # its defaults prune tokens below log p -5 and beams 10 below the best
        out[f"pyctcdecode beam {k}"] = run(plain, k)
    for k in beams:  # pruning off, as speechkit's default search
        out[f"pyctcdecode beam {k}, no pruning"] = run(plain, k, token_min_logp=-1e9, beam_prune_logp=-1e9)
    if lm_path:
        try:
            import kenlm  # noqa: F401

            fused = pyctcdecode.build_ctcdecoder(
                labels, kenlm_model_path=lm_path, unigrams=words, alpha=alpha, beta=beta
            )
            for k in beams:
                out[f"pyctcdecode beam {k} + unigrams + LM"] = run(fused, k)
        except ImportError:
            print("# kenlm not installed: pyctcdecode LM rows skipped", file=sys.stderr)
    return out


def flashlight_decoders(tokens, beams, lm_path, words, alpha, beta, tmp: Path) -> dict[str, Callable]:
    try:
        from torchaudio.models.decoder import ctc_decoder

        ctc_decoder.__call__  # noqa: B018  (torchaudio imports flashlight-text lazily)
        from flashlight.lib.text import decoder as _  # noqa: F401
    except (ImportError, RuntimeError):
        print(
            "# torchaudio's flashlight ctc_decoder (flashlight-text) not installed: skipped", file=sys.stderr
        )
        return {}
    fl_tokens = ["-", "|"] + list(tokens[2:])  # flashlight spells blank and word separator itself
    assert tokens[1] == " ", "the benchmark expects token 1 to be the word separator"

    def run(decoder):
        def f(lp, lengths):
            hyps = decoder(lp.float().contiguous(), lengths.to(torch.int32))
            out = []
            for nb in hyps:
                toks = decoder.idxs_to_tokens(nb[0].tokens) if nb else []
                out.append(" ".join("".join(t for t in toks if t != "-").replace("|", " ").split()))
            return out

        return f

    out = {}
    for k in beams:
        dec = ctc_decoder(
            lexicon=None, tokens=fl_tokens, lm=None, beam_size=k, blank_token="-", sil_token="|"
        )
        out[f"flashlight beam {k}"] = run(dec)
    if lm_path:
        lex = tmp / "flashlight_lexicon.txt"
        lex.write_text("".join(f"{w} {' '.join(w)} |\n" for w in words))
        for k in beams:
            dec = ctc_decoder(
                lexicon=str(lex),
                tokens=fl_tokens,
                lm=lm_path,
                beam_size=k,
                lm_weight=alpha,
                word_score=beta,
                blank_token="-",
                sil_token="|",
            )
            out[f"flashlight beam {k} + lexicon + LM"] = run(dec)
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--posteriors", help="a .pt dict with log_probs, lengths, tokens, refs (default: synthetic)"
    )
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--beams", type=int, nargs="+", default=[4, 16, 64])
    p.add_argument("--lm-beams", type=int, nargs="+", default=[16], help="beam widths of the LM rows")
    p.add_argument("--lm-text", help="text to train the word 3-gram on (synthetic: other GRID sentences)")
    p.add_argument("--lexicon", help="word list (synthetic: the 51 GRID words)")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (peers are single-threaded)")
    p.add_argument("--device", default="cpu", help="device for speechkit's decoders (cpu, cuda)")
    p.add_argument("--only", help="run only decoders whose name contains this")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    if a.posteriors:
        data = torch.load(a.posteriors, weights_only=False)
        source = f"{a.posteriors}"
    else:
        data = synthetic(a.batch, a.frames)
        source = f"synthetic GRID-like, batch {a.batch}, {a.frames} frames"
    lp, lengths, tokens, refs = (
        data["log_probs"].float(),
        data["lengths"].long(),
        list(data["tokens"]),
        data["refs"],
    )
    tmp = Path(tempfile.mkdtemp(prefix="decode_bench_"))
    lm_text = Path(a.lm_text).read_text() if a.lm_text else data.get("lm_text")
    lexicon = Path(a.lexicon).read_text() if a.lexicon else data.get("lexicon")
    lm_path = lex_path = None
    words: list[str] = []
    if lm_text:
        (tmp / "lm.txt").write_text(lm_text)
        lm_path = str(tmp / "lm.arpa")
        NgramLM.train(tmp / "lm.txt", order=3, unit="word").save_arpa(lm_path)
        words = sorted(set(lexicon.split()) if lexicon else set(lm_text.split()))
        lex_path = str(tmp / "words.txt")
        Path(lex_path).write_text("\n".join(words) + "\n")

    decoders: dict[str, Callable] = {}
    decoders.update(speechkit_decoders(tokens, a.beams, None, None, a.alpha, a.beta, a.device))
    decoders.update(pyctcdecode_decoders(tokens, a.beams, None, words, a.alpha, a.beta))
    decoders.update(flashlight_decoders(tokens, a.beams, None, words, a.alpha, a.beta, tmp))
    if lm_path:
        decoders.update(
            {
                k: v
                for k, v in speechkit_decoders(
                    tokens, a.lm_beams, lm_path, lex_path, a.alpha, a.beta, a.device
                ).items()
                if "LM" in k
            }
        )
        decoders.update(
            {
                k: v
                for k, v in pyctcdecode_decoders(tokens, a.lm_beams, lm_path, words, a.alpha, a.beta).items()
                if "LM" in k
            }
        )
        decoders.update(
            {
                k: v
                for k, v in flashlight_decoders(
                    tokens, a.lm_beams, lm_path, words, a.alpha, a.beta, tmp
                ).items()
                if "LM" in k
            }
        )

    B = lp.shape[0]
    print(
        f"# {source}: {B} utterances, {lp.shape[1]} frames max, {lp.shape[2]} tokens; torch threads {a.threads}"
    )
    print("| decoder | ms / utterance | WER % |")
    print("| --- | ---: | ---: |")
    decoders = {k: v for k, v in decoders.items() if not a.only or a.only in k}
    hyps = {name: fn(lp, lengths) for name, fn in decoders.items()}  # warm-up, and the WER
    # CPU decoders: process CPU time (all single-threaded), which other load on the machine
    # disturbs less than wall time; GPU: wall time with synchronisation. Repeats go round-robin
    # over the decoders so that a busy moment hits them all alike; each keeps its best.
    best = dict.fromkeys(decoders, float("inf"))
    for _ in range(a.repeats):
        for name, fn in decoders.items():
            cuda = a.device.startswith("cuda") and "speechkit" in name
            clock = time.perf_counter if cuda else time.process_time
            if cuda:
                torch.cuda.synchronize()
            t0 = clock()
            fn(lp, lengths)
            if cuda:
                torch.cuda.synchronize()
            best[name] = min(best[name], clock() - t0)
    results = []
    for name in decoders:
        row = {"decoder": name, "ms_per_utt": 1000 * best[name] / B, "wer": wer(refs, hyps[name])}
        results.append(row)
        print(f"| {name} | {row['ms_per_utt']:.2f} | {row['wer']:.2f} |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

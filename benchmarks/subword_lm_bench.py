"""Word LM and lexicon with a subword (BPE) model: decode_bench.py's simulated posteriors over BPE pieces.

A sentencepiece BPE model is trained on data/asr_grid/train.jsonl's texts (as ``tokenizer=bpe`` does);
each GRID sentence of decode_bench.py's grammar is encoded with it and given peaky CTC posteriors over
the pieces with decode_bench's noise model (random alignment, noise, 6 % unsure labels, 4 % confusions
with another piece). Rows: beam 16 without and with a word 3-gram (data/asr_grid/word3.arpa if present,
else trained on data/asr_grid/lm_train.txt as ``speechkit-ngram`` does) and the 51 GRID words as the
lexicon, on both engines; ms / utterance is process time, best of ``--repeats``, one thread::

    python benchmarks/subword_lm_bench.py [--batch 64] [--vocab-size 64]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from decode_bench import GRID, grid_sentence, peaky, wer  # noqa: E402

from speechkit.decoders.beam import BeamConfig, BeamDecoder  # noqa: E402
from speechkit.lm.ngram import NgramConfig, NgramLM  # noqa: E402
from speechkit.registry import build  # noqa: E402


def synthetic_bpe(tok, batch: int, frames: int, seed: int = 0) -> dict:
    """decode_bench.synthetic's posteriors, over ``tok``'s pieces instead of characters."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    refs, rows, lengths = [], [], []
    for _ in range(batch):
        ref = grid_sentence(rng)
        row, T = peaky(tok.encode(ref), len(tok.tokens), frames, rng, g)
        rows.append(row)
        refs.append(ref)
        lengths.append(T)
    return {"log_probs": torch.stack(rows), "lengths": torch.tensor(lengths), "refs": refs}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--vocab-size", type=int, default=64)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    grid = ROOT / "data" / "asr_grid"
    texts = [json.loads(line)["text"] for line in (grid / "train.jsonl").read_text().splitlines()]
    tok = build("tokenizer", "bpe", vocab_size=a.vocab_size).fit(texts)
    tmp = Path(tempfile.mkdtemp(prefix="subword_lm_"))
    arpa = grid / "word3.arpa"
    if not arpa.exists():
        arpa = tmp / "word3.arpa"
        NgramLM.train(grid / "lm_train.txt", order=3, unit="word").save_arpa(arpa)
    lm = NgramLM(NgramConfig(path=str(arpa), unit="word"))
    words = tmp / "words.txt"
    words.write_text("\n".join(w for slot in GRID for w in slot) + "\n")
    data = synthetic_bpe(tok, a.batch, a.frames)
    lp, lengths, refs = data["log_probs"], data["lengths"], data["refs"]
    fused = dict(lm=lm, alpha=a.alpha, beta=a.beta)
    rows = {
        "beam 16": {},
        "beam 16 + word 3-gram": fused,
        "beam 16 + lexicon": {"lexicon": str(words)},
        "beam 16 + lexicon + word 3-gram": dict(fused, lexicon=str(words)),
    }
    decoders = {
        f"{name}, {engine}": BeamDecoder(BeamConfig(beam_size=16, engine=engine, **kw), tok.tokens)
        for name, kw in rows.items()
        for engine in ("native", "torch")
    }
    pieces = [t for t in tok.tokens[1:] if len(t) > 1]
    print(
        f"# {a.batch} utterances, {lp.shape[1]} frames max, {len(tok.tokens)} tokens (e.g. {pieces[-3:]}); {arpa}"
    )
    print("| decoder | ms / utterance | WER % |")
    print("| --- | ---: | ---: |")
    hyps = {k: [nb[0].text for nb in d(lp, lengths)] for k, d in decoders.items()}  # warm-up, and the WER
    best = dict.fromkeys(decoders, float("inf"))
    for _ in range(a.repeats):  # round-robin, so that a busy moment hits them all alike
        for k, d in decoders.items():
            t0 = time.process_time()
            d(lp, lengths)
            best[k] = min(best[k], time.process_time() - t0)
    results = []
    for k in decoders:
        row = {"decoder": k, "ms_per_utt": 1000 * best[k] / a.batch, "wer": wer(refs, hyps[k])}
        results.append(row)
        print(f"| {k} | {row['ms_per_utt']:.2f} | {row['wer']:.2f} |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

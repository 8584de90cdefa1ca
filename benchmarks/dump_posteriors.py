"""Write a trained model's log-probabilities on a manifest, for decode_bench.py --posteriors.

    python benchmarks/dump_posteriors.py --checkpoint runs/asr_grid/main/checkpoints/best.pt \
        --manifest data/asr_grid/test.jsonl --limit 32 --out /tmp/grid_test_posteriors.pt
"""

from __future__ import annotations

import argparse

import torch

from speechkit import load_checkpoint
from speechkit.data import ManifestDataset, read_manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--limit", type=int, default=32, help="first N utterances (one batch)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    pipe = load_checkpoint(a.checkpoint, batch_size=a.limit)
    examples = read_manifest(a.manifest, pipe.model.frontend.modality)[: a.limit]
    batch, _ = next(pipe.decode_batches(ManifestDataset(examples, pipe.model.frontend.load)))
    log_probs, lengths = pipe.log_probs(batch.x, batch.lengths)
    refs = [pipe.tokenizer.clean(examples[i].text) for i in batch.indices]
    torch.save({"log_probs": log_probs.float().cpu(), "lengths": lengths.cpu(), "tokens": pipe.tokenizer.tokens,
                "refs": refs}, a.out)
    print(f"wrote {a.out}: {tuple(log_probs.shape)} log-probs of {len(refs)} utterances")


if __name__ == "__main__":
    main()

"""How well speechkit's word and utterance confidences separate right from wrong, on the asr_grid test set.

Every hypothesis word is right when an edit-distance alignment pairs it with an equal reference word
(``speechkit.decoders.confidence.word_matches``), wrong otherwise (a substitution or an insertion);
an utterance is right when its whole text is. For each confidence choice (``ConfidenceConfig``: the
frame measure, the entropy's alpha and normalisation, how words and utterances aggregate) the script
reports the area under the ROC curve (``roc_auc``: the chance that a random right word scores above a
random wrong one; 0.5 is chance), for greedy and beam (GRID's lexicon) decoding of the same posteriors.

    python benchmarks/confidence.py --checkpoint runs/asr_grid/mix/checkpoints/best.pt \\
        --manifest data/asr_grid/test.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CHOICES = [  # (label, ConfidenceConfig fields)
    ("posterior, word min", dict(measure="posterior", word="min")),
    ("posterior, word mean", dict(measure="posterior", word="mean")),
    ("posterior, word prod", dict(measure="posterior", word="prod")),
    *(
        (f"entropy α={alpha:g} {norm}, word min", dict(measure="entropy", alpha=alpha, entropy_norm=norm))
        for alpha in (0.25, 0.33, 0.5, 1.0)
        for norm in ("lin", "exp")
    ),
    ("entropy α=0.33 exp, word mean", dict(measure="entropy", alpha=0.33, word="mean")),
    ("entropy α=0.33 exp, word prod", dict(measure="entropy", alpha=0.33, word="prod")),
]


def main() -> None:
    import torch
    from timestamps import DECODERS, posteriors

    from speechkit import load_checkpoint
    from speechkit.decoders.confidence import ConfidenceConfig, roc_auc, word_matches

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="runs/asr_grid/mix/checkpoints/best.pt")
    ap.add_argument("--manifest", type=Path, default=Path("data/asr_grid/test.jsonl"))
    ap.add_argument("--limit", type=int, help="first N utterances")
    ap.add_argument("--decoders", nargs="+", default=list(DECODERS), choices=list(DECODERS))
    ap.add_argument("--json", type=Path, help="write the figures here too")
    a = ap.parse_args()
    torch.set_num_threads(1)
    pipe = load_checkpoint(a.checkpoint)
    t0 = time.perf_counter()
    rows, lps, durations, _ = posteriors(pipe, a.manifest, 0.0, a.limit)
    print(f"log-probs of {len(rows)} utterances in {time.perf_counter() - t0:.0f} s")
    refs = [pipe.tokenizer.clean(r["text"]).split() for r in rows]
    figures: dict[str, dict] = {}
    for name in a.decoders:
        node = {
            k: v.format(root=a.manifest.parent) if isinstance(v, str) else v
            for k, v in DECODERS[name].items()
        }
        decoder = pipe.build_decoder(node)
        batches = []  # the search runs once; each confidence choice re-annotates its n-best lists
        for i in range(0, len(lps), pipe.batch_size):
            lp = torch.nn.utils.rnn.pad_sequence(lps[i : i + pipe.batch_size], batch_first=True)
            lengths = torch.tensor([len(x) for x in lps[i : i + pipe.batch_size]])
            batches.append((decoder(lp, lengths), lp, lengths, durations[i : i + pipe.batch_size]))
        figures[name] = {}
        for label, fields in CHOICES:
            for utterance in ("mean", "min"):
                pipe.confidence = ConfidenceConfig(**fields, utterance=utterance)
                hyps = [nbest[0] for batch in batches for nbest in pipe.annotate(*batch)]
                if utterance == "mean":  # the word confidences do not depend on it
                    scores, right = [], []
                    for ref, h in zip(refs, hyps):
                        hyp_words = [w for w, _, _ in h.words]
                        good = {j for _, j in word_matches(ref, hyp_words)}
                        scores += h.word_confidences
                        right += [j in good for j in range(len(hyp_words))]
                    word_auc = roc_auc(scores, right)
                utt_right = [h.text.split() == ref for ref, h in zip(refs, hyps)]
                utt_auc = roc_auc([h.confidence for h in hyps], utt_right)
                figures[name][f"{label}; utterance {utterance}"] = {
                    "word_auc": word_auc,
                    "utterance_auc": utt_auc,
                    "words": len(right),
                    "wrong_words": len(right) - sum(right),
                    "utterances": len(hyps),
                    "wrong_utterances": len(hyps) - sum(utt_right),
                }
        first = next(iter(figures[name].values()))
        print(
            f"\n{name}: {first['words']} hypothesis words, {first['wrong_words']} wrong; "
            f"{first['utterances']} utterances, {first['wrong_utterances']} wrong"
        )
        print(f"{'confidence':46s} {'word AUC':>9s} {'utt AUC':>8s}")
        for label, f in figures[name].items():
            print(f"{label:46s} {f['word_auc']:9.3f} {f['utterance_auc']:8.3f}")
    pipe.confidence = ConfidenceConfig()
    if a.json:
        a.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()

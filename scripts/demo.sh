#!/usr/bin/env bash
# The demo: train a small speech model on the samples shipped in samples/grid (about 3 minutes
# on a 2-core CPU), transcribe the held-back test files and print their text and the WER.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=runs/demo/latest
rm -rf "$RUN"
speechkit-train recipe=demo hydra.run.dir="$RUN" "$@"
echo
echo "== transcribing held-back files (voices never heard in training) =="
speechkit-transcribe checkpoint="$RUN/checkpoints/best.pt" input=samples/grid/test.jsonl \
  output="$RUN/test_predictions.jsonl" hydra.run.dir="$RUN/transcribe" >/dev/null
python3 - "$RUN/test_predictions.jsonl" samples/grid/test.jsonl <<'PY'
import json, sys
preds = [json.loads(l) for l in open(sys.argv[1])]
refs = [json.loads(l)["text"] for l in open(sys.argv[2])]
for p, r in list(zip(preds, refs))[:8]:
    print(f"  ref: {r}\n  hyp: {p['text']}\n")
PY
speechkit-eval checkpoint="$RUN/checkpoints/best.pt" data.test_manifest=samples/grid/test.jsonl \
  progress=false hydra.run.dir="$RUN/eval"

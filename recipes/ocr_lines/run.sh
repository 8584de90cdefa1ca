#!/usr/bin/env bash
# ocr_lines: render the corpus (once), train (10 000 steps, ~48 minutes on a 2-core CPU), evaluate on fonts never seen in training,
# drawn by the training renderers (test) and by one never trained on (test_pango).
# THREADS (default 1) sets torch's CPU threads: on a busy shared machine one thread trains fastest.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=data/ocr_lines
RUN=${RUN:-runs/ocr_lines/latest}
export OMP_NUM_THREADS=${THREADS:-1}
[ -f "$DATA/test.jsonl" ] || python3 recipes/ocr_lines/prepare.py --out "$DATA"
rm -rf "$RUN"
speechkit-train recipe=ocr_lines trainer.threads="$OMP_NUM_THREADS" hydra.run.dir="$RUN" "$@"
for TEST in test test_pango; do  # the training renderers' test lines, and the same lines by Pango (never trained on)
  [ -f "$DATA/$TEST.jsonl" ] || continue
  speechkit-eval checkpoint="$RUN/checkpoints/best.pt" data.test_manifest="$DATA/$TEST.jsonl" \
    progress=false hydra.run.dir="$RUN/eval_$TEST"
  python3 - "$RUN/eval_$TEST" "$DATA/$TEST.jsonl" <<'PY'
import json, os, sys
from collections import defaultdict
from speechkit.metrics import error_counts
metrics = json.load(open(f"{sys.argv[1]}/metrics.json"))
root = os.path.dirname(sys.argv[2])
group = {json.loads(l)["image_filepath"]: json.loads(l)["group"] for l in open(sys.argv[2])}
by = defaultdict(list)
for p in map(json.loads, open(f"{sys.argv[1]}/predictions.jsonl")):
    by[group[os.path.relpath(p["path"], root)]].append(p)
print(f"{sys.argv[2]}: {metrics['num_utterances'] / metrics['decode_seconds']:.1f} lines/s decoded (greedy, loading included)")
for g, ps in sorted(by.items()):
    c = error_counts([p["ref"] for p in ps], [p["hyp"] for p in ps])
    print(f"  {g:26s} CER {100 * c['char_errors'] / c['chars']:5.2f} %  WER {100 * c['word_errors'] / c['words']:5.2f} %")
PY
done

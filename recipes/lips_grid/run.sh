#!/usr/bin/env bash
# lips_grid: render the synthetic GRID-grammar lip corpus offline, train (25-minute budget on a
# 2-core CPU), evaluate on speakers never seen in training. Extra arguments go to speechkit-train.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-data/lips_grid}
RUN=${RUN:-runs/lips_grid/main}

[ -f "$DATA/test.jsonl" ] || python3 recipes/lips_grid/prepare.py --out "$DATA" --jobs "$(nproc)"
speechkit-train recipe=lips_grid data.root="$DATA" hydra.run.dir="$RUN" "$@"
speechkit-eval checkpoint="$RUN/checkpoints/best.pt" data.test_manifest="$DATA/test.jsonl" \
  hydra.run.dir="$RUN/eval_greedy" progress=false

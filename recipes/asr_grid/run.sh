#!/usr/bin/env bash
# asr_grid: synthesise the corpus offline, train (3 100 steps, ~14-20 minutes on a 2-core CPU), evaluate on
# voices never heard in training. Extra arguments go to speechkit-train as overrides.
# RECIPE=asr_grid_10min trains on a 10-minute budget instead (conf/recipe/asr_grid_10min.yaml).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-data/asr_grid}
RECIPE=${RECIPE:-asr_grid}
RUN=${RUN:-runs/$RECIPE/main}

[ -f "$DATA/test.jsonl" ] || python3 recipes/asr_grid/prepare.py --out "$DATA" --jobs "$(nproc)"
speechkit-train recipe="$RECIPE" data.root="$DATA" hydra.run.dir="$RUN" "$@"
speechkit-eval checkpoint="$RUN/checkpoints/best.pt" data.test_manifest="$DATA/test.jsonl" \
  hydra.run.dir="$RUN/eval_greedy" progress=false

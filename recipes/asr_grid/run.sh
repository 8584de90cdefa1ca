#!/usr/bin/env bash
# asr_grid: synthesise the corpus offline, train (3 100 steps, ~14-20 minutes on a 2-core CPU), evaluate on
# voices never heard in training. Extra arguments go to speechkit-train as overrides.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-data/asr_grid}
RUN=${RUN:-runs/asr_grid/main}

[ -f "$DATA/test.jsonl" ] || python3 recipes/asr_grid/prepare.py --out "$DATA" --jobs "$(nproc)"
speechkit-train recipe=asr_grid data.root="$DATA" hydra.run.dir="$RUN" "$@"
speechkit-eval checkpoint="$RUN/checkpoints/best.pt" data.test_manifest="$DATA/test.jsonl" \
  hydra.run.dir="$RUN/eval_greedy" progress=false

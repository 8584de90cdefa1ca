#!/usr/bin/env bash
# librispeech: train on the manifests speechkit-prepare wrote (README.md), then evaluate on the test split.
# Extra arguments go to speechkit-train as overrides. The corpus is not shipped: prepare it first.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-data/librispeech}
RUN=${RUN:-runs/librispeech/main}
[ -f "$DATA/train.jsonl" ] || [ -n "$(ls "$DATA"/train*.jsonl 2>/dev/null)" ] || {
  echo "error: no training manifest in $DATA: run speechkit-prepare first (recipes/librispeech/README.md)" >&2; exit 2; }
speechkit-train recipe=librispeech data.root="$DATA" hydra.run.dir="$RUN" "$@"
speechkit-eval checkpoint="$RUN/checkpoints/best.pt" data.test_manifest="$(python3 -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['data']['test_manifest'])" "$RUN/config.yaml")" \
  hydra.run.dir="$RUN/eval" progress=false

#!/usr/bin/env bash
# A recipe whose corpus speechkit-prepare wrote (librispeech, timit_phones, iam_lines): train, then
# evaluate on the test split its config names. Usage: run_prepared_recipe.sh NAME [overrides …]
# (DATA and RUN override the recipe's data folder and the run directory). The corpus is not shipped.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=$1; shift
RUN=${RUN:-runs/$NAME/main}
# the recipe's own data.root unless DATA says otherwise; a missing corpus is speechkit-train's one error line
speechkit-train recipe="$NAME" ${DATA:+data.root="$DATA"} hydra.run.dir="$RUN" "$@"
TEST=$(python3 -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['data']['test_manifest'])" "$RUN/config.yaml")
speechkit-eval checkpoint="$RUN/checkpoints/best.pt" data.test_manifest="$TEST" hydra.run.dir="$RUN/eval" progress=false

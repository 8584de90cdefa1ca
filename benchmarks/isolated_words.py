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

from speechkit.corpora.grid import DIGITS, LETTERS  # noqa: E402

SAMPLE_RATE = 16000  # Hz, what speak() returns and the models read


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--lexicon", type=Path, help="also decode with beam 16 and this word list")
    ap.add_argument("--lm", type=Path, help="with --lexicon: also decode with this word n-gram LM (ARPA)")
    ap.add_argument("--alpha", type=float, default=0.5, help="LM weight (choose it on synthetic dev data)")
    ap.add_argument("--beta", type=float, default=0.0, help="word bonus")
    ap.add_argument("--spoken-forms", type=Path, help="a model trained on spoken forms (TSV: word, form): "
                    "its hypotheses' forms are read back as the words")
    a = ap.parse_args()
    back = {}
    if a.spoken_forms:
        back = {f: w for w, f in (ln.split("\t") for ln in a.spoken_forms.read_text().splitlines() if ln.strip())}

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
        if a.lm:
            decoders[f"beam 16 + lexicon + word LM (α {a.alpha:g}, β {a.beta:g})"] = {
                **decoders["beam 16 + lexicon"],
                "lm": {"name": "ngram", "path": str(a.lm), "unit": "word"},
                "alpha": a.alpha,
                "beta": a.beta,
            }
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

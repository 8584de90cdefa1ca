"""Hotwords on a real model that can spell: rare names in printed text lines (OCR).

The ocr_lines recipe's model reads any letter string, so a name it never saw in training is
spelt, with mistakes, by its letters: where context biasing should help. Lines are rendered by the
recipe's own code (recipes/ocr_lines/prepare.py, rasterizers.py, conditions.py, unchanged: its
text generator, font pools, renderers and degradations; Pillow or ImageMagick per line, as in its
``test`` split), in two draws:

- **dev**: the recipe's dev fonts and ``DEV_NAMES`` (where the boost is chosen);
- **test**: its held-out test fonts and ``TEST_NAMES`` (reported once, at the dev's boost).

Each draw has name lines (an ordinary line from the recipe's generator with one name inserted as
a word, in Title Case; ``PUNCTUATED`` of them followed by "," or ".") and ordinary lines (the
generator's own, no name). No name occurs in the training text or in the dictionary the
generator draws words from (checked). Each draw's lines are decoded by beam search (beam 16)
without and with its names as hotwords, at each of ``BOOSTS``, without and with a character
6-gram of the training text (the recipe README's LM, α 0.3, β 0.5). Reported:

- names recall: share of name lines whose best hypothesis holds the name as a word (punctuation
  around it stripped), over all name lines and over those where the name has no punctuation;
- CER / WER of the name lines and of the ordinary lines; names written into ordinary lines;
- decode ms per line of the 500 test lines with and without the list, both engines (process CPU
  time, one thread, batches of 32, best of ``--repeats``, exact rescoring and text included).

Images, manifests, log-probabilities and the LM are kept in ``--out``, so a rerun only decodes.

    python benchmarks/hotwords_ocr.py --checkpoint runs/ocr_lines/multi5k/checkpoints/best.pt \\
        --data data/ocr_lines_multi --out /tmp/hotwords_ocr
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hotwords import decode, log_probs  # benchmarks/hotwords.py, beside this script

from speechkit.data.manifest import write_manifest
from speechkit.metrics import wer_cer

ROOT = Path(__file__).resolve().parents[1]
TEST_NAMES = (  # surnames and places, none in the training text or the dictionary
    "Szczepanski", "Przybylski", "Wojciechowski", "Jedrzejczak", "Szymczyk", "Pszczolkowski",
    "Tlaxcala", "Xochimilco", "Quetzaltenango", "Ulaanbaatar", "Kyzylorda", "Tskhinvali",
    "Mtskheta", "Zugdidi", "Ljungqvist", "Hvidovre", "Jaaskelainen", "Haapaniemi",
    "Gudmundsdottir", "Ntombizodwa", "Mkhwanazi", "Ngcobo", "Oyelaran", "Chukwuemeka",
    "Tshabalala", "Dzhokhar", "Llanfyllin", "Pwllheli", "Ystradgynlais", "Machynlleth",
    "Bhubaneswar", "Kazhegeldin", "Zhumabekov", "Turkmenbashi", "Przhevalsk", "Tzintzuntzan",
    "Nyiregyhaza", "Zalaegerszeg", "Hadziahmetovic", "Fauquembergue",
)  # fmt: skip
DEV_NAMES = (
    "Krzyzanowski", "Wrzesniewski", "Huehuetenango", "Kutaisi", "Bjorkqvist", "Ruotsalainen",
    "Aaltonen", "Dlamini", "Adebayo", "Oluwaseun", "Cwmbran", "Dolgellau", "Tokhtarov", "Khujand",
    "Xalapa", "Szekesfehervar", "Kecskemet", "Mrkonjic", "Thibodeaux", "Kipchoge",
)  # fmt: skip
# a line's generator is seeded by [SEED_TAG, --seed, draw, kind, line], none 0: numpy's seeds ignore trailing
# zeros, and a tag of the recipe's own form [seed, split, line] would redraw the recipe's own lines
SEED_TAG = 0x484F54
DRAWS = {"dev": (DEV_NAMES, 1), "test": (TEST_NAMES, 2)}  # fonts and names of a draw, its seed
KINDS = ("names", "ordinary")  # the two sets of lines of a draw
RENDERERS = ("pillow", "imagemagick")  # the recipe's training renderers, which draw its test split
PUNCTUATED = 0.25  # share of names followed by "," or "."
MAX_CHARS = 48  # a line's length limit in the recipe's text generator
BOOSTS = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0)  # decoder.hotword_boost values tried on dev (log-score per character)
BEAM, NBEST_REACH = 16, 32
LM_ORDER, ALPHA, BETA = 6, 0.3, 0.5  # char n-gram and its weights (recipes/ocr_lines/README.md)


def recipe() -> object:
    """recipes/ocr_lines/prepare.py as a module (it imports conditions.py and rasterizers.py beside it)."""
    spec = importlib.util.spec_from_file_location(
        "ocr_prepare", ROOT / "recipes" / "ocr_lines" / "prepare.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def check_names(prep, words: list[str], train_text: str) -> None:
    """Every name is new: not in the training transcripts (as any substring) nor in the word list."""
    known = {w.lower() for w in words}
    for name in DEV_NAMES + TEST_NAMES:
        low = name.lower()
        where = [w for w, hit in (("training text", low in train_text), ("dictionary", low in known)) if hit]
        if where or set(name) - set(prep.CHARSET) or len(name) > 14:
            sys.exit(f"error: name {name!r} is not a rare name here ({', '.join(where) or 'spelling'})")
    if set(DEV_NAMES) & set(TEST_NAMES):
        sys.exit("error: dev and test names overlap")


def name_line(prep, rng: np.random.Generator, words: list[str], name: str) -> str:
    """An ordinary line of the recipe's generator with ``name`` inserted as one of its words."""
    tokens = prep.make_text(rng, words, MAX_CHARS - len(name) - 2).split(" ")
    word = name + (str(rng.choice([",", "."])) if rng.random() < PUNCTUATED else "")
    tokens.insert(int(rng.integers(len(tokens) + 1)), word)
    return " ".join(tokens)


def render(
    prep, out: Path, draw: str, kind: str, count: int, pool: list, words: list[str], seed: int
) -> Path:
    """``count`` lines of one kind ("names" or "ordinary") drawn as the recipe draws a line; their manifest."""
    manifest = out / f"{draw}_{kind}.jsonl"
    if manifest.is_file():
        return manifest
    names, draw_seed = DRAWS[draw]
    (out / "images" / draw / kind).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        rng = np.random.default_rng([SEED_TAG, seed, draw_seed, KINDS.index(kind) + 1, i + 1])
        text = (
            name_line(prep, rng, words, names[i % len(names)])
            if kind == "names"
            else prep.make_text(rng, words)
        )
        group = pool[int(rng.integers(len(pool)))]  # group, family, style: as prepare._render_task
        family = group[int(rng.integers(len(group)))]
        font = family[int(rng.integers(len(family)))]
        renderer = RENDERERS[int(rng.integers(len(RENDERERS)))]
        img = prep.render_line(text, font.path, rng, renderer, out / "fontconfig")
        jpeg = rng.random() < 0.3
        rel = Path("images") / draw / kind / f"{i + 1:06d}.{'jpg' if jpeg else 'png'}"
        img.save(out / rel, **({"quality": int(rng.integers(15, 96))} if jpeg else {}))
        rows.append({"image_filepath": str(rel), "text": text, "name": names[i % len(names)] if kind == "names" else None,
                     "font": font.name, "group": font.group, "renderer": renderer})  # fmt: skip
    return write_manifest(manifest, rows)


def font_pools(prep, data: Path) -> dict[str, list]:
    """The recipe's dev and test font pools, checked against the fonts ``data`` was rendered with."""
    splits = prep.assign_splits(prep.discover_fonts(list(prep.FONT_PACKAGES)))
    listed = json.loads((data / "fonts.json").read_text())
    for split in DRAWS:
        ours = sorted(f"{f.name} ({f.path})" for f in splits[split])
        if ours != sorted(font for group in listed[split].values() for font in group):
            sys.exit(f"error: the installed {split} fonts differ from {data / 'fonts.json'}")
    return {split: prep.font_pool(splits[split]) for split in DRAWS}


def as_words(text: str, punctuation: str) -> list[str]:
    return [w.strip(punctuation) for w in text.split()]


def evaluate(decoder, sets: dict, punctuation: str) -> dict:
    """Names recall (all, bare), CER/WER of name and ordinary lines (%), names put into ordinary lines."""
    hyps = [nb[0].text for nb in decode(decoder, sets["names"])[0]]
    plain = [nb[0].text for nb in decode(decoder, sets["ordinary"])[0]]
    hits = [name in as_words(h, punctuation) for name, h in zip(sets["name_of"], hyps)]
    bare = [hit for hit, b in zip(hits, sets["bare"]) if b]
    wer_n, cer_n = wer_cer(sets["names"]["refs"], hyps)
    wer_o, cer_o = wer_cer(sets["ordinary"]["refs"], plain)
    listed = set(sets["list"])
    return {
        "recall": 100 * np.mean(hits), "recall_bare": 100 * np.mean(bare),
        "cer_names": 100 * cer_n, "wer_names": 100 * wer_n, "cer_ordinary": 100 * cer_o, "wer_ordinary": 100 * wer_o,
        "inserted": sum(w in listed for h in plain for w in as_words(h, punctuation)),
        "cer_all": 100 * wer_cer(sets["names"]["refs"] + sets["ordinary"]["refs"], hyps + plain)[1],
    }  # fmt: skip


def table(title: str, results: dict) -> None:
    print(f"\n{title}")
    print(
        "| decoding | names recall % (bare names) | CER / WER name lines % | CER / WER ordinary % | names put in ordinary |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, r in results.items():
        print(
            f"| {label} | {r['recall']:.1f} ({r['recall_bare']:.1f}) | {r['cer_names']:.2f} / {r['wer_names']:.2f} "
            f"| {r['cer_ordinary']:.2f} / {r['wer_ordinary']:.2f} | {r['inserted']} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="runs/ocr_lines/multi5k/checkpoints/best.pt")
    ap.add_argument(
        "--data",
        type=Path,
        default=Path("data/ocr_lines_multi"),
        help="the model's data (train.jsonl, fonts.json)",
    )
    ap.add_argument("--out", type=Path, default=Path("/tmp/hotwords_ocr"), help="images, manifests, caches")
    ap.add_argument("--per-name", type=int, default=5, help="name lines per name (dev 20 names, test 40)")
    ap.add_argument("--ordinary", type=int, default=300, help="ordinary lines per draw")
    ap.add_argument("--repeats", type=int, default=3, help="timing rounds (the best is reported)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)

    from speechkit import build, load_checkpoint
    from speechkit.lm.ngram import NgramLM

    started = time.perf_counter()
    a.out.mkdir(parents=True, exist_ok=True)
    prep = recipe()
    words = prep.load_words()
    train_texts = [json.loads(line)["text"] for line in open(a.data / "train.jsonl", encoding="utf-8")]
    check_names(prep, words, "\n".join(train_texts).lower())

    rendered = all((a.out / f"{d}_{k}.jsonl").is_file() for d in DRAWS for k in KINDS)
    pools = {d: None for d in DRAWS} if rendered else font_pools(prep, a.data)
    manifests = {}
    for draw, (names, _) in DRAWS.items():
        sizes = {"names": a.per_name * len(names), "ordinary": a.ordinary}
        manifests[draw] = {
            k: render(prep, a.out, draw, k, sizes[k], pools[draw], words, a.seed) for k in KINDS
        }
        (a.out / f"{draw}_hotwords.txt").write_text("\n".join(names) + "\n")  # for decoder.hotwords=…
    print(f"lines rendered: {time.perf_counter() - started:.0f} s", file=sys.stderr)

    pipe = load_checkpoint(a.checkpoint, batch_size=16)
    tokens = pipe.tokenizer.tokens
    sets = {}
    for draw, (names, _) in DRAWS.items():
        rows = [json.loads(line) for line in open(manifests[draw]["names"], encoding="utf-8")]
        sets[draw] = {
            kind: log_probs(pipe, manifests[draw][kind], 10**9, a.out / f"logprobs_{draw}_{kind}.pt")
            for kind in KINDS
        }
        sets[draw].update(
            name_of=[r["name"] for r in rows], bare=[r["name"] in r["text"].split() for r in rows], list=names
        )
    lm_path = a.out / f"char{LM_ORDER}.arpa"
    if not lm_path.is_file():
        text = a.out / "lm_train.txt"
        text.write_text("\n".join(train_texts) + "\n", encoding="utf-8")
        NgramLM.train(text, order=LM_ORDER, unit="char").save_arpa(lm_path)
    lm = build("lm", "ngram", path=str(lm_path))
    print(f"log-probabilities and LM: {time.perf_counter() - started:.0f} s", file=sys.stderr)

    def beam(names=None, boost: float = 1.0, with_lm: bool = False, **options):
        hot = {"hotwords": list(names), "hotword_boost": boost} if names else {}
        fused = {"lm": lm, "alpha": ALPHA, "beta": BETA} if with_lm else {}
        dec = build("decoder", "beam", tokens=tokens, **{"beam_size": BEAM, **hot, **fused, **options})
        dec.warm_up()
        return dec

    punct = prep.PUNCTUATION
    greedy = build("decoder", "greedy", tokens=tokens)
    dev, chosen = {"greedy": evaluate(greedy, sets["dev"], punct)}, {}
    for with_lm, tag in ((False, f"beam {BEAM}"), (True, f"beam {BEAM} + char {LM_ORDER}-gram")):
        dev[tag] = evaluate(beam(with_lm=with_lm), sets["dev"], punct)
        by_boost = {b: evaluate(beam(DEV_NAMES, b, with_lm), sets["dev"], punct) for b in BOOSTS}
        chosen[with_lm] = min(BOOSTS, key=lambda b: by_boost[b]["cer_all"])  # lowest CER over all dev lines
        dev.update({f"{tag} + hotwords, boost {b}": r for b, r in by_boost.items()})
    table(
        f"dev draw: {len(sets['dev']['name_of'])} name lines ({len(DEV_NAMES)} names), {a.ordinary} ordinary, "
        f"dev fonts; chosen boost (lowest CER over all dev lines): {chosen[False]} without LM, {chosen[True]} with",
        dev,
    )

    test = sets["test"]
    wide = decode(beam(beam_size=NBEST_REACH, nbest=NBEST_REACH), test["names"])[0]
    reach = sum(any(n in as_words(h.text, punct) for h in nb) for n, nb in zip(test["name_of"], wide))
    results = {"greedy": evaluate(greedy, test, punct)}
    for with_lm, tag in ((False, f"beam {BEAM}"), (True, f"beam {BEAM} + char {LM_ORDER}-gram")):
        results[tag] = evaluate(beam(with_lm=with_lm), test, punct)
        results[f"{tag} + hotwords, boost {chosen[with_lm]}"] = evaluate(
            beam(TEST_NAMES, chosen[with_lm], with_lm), test, punct
        )
    table(
        f"test draw: {len(test['name_of'])} name lines ({len(TEST_NAMES)} names), {a.ordinary} ordinary, "
        f"held-out test fonts; the name in the {NBEST_REACH}-best of beam {NBEST_REACH} without hotwords: "
        f"{reach} of {len(wide)}",
        results,
    )

    lines = sum(len(test[k]["refs"]) for k in KINDS)
    print(f"\nspeed on the {lines} test lines, beam {BEAM}, ms per line:")
    print(f"| engine | LM | no hotwords | {len(TEST_NAMES)} hotwords |")
    print("| --- | --- | ---: | ---: |")
    for engine in ("native", "torch"):
        for with_lm in (False, True):
            ms = []
            for names in (None, TEST_NAMES):
                dec = beam(names, chosen[with_lm], with_lm, engine=engine)
                seconds = min(sum(decode(dec, test[k])[1] for k in KINDS) for _ in range(a.repeats))
                ms.append(1000 * seconds / lines)
            print(
                f"| {engine} | {f'char {LM_ORDER}-gram' if with_lm else 'none'} | {ms[0]:.3f} | {ms[1]:.3f} |"
            )
    print(f"\ntotal {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()

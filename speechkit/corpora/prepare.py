"""``speechkit-prepare corpus=NAME corpus_dir=DIR out=DIR [subsets=a,b] [option=value …]``: run
lhotse's recipe for a corpus already downloaded and write speechkit's JSON-lines manifests.

Each corpus is a module ``speechkit.corpora.<module>`` (``CORPORA``) with
``prepare(corpus_dir, out, *, corpus, subsets, **options) -> {split: manifest}``; its keyword
options (``language``, ``num_jobs``, …) are the command's extra keys, typed by their defaults.
After the manifests, a summary per split (utterances, hours, speakers, skipped) and, from the
training split(s), ``lm_train.txt`` and ``words.txt``. lhotse and torch are imported only once
a corpus is chosen, so ``--help`` is instant.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from speechkit.cli import UsageError, parse_key_values, run

COMMAND = "speechkit-prepare"
#: corpus name → module under speechkit.corpora
CORPORA = {
    "librispeech": "librispeech",
    "mini_librispeech": "librispeech",
    "commonvoice": "commonvoice",
    "timit": "timit",
    "grid": "grid_corpus",
    "iam": "iam",
}
#: the keys every corpus takes (None: required); a recipe's keyword options are added to them
BASE_KEYS: dict[str, str | None] = {"corpus": None, "corpus_dir": None, "out": None, "subsets": ""}
LHOTSE_MISSING = "the corpus recipes need lhotse, which is not installed: pip install speechkit[corpora]"
SKIPS_SHOWN = 3  # skipped utterances printed per split; the listing beside the manifest has them all

CLI_USAGE = f"{COMMAND} corpus=NAME corpus_dir=DIR out=DIR [subsets=a,b] [language=en] [num_jobs=1]"
CLI_HELP = f"""\
usage: {CLI_USAGE}

Run lhotse's recipe for a corpus you have downloaded and extracted, and write speechkit manifests
(out/<split>.jsonl), a summary per split, and lm_train.txt + words.txt from the training split(s).
Needs lhotse: pip install speechkit[corpora].

corpora (corpus_dir= is the folder as extracted):
  librispeech       LibriSpeech/ holding train-clean-100/, dev-clean/, test-other/, …
  mini_librispeech  LibriSpeech/ holding train-clean-5/, dev-clean-2/
  commonvoice       cv-corpus-<version>/ holding <language>/{{train,dev,test}}.tsv and <language>/clips/
  timit             the TIMIT corpus folder
  grid              the GRID audio-visual corpus folder
  iam               the IAM handwriting database folder

keys:
  corpus=NAME        one of the corpora above
  corpus_dir=DIR     the corpus as downloaded
  out=DIR            where the manifests go (created)
  subsets=a,b        which splits (default: the usual ones present, e.g. every LibriSpeech subset)
  language=CODE      commonvoice: the language folder (default en)
  num_jobs=N         parallel readers of the audio headers (default 1)
  a corpus's other options are its recipe's keywords; an unknown key lists the valid ones

Skipped utterances (a transcript without audio, audio without transcript, a segment that is not a
whole file, …) are counted in the summary and listed in out/<split>.skipped.tsv.

example: {COMMAND} corpus=librispeech corpus_dir=/data/LibriSpeech out=data/librispeech
         speechkit-train data.train_manifest=data/librispeech/train-clean-100.jsonl \\
             data.dev_manifest=data/librispeech/dev-clean.jsonl tokenizer.lowercase=true"""


def _corpus_name(argv: Sequence[str]) -> str:
    """The value of ``corpus=``, checked against ``CORPORA``."""
    name = next(
        (v for k, eq, v in (a.partition("=") for a in argv) if eq and k.replace("-", "_") == "corpus"), None
    )
    if name is None:
        if any(a.startswith("--") and a != "--debug" for a in argv):
            parse_key_values(argv, BASE_KEYS, COMMAND)  # answers --flags with the key=value spelling
        raise UsageError(f"missing corpus=… (one of {', '.join(CORPORA)})")
    if name not in CORPORA:
        near = difflib.get_close_matches(name, CORPORA, n=1)
        hint = f"did you mean {near[0]}? " if near else ""
        raise UsageError(f"unknown corpus={name!r}; {hint}valid corpora: {', '.join(CORPORA)}")
    return name


def load_recipe(corpus: str) -> ModuleType:
    """The module that prepares ``corpus``; a missing module or a missing lhotse is a ``UsageError``."""
    name = f"speechkit.corpora.{CORPORA[corpus]}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name:
            raise UsageError(
                f"corpus={corpus}: its recipe {name} is not part of this installation "
                f"(speechkit/corpora/{CORPORA[corpus]}.py is missing)"
            ) from None
        if (e.name or "").split(".")[0] == "lhotse":
            raise UsageError(LHOTSE_MISSING) from None
        raise
    if not callable(getattr(module, "prepare", None)):
        raise UsageError(f"corpus={corpus}: {name} has no prepare() function")
    return module


def recipe_options(prepare) -> dict[str, object]:
    """``prepare``'s keyword-only options besides ``corpus`` and ``subsets``, with their defaults
    (``inspect.Parameter.empty`` where required)."""
    return {
        p.name: p.default
        for p in inspect.signature(prepare).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("corpus", "subsets")
    }


def _typed(key: str, value: str, default: object) -> object:
    """A command-line string as the type of the option's default (bool, int, float, or str)."""
    if isinstance(default, bool):
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise UsageError(f"{key}={value}: give true or false")
        return value.lower() in ("true", "1", "yes")
    for kind, word in ((int, "a whole number"), (float, "a number")):
        if isinstance(default, kind):
            try:
                return kind(value)
            except ValueError:
                raise UsageError(f"{key}={value}: give {word}") from None
    return None if default is None and value == "" else value


def _lhotse_failure(e: Exception, corpus: str, corpus_dir: Path) -> Exception:
    """An exception raised inside lhotse as one line: an unreadable file named, anything else with
    lhotse's own message and what to check."""
    from speechkit.data.errors import DataError

    message = str(e)
    if type(e).__name__ == "AudioLoadingError":
        where = re.search(r"from '(.+?)' failed", message)
        detail = re.search(r"Exception #0 .*?'>: (.*)", message)
        return DataError(
            where.group(1) if where else corpus_dir,
            f"lhotse cannot read this audio ({detail.group(1) if detail else message.splitlines()[0]})",
            "re-download the file, or delete it and its transcript",
        )
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return UsageError(
        f"lhotse's {corpus} recipe failed on corpus_dir={corpus_dir} ({type(e).__name__}"
        f"{': ' + first if first else ''}); check that the folder holds the corpus as published "
        "(--debug shows lhotse's traceback)"
    )


def _from_lhotse(e: BaseException) -> bool:
    """Whether ``e`` was raised inside lhotse's code (not a bug of ours, which keeps its traceback)."""
    return any("/lhotse/" in f.filename.replace("\\", "/") for f in traceback.extract_tb(e.__traceback__))


def summarize(written: dict[str, Path], out: Path) -> None:
    """Print each split's utterances, hours, speakers and skips; write the LM text of the training split(s)."""
    from speechkit.corpora.lhotse_io import read_rows, read_skipped, skipped_path, write_lm_text

    train_rows: list[dict] = []
    for split, path in written.items():
        rows = read_rows(path)
        skipped = read_skipped(path)
        if any("image_filepath" in r for r in rows):  # text lines (IAM): no duration; writers, not speakers
            writers = len({r.get("writer") for r in rows if "writer" in r})
            size = f"{len(rows)} lines, {writers} writers"
        else:
            hours = sum(r.get("duration", 0.0) for r in rows) / 3600
            speakers = len({r["speaker"] for r in rows if "speaker" in r})
            size = f"{len(rows)} utterances, {hours:.2f} h, {speakers} speakers"
        print(f"{split}: {size}, {len(skipped)} skipped → {path}")
        for utt, why in skipped[:SKIPS_SHOWN]:
            print(f"  skipped {utt}: {why}")
        if skipped:
            print(f"  (all {len(skipped)} listed in {skipped_path(path)})")
        if not rows:
            print(f"  warning: {path} is empty; training and evaluation refuse an empty manifest")
        if split.startswith("train"):
            train_rows += rows
    train = [s for s in written if s.startswith("train")]
    if train_rows:
        lm, words = write_lm_text(train_rows, out)
        n_words = len(words.read_text(encoding="utf-8").split())
        print(f"{lm}: {len(train_rows)} transcripts of {', '.join(train)}; {words}: {n_words} words")
    else:
        why = f"{', '.join(train)} has no utterances" if train else "no training split prepared"
        print(f"{why}: lm_train.txt and words.txt not written")
    dev = next((s for s in written if s.startswith("dev")), None)
    if train and dev:
        print(f"train with: data.train_manifest={written[train[0]]} data.dev_manifest={written[dev]}")


def _work(argv: list[str]) -> None:
    from speechkit.data.errors import DataError

    corpus = _corpus_name(argv)
    recipe = load_recipe(corpus)
    options = recipe_options(recipe.prepare)
    keys = {
        **BASE_KEYS,
        **{k: (None if d is inspect.Parameter.empty else _text(d)) for k, d in options.items()},
    }
    a = parse_key_values(argv, keys, COMMAND)
    kwargs = {k: _typed(k, a[k], d) for k, d in options.items()}
    subsets = [s.strip() for s in a["subsets"].split(",") if s.strip()] or None
    corpus_dir, out = Path(a["corpus_dir"]), Path(a["out"])
    try:
        written = recipe.prepare(corpus_dir, out, corpus=corpus, subsets=subsets, **kwargs)
    except (UsageError, DataError):
        raise
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] == "lhotse":
            raise UsageError(LHOTSE_MISSING) from e
        raise
    except Exception as e:
        if _from_lhotse(e):
            raise _lhotse_failure(e, corpus, corpus_dir) from e
        raise
    summarize(written, out)


def _text(default: object) -> str:
    """An option's default as the command line spells it."""
    if isinstance(default, bool):
        return str(default).lower()
    return "" if default is None else str(default)


def main(argv: Sequence[str] | None = None) -> None:
    """``speechkit-prepare corpus=NAME corpus_dir=DIR out=DIR``: prepare a downloaded corpus's manifests."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:  # before run(), whose error types import torch (seconds)
        print(CLI_HELP)
        return
    run(_work, CLI_USAGE, CLI_HELP, argv)


if __name__ == "__main__":
    main()

"""``speechkit-validate recipe=NAME`` (or ``data.train_manifest=… data.dev_manifest=…``): find every
problem in a corpus before training does.

Each manifest named in ``data.*_manifest`` is read line by line and every example is loaded with
the configured frontend's own loader, so what passes here loads in training. Reported, with the
manifest line:

errors (exit status 1)
    a manifest with no examples; a line that is not a usable JSON object (bad JSON, missing or
    mistyped key, empty text, a duration that is not a finite non-negative number); a missing,
    unreadable, corrupt or truncated media file, a symlink loop or dangling link, float audio
    far beyond full scale (the loader's own message); a duration more than
    ``duration_tolerance`` seconds from the manifest's; characters outside the vocabulary
    (``vocab=FILE|CHECKPOINT``; without it the training transcripts' characters); a transcript longer than CTC can align to the example's frames after the frontend's and the
    encoder's subsampling; the same media file in two splits (test data seen in training).
warnings
    audio at another sample rate than the frontend's (resampled at every load) or with several
    channels (averaged); the same media file twice in one split.

A summary goes to the terminal and every problem to ``report`` (JSON; default
``<run dir>/validate.json``). Files are loaded by ``data.num_workers`` worker processes, with a
progress bar.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger("speechkit.validate")

SPLITS = ("train", "dev", "test")
SHOWN = 50  # problems printed; the JSON report has them all


@dataclass
class Problem:
    where: str  # manifest:line, or the manifest itself
    split: str
    severity: str  # error | warning
    kind: str  # short category, for counting
    message: str


@dataclass
class Loaded:
    """What a worker found for one example."""

    index: int
    length: int | None = None  # raw length the frontend sees (samples, columns, frames)
    seconds: float | None = None  # its duration, where the medium has one
    error: str | None = None
    sample_rate: int | None = None
    channels: int | None = None


class _Probe:
    """Loads examples with the frontend's loader in worker processes; never raises.

    A map-style dataset (``DataLoader`` takes any object with ``__len__`` and ``__getitem__``), not a
    ``torch.utils.data.Dataset`` subclass: this module imports torch only when work starts, so ``--help``
    answers at once."""

    def __init__(self, examples, load, modality: str, sample_rate: int | None) -> None:
        self.examples, self.load, self.modality, self.sample_rate = examples, load, modality, sample_rate

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Loaded:
        ex = self.examples[i]
        out = Loaded(i)
        try:
            x = self.load(ex.path)
        except Exception as e:  # every failure is reported, whatever raised it
            out.error = str(e) if str(ex.path) in str(e) else f"{ex.path}: {type(e).__name__}: {e}"
            return out
        out.length = int(x.shape[0])
        if self.modality == "audio":
            import soundfile as sf

            info = sf.info(str(ex.path))
            out.sample_rate, out.channels = info.samplerate, info.channels
            out.seconds = out.length / self.sample_rate
        elif self.modality == "video":
            fps = dict(ex.fields).get("fps")
            if isinstance(fps, int | float) and fps > 0:
                out.seconds = out.length / fps
        return out


def _vocabulary(spec: str | None, tokenizer, train_texts: list[str]) -> set[str] | None:
    """The allowed characters: from a checkpoint's tokens, a text file's characters, or the training text."""
    if spec:
        path = Path(spec)
        if not path.is_file():
            raise SystemExit(f"error: vocab={spec}: no such file (give a checkpoint or a text file of the allowed characters)")
        if path.suffix == ".pt":
            from speechkit.checkpoint import CheckpointError, read_checkpoint

            try:
                return set(read_checkpoint(path)["tokens"][1:])
            except CheckpointError as e:
                raise SystemExit(f"error: vocab={spec}: {e}") from None
        return set(path.read_text(encoding="utf-8").replace("\n", "")) | {" "}
    if train_texts:
        return {c for t in train_texts for c in tokenizer.clean(t)}
    return None


def validate(cfg: DictConfig, progress: bool = True) -> tuple[list[Problem], dict[str, dict[str, Any]]]:
    """Check every manifest of ``cfg.data``; returns the problems and per-split counts."""
    import torch
    from tqdm import tqdm

    from speechkit.data.manifest import manifest_list, parse_manifest
    from speechkit.data.tokenizer import BLANK_SYMBOL, CharTokenizer
    from speechkit.losses.ctc import min_ctc_frames
    from speechkit.pipeline import CTCModel
    from speechkit.registry import build, registry

    manifests = {s: cfg.data.get(f"{s}_manifest") for s in SPLITS}
    manifests = {s: m for s, m in manifests.items() if m}
    if not manifests:
        raise SystemExit("error: no manifest to validate: pass data.train_manifest=PATH (and/or dev, test) or recipe=NAME")
    modality = registry("frontend").get(cfg.frontend.name).cls.modality
    problems: list[Problem] = []
    parsed = {}
    for split, ms in manifests.items():
        parsed[split] = []
        for m in manifest_list(ms):  # a path, or several joined
            try:
                examples, bad = parse_manifest(m, modality)
            except Exception as e:  # missing or non-UTF-8 manifest
                problems.append(Problem(str(m), split, "error", "manifest", str(e)))
                continue
            problems += [Problem(f"{m}:{n}", split, "error", "manifest line", msg) for n, msg in bad]
            if not examples and not bad:
                problems.append(Problem(str(m), split, "error", "manifest",
                                        "no examples: the file is empty or has only blank lines — write one JSON "
                                        f"object per line, or point data.{split}_manifest at another manifest"))
            parsed[split] += examples

    tokenizer: CharTokenizer = build("tokenizer", cfg.tokenizer)
    vocab = _vocabulary(cfg.get("vocab"), tokenizer, [ex.text for ex in parsed.get("train", [])])
    chars = vocab or {c for exs in parsed.values() for ex in exs for c in tokenizer.clean(ex.text)}
    tokenizer = build("tokenizer", cfg.tokenizer, tokens=[BLANK_SYMBOL, *sorted(chars)])
    model = CTCModel.from_config(cfg, len(tokenizer)).eval()
    sample_rate = getattr(getattr(model.frontend, "cfg", None), "sample_rate", None)
    tolerance = float(cfg.duration_tolerance)

    seen: dict[Path, list[tuple[str, str]]] = defaultdict(list)
    stats: dict[str, dict[str, Any]] = {}
    for split, examples in parsed.items():
        probe = _Probe(examples, model.frontend.load, modality, sample_rate)
        loader = torch.utils.data.DataLoader(probe, batch_size=None, shuffle=False,
                                             num_workers=cfg.data.num_workers)
        loaded: list[Loaded] = []
        for item in tqdm(loader, total=len(probe), desc=f"validate {split}", unit="file", disable=not progress,
                         mininterval=1.0):
            loaded.append(item)
        n_err_before = sum(p.severity == "error" for p in problems)
        rates: Counter[int] = Counter()
        total_s = 0.0
        for got in loaded:
            ex = examples[got.index]
            where = ex.where
            seen[Path(os.path.realpath(ex.path))].append((split, where))  # never raises, unlike resolve()
            if got.error is not None:
                problems.append(Problem(where, split, "error", "unreadable", got.error))
                continue
            if got.sample_rate is not None:
                rates[got.sample_rate] += 1
                if sample_rate and got.sample_rate != sample_rate:
                    problems.append(Problem(where, split, "warning", "sample rate",
                                            f"{got.sample_rate} Hz, resampled to the frontend's {sample_rate} Hz "
                                            "at every load (convert the file once to save the time)"))
                if got.channels and got.channels > 1:
                    problems.append(Problem(where, split, "warning", "channels",
                                            f"{got.channels} channels, averaged to mono"))
            if got.seconds is not None:
                total_s += got.seconds
                if ex.duration is not None and abs(got.seconds - ex.duration) > tolerance:
                    problems.append(Problem(where, split, "error", "duration",
                                            f"the manifest says {ex.duration:.3f} s, the file holds {got.seconds:.3f} s "
                                            "(fix the manifest: bucketing and batch_seconds use it)"))
            text = tokenizer.clean(ex.text)
            if vocab is not None:
                unknown = sorted({c for c in text if c not in vocab})
                if unknown:
                    problems.append(Problem(where, split, "error", "vocabulary",
                                            f"characters {', '.join(map(repr, unknown))} outside the vocabulary in {ex.text!r}"))
                    continue
            ids = torch.tensor(tokenizer.encode(text))
            need = int(min_ctc_frames(ids, torch.tensor([len(ids)]))[0])
            frames = int(model.output_lengths(torch.tensor([got.length]))[0])
            if need > frames:
                problems.append(Problem(where, split, "error", "too short for CTC",
                                        f"{len(ids)} labels need {need} frames but the model gives {frames} "
                                        f"(from {got.length} input steps); lower encoder.subsample or check the transcript"))
        stats[split] = {"manifest": ", ".join(manifest_list(manifests[split])), "entries": len(examples), "loaded": sum(g.error is None for g in loaded),
                        "errors": sum(p.severity == "error" for p in problems) - n_err_before,
                        "hours": total_s / 3600, "sample_rates": dict(rates)}

    for path, uses in seen.items():
        splits = sorted({s for s, _ in uses})
        if len(splits) > 1:
            problems.append(Problem(uses[0][1], uses[0][0], "error", "in two splits",
                                    f"{path} is in {' and '.join(splits)} ({', '.join(w for _, w in uses)}): "
                                    "test results would be on seen data"))
        for split in splits:
            here = [w for s, w in uses if s == split]
            if len(here) > 1:
                problems.append(Problem(here[1], split, "warning", "duplicate",
                                        f"{path} appears {len(here)} times in {split} ({', '.join(here)})"))
    return problems, stats


def task(cfg: DictConfig) -> int:
    from hydra.core.hydra_config import HydraConfig

    from speechkit.config import resolve_data_root

    resolve_data_root(cfg)  # a recipe's data from any folder
    problems, stats = validate(cfg, progress=cfg.progress)
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity == "warning"]
    report = Path(cfg.report) if cfg.report else Path(HydraConfig.get().runtime.output_dir) / "validate.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"splits": stats, "errors": len(errors), "warnings": len(warnings),
                                  "problems": [asdict(p) for p in problems]}, indent=1, ensure_ascii=False) + "\n")
    from speechkit.registry import registry

    medium = registry("frontend").get(cfg.frontend.name).cls.modality  # audio | video: what the seconds are of
    for split, st in stats.items():
        length = (f", {st['hours']:.2f} h of {medium}" if st["hours"] >= 0.1
                  else f", {st['hours'] * 3600:.1f} s of {medium}" if st["hours"] else "")
        print(f"{split:5s} {st['manifest']}: {st['entries']} entries, {st['loaded']} loaded, "
              f"{st['errors']} with errors{length}")
    for p in (errors + warnings)[:SHOWN]:
        print(f"  {p.severity}: {p.where}: [{p.kind}] {p.message}")
    if len(problems) > SHOWN:
        print(f"  … {len(problems) - SHOWN} more in the report")
    kinds = Counter(f"{p.severity} {p.kind}" for p in problems)
    print(f"{len(errors)} error(s), {len(warnings)} warning(s)"
          + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))})" if kinds else "")
          + f"; report: {report}")
    if errors:
        sys.exit(1)
    return 0


def main() -> None:
    from speechkit.config import run_hydra

    run_hydra(task, "validate")


if __name__ == "__main__":
    main()

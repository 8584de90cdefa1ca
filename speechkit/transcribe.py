"""``speechkit-transcribe checkpoint=PATH input=FILE|FOLDER|MANIFEST``: text of media files.

One file: its text is printed. A folder or a manifest: predictions are written as JSON lines
(``output=PATH``, default ``<run dir>/predictions.jsonl``) and a summary is printed.

``on_error=raise`` (default): an input that cannot be used is one ``error:`` line naming the
manifest line (or the file, for a folder) and nothing is written: the first manifest line that
cannot be parsed (all are checked before decoding), else the first media file that cannot be read.
``on_error=skip``: those inputs are left out, each printed on stderr (``skipped MANIFEST:LINE:
reason``) and listed in ``<output stem>.skipped.jsonl`` beside the output, one ``{"where", "path",
"reason"}`` object a line; the rest are transcribed.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("speechkit.transcribe")


def _inputs(pipe, source: Path, on_error: str) -> tuple[list, list[tuple[int, dict]]]:
    """The files (a folder's, or one) or manifest examples ``source`` names, and for every manifest
    line that cannot be parsed ``(line, report row)``; with ``on_error=raise`` the first is an error."""
    from speechkit.data.files import check_media_file
    from speechkit.data.manifest import parse_manifest

    if source.is_dir():
        exts = {e.lower() for e in pipe.model.frontend.extensions}
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in exts)
        if not files:
            raise SystemExit(f"error: {source}: no files ending in {', '.join(sorted(exts))}")
        return files, []
    if source.suffix in (".jsonl", ".json"):
        examples, problems = parse_manifest(source, pipe.model.frontend.modality, require_text=False)
        if problems and on_error == "raise":
            line, problem = problems[0]
            more = f" (and {len(problems) - 1} more unusable line(s))" if len(problems) > 1 else ""
            raise SystemExit(
                _one_line(
                    f"error: {source}:{line}: {problem}{more} — fix or remove the line "
                    "(speechkit-validate lists every problem), or pass on_error=skip"
                )
            )
        if not examples and not problems:
            raise SystemExit(f"error: {source}: manifest has no examples")
        return examples, [(line, _row(f"{source}:{line}", None, problem)) for line, problem in problems]
    if not source.exists() and not source.is_symlink():
        raise SystemExit(f"error: {source}: no such file or folder")
    check_media_file(source, pipe.model.frontend.modality)  # a symlink loop or dangling link, named
    return [source], []


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def _row(where: str, path: Path | None, reason: str) -> dict:
    """One line of the skipped-inputs report."""
    return {"where": where, "path": None if path is None else str(path), "reason": _one_line(reason)}


def _format(h, words: bool) -> str:
    if not words:
        return h.text
    return h.text + "\n" + "\n".join(f"  {w}\t{s:.2f}\t{e:.2f}" for w, s, e in h.words)


def _plot_name(path: Path, used: set[str]) -> str:
    """``<stem>.png``, or ``<stem>_<n>.png`` when another input of the run has the same stem."""
    name, n = f"{path.stem}.png", 1
    while name in used:
        n += 1
        name = f"{path.stem}_{n}.png"
    used.add(name)
    return name


def write_plots(pipe, files: list[Path], nbests: list, out_dir: Path) -> list[Path]:
    """One PNG per input in ``out_dir``: the input, its features, and the posteriorgram with the
    decoded text aligned (speechkit.plots.plot_utterance). Returns the files written."""
    import torch

    from speechkit.plots import plot_utterance

    model, fe = pipe.model, pipe.model.frontend
    out_dir.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for path, nbest in zip(files, nbests):
        raw = fe.load(path)
        x, lengths = raw[None].to(pipe.device), torch.tensor([raw.shape[0]], device=pipe.device)
        with torch.no_grad():
            feats, frames = fe(x, lengths)
            log_probs, out_frames = model(x, lengths)
        cfg = getattr(fe, "cfg", None)
        target = out_dir / _plot_name(path, used)
        plot_utterance(
            target,
            raw.cpu().numpy(),
            fe.modality,
            feats[0, : int(frames[0])].float().cpu().numpy(),
            log_probs[0, : int(out_frames[0])].float().cpu().numpy(),
            pipe.tokenizer.tokens,
            hyp=nbest[0] if nbest else None,
            feat_shift_s=getattr(fe, "frame_shift_s", None),
            out_shift_s=model.frame_shift_s,
            sample_rate=getattr(cfg, "sample_rate", None),
            fps=getattr(cfg, "fps", None),
            title=str(path),
        )
        written.append(target)
    return written


def task(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from speechkit.checkpoint import CheckpointError, load_checkpoint
    from speechkit.data.dataset import Skipped
    from speechkit.data.errors import DataError

    if cfg.on_error not in ("raise", "skip"):
        raise SystemExit(f"error: on_error={cfg.on_error!r}: use raise or skip")
    decoder = OmegaConf.to_container(cfg.decoder, resolve=True)
    # nbest: checked before anything is loaded or decoded, not answered with fewer hypotheses
    if not isinstance(cfg.nbest, int) or cfg.nbest < 1:
        raise SystemExit(f"error: nbest={cfg.nbest}: give the number of hypotheses to print, 1 or more")
    returns = 1 if decoder.get("name") == "greedy" else decoder.get("nbest")  # None: a decoder we cannot ask
    if isinstance(returns, int) and isinstance(decoder.get("beam_size"), int):
        returns = min(returns, decoder["beam_size"])  # the beam search returns at most beam_size
    if isinstance(returns, int) and cfg.nbest > returns:
        fix = f"decoder=beam decoder.nbest={cfg.nbest}"
        if decoder.get("name") == "beam" and decoder.get("beam_size", cfg.nbest) < cfg.nbest:
            fix += f" decoder.beam_size={cfg.nbest}"
        raise SystemExit(
            f"error: nbest={cfg.nbest}, but the {decoder.get('name')} decoder returns at most {returns} "
            f"hypothes{'is' if returns == 1 else 'es'} per input: set {fix}"
        )
    try:  # the decoder asked for here, so the checkpoint's own need not be buildable
        pipe = load_checkpoint(cfg.checkpoint, decoder=decoder, device=cfg.device, batch_size=cfg.batch_size)
    except CheckpointError as e:  # the checkpoint's, or an LM file's that the decoder names
        raise SystemExit(
            f"error: {'' if e.path == str(Path(str(cfg.checkpoint))) else 'decoder: '}{e}"
        ) from None
    except (OSError, ValueError) as e:  # an LM file that is missing or unreadable: one line, not a traceback
        raise SystemExit(f"error: decoder: {e}") from None
    source = Path(str(cfg.input))
    single = not source.is_dir() and source.suffix not in (".jsonl", ".json")
    try:
        inputs, skipped = _inputs(pipe, source, cfg.on_error)
        if hasattr(pipe.decoder, "warm_up"):  # the one-off compile announced on stderr: stdout holds the text
            pipe.decoder.warm_up(pipe.device, announce=lambda m: print(m, file=sys.stderr))
        results = pipe.decode(inputs, on_error="raise" if single else cfg.on_error)
    except DataError as e:
        raise SystemExit(_one_line(f"error: {e}")) from None
    done = [(getattr(x, "path", x), r) for x, r in zip(inputs, results) if not isinstance(r, Skipped)]
    skipped += [
        (getattr(x, "line", i), _row(r.where, getattr(x, "path", x), r.reason))
        for i, (x, r) in enumerate(zip(inputs, results))
        if isinstance(r, Skipped)
    ]
    skipped.sort(key=lambda s: s[0])  # manifest line (folder: file) order
    for _, row in skipped:
        print(f"skipped {row['where']}: {row['reason']}", file=sys.stderr)
    files, nbests = [path for path, _ in done], [nbest for _, nbest in done]
    if cfg.plot and files:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        pngs = write_plots(pipe, files, nbests, run_dir / "plots")
        # stderr: stdout carries only the text of a single file
        print(
            f"plot{'s' if len(pngs) > 1 else ''}: {pngs[0] if len(pngs) == 1 else run_dir / 'plots'}",
            file=sys.stderr,
        )
    if single:
        for rank, h in enumerate(nbests[0][: cfg.nbest]):
            prefix = f"{rank + 1}\t{h.score:.3f}\t" if cfg.nbest > 1 else ""
            print(prefix + _format(h, cfg.words))
        return
    out = Path(cfg.output) if cfg.output else Path(HydraConfig.get().runtime.output_dir) / "predictions.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        for path, nbest in done:
            row = {
                "path": str(path),
                "text": nbest[0].text if nbest else "",
                "score": nbest[0].score if nbest else None,
            }
            if cfg.words and nbest:
                row["words"] = [list(w) for w in nbest[0].words]
            if cfg.nbest > 1:
                row["nbest"] = [{"text": h.text, "score": h.score} for h in nbest[: cfg.nbest]]
            f.write(json.dumps(row) + "\n")
    report = out.with_name(f"{out.stem}.skipped.jsonl")
    if skipped:
        report.write_text("".join(json.dumps(row) + "\n" for _, row in skipped))
    else:
        report.unlink(missing_ok=True)  # a previous run's, which would not describe this output
    if cfg.on_error == "skip":
        print(
            f"transcribed {len(done)} file(s), skipped {len(skipped)}: {out}"
            + (f" (skipped inputs: {report})" if skipped else "")
        )
    else:
        print(f"transcribed {len(done)} file(s): {out}")


def main() -> None:
    from speechkit.config import run_hydra

    run_hydra(task, "transcribe")


if __name__ == "__main__":
    main()

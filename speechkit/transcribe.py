"""``speechkit-transcribe checkpoint=PATH input=FILE|FOLDER|MANIFEST``: text of media files.

One file: its text is printed. A folder or a manifest: predictions are written as JSON lines
(``output=PATH``, default ``<run dir>/predictions.jsonl``) and a summary is printed.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("speechkit.transcribe")


def _inputs(pipe, source: Path) -> list[Path]:
    from speechkit.data.manifest import read_manifest

    if source.is_dir():
        exts = {e.lower() for e in pipe.model.frontend.extensions}
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in exts)
        if not files:
            raise SystemExit(f"error: {source}: no files ending in {', '.join(sorted(exts))}")
        return files
    if source.suffix in (".jsonl", ".json"):
        return [ex.path for ex in read_manifest(source, pipe.model.frontend.modality, require_text=False)]
    if not source.exists():
        raise SystemExit(f"error: {source}: no such file or folder")
    return [source]


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
    from speechkit.data.errors import DataError

    try:
        pipe = load_checkpoint(cfg.checkpoint, device=cfg.device, batch_size=cfg.batch_size)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    try:  # an LM file that is missing or unreadable: one line, not a traceback
        pipe.set_decoder(OmegaConf.to_container(cfg.decoder, resolve=True))
    except (CheckpointError, OSError, ValueError) as e:
        raise SystemExit(f"error: decoder: {e}") from None
    source = Path(str(cfg.input))
    try:
        files = _inputs(pipe, source)
        nbests = pipe.decode(files)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    if cfg.plot:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        pngs = write_plots(pipe, files, nbests, run_dir / "plots")
        # stderr: stdout carries only the text of a single file
        print(
            f"plot{'s' if len(pngs) > 1 else ''}: {pngs[0] if len(pngs) == 1 else run_dir / 'plots'}",
            file=sys.stderr,
        )
    if len(files) == 1 and not source.is_dir() and source.suffix not in (".jsonl", ".json"):
        for rank, h in enumerate(nbests[0][: cfg.nbest]):
            prefix = f"{rank + 1}\t{h.score:.3f}\t" if cfg.nbest > 1 else ""
            print(prefix + _format(h, cfg.words))
        return
    out = Path(cfg.output) if cfg.output else Path(HydraConfig.get().runtime.output_dir) / "predictions.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        for path, nbest in zip(files, nbests):
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
    print(f"transcribed {len(files)} file(s): {out}")


def main() -> None:
    from speechkit.config import run_hydra

    run_hydra(task, "transcribe")


if __name__ == "__main__":
    main()

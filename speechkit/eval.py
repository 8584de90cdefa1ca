"""``speechkit-eval checkpoint=PATH data.test_manifest=PATH [decoder=…]``: WER and CER of a model."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("speechkit.eval")


def evaluate(
    pipe,
    manifest: str | Path,
    progress: bool = True,
    num_workers: int = 0,
    announce: Callable[[str], None] | None = None,
) -> tuple[dict, list[dict]]:
    """Decode every example of ``manifest`` with ``pipe``; return (metrics, predictions).

    ``decode_seconds`` times the decoding alone: a decoder with a compiled engine is warmed up
    (compiled, or loaded from the disk cache) before the clock starts; ``announce`` hears that it
    is about to compile (default: the log).
    """
    from speechkit.data.dataset import ManifestDataset
    from speechkit.data.errors import DataError
    from speechkit.data.manifest import read_manifest
    from speechkit.data.tokenizer import check_spellable
    from speechkit.metrics import error_counts, rates

    examples = read_manifest(manifest, pipe.model.frontend.modality)
    tok = pipe.tokenizer
    try:  # unknown characters are an error now, not after an hour of decoding
        check_spellable(tok, examples)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    dataset = ManifestDataset(examples, pipe.model.frontend.load, None)
    preds: list[dict] = []
    warm_up = getattr(pipe.decoder, "warm_up", None)  # the beam decoder's; greedy compiles nothing
    if warm_up is not None:
        warm_up(pipe.device, announce=announce)
    t0 = time.perf_counter()
    for batch, nbests in pipe.decode_batches(dataset, num_workers=num_workers, progress=progress):
        for i, nbest in zip(batch.indices, nbests):
            ex = examples[i]
            preds.append({"path": str(ex.path), "ref": tok.clean(ex.text), "hyp": nbest[0].text,
                          "score": nbest[0].score})
    seconds = time.perf_counter() - t0
    c = error_counts([p["ref"] for p in preds], [p["hyp"] for p in preds])
    wer, cer = rates(c)
    metrics = {
        "wer": wer,
        "cer": cer,
        "num_utterances": len(preds),
        "sentence_error_rate": sum(p["ref"] != p["hyp"] for p in preds) / max(len(preds), 1),
        **c,
        "decode_seconds": seconds,
    }
    return metrics, preds


def task(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from speechkit.checkpoint import CheckpointError, load_checkpoint

    if not cfg.data.test_manifest:
        raise SystemExit("error: data.test_manifest is not set: pass data.test_manifest=PATH")
    try:
        pipe = load_checkpoint(cfg.checkpoint, device=cfg.device, batch_size=cfg.data.batch_size)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    try:  # an LM file that is missing or unreadable: one line, not a traceback
        pipe.set_decoder(OmegaConf.to_container(cfg.decoder, resolve=True))
    except (CheckpointError, OSError, ValueError) as e:
        raise SystemExit(f"error: decoder: {e}") from None
    metrics, preds = evaluate(pipe, cfg.data.test_manifest, progress=cfg.progress,
                              announce=lambda msg: print(msg, file=sys.stderr, flush=True))
    metrics.update({"checkpoint": str(cfg.checkpoint), "manifest": str(cfg.data.test_manifest),
                    "decoder": OmegaConf.to_container(cfg.decoder, resolve=True)})
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with open(run_dir / "predictions.jsonl", "w") as f:
        for p in preds:
            f.write(json.dumps(p) + "\n")
    print(f"WER {100 * metrics['wer']:.2f} %  CER {100 * metrics['cer']:.2f} %  "
          f"({metrics['num_utterances']} utterances, decoder {cfg.decoder.name})")
    print(f"metrics: {run_dir / 'metrics.json'}")
    return metrics["wer"]


def main() -> None:
    from speechkit.config import run_hydra

    run_hydra(task, "eval")


if __name__ == "__main__":
    main()

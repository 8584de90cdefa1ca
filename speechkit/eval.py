"""``speechkit-eval checkpoint=PATH data.test_manifest=PATH [decoder=…] [update_card=true]``: WER and CER of a
model; ``update_card=true`` also writes them into the checkpoint's model card (speechkit/info.py)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from speechkit.sweep import LogProbBatch

log = logging.getLogger("speechkit.eval")


def evaluate(
    pipe,
    manifest: str | Path,
    progress: bool = True,
    num_workers: int = 0,
    announce: Callable[[str], None] | None = None,
    cache_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    fmt: str = "manifest",
) -> tuple[dict, list[dict]]:
    """Decode every example of ``manifest`` with ``pipe``; return (metrics, predictions).

    ``decode_seconds`` times the decoding alone: a decoder with a compiled engine is warmed up
    (compiled, or loaded from the disk cache) before the clock starts; ``announce`` hears that it
    is about to compile (default: the log).

    ``cache_dir`` (with ``checkpoint``, the file ``pipe`` was loaded from): the model's log-probs are
    read from there when an earlier run with the same checkpoint, manifest, media files and settings
    stored them, else computed and stored (speechkit/sweep.py); ``metrics["logprob_cache"]`` says
    which (``hit``: ``decode_seconds`` is the decoder's alone; ``miss``; ``off``).
    """
    from speechkit.data.dataset import ManifestDataset
    from speechkit.data.errors import DataError
    from speechkit.data.lhotse_cuts import read_examples, source_loader
    from speechkit.data.tokenizer import check_spellable
    from speechkit.metrics import error_counts, named_rates
    from speechkit.sweep import LogProbCache, cached, logprob_key

    examples = read_examples(manifest, pipe.model.frontend.modality, fmt)
    tok = pipe.tokenizer
    try:  # unknown characters are an error now, not after an hour of decoding
        check_spellable(tok, examples)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    dataset = ManifestDataset(
        examples, pipe.model.frontend.load, None, load_source=source_loader(pipe.model.frontend)
    )
    preds: list[dict] = []
    warm_up = getattr(pipe.decoder, "warm_up", None)  # the beam decoder's; greedy compiles nothing
    if warm_up is not None:
        warm_up(pipe.device, announce=announce)
    cache = None
    if cache_dir is not None and checkpoint is not None:
        key = logprob_key(checkpoint, manifest, [ex.path for ex in examples], device=pipe.device,
                          batch_size=pipe.batch_size)  # fmt: skip
        cache = LogProbCache(cache_dir, key)
    t0 = time.perf_counter()
    batches, cache_state = cached(cache, lambda: _model_batches(pipe, dataset, num_workers), pipe.device)
    for batch, nbests in _decoded(pipe, batches, progress, total=-(-len(dataset) // pipe.batch_size)):
        # word times from each hypothesis' alignment, ended by the manifest's durations and snapped to
        # the audio's pauses as speechkit-transcribe's are; confidences
        durations = [examples[i].duration for i in batch.indices]
        pipe.annotate(nbests, batch.log_probs, batch.lengths, durations, batch.levels, batch.aligner)
        for i, nbest in zip(batch.indices, nbests):
            ex = examples[i]
            preds.append(_prediction(ex, nbest, tok.clean(ex.text), pipe.model.frontend.modality))
    seconds = time.perf_counter() - t0
    c = error_counts([p["ref"] for p in preds], [p["hyp"] for p in preds])
    metrics = {
        **named_rates(c, getattr(tok, "unit", "char")),  # wer and cer; per for a phone model
        "num_utterances": len(preds),
        "sentence_error_rate": sum(p["ref"] != p["hyp"] for p in preds) / max(len(preds), 1),
        **c,
        "decode_seconds": seconds,
        "logprob_cache": cache_state,
    }
    return metrics, preds


def _prediction(ex, nbest: list, ref: str, modality: str) -> dict:
    """One utterance's row of ``predictions.jsonl``, as speechkit-transcribe writes it (NeMo's convention):
    the manifest line's fields (``text`` the reference as written), ``pred_text``, ``confidence``,
    ``score``, ``words``; then what WER and CER are computed on, ``ref`` and ``hyp`` (normalised), the
    utterance's own ``wer`` and ``cer``, and ``path`` (the media file as read)."""
    from speechkit.metrics import error_counts, rates
    from speechkit.pipeline import Transcript, input_fields

    row = Transcript.from_nbest(nbest, ex.duration, input_fields(ex, modality)).to_dict()
    wer, cer = rates(error_counts([ref], [row["pred_text"]]))
    row.update(ref=ref, hyp=row["pred_text"], wer=wer, cer=cer, path=str(ex.path))
    return row


def _model_batches(pipe, dataset, num_workers: int = 0) -> Iterator[LogProbBatch]:
    """The model's log-probs of ``dataset``, batch by batch, in order (``Pipeline.model_batches``), as the
    log-prob cache keeps them."""
    from speechkit.sweep import LogProbBatch

    for batch, outputs in pipe.model_batches(dataset, num_workers):
        if outputs is None:
            yield LogProbBatch(batch.indices, None, None)
            continue
        lp, lengths, _, levels, aligned = outputs  # durations: eval takes the manifest's
        yield LogProbBatch(batch.indices, lp, lengths, levels, aligned)


def _decoded(
    pipe, batches: Iterable[LogProbBatch], progress: bool, total: int | None = None
) -> Iterator[tuple[LogProbBatch, list]]:
    """``(batch, n-best lists)`` for each batch of log-probs, with a progress bar."""
    from tqdm import tqdm

    for b in tqdm(batches, desc="decode", unit="batch", total=total, disable=not progress, mininterval=2.0):
        yield b, (pipe.decoder(b.log_probs.float(), b.lengths) if b.indices else [])


def task(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from speechkit.checkpoint import CheckpointError, load_checkpoint, local_file
    from speechkit.config import resolve_data_root
    from speechkit.hub import is_remote
    from speechkit.sweep import sweep_cache_dir

    # data=folder data.root=…: found from any folder, as for training
    resolve_data_root(cfg, uses=("test_manifest",))
    if cfg.update_card and is_remote(cfg.checkpoint):  # refused before the evaluation, not after it
        raise SystemExit(
            f"error: update_card=true rewrites the checkpoint file, but {cfg.checkpoint} is a "
            "download: update a local copy of it (pass its path)"
        )
    if cfg.data.batch_size < 1:
        raise SystemExit(
            f"error: data.batch_size={cfg.data.batch_size}: give the utterances decoded at once, 1 or more"
        )
    try:
        pipe = load_checkpoint(cfg.checkpoint, device=cfg.device, batch_size=cfg.data.batch_size)
        # a URL's cached copy (no second download): the log-prob cache hashes it
        local = local_file(cfg.checkpoint)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    if not cfg.data.test_manifest:  # the training run's own test set (its config names it absolutely)
        saved = OmegaConf.select(pipe.config, "data.test_manifest")
        if not saved:
            raise SystemExit(
                "error: data.test_manifest is not set (nor in the checkpoint's config): "
                "pass data.test_manifest=PATH"
            )
        cfg.data.test_manifest = saved
        log.info("data.test_manifest: %s (the checkpoint's)", saved)
    try:  # an LM file that is missing or unreadable: one line, not a traceback
        pipe.set_decoder(OmegaConf.to_container(cfg.decoder, resolve=True))
    except (CheckpointError, OSError, ValueError) as e:
        raise SystemExit(f"error: decoder: {e}") from None
    metrics, preds = evaluate(
        pipe,
        cfg.data.test_manifest,
        progress=cfg.progress,
        fmt=cfg.data.get("format", "manifest"),
        announce=lambda msg: print(msg, file=sys.stderr, flush=True),
        cache_dir=sweep_cache_dir() if cfg.cache_logprobs else None,
        checkpoint=local,
    )
    metrics.update(
        {
            "checkpoint": str(cfg.checkpoint),
            "manifest": str(cfg.data.test_manifest),
            "decoder": OmegaConf.to_container(cfg.decoder, resolve=True),
        }
    )
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with open(run_dir / "predictions.jsonl", "w") as f:
        for p in preds:
            f.write(json.dumps(p) + "\n")
    shown = "  ".join(f"{k.upper()} {100 * metrics[k]:.2f} %" for k in ("wer", "cer", "per") if k in metrics)
    print(f"{shown}  ({metrics['num_utterances']} utterances, decoder {cfg.decoder.name})")
    print(f"metrics: {run_dir / 'metrics.json'}")
    if cfg.update_card:  # the weights just evaluated, so a file rewritten meanwhile is refused
        from speechkit.info import eval_result, record_test_result

        entry = eval_result(metrics, preds, cfg.data.test_manifest, metrics["decoder"])
        try:
            record_test_result(cfg.checkpoint, entry, weights=pipe.model.state_dict())
        except CheckpointError as e:
            raise SystemExit(f"error: update_card: {e}") from None
        print(f"model card: test metrics written into {cfg.checkpoint}")
    return metrics.get("wer", metrics.get("per"))


def main() -> None:
    from speechkit.config import run_hydra

    run_hydra(task, "eval")


if __name__ == "__main__":
    main()

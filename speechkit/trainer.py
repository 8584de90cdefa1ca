"""The training loop: AdamW with warm-up and cosine decay, clipping, mixed precision (bf16 on CPUs
with bf16 instructions, bf16/fp16 on GPUs), an optional moving average of the weights (EMA),
dev WER every epoch, atomic checkpoints, and resume that continues exactly where a run stopped.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from speechkit import distributed
from speechkit.checkpoint import (
    CheckpointError,
    check_writable,
    load_weights,
    model_payload,
    save_checkpoint,
    tokenizer_context,
)
from speechkit.data.dataset import (
    Batch,
    CachedFeatures,
    FrontendCollate,
    Item,
    ManifestDataset,
    Skipped,
    collate,
    collate_features,
)
from speechkit.data.sampler import EpochBatches, make_batches, padding_fraction
from speechkit.data.spans import WordSpans, raw_rate, word_times
from speechkit.data.tokenizer import CharTokenizer, check_spellable, saved_state
from speechkit.decoders.greedy import GreedyConfig, GreedyDecoder
from speechkit.info import training_card
from speechkit.loggers import make_logger
from speechkit.metrics import error_counts, rates
from speechkit.pipeline import CTCModel, resolve_device
from speechkit.registry import build
from speechkit.rng import rng_state, seed_everything, set_rng_state
from speechkit.schedule import DECAYS, lr_factor  # lr_factor re-exported: the trainer's schedule

log = logging.getLogger(__name__)


def _epoch_position(state: dict[str, Any]) -> str:
    """Where a saved run stands, epochs numbered from 1 as on the progress bar: ``epoch 3`` (to
    start) or ``epoch 3, 5 batches in``."""
    into = f", {state['step_in_epoch']} batches in" if state["step_in_epoch"] else ""
    return f"epoch {state['epoch'] + 1}{into}"


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    step_in_epoch: int = 0  # batches of the current epoch already trained on
    train_seconds: float = 0.0
    best_wer: float = float("inf")
    evals_since_best: int = 0
    nonfinite_in_row: int = 0
    skipped_examples: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch end and per trainer.eval_every_steps
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss) per log interval
    interval_losses: list[float] = field(default_factory=list)  # losses of the open log interval
    epoch_losses: list[float] = field(default_factory=list)  # losses of the current epoch so far
    skipped_before_epoch: int = 0  # skipped_examples when the current epoch began
    # (all three saved, so that a resumed run logs and averages exactly what an uninterrupted one does)
    threads: int = 0  # the thread count trainer.threads=auto chose by timing the first steps (ThreadProbe); 0: none

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["losses"] = [list(x) for x in self.losses]
        return d


def check_settings(cfg: DictConfig) -> None:
    """Refuse a ``trainer`` or ``data`` number outside its range before any work, naming the setting:
    torch would stop later with its own words (a negative learning rate, ``num_workers=-1``), or the run
    would end having learnt nothing (``lr=0``, ``grad_clip=0``, ``max_epochs=0``, a negative ``max_steps``)."""
    t, d = cfg.trainer, cfg.data
    limits = [
        (0 < t.lr < math.inf, f"trainer.lr={t.lr}: use a positive learning rate (e.g. 2e-3)"),
        (t.max_steps >= 0, f"trainer.max_steps={t.max_steps}: use 0 (max_epochs decides) or a number of steps"),
        (t.max_epochs >= 1, f"trainer.max_epochs={t.max_epochs}: use 1 or more epochs"),
        (t.warmup_steps >= 0, f"trainer.warmup_steps={t.warmup_steps}: use 0 (none) or a number of steps"),
        (0 <= t.min_lr_ratio <= 1, f"trainer.min_lr_ratio={t.min_lr_ratio}: use a share of trainer.lr between 0 and 1"),
        (t.get("lr_decay", "cosine") in DECAYS,
         f"trainer.lr_decay={t.get('lr_decay')}: use one of {', '.join(DECAYS)}"),
        (t.grad_clip > 0, f"trainer.grad_clip={t.grad_clip}: use a positive gradient norm (e.g. 5)"),
        (t.eval_every_epochs >= 1, f"trainer.eval_every_epochs={t.eval_every_epochs}: use 1 or more epochs"),
        (0.0 <= t.get("ema_decay", 0.0) < 1.0,
         f"trainer.ema_decay={t.get('ema_decay', 0.0)}: use a value between 0 and 1 (e.g. 0.999), or 0 for none"),
        (t.stop_at_wer is None or 0 <= t.stop_at_wer < math.inf,
         f"trainer.stop_at_wer={t.stop_at_wer}: use a dev WER to stop at, 0 or more (e.g. 0.05), or null"),
        (d.num_workers >= 0, f"data.num_workers={d.num_workers}: use 0 (load in this process) or more"),
        (d.batch_size >= 1 or (d.batch_size == 0 and d.batch_seconds > 0),
         f"data.batch_size={d.batch_size}: use 1 or more examples (0, no cap, only with data.batch_seconds > 0)"),
    ]  # fmt: skip
    for ok, message in limits:
        if not ok:
            raise ValueError(message)


class Trainer:
    """Trains ``model`` on the manifests of ``cfg.data``; writes everything under ``run_dir``.

    ``resume``: the ``(checkpoint, path)`` to continue from, already checked against ``cfg``, or
    None (``speechkit-train`` looks before writing anything); ``"find"``: with
    ``trainer.resume=true`` the trainer finds and checks it itself (speechkit/rundir.py).
    ``init``: when not resuming, the ``(checkpoint, source)`` whose weights and tokenizer start the run
    (fine-tuning, ``trainer.init_from``); ``"find"``: the trainer reads and checks it itself.
    """

    plot_every_s = 60.0  # seconds between redraws of training.png
    _last_plot = -float("inf")
    _last_drawn: tuple[int, int] | None = None  # (loss points, history rows) on training.png

    def __init__(self, cfg: DictConfig, run_dir: str | Path,
                 resume: tuple[dict[str, Any], Path] | None | str = "find",
                 init: tuple[dict[str, Any], str] | None | str = "find") -> None:
        self.cfg = cfg
        self.tcfg = cfg.trainer
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        check_settings(cfg)
        self._setup_process()
        if resume == "find":
            from speechkit import rundir

            resume = rundir.find_resume(self.ckpt_dir) if self.tcfg.resume else None
            if resume:
                rundir.check_resume_config(cfg, *resume)
        if resume:
            st = resume[0]["trainer"]["state"]
            log.info("resuming from %s at step %d (%s)", resume[1], st["step"], _epoch_position(st))
        if resume:
            init = None
        elif init == "find":
            from speechkit import rundir

            init = rundir.find_init(cfg)
        self.state = TrainState()
        new_vocabulary = bool(init) and "head" in (self.tcfg.get("init_exclude") or [])
        start = resume or (None if new_vocabulary else init)  # the checkpoint whose tokenizer this run keeps
        self._setup_data(tokenizer_context(start[0]) if start else None, check_train=bool(start) and not resume)
        self._setup_model()
        self.total_steps = self.tcfg.max_steps or self._steps_in_epochs()
        if resume:
            self._restore(*resume)
        else:
            if init:
                self._init_weights(*init)
            frontend = self.model.frontend  # normalize=global or online: statistics new, or not taken by init
            if getattr(frontend, "uses_dataset_stats", False) and frontend.stats_count.item() == 0:
                self._global_stats()
        if self.loader_stage == "cached":  # after the statistics, which normalisation reads
            self.train_set = self._feature_cache()
        self.ema = self._make_ema(resume[0] if resume else None)
        self._setup_parallel()
        self.thread_probe = self._thread_probe()

    # -- set-up ---------------------------------------------------------------------------

    def _setup_process(self) -> None:
        """Process group and device, threads, seeds, the metrics logger."""
        self.dist, self.device = distributed.init(resolve_device(self.tcfg.device))
        if not self.dist.main:  # one voice: rank 0 logs, plots and writes checkpoints
            logging.getLogger("speechkit").setLevel(logging.WARNING)
        threads = distributed.cpu_threads(self.tcfg.threads, self.cfg.data.num_workers)
        if threads > 0:
            torch.set_num_threads(threads)
        log.info("%d intra-op thread(s) (trainer.threads=%s), %d loader worker(s)", torch.get_num_threads(),
                 self.tcfg.threads, self.cfg.data.num_workers)
        torch.set_flush_denormal(True)  # denormal gradients late in training slow CPU kernels many-fold
        if self.tcfg.deterministic:
            torch.use_deterministic_algorithms(True)
        seed_everything(self.tcfg.seed)
        self.metrics_logger = make_logger(self.tcfg.logger, self.run_dir, self.dist.main)  # loggers.py

    def _setup_data(self, saved: dict[str, Any] | None, check_train: bool = False) -> None:
        """Manifests, the tokenizer (fitted on the training text, or the resumed or fine-tuned run's: its
        checkpoint's ``tokens`` and ``state``), datasets, batches. ``check_train``: the training text must
        be spellable with that tokenizer too (fine-tuning on new data)."""
        from speechkit.data.lhotse_cuts import read_examples
        from speechkit.registry import registry

        cfg = self.cfg
        frontend = registry("frontend").get(cfg.frontend.name).cls
        if not cfg.data.train_manifest:
            raise ValueError("data.train_manifest is not set: pass data.train_manifest=PATH or a recipe=NAME")
        fmt = cfg.data.get("format", "manifest")
        self.train_examples = read_examples(cfg.data.train_manifest, frontend.modality, fmt)
        self.dev_examples = read_examples(cfg.data.dev_manifest, frontend.modality, fmt) if cfg.data.dev_manifest else []
        self.tokenizer: CharTokenizer = build("tokenizer", cfg.tokenizer, **(saved or {}))
        if saved is None:
            self.tokenizer.fit(ex.text for ex in self.train_examples)
        sep = "" if getattr(self.tokenizer, "unit", "char") == "char" else "|"  # subwords, phones: a|b
        log.info("vocabulary: %d tokens (%s)", len(self.tokenizer), sep.join(self.tokenizer.tokens[1:]))
        # fail now, not after the first epoch; when fine-tuning the vocabulary is the checkpoint's, and the
        # training text must fit it too (more data cannot add to it)
        fixed = {"fix": "the checkpoint's vocabulary (trainer.init_from) lacks them: clean these transcripts, "
                        "or train from scratch"} if check_train else {}
        for examples in (self.dev_examples, self.train_examples) if check_train else (self.dev_examples,):
            check_spellable(self.tokenizer, examples, **fixed)
        self.lengths = [ex.length for ex in self.train_examples]  # s of audio or video, line heights of an image
        if cfg.data.sortagrad and None in self.lengths:
            log.warning("data.sortagrad=true needs every training example's length (manifest \"duration\", or an "
                        "image's \"width\" and \"height\"); %d have none, so the first epoch is shuffled as the "
                        "others", self.lengths.count(None))
        elif (cfg.data.bucket or cfg.data.batch_seconds > 0) and None in self.lengths:
            log.warning("%d of %d training examples have no length (manifest \"duration\", or an image's \"width\" "
                        "and \"height\"), so batches are not bucketed by length; speechkit-manifest writes them",
                        self.lengths.count(None), len(self.lengths))
        first = self.epoch_batches(0, whole=True)
        self.batches_per_epoch = len(first)
        log.info("%d batches an epoch; padding %.1f %% of batch time", self.batches_per_epoch,
                 100 * padding_fraction(first, self.lengths))
        if cfg.data.word_spans_epochs > 0:
            timed = sum(word_times(ex) is not None for ex in self.train_examples)
            if timed == 0:
                raise ValueError(f"data.word_spans_epochs={cfg.data.word_spans_epochs}: no training example has word "
                                 "times (a manifest field \"words\": [[word, start_s, end_s], …]); add them, or set "
                                 "data.word_spans_epochs=0")
            log.info("word spans: the first %d epoch(s) train on 1 to %d consecutive words of the %d of %d training "
                     "examples with word times", cfg.data.word_spans_epochs, cfg.data.word_spans_max, timed,
                     len(self.train_examples))

    def _setup_model(self) -> None:
        """The model on its device, the loss, AdamW, mixed precision; the datasets read with its frontend."""
        cfg = self.cfg
        self.model = CTCModel.from_config(cfg, len(self.tokenizer))
        if self.dist.active and self.device.type == "cuda":
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)  # same state dict keys
        self.model = self.model.to(self.device)
        self.forward = self.model  # what train_step calls: the model, or its DDP wrapper
        self.loss_fn = build("loss", cfg.loss)
        n_params = sum(p.numel() for p in self.model.parameters())
        aligner = self.model.aligner
        inner = self.model.inter_layers
        log.info("model: %s + %s + %s%s%s, %.2f M parameters, %s frames/s out",
                 cfg.frontend.name, self.model.augment.summary, cfg.encoder.name,
                 f" + aligner (±{cfg.aligner.context_ms:g} ms, loss weight {cfg.aligner.weight:g})" if aligner else "",
                 f" + intermediate CTC (layer {', '.join(map(str, inner))}, loss weight {cfg.inter_ctc.weight:g}"
                 f"{', self-conditioned' if self.model.condition is not None else ''})" if inner else "",
                 n_params / 1e6, f"{1 / self.model.frame_shift_s:.0f}" if self.model.frame_shift_s else "n/a")
        runs_as = getattr(self.model.encoder, "runs_as", None)  # torch's LSTM/GRU stacks (encoders/rnn.py)
        if runs_as is not None and runs_as(self.device) == "parallel":
            log.info("the encoder runs each layer's two directions side by side on two threads (encoder.impl=%s)",
                     cfg.encoder.impl)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.tcfg.lr, betas=tuple(self.tcfg.betas), weight_decay=self.tcfg.weight_decay
        )
        self.autocast, self.scaler = self._precision()
        self.loader_stage = self._loader_stage()  # what the training loader delivers: raw | augmented | features
        load, on_error = self.model.frontend.load, cfg.data.on_error
        from speechkit.data.lhotse_cuts import source_loader

        cuts = source_loader(self.model.frontend)  # data.format=lhotse: each example's cut
        self.train_set = ManifestDataset(self.train_examples, load, self.tokenizer, on_error, load_source=cuts)
        if cfg.data.word_spans_epochs > 0:
            rate = raw_rate(self.model.frontend)
            if rate is None:
                raise ValueError(f"data.word_spans_epochs={cfg.data.word_spans_epochs}: the {cfg.frontend.name} frontend "
                                 "reads images, which have no time to cut word spans from; set data.word_spans_epochs=0")
            self.train_set = WordSpans(self.train_set, rate, cfg.data.word_spans_max, self.tcfg.seed)
        self.dev_set = ManifestDataset(self.dev_examples, load, self.tokenizer, on_error, load_source=cuts)

    def _make_ema(self, ckpt: dict[str, Any] | None) -> torch.optim.swa_utils.AveragedModel | None:
        """``trainer.ema_decay`` > 0: torch's moving average of the weights, and of the float buffers
        (batch-norm statistics; integer ones follow the trained model's); a resumed run continues the
        average it saved."""
        decay = self.tcfg.get("ema_decay", 0.0)
        saved = (ckpt or {}).get("trainer", {}).get("ema")
        if not decay:
            if saved is not None:  # resume_force with the average turned off
                log.warning("trainer.ema_decay=0: the checkpoint's weight average is dropped; dev is measured on "
                            "the trained weights from now on")
            return None
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        lerp = get_ema_multi_avg_fn(decay)

        def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
            if averaged[0].is_floating_point():  # torch groups the tensors by dtype: all float or none
                lerp(averaged, current, n)
            else:  # counters (num_batches_tracked, statistics counts) are not averaged
                torch._foreach_copy_(averaged, current)

        ema = AveragedModel(self.model, multi_avg_fn=update, use_buffers=True)
        for module in ema.module.modules():  # the copy's RNN weights in one block again (cuDNN wants that)
            if isinstance(module, torch.nn.RNNBase):
                module.flatten_parameters()
        if saved is not None:
            ema.load_state_dict(saved)
        elif ckpt is not None:  # resume_force onto a run that kept no average: it starts from here
            log.warning("the checkpoint holds no weight average: trainer.ema_decay starts one from step %d",
                        self.state.step)
        log.info("weight average (EMA), decay %g: dev evaluation and best.pt use it", decay)
        return ema

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights dev evaluation measures and best.pt keeps: the average under trainer.ema_decay."""
        return self.ema.module if self.ema is not None and self.ema.n_averaged > 0 else self.model

    def _setup_parallel(self) -> None:
        """Under torchrun: per-rank augmentation seeds and the DDP wrapper."""
        if not self.dist.active:
            return
        # Same initial weights everywhere (DDP broadcasts rank 0's), different augmentation draws.
        seed_everything(self.tcfg.seed + 1_000_003 * self.dist.rank + self.state.step)
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.forward = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def _precision(self):
        p = self.tcfg.precision
        if p not in ("auto", "fp32", "fp16", "bf16"):
            raise ValueError(f"trainer.precision={p!r}: use auto, fp32, fp16 or bf16")
        kind = self.device.type
        if kind == "cpu" and p == "fp16":
            raise ValueError("trainer.precision=fp16 needs a GPU: use bf16 (CPUs with AMX or AVX-512 BF16) or fp32")
        if p == "auto":
            p = distributed.auto_precision(self.device, self.model)
        if kind not in ("cuda", "cpu"):
            p = "fp32"
        self.precision = p
        if p == "fp32":
            return nullcontext, None
        if kind == "cpu" and not distributed.cpu_has_bf16():
            log.warning("trainer.precision=bf16: this CPU has no bf16 instructions (AMX or AVX-512 BF16); "
                        "autocast will be emulated and slower than fp32")
        dtype = torch.bfloat16 if p == "bf16" else torch.float16
        log.info("mixed precision: %s autocast on %s", p, kind)
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        return (lambda: torch.autocast(kind, dtype=dtype)), scaler

    def _thread_probe(self) -> distributed.ThreadProbe | None:
        """``trainer.threads=auto`` on a CPU, one process, a run of at least ten times the probe's steps: a
        :class:`~speechkit.distributed.ThreadProbe` over the first steps. A resumed run keeps the count its
        probe chose (the same arithmetic as the uninterrupted run) where this machine still offers it."""
        if self.device.type != "cpu" or self.dist.active:
            return None
        candidates = distributed.thread_candidates(self.tcfg.threads, self.cfg.data.num_workers)
        if not candidates:
            return None
        if self.state.threads in candidates:
            torch.set_num_threads(self.state.threads)
            log.info("%d intra-op thread(s): the count this run's first steps chose", self.state.threads)
            return None
        rule = distributed.cpu_threads(self.tcfg.threads, self.cfg.data.num_workers)
        probe = distributed.ThreadProbe(candidates, first=rule)
        if self.total_steps - self.state.step < 10 * probe.steps:
            return None  # too short to pay for timing the slower counts: the rule of cpu_threads stays
        log.info("trainer.threads=auto: timing the next %d steps at %s thread(s); another count than %d is kept "
                 "if it is more than %.0f %% faster", probe.steps, " / ".join(map(str, candidates)), rule,
                 100 * probe.margin)
        torch.set_num_threads(probe.threads())  # the first step's count (the rule's, after a warm-up)
        return probe

    def _probe_threads(self, seconds: float, work: int, timed: bool) -> None:
        """Give the probe the step just taken; set the next step's thread count, or keep the chosen one."""
        chosen = self.thread_probe.record(seconds, work, timed)
        if chosen is None:
            torch.set_num_threads(self.thread_probe.threads())
            return
        torch.set_num_threads(chosen)
        self.state.threads = chosen
        log.info("trainer.threads=auto: %d intra-op thread(s) from step %d (time per batch element, against "
                 "the chosen: %s)", chosen, self.state.step, self.thread_probe.report())
        self.thread_probe = None

    def _restore(self, ckpt: dict[str, Any], path: Path) -> None:
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as e:  # only with trainer.resume_force=true over a changed model
            raise CheckpointError(path, f"its weights do not fit the model this config describes "
                                  f"({str(e).splitlines()[-1].strip()})",
                                  "resume with the settings the run was trained with") from None
        t = ckpt["trainer"]
        self.optimizer.load_state_dict(t["optimizer"])
        if self.scaler is not None and "scaler" in t:
            self.scaler.load_state_dict(t["scaler"])
        state = dict(t["state"])
        state["losses"] = [tuple(x) for x in state["losses"]]
        self.state = TrainState(**state)
        set_rng_state(t["rng"])

    def _init_weights(self, ckpt: dict[str, Any], source: str) -> None:
        """Fine-tuning: the model's weights (and frontend statistics) from ``ckpt``; the optimiser, the LR
        schedule and the step count start afresh."""
        from speechkit import rundir

        exclude = list(self.tcfg.get("init_exclude") or [])
        fresh = rundir.fresh_aligner(self.cfg, ckpt)  # an aligner the checkpoint lacks starts afresh
        load_weights(self.model, ckpt["model"], exclude + fresh)  # rundir.find_init loaded them once already
        if fresh and self.model.aligner is not None:
            log.info("the aligner starts afresh: %s has none that fits it (none, another shape, or a new "
                     "vocabulary)", source)
        m = ckpt.get("metrics", {})
        log.info("fine-tuning from %s (its run's step %s, dev WER %s)%s; optimiser and schedule start afresh",
                 source, m.get("step", "?"), f"{100 * m['dev_wer']:.2f} %" if "dev_wer" in m else "?",
                 f", all weights but {', '.join(exclude)}" if exclude else "")

    @torch.no_grad()
    def _global_stats(self) -> None:
        loader = self._loader(self.train_set, EpochBatches(self.epoch_batches(-1)))
        n = self.tcfg.global_stats_batches
        for i, batch in enumerate(tqdm(loader, total=min(n, len(loader)), desc="global stats", mininterval=2.0)):
            if i >= n:
                break
            if len(batch):
                self.model.frontend.update_stats(batch.x.to(self.device), batch.lengths.to(self.device))

    def epoch_batches(self, epoch: int, whole: bool = False) -> list[list]:
        """The batches of ``epoch`` (-1: an epoch of its own, for statistics), this rank's part. In the first
        ``data.word_spans_epochs`` (unless ``whole``) each is a list of ``(index, epoch)`` keys, which the
        training set (data.spans.WordSpans) cuts to a span of words, batched by the spans' lengths."""
        d = self.cfg.data
        spans = not whole and self.spans_in(epoch)
        batches = make_batches(self.epoch_lengths(epoch) if spans else self.lengths, d.batch_size, self.tcfg.seed,
                               epoch, bucket=d.bucket, batch_seconds=d.batch_seconds, sortagrad=d.sortagrad)
        if spans:
            batches = [[(i, epoch) for i in b] for b in batches]
        return self.dist.shard(batches)  # under torchrun: this rank's part of each global batch

    def _steps_in_epochs(self) -> int:
        """Steps in ``trainer.max_epochs`` epochs (the schedule's length without ``max_steps``); word-span
        epochs count their own batches (with ``data.batch_seconds`` a batch holds more spans than examples)."""
        epochs = self.tcfg.max_epochs
        span_epochs = range(min(self.cfg.data.word_spans_epochs, epochs))
        return sum(len(self.epoch_batches(e)) for e in span_epochs) + (epochs - len(span_epochs)) * self.batches_per_epoch

    def spans_in(self, epoch: int) -> bool:
        """Whether ``epoch`` trains on word spans (``data.word_spans_epochs``)."""
        return 0 <= epoch < self.cfg.data.word_spans_epochs

    def epoch_lengths(self, epoch: int) -> list[float | None]:
        """Each training example's length in ``epoch``: in a word-span epoch its span's seconds (the span the
        training set cuts: WordSpans.span), else ``Example.length``."""
        if not self.spans_in(epoch):
            return self.lengths
        chosen = [self.train_set.span(i, epoch) for i in range(len(self.train_examples))]
        return [n if c is None else c.end_s - c.start_s for n, c in zip(self.lengths, chosen, strict=True)]

    def _feature_cache(self) -> CachedFeatures:
        """``data.feature_cache``: the frontend's output for every training example, computed once in
        batches of similar lengths (a copy in eval mode: no dither) and kept in memory as float16 (relative
        rounding 2^-11, far below what SpecAugment and the features' own spread do to them; an utterance
        with a value past float16's range stays float32). On a CPU the loader workers compute it, as
        ``frontend_in_workers`` does; on a GPU the main process, on the device. Under torchrun every
        process computes the whole set (its batches change with the epoch)."""
        d = self.cfg.data
        on_cpu = self.device.type == "cpu"
        frontend = copy.deepcopy(self.model.frontend).eval().to("cpu" if on_cpu else self.device)
        compute = FrontendCollate(copy.deepcopy(self.model.augment).cpu(), frontend, self.tcfg.seed) if on_cpu else collate
        items: list[Item | Skipped] = [Skipped(i, "", "not computed") for i in range(len(self.train_set))]
        batches = make_batches(self.lengths, d.batch_size, self.tcfg.seed, -1, bucket=True, batch_seconds=d.batch_seconds)
        start = time.perf_counter()
        with torch.no_grad():
            for batch in tqdm(self._loader(self.train_set, EpochBatches(batches), compute), total=len(batches),
                              desc="feature cache", unit="batch", mininterval=2.0):
                for skipped in batch.skipped:
                    items[skipped.index] = skipped
                if not on_cpu and len(batch):
                    x, frames = frontend(batch.x.to(self.device), batch.lengths.to(self.device))
                    batch = replace(batch, x=x.cpu(), lengths=frames.cpu())
                offsets = (torch.cumsum(batch.target_lengths, 0) - batch.target_lengths).tolist()
                for row, (i, n) in enumerate(zip(batch.indices, batch.lengths.tolist())):
                    target = batch.targets[offsets[row] : offsets[row] + int(batch.target_lengths[row])].clone()
                    feats = batch.x[row, :n].float()
                    half = feats.to(torch.float16)
                    items[i] = Item(i, half if torch.isfinite(half).all() else feats.clone(), target)
        cache = CachedFeatures(items)
        log.info("feature cache: %d utterances, %.0f MB, %.1f s (data.feature_cache)", len(items),
                 cache.nbytes / 2**20, time.perf_counter() - start)
        return cache

    def _loader_stage(self) -> str:
        """``data.frontend_in_workers``: what training batches come as — ``features`` (the raw augmentations
        and the frontend run in the loader, data.FrontendCollate, instead of in the step), ``augmented``
        (the raw augmentations alone: the frontend has trainable weights) or ``raw``; ``cached`` with
        ``data.feature_cache`` (features computed once, before the first step)."""
        setting = str(self.cfg.data.get("frontend_in_workers", "auto")).lower()
        if setting not in ("auto", "true", "false"):
            raise ValueError(f"data.frontend_in_workers={setting!r}: use auto, true or false")
        model = self.model
        raw = list(model.augment.stages[: model.augment.n_raw])

        def trainable(*modules: torch.nn.Module) -> list[str]:
            return [name for m in modules for name, p in m.named_parameters() if p.requires_grad]

        if self.cfg.data.get("feature_cache", False):
            if self.cfg.data.word_spans_epochs > 0:
                raise ValueError("data.feature_cache=true keeps whole utterances' features, and data.word_spans_epochs "
                                 "cuts spans of words from the audio: set one of them off")
            if raw:
                raise ValueError(f"data.feature_cache=true keeps the frontend's output of the unaugmented audio, "
                                 f"but {', '.join(model.augment.names[: model.augment.n_raw])} must run before the "
                                 "frontend every epoch: drop them from augment=[…] or set data.feature_cache=false")
            if weights := trainable(model.frontend):
                raise ValueError(f"data.feature_cache=true: the {self.cfg.frontend.name} frontend has trainable "
                                 f"weights ({weights[0]}), so its output changes every step; "
                                 "set data.feature_cache=false")
            return "cached"
        weights = trainable(model.frontend, *raw)
        if setting == "true" and weights:
            raise ValueError(f"data.frontend_in_workers=true: the frontend or a raw augmentation has trainable "
                             f"weights ({weights[0]}), which must stay in the model; use auto or false")
        if setting == "false" or trainable(*raw):
            return "raw"
        if setting == "auto" and not (self.device.type == "cpu" and self.cfg.data.num_workers > 0):
            return "raw"
        stage = "augmented" if trainable(model.frontend) else "features"
        if stage == "augmented" and not raw:
            return "raw"  # nothing to move
        model.augment.prepare()  # reverb's rooms built once, before the workers fork
        names = ", ".join(model.augment.names[: model.augment.n_raw])
        where = f"{self.cfg.data.num_workers} loader workers" if self.cfg.data.num_workers else "loader"
        if stage == "features":
            log.info("the %s frontend%s runs in the %s (data.frontend_in_workers)", self.cfg.frontend.name,
                     f" and {names}" if raw else "", where)
        else:
            log.info("%s runs in the %s (data.frontend_in_workers); the %s frontend has trainable weights and "
                     "runs in the step", names, where, self.cfg.frontend.name)
        return stage

    def train_loader(self, sampler: EpochBatches, epoch: int) -> torch.utils.data.DataLoader:
        """The training batches of ``epoch``: raw, augmented or as features (``loader_stage``)."""
        if self.loader_stage == "raw":
            return self._loader(self.train_set, sampler)
        if self.loader_stage == "cached":
            return self._loader(self.train_set, sampler, collate_features)
        m = self.model  # copies in training mode: the step's own stay the model's (and DDP's)
        seed = hash((self.tcfg.seed, self.dist.rank, epoch))
        frontend = copy.deepcopy(m.frontend).train() if self.loader_stage == "features" else None
        return self._loader(self.train_set, sampler, FrontendCollate(copy.deepcopy(m.augment).train(), frontend, seed))

    def _loader(self, dataset, batch_sampler, collate_fn=collate) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset, batch_sampler=batch_sampler, num_workers=self.cfg.data.num_workers,
            collate_fn=collate_fn, pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.tcfg.seed),  # leaves the global RNG alone (resume)
        )

    def _all_have_examples(self, n: int) -> bool:
        """Whether this batch trains: it has examples, on every rank (else every rank skips it together)."""
        if not self.dist.active:
            return n > 0
        (ready,) = self.dist.sum([n > 0])
        if ready < self.dist.world and n > 0:
            log.warning("step %d skipped: another rank's part of the batch had no usable examples", self.state.step)
        return ready == self.dist.world

    def _elapsed(self, seconds: float) -> float:
        """Seconds of this step; under torchrun the mean over ranks, so every rank keeps the same clock."""
        if not self.dist.active:
            return seconds
        (total,) = self.dist.sum([seconds])
        return total / self.dist.world

    # -- checkpoints ----------------------------------------------------------------------

    def _payload(self, with_trainer: bool) -> dict[str, Any]:
        """best.pt (``with_trainer`` False): the evaluated weights; last.pt: the trained ones, and what
        resuming needs (optimiser, state, RNG, the weight average)."""
        metrics = self.state.history[-1] if self.state.history else {}
        payload = model_payload(
            self.cfg, self.tokenizer.tokens, self.model if with_trainer else self.eval_model, metrics,
            saved_state(self.tokenizer)
        )
        weights = None
        if self.ema is not None:
            weights = (f"the trained ones (dev metrics: their moving average's, trainer.ema_decay={self.tcfg.ema_decay})"
                       if with_trainer else f"moving average of the trained ones (trainer.ema_decay={self.tcfg.ema_decay})")
        payload["card"] = training_card(payload, train=self.train_examples, dev=self.dev_examples, state=self.state,
                                        device=self.device, processes=self.dist.world, precision=self.precision,
                                        weights=weights)
        if with_trainer:
            payload["trainer"] = {
                "optimizer": self.optimizer.state_dict(),
                "state": self.state.as_dict(),
                "rng": rng_state(),
            }
            if self.scaler is not None:
                payload["trainer"]["scaler"] = self.scaler.state_dict()
            if self.ema is not None:
                payload["trainer"]["ema"] = self.ema.state_dict()
        return payload

    def save_last(self) -> None:
        if not self.dist.main:
            return
        last = self.ckpt_dir / "last.pt"
        if last.exists():  # keep the previous good one until the new one is safely down
            last.replace(self.ckpt_dir / "last.prev.pt")
        save_checkpoint(last, self._payload(with_trainer=True))

    # -- the loop -------------------------------------------------------------------------

    def train_step(self, batch: Batch) -> float | None:
        """One optimiser step; returns the loss, or None when the update was skipped as non-finite."""
        batch = batch.to(self.device)
        progress = self.state.step / max(self.total_steps, 1)
        if self.tcfg.max_minutes > 0:
            progress = max(progress, self.state.train_seconds / (60 * self.tcfg.max_minutes))
        lr = self.tcfg.lr * lr_factor(progress, self.state.step, self.tcfg.warmup_steps, self.tcfg.min_lr_ratio,
                                      self.tcfg.get("lr_decay", "cosine"))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        aligner, inter = self.model.aligner is not None, bool(self.model.inter_layers)
        with self.autocast():
            log_probs, lengths, *extra = self.forward(batch.x, batch.lengths, with_aligner=aligner,
                                                      stage=batch.stage, with_inter=inter)
        aligned = extra[:1] if aligner else []
        loss, too_short = self.loss_fn(log_probs, lengths, batch.targets, batch.target_lengths)
        if too_short:
            log.warning("step %d: %d utterance(s) have transcripts longer than their frames allow; "
                        "left out of the loss (check the data, or lower encoder.subsample)", self.state.step, too_short)
        # under torchrun: rescaled so DDP's gradient mean is the global batch's (distributed.py)
        used, reduction = len(batch) - too_short, self.cfg.loss.get("reduction", "mean")
        loss, reported = self.dist.global_loss(loss, used, reduction)
        if aligned:  # the aligner's CTC loss on the same targets, weighted (aligner.py); reported: the main loss
            aligner_loss, _ = self.loss_fn(aligned[0], lengths, batch.targets, batch.target_lengths)
            loss = loss + self.cfg.aligner.weight * self.dist.global_loss(aligner_loss, used, reduction)[0]
        if inter:  # intermediate CTC: the inner layers' mean CTC loss on the same targets, weighted; not reported
            inner = [self.loss_fn(lp, lengths, batch.targets, batch.target_lengths)[0] for lp in extra[-1]]
            inner_loss = torch.stack(inner).mean()
            loss = loss + self.cfg.inter_ctc.weight * self.dist.global_loss(inner_loss, used, reduction)[0]
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tcfg.grad_clip)
        if not (math.isfinite(reported) and torch.isfinite(grad_norm)):  # the same on every rank
            self._skip_update(batch, reported, float(grad_norm))
            return None
        self.state.nonfinite_in_row = 0
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.state.step += 1
        return reported

    def _skip_update(self, batch: Batch, loss: float, grad_norm: float) -> None:
        """Count and log a non-finite step (naming its batch's manifest lines); too many in a row stop training."""
        s = self.state
        s.nonfinite_in_row += 1
        where = [self.train_examples[i].where for i in batch.indices]
        log.warning("step %d: non-finite loss or gradient (loss %s, grad norm %s); update skipped (%d in a row); "
                    "the batch: %s%s", s.step, loss, grad_norm, s.nonfinite_in_row, ", ".join(where[:8]),
                    f" and {len(where) - 8} more" * (len(where) > 8))
        if s.nonfinite_in_row >= self.tcfg.max_nonfinite_in_row:
            raise FloatingPointError(
                f"{s.nonfinite_in_row} non-finite losses in a row at step {s.step}: lower "
                "trainer.lr, check the data (speechkit-validate), or use trainer.precision=fp32"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.update()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Dev loss, WER and CER with greedy decoding, of :attr:`eval_model`."""
        if not len(self.dev_set):
            return {}
        model = self.eval_model
        model.eval()
        decoder = GreedyDecoder(GreedyConfig(), self.tokenizer.tokens, self.model.frame_shift_s)
        d = self.cfg.data  # in manifest order; data.batch_seconds caps dev batches as it caps training's
        batches = make_batches([ex.length for ex in self.dev_examples], d.batch_size, 0, 0, shuffle=False,
                               batch_seconds=d.batch_seconds)  # fmt: skip
        batches = batches[self.dist.rank :: self.dist.world]  # under torchrun each rank scores its share
        loader = self._loader(self.dev_set, EpochBatches(batches))
        refs, hyps, losses, aligner_losses = [], [], [], []
        for batch in loader:
            if not len(batch):
                continue
            batch = batch.to(self.device)
            with self.autocast():
                log_probs, lengths, *aligned = model(batch.x, batch.lengths, with_aligner=True)
            loss, _ = self.loss_fn(log_probs, lengths, batch.targets, batch.target_lengths)
            losses.append(float(loss))
            if aligned:
                aligner_losses.append(float(self.loss_fn(aligned[0], lengths, batch.targets, batch.target_lengths)[0]))
            hyps += [nbest[0].text for nbest in decoder(log_probs.float(), lengths)]
            refs += [self.tokenizer.clean(self.dev_examples[i].text) for i in batch.indices]
        self.model.train()
        keys = ("word_errors", "words", "char_errors", "chars")
        c = error_counts(refs, hyps)
        *summed, loss_sum, n_losses, aligner_sum = self.dist.sum(
            [*(c[k] for k in keys), sum(losses), len(losses), sum(aligner_losses)], self.device
        )
        wer, cer = rates(dict(zip(keys, summed)))  # counts summed over ranks first
        out = {"dev_loss": loss_sum / n_losses if n_losses else float("nan"), "dev_wer": wer, "dev_cer": cer}
        if self.model.aligner is not None:  # the aligner's CTC loss on dev: whether it learns
            out["dev_aligner_loss"] = aligner_sum / n_losses if n_losses else float("nan")
        return out

    def fit(self) -> dict[str, float]:
        """Train until max_epochs, max_steps, max_minutes or early stopping; return the last metrics."""
        self.model.train()
        if self.dist.main:  # a read-only or full disk fails now, not at the first checkpoint
            n_params = sum(p.numel() * p.element_size() for p in self.model.parameters())
            copies = 7 + 2 * (self.ema is not None)  # last + last.prev (weights, 2 Adam moments, the average) + best
            check_writable(self.ckpt_dir, need_bytes=copies * n_params)
        s = self.state
        stop = s.step >= self.total_steps
        while not stop and s.epoch < self.tcfg.max_epochs:
            batches = self.epoch_batches(s.epoch)
            sampler = EpochBatches(batches, skip=s.step_in_epoch)
            bar = tqdm(self.train_loader(sampler, s.epoch), total=len(batches), initial=s.step_in_epoch,
                       desc=f"epoch {s.epoch + 1}", unit="batch", mininterval=2.0, dynamic_ncols=True,
                       disable=not self.dist.main)
            if s.step_in_epoch == 0:
                s.epoch_losses, s.skipped_before_epoch = [], s.skipped_examples
            epoch_losses, interval = s.epoch_losses, s.interval_losses
            t0 = time.monotonic()
            for batch in bar:
                for sk in batch.skipped:
                    s.skipped_examples += 1
                    log.warning("skipped %s: %s", sk.where, sk.reason)
                stepped = self._all_have_examples(len(batch))
                if stepped:
                    loss = self.train_step(batch)
                    if loss is not None:
                        epoch_losses.append(loss)
                        interval.append(loss)
                first_in_epoch = s.step_in_epoch == 0  # its wait includes the loader workers' start
                s.step_in_epoch += 1
                now = time.monotonic()
                if self.thread_probe is not None and stepped:  # the whole iteration: the batch's wait and the step
                    self._probe_threads(now - t0, batch.x.numel(), timed=not first_in_epoch)
                s.train_seconds += self._elapsed(now - t0)
                t0 = now
                if interval and (len(interval) >= self.tcfg.log_every_steps or s.step_in_epoch == len(batches)):
                    s.losses.append((s.step, float(np.mean(interval))))
                    self.metrics_logger.log(
                        {"train/loss": s.losses[-1][1], "train/lr": self.optimizer.param_groups[0]["lr"]}, s.step
                    )
                    interval.clear()
                bar.set_postfix(loss=f"{epoch_losses[-1]:.3f}" if epoch_losses else "-",
                                lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
                out_of_time = self.tcfg.max_minutes > 0 and s.train_seconds >= 60 * self.tcfg.max_minutes
                if s.step >= self.total_steps or out_of_time:
                    stop = True
                    if out_of_time:
                        log.info("training budget of %.1f minutes reached at step %d", self.tcfg.max_minutes, s.step)
                    break
                if self._eval_due(of_batches=len(batches)):
                    self._record(epoch_losses, None, evaluate=True, final=False, of_batches=len(batches))
                    t0 = time.monotonic()  # the evaluation is not training time
                    if self._early_stop():
                        stop = True
                        break
                elif self.tcfg.save_every_steps and s.step % self.tcfg.save_every_steps == 0:
                    self.save_last()
            bar.close()
            if interval:
                s.losses.append((s.step, float(np.mean(interval))))
                interval.clear()
            epoch_done = s.step_in_epoch >= len(batches)
            if epoch_done:
                s.epoch += 1
                s.step_in_epoch = 0
            measured = self._measured_now()  # by eval_every_steps (which may have stopped early on it)
            if epoch_done or (stop and not measured):
                (skipped,) = self.dist.sum([s.skipped_examples - s.skipped_before_epoch])
                every = self.tcfg.eval_every_steps
                evaluate = not measured and (stop or s.epoch % self.tcfg.eval_every_epochs == 0
                                             or bool(every and s.step % every == 0))
                self._record(epoch_losses, int(skipped), evaluate=evaluate, final=stop, of_batches=len(batches))
                stop = stop or self._early_stop()
        self.plot(final=True)
        self._calibrate_timing()
        self.metrics_logger.close()
        return s.history[-1] if s.history else {}

    def _calibrate_timing(self) -> None:
        """best.pt's word-time calibration (``timing_shift``, ``Pipeline.calibrate_timing``) measured on the
        dev audio and saved in it: the model's own offsets, read off where snapping to the audio's pauses
        moves its word boundaries. Audio models only; the main process."""
        best = self.ckpt_dir / "best.pt"
        if not self.dist.main or self.model.frontend.modality != "audio" or not self.dev_examples or not best.exists():
            return
        from speechkit.checkpoint import build_from_checkpoint, read_checkpoint
        from speechkit.pipeline import Pipeline

        try:  # training is done and saved: a failure here costs the calibration, not the run
            payload = read_checkpoint(best)  # read once: the model calibrated and the file rewritten
            model, tokenizer, cfg = build_from_checkpoint(payload, best)
            pipe = Pipeline(model, tokenizer, cfg, decoder={"name": "greedy"}, device=self.device)
            shift = pipe.calibrate_timing(self.dev_examples)
            payload["timing_shift"] = list(shift)
            save_checkpoint(best, payload)  # atomic: the old best.pt stays whole if this fails
        except Exception as e:  # noqa: BLE001
            log.warning("word times not calibrated (%s: %s); best.pt keeps the default offsets", type(e).__name__, e)
            return
        log.info("word times calibrated on dev: starts %+.0f ms, ends %+.0f ms (timing_shift in %s)",
                 1000 * shift[0], 1000 * shift[1], best)

    def _early_stop(self) -> bool:
        """Whether ``trainer.early_stop_patience`` evaluations have passed without a better dev WER, or the
        last evaluation reached ``trainer.stop_at_wer`` (logged, with the step and minutes it took)."""
        s, patience, target = self.state, self.tcfg.early_stop_patience, self.tcfg.stop_at_wer
        if patience and s.evals_since_best >= patience:
            log.info("early stop: dev WER has not improved for %d evaluations", s.evals_since_best)
            return True
        last = s.history[-1] if s.history else {}
        if target is not None and "dev_wer" in last and last["dev_wer"] <= target:
            log.info("dev WER %.2f %% reached trainer.stop_at_wer=%.4g at step %d, after %.1f minutes of training",
                     100 * last["dev_wer"], target, s.step, s.train_seconds / 60)
            return True
        return False

    def _eval_due(self, of_batches: int) -> bool:
        """Whether ``trainer.eval_every_steps`` asks for a dev evaluation now, inside an epoch (an
        epoch's last batch is measured by the epoch's end; a skipped update does not measure twice)."""
        s, every = self.state, self.tcfg.eval_every_steps
        if not every or not self.dev_examples or s.step % every or s.step_in_epoch >= of_batches:
            return False
        return not self._measured_now()

    def _measured_now(self) -> bool:
        """Whether the last history row holds dev metrics of the current step."""
        last = self.state.history[-1] if self.state.history else {}
        return last.get("step") == self.state.step and "dev_wer" in last

    def _record(self, losses: list[float], skipped: int | None, evaluate: bool, final: bool, of_batches: int) -> None:
        """A history row at an epoch's end (``skipped``: the epoch's bad examples) or inside one
        (``skipped`` None: ``trainer.eval_every_steps``): dev metrics when ``evaluate``, best.pt when
        they are the best yet, last.pt always; training.png redrawn."""
        s = self.state
        row: dict[str, float] = {"epoch": s.epoch, "step": s.step, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                                 "minutes": s.train_seconds / 60}
        if evaluate:
            row.update(self.evaluate())
        s.history.append(row)
        self.metrics_logger.log_epoch(row, s.step)
        shown = {k: v for k, v in row.items() if skipped is not None or k not in ("epoch", "step")}
        msg = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
        # epochs are numbered from 1, as on the progress bar; a run stopped mid-epoch says so
        if skipped is None:  # inside an epoch: where it stands is said once, first
            done = f"step {s.step} (epoch {s.epoch + 1}, {s.step_in_epoch} of {of_batches} batches)"
        elif s.step_in_epoch == 0:
            done = f"epoch {s.epoch} done"
        else:
            done = f"epoch {s.epoch + 1} stopped after {s.step_in_epoch} of {of_batches} batches"
        log.info("%s: %s%s", done, msg, f"; {skipped} bad example(s) skipped" if skipped else "")
        if "dev_wer" in row:
            if row["dev_wer"] < s.best_wer:
                s.best_wer, s.evals_since_best = row["dev_wer"], 0
                if self.dist.main:
                    save_checkpoint(self.ckpt_dir / "best.pt", self._payload(with_trainer=False))
                    log.info("new best dev WER %.4f: wrote %s", row["dev_wer"], self.ckpt_dir / "best.pt")
            else:
                s.evals_since_best += 1
        elif self.dist.main and (not (self.ckpt_dir / "best.pt").exists() or not self.dev_examples):
            save_checkpoint(self.ckpt_dir / "best.pt", self._payload(with_trainer=False))
        self.save_last()
        self.plot(final=final)

    def plot(self, final: bool = False) -> None:
        """Redraw training.png; at most every ``plot_every_s`` seconds while training, always at the end."""
        from speechkit.plots import plot_training

        now, drawn = time.monotonic(), (len(self.state.losses), len(self.state.history))
        if not self.dist.main or (not final and now - self._last_plot < self.plot_every_s):
            return
        if final and drawn == self._last_drawn:  # the run's last row is already on it
            return
        self._last_plot, self._last_drawn = now, drawn
        try:
            plot_training(self.state.losses, self.state.history, self.run_dir / "training.png")
        except Exception as e:  # a plot must never cost a training run
            log.warning("could not draw training.png: %s", e)

"""The model (frontend → augment → encoder → head) and the inference pipeline around it."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from speechkit.aligner import AlignerConfig, AlignerHead, aligner_config
from speechkit.augment.chain import AugmentChain
from speechkit.data.dataset import ManifestDataset, Skipped, collate
from speechkit.data.manifest import Example
from speechkit.data.tokenizer import CharTokenizer
from speechkit.decoders.base import Hypothesis
from speechkit.decoders.confidence import ConfidenceConfig
from speechkit.decoders.timing import ALIGNER_TIMING, EnergyLevels, WordTiming
from speechkit.registry import build

log = logging.getLogger(__name__)


def inter_ctc_layers(node: Any, encoder: nn.Module) -> tuple[int, ...]:
    """The encoder layers (1 = the first) whose outputs get the intermediate CTC loss (``inter_ctc``,
    :class:`speechkit.config.InterCTCConfig`); ``()`` where its weight is 0 or the config has no such node.
    ``ValueError`` for a negative weight, a layer that is not an inner one, or an encoder with no inner
    outputs to give."""
    node = dict(node or {})
    weight, layers = float(node.get("weight") or 0.0), [int(n) for n in node.get("layers") or []]
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"inter_ctc.weight={weight:g}: use 0 (none) or a positive weight such as 0.3")
    if weight == 0:
        return ()
    if not hasattr(encoder, "forward_taps"):
        raise ValueError(f"inter_ctc.weight={weight:g}: the encoder {getattr(encoder, 'plugin_name', type(encoder).__name__)!r} "
                         "gives no inner layers' outputs; use encoder=blstm|lstm|bgru|gru, or inter_ctc.weight=0")  # fmt: skip
    n = encoder.num_layers
    if n < 2:
        raise ValueError(f"inter_ctc.weight={weight:g} needs inner layers: this encoder has {n}; use "
                         "encoder.num_layers ≥ 2, or inter_ctc.weight=0")
    layers = layers or [(n + 1) // 2]
    if any(not 1 <= k < n for k in layers):
        raise ValueError(f"inter_ctc.layers={layers}: name inner layers of the encoder's {n}, from 1 to {n - 1} "
                         "(its last layer's output is the main CTC loss's)")  # fmt: skip
    return tuple(sorted(set(layers)))


def inter_ctc_self_condition(node: Any) -> bool:
    """Whether the model conditions its later layers on the inner layers' posteriors (``inter_ctc.self_condition``;
    :class:`CTCModel` refuses it without inner layers)."""
    return bool(dict(node or {}).get("self_condition") or False)


def encode(encoder: nn.Module, head: nn.Module, condition: nn.Module | None, layers: Sequence[int], feats: Tensor,
           lengths: Tensor, with_inter: bool = False) -> tuple[Tensor, Tensor, list[Tensor]]:  # fmt: skip
    """Features ``(B, T, F)`` → the encoder's output ``(B, T', H)``, its lengths, and (``with_inter``) the
    inner ``layers``' outputs. With a ``condition`` projection (self-conditioned CTC) each inner layer's
    posteriors through ``head``, projected back to the layer's width, are added to its output before the next
    layer, in training and inference alike."""
    if condition is None and not (with_inter and layers):
        hidden, out_lengths = encoder(feats, lengths)
        return hidden, out_lengths, []

    def conditioned(h: Tensor) -> Tensor:
        return h + condition(head(h).float().softmax(dim=-1).to(h.dtype))

    hidden, out_lengths, inner = encoder.forward_taps(feats, lengths, layers, conditioned if condition is not None else None)
    return hidden, out_lengths, inner if with_inter else []


class CTCModel(nn.Module):
    """frontend → augment (training only) → encoder → linear head → log-probs ``(B, T', V)``.

    ``augment`` is an :class:`AugmentChain` (one plugin is made a chain of one): its raw stages run
    before the frontend, its feature stages after it.
    """

    def __init__(
        self,
        frontend: nn.Module,
        augment: nn.Module,
        encoder: nn.Module,
        vocab_size: int,
        aligner: AlignerConfig | None = None,
        inter_layers: Sequence[int] = (),
        self_condition: bool = False,
    ) -> None:
        super().__init__()
        self.frontend, self.encoder = frontend, encoder
        self.augment = augment if isinstance(augment, AugmentChain) else AugmentChain([augment])
        self.head = nn.Linear(encoder.output_dim, vocab_size)
        # intermediate CTC (inter_ctc_layers): these layers' outputs through the same head, in training only
        self.inter_layers = tuple(inter_layers)
        if self_condition and not self.inter_layers:
            raise ValueError("inter_ctc.self_condition=true conditions on the inner layers' CTC posteriors, which only "
                             "intermediate CTC trains: add inter_ctc.weight=0.3, or set inter_ctc.self_condition=false")  # fmt: skip
        # self-conditioned CTC: an inner layer's posteriors, projected back to its width, added to its output
        self.condition = nn.Linear(vocab_size, encoder.output_dim) if self_condition else None
        self.aligner: AlignerHead | None = None  # the short-sighted head word times come from (aligner.py)
        if aligner is not None and aligner.weight > 0:
            self.aligner = AlignerHead(
                frontend.output_dim,
                getattr(encoder, "subsampling", 1),
                self.frame_shift_s,
                vocab_size,
                aligner,
            )

    @classmethod
    def from_config(cls, cfg: DictConfig | dict, vocab_size: int) -> CTCModel:
        frontend = build("frontend", cfg["frontend"])
        sample_rate = getattr(getattr(frontend, "cfg", None), "sample_rate", None)  # Hz; None: images, video
        augment = AugmentChain.from_config(cfg.get("augment"), sample_rate=sample_rate, frontend=frontend)
        encoder = build("encoder", cfg["encoder"], input_size=frontend.output_dim)
        layers = inter_ctc_layers(cfg.get("inter_ctc"), encoder)
        return cls(frontend, augment, encoder, vocab_size, aligner_config(cfg.get("aligner")), layers,
                   inter_ctc_self_condition(cfg.get("inter_ctc")))

    @property
    def frame_shift_s(self) -> float | None:
        """Seconds per output frame (frontend hop × encoder subsampling), None for images."""
        shift = getattr(self.frontend, "frame_shift_s", None)
        return None if shift is None else shift * getattr(self.encoder, "subsampling", 1)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return self.encoder.output_lengths(self.frontend.output_lengths(lengths))

    def forward(
        self, x: Tensor, lengths: Tensor, with_aligner: bool = False, stage: str = "raw", with_inter: bool = False
    ) -> tuple[Any, ...]:
        """Raw batch ``(B, N, ...)``, ``lengths`` ``(B,)`` → log-probs ``(B, T', V)``, ``(B,)``; with
        ``with_aligner`` (for a model that has one) also the aligner's log-probs ``(B, T', V)``, on the
        same frames; then with ``with_inter`` (for a model with ``inter_layers``) a list of the inner
        layers' log-probs through the same head, each ``(B, T', V)``.

        The augment stages whose ``raw`` attribute is true (waveform, image, video augmentations) work
        on the raw batch before the frontend; the others on features after it. Both only in training.
        ``stage``: what ``x`` is (``Batch.stage``) — ``raw``; ``augmented``, the raw stages applied already
        (in a loader worker: ``data.FrontendCollate``); ``features``, the frontend's output already, so
        only the feature stages run here.
        """
        if stage not in ("raw", "augmented", "features"):
            raise ValueError(f"stage={stage!r}: use raw, augmented or features")
        with torch.autocast(x.device.type, enabled=False):  # under mixed precision: features in fp32
            if stage == "features":
                clean, clean_lengths = x, lengths
            else:
                if stage == "raw":
                    x, lengths = self.augment.before_frontend(x, lengths)  # identity in eval mode
                clean, clean_lengths = self.frontend(x, lengths)
            feats, lengths = self.augment.after_frontend(clean, clean_lengths)
        hidden, out_lengths, inner = encode(self.encoder, self.head, self.condition, self.inter_layers, feats,
                                            lengths, with_inter)  # fmt: skip
        # log-probs in fp32 whatever the autocast
        log_probs = self.head(hidden).float().log_softmax(dim=-1)
        out: tuple[Any, ...] = (log_probs, out_lengths)
        if with_aligner and self.aligner is not None:
            # the aligner reads the features before the feature stages, SpecAugment's masks (a masked stretch
            # would teach it to emit tokens where it hears nothing of them), unless a stage changed their length
            if clean.shape != feats.shape or not torch.equal(clean_lengths, lengths):
                clean = feats
            out += (self.aligner(clean, lengths)[0],)
        if with_inter and self.inter_layers:
            out += ([self.head(h).float().log_softmax(dim=-1) for h in inner],)
        return out


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but torch sees no CUDA device; use cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:  # torch's message lists twenty device types, none of them the usual answer
        raise RuntimeError(
            f"device {name!r} is not a device torch knows: use auto, cpu, cuda or cuda:N"
        ) from None


class Pipeline:
    """A trained model with its tokenizer and a decoder: media in, transcripts out.

    ``load_checkpoint(path)`` returns one. ``transcribe(inputs)`` gives a :class:`Transcript` per input
    (text, words with times and confidences, the n-best); ``decode(inputs)`` the n-best lists of
    :class:`Hypothesis`. An input is a media file's path (``str`` or ``Path``), the bytes of an encoded
    file, an array (numpy or torch) in the layout the frontend's ``load`` returns — audio: 1-D samples,
    with ``sample_rate=`` —, or a manifest :class:`Example`; a path ending in ``.jsonl`` is a manifest
    whose lines are the inputs. One input gives one result; a list (or any iterable) of inputs a list.
    ``word_timing`` and ``confidence`` say how word times and confidences are read off the posteriors
    and the audio (assign others to change them: ``WordTiming(snap_s=None)`` leaves the audio out).
    A model trained with an aligner (``aligner.weight``, speechkit/aligner.py) has its words placed by
    the aligner's posteriors.
    """

    word_timing: WordTiming | None = None  # None: the default for the model (:meth:`timing`)
    # s added to the default's start and end offsets: the model's own, measured on its dev audio
    # (:meth:`calibrate_timing`; saved in checkpoints by training as ``timing_shift``)
    timing_shift: tuple[float, float] = (0.0, 0.0)
    confidence: ConfidenceConfig = ConfidenceConfig()

    def __init__(
        self,
        model: CTCModel,
        tokenizer: CharTokenizer,
        config: DictConfig,
        decoder: Any = None,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
    ) -> None:
        self.device = torch.device(device) if not isinstance(device, torch.device) else device
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.config = config
        self.batch_size = batch_size
        self.set_decoder(decoder if decoder is not None else config.get("decoder") or {"name": "greedy"})

    def build_decoder(self, node: Any) -> Any:
        return build("decoder", node, tokens=self.tokenizer.tokens, frame_shift_s=self.model.frame_shift_s)

    def set_decoder(self, node: Any) -> None:
        """Swap the decoder: a config node/dict with a ``name``, or a built decoder."""
        self.decoder = self.build_decoder(node) if isinstance(node, dict | DictConfig) else node

    @torch.no_grad()
    def log_probs(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(x.to(self.device), lengths.to(self.device))

    @torch.no_grad()
    def posteriors(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """:meth:`log_probs` and the aligner's log-probs on the same frames (None for a model without
        one): what :meth:`annotate` reads word times from."""
        if self.model.aligner is None:
            return *self.log_probs(x, lengths), None
        return self.model(x.to(self.device), lengths.to(self.device), with_aligner=True)

    def timing(self, aligned: bool) -> WordTiming:
        """How word times are read: :attr:`word_timing` when set, else the default for posteriors of
        the main head (``WordTiming()``) or of an aligner (``ALIGNER_TIMING``, ``aligned``), its offsets
        moved by :attr:`timing_shift` where these are the posteriors it was measured on (the aligner's
        for a model with one, else the main head's)."""
        if self.word_timing is not None:
            return self.word_timing
        base = ALIGNER_TIMING if aligned else WordTiming()
        if aligned != (self.model.aligner is not None):  # e.g. a stream's final transcript: not calibrated
            return base
        start, end = self.timing_shift
        return replace(base, start_offset_s=base.start_offset_s + start, end_offset_s=base.end_offset_s + end)

    @torch.no_grad()
    def calibrate_timing(self, inputs: Any, max_inputs: int | None = 500) -> tuple[float, float]:
        """The model's own :attr:`timing_shift` from audio ``inputs`` (its dev set: a manifest path or a
        list of examples; the first ``max_inputs``), without references: the model runs once, and each
        hypothesis' words are read off its frames with and without snapping to the audio's pauses
        (``decoders.timing.timing_shift``: the median move of the starts and of the ends), with no
        shift. Set, and returned. Unusable inputs are skipped."""
        from speechkit.decoders.timing import timing_shift

        aligned = self.model.aligner is not None
        user, self.word_timing = self.word_timing, None
        saved, self.timing_shift = self.timing_shift, (0.0, 0.0)
        snapped = self.timing(aligned)
        readings: dict[bool, list] = {False: [], True: []}
        try:
            with _Inputs(self.model.frontend, inputs, None, "calibrate_timing", "skip") as given:
                examples = given.examples[:max_inputs] if max_inputs else given.examples
                dataset = ManifestDataset(examples, given.load, None, on_error="skip")
                for _, outputs in self.model_batches(dataset):
                    if outputs is None:
                        continue
                    for snap in (False, True):  # the same posteriors read both ways
                        self.word_timing = snapped if snap else replace(snapped, snap_s=None)
                        readings[snap] += [
                            nbest[0].words if nbest else [] for nbest in self._decoded(outputs)
                        ]
        except BaseException:
            self.timing_shift = saved
            raise
        finally:
            self.word_timing = user
        self.timing_shift = timing_shift(readings[False], readings[True])
        return self.timing_shift

    def load(self, item: Any, sample_rate: int | None = None) -> Tensor:
        """The raw, time-first tensor the model reads for one input (a path, bytes or an array), as
        :meth:`transcribe` loads it: audio ``(samples,)`` at the model's rate, images ``(width, height)``,
        video ``(frames, C, H, W)``. Raises :class:`DataError` naming the input when it cannot be used."""
        with _Inputs(self.model.frontend, item, sample_rate, "load") as inputs:
            if not inputs.single:
                raise ValueError(f"Pipeline.load: give one input, not {type(item).__name__} {item!s:.60}")
            return inputs.load(inputs.examples[0].path)

    def annotate(
        self,
        nbests: list[list[Hypothesis]],
        log_probs: Tensor,
        lengths: Tensor,
        durations: Sequence[float | None] | None = None,
        levels: Sequence[EnergyLevels | None] | None = None,
        aligner_log_probs: Tensor | None = None,
    ) -> list[list[Hypothesis]]:
        """Word times and confidences for every hypothesis of ``nbests``, the decoder's n-best lists of
        the utterances of ``log_probs`` ``(B, T, V)`` with ``lengths`` ``(B,)``; in place, and returned.

        Each hypothesis is aligned to its utterance's frames (``decoders.timing.align_tokens``, blank-aware,
        whatever the search's history); its word times are read off its tokens' frames by
        ``decoders.timing.word_spans`` with :attr:`word_timing` (stray spikes left out, offsets measured
        against true word boundaries), no later than ``durations[b]`` seconds (the input's length;
        None: as the frames say), then moved to the pauses of the audio (``levels[b]``, its
        ``decoders.timing.energy_levels``, for an audio model; ``decoders.timing.snap_to_audio``) unless
        ``levels`` is None or ``word_timing.snap_s`` is; and it gets ``confidence`` and ``word_confidences``
        (decoders/confidence.py, with :attr:`confidence`). ``aligner_log_probs`` ``(B, T, V)``: the
        aligner's posteriors on the same frames (:meth:`posteriors`); given, each hypothesis is aligned
        to them too and its word times read off that alignment (its confidences still off its own).
        ``decode`` and ``transcribe`` call it; call it on n-best lists you decode yourself from
        log-probs (a cache, a sweep of decoders).
        """
        from speechkit.decoders import confidence
        from speechkit.decoders.base import word_groups
        from speechkit.decoders.timing import align_tokens, pauses, snap_to_audio, word_spans

        if not nbests:
            return nbests
        lp_all = log_probs.detach().float().cpu().numpy()
        placed_by = None if aligner_log_probs is None else aligner_log_probs.detach().float().cpu().numpy()
        frames = lengths.tolist()
        shift = self.model.frame_shift_s
        symbols = self.tokenizer.tokens
        space = getattr(getattr(self.decoder, "cfg", None), "space", " ")
        timing = self.timing(placed_by is not None)
        snap = levels is not None and shift and timing.snap_s is not None
        for b, nbest in enumerate(nbests):
            lp = lp_all[b, : frames[b]]  # (T, V)
            end_s = durations[b] if durations is not None and shift else None
            loud = None
            if snap and levels[b] is not None:
                loud = pauses(levels[b], timing.silence_level)
            for h in nbest:
                spans = align_tokens(lp, h.tokens)
                if spans is None and len(h.token_frames) != len(h.tokens):
                    continue  # no alignment, and no frames from the decoder: left as it came
                starts, ends = spans if spans is not None else (list(h.token_frames), list(h.token_frames))
                placed = None if placed_by is None else align_tokens(placed_by[b, : frames[b]], h.tokens)
                at, to = (
                    placed if placed is not None else (starts, ends)
                )  # the aligner's frames, where it has some
                words = word_spans(h.tokens, at, symbols, shift, to, space, end_s, timing)
                if loud is not None:
                    words = snap_to_audio(words, loud, timing)
                cc = self.confidence
                token_conf = confidence.token_confidences(lp, h.tokens, starts, ends, cc)
                h.token_frames, h.words = list(starts), words
                groups = word_groups(h.tokens, symbols, space)
                h.word_confidences = confidence.word_confidences(token_conf, groups, cc.word)
                h.confidence = confidence.utterance_confidence(h.word_confidences, lp, cc.utterance)
        return nbests

    def durations(self, raw_lengths: Tensor) -> list[float | None]:
        """Seconds of each input of a raw batch with ``raw_lengths`` ``(B,)`` (samples, video frames);
        None where the input has no time axis in seconds (images)."""
        fe = self.model.frontend
        per = _seconds_per_raw_step(fe)
        return [None if per is None else n * per for n in raw_lengths.tolist()]

    def energy_levels(self, x: Tensor, raw_lengths: Tensor) -> list[EnergyLevels] | None:
        """Each input's short-time energy (``decoders.timing.energy_levels``), which :meth:`annotate` snaps
        word times to (unless ``word_timing.snap_s`` is None), from a raw batch ``x`` ``(B, N)`` with
        ``raw_lengths`` ``(B,)``; None for images and videos."""
        from speechkit.decoders.timing import energy_levels

        fe = self.model.frontend
        if fe.modality != "audio":
            return None
        return [energy_levels(row[:n], fe.cfg.sample_rate) for row, n in zip(x, raw_lengths.tolist())]

    def decode_batches(self, dataset: ManifestDataset, num_workers: int = 0, progress: bool = False):
        """Yield ``(batch, n-best lists)`` for every batch of ``dataset``, in order, the hypotheses with
        word times and confidences (:meth:`annotate`). ``progress``: a bar on stderr, in files/s."""
        from tqdm import tqdm

        with tqdm(
            total=len(dataset), desc="decode", unit="file", disable=not progress, mininterval=1.0
        ) as bar:
            for batch, outputs in self.model_batches(dataset, num_workers):
                nbests = [] if outputs is None else self._decoded(outputs)
                bar.update(len(batch) + len(batch.skipped))
                yield batch, nbests

    def model_batches(self, dataset: ManifestDataset, num_workers: int = 0):
        """``(batch, outputs)`` for every batch of ``dataset``, in order: ``outputs`` what :meth:`annotate`
        takes after the n-best lists (log-probs, lengths, durations, energy levels, the aligner's
        log-probs), None for a batch with no usable example."""
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=self.batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
        )
        for batch in loader:
            if len(batch) == 0:
                yield batch, None
                continue
            lp, lengths, aligned = self.posteriors(batch.x, batch.lengths)
            levels = self.energy_levels(batch.x, batch.lengths)
            yield batch, (lp, lengths, self.durations(batch.lengths), levels, aligned)

    def _decoded(self, outputs: tuple) -> list[list[Hypothesis]]:
        """The decoder's n-best lists of one of :meth:`model_batches`' outputs, annotated."""
        lp, lengths = outputs[:2]
        return self.annotate(self.decoder(lp.float(), lengths), *outputs)

    def decode(
        self, inputs: Any, *, sample_rate: int | None = None, on_error: str = "raise", progress: bool = False
    ) -> list[Hypothesis] | Skipped | list[list[Hypothesis] | Skipped]:
        """n-best hypotheses (best first, with word times and confidences) for each input, in order;
        for a single input, its n-best list.

        ``inputs``: see the class. ``sample_rate``: Hz of arrays of audio samples (they are resampled
        to the model's rate). Errors name the input: the file, the manifest line (``manifest.jsonl:LINE``)
        or ``<array N>`` / ``<bytes N>``. ``on_error="raise"``: the first input that cannot be used
        raises :class:`DataError`; ``"skip"``: its place holds a :class:`Skipped` (``where``,
        ``reason``) and the others are decoded. ``progress``: a bar on stderr. An input of a type
        that is not accepted raises ``TypeError``, an array of the wrong shape ``ValueError``, before
        anything is decoded.
        """
        results, single = self._run(inputs, sample_rate, on_error, progress, "decode")
        out = [r if isinstance(r, Skipped) else r.nbest for r in results]
        return out[0] if single else out

    def transcribe(
        self, inputs: Any, *, sample_rate: int | None = None, on_error: str = "raise", progress: bool = False
    ) -> Transcript | Skipped | list[Transcript | Skipped]:
        """A :class:`Transcript` for each input, in order (for a single input, its transcript): the best
        hypothesis's text, its words with times and confidences, the n-best, and ``to_dict()`` for
        a manifest-style row. Arguments as for :meth:`decode`."""
        results, single = self._run(inputs, sample_rate, on_error, progress, "transcribe")
        return results[0] if single else results

    def transcribe_long(
        self,
        source: str | Path | bytes,
        long_form: Any = None,
        *,
        segments: Sequence[tuple[float, float]] | None = None,
        fields: dict | None = None,
        progress: bool = False,
    ) -> Transcript:
        """The transcript of an audio file of any length (a path, or an encoded file's bytes) in bounded
        memory (speechkit/longform.py): read in blocks, cut at pauses by a voice activity detector into
        segments of at most ``long_form.max_segment_s``, decoded ``batch_size`` segments at a time, its
        words on the file's clock. A :class:`~speechkit.longform.LongTranscript`: one hypothesis (the
        segments' best, joined), and ``segments`` (``{start, end, text}``, seconds), in ``to_dict`` too.
        ``long_form``: a :class:`~speechkit.longform.LongFormConfig` or a dict of some of its fields;
        ``segments``: ``(start, end)`` seconds to decode instead of the detector's (sorted, disjoint);
        ``fields``: the row it starts from (default ``{"audio_filepath": path}``)."""
        from speechkit.longform import transcribe_long

        return transcribe_long(self, source, long_form, segments=segments, fields=fields, progress=progress)

    def stream(self, sample_rate: int | None = None) -> Any:
        """A :class:`~speechkit.streaming.Streamer` for one utterance arriving in chunks: ``push(samples)``
        → the greedy text so far, ``finish()`` → the final :class:`Transcript` (speechkit/streaming.py).
        ``sample_rate``: Hz of the samples pushed, which must be the model's. ``ValueError`` for a model
        that cannot stream: a bidirectional encoder, or per-utterance feature normalisation."""
        from speechkit.streaming import Streamer

        return Streamer(self, sample_rate)

    def _run(
        self, inputs: Any, sample_rate: int | None, on_error: str, progress: bool, method: str
    ) -> tuple[list[Transcript | Skipped], bool]:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error={on_error!r}: use 'raise' or 'skip'")
        with _Inputs(self.model.frontend, inputs, sample_rate, method, on_error) as given:
            dataset = ManifestDataset(given.examples, given.load, None, on_error=on_error)
            out: dict[int, Transcript | Skipped] = {}
            for batch, nbests in self.decode_batches(dataset, progress=progress):
                durations = self.durations(batch.lengths) if len(batch) else []
                for i, nbest, seconds in zip(batch.indices, nbests, durations):
                    out[i] = Transcript.from_nbest(nbest, seconds, given.fields(i))
                out.update((sk.index, sk) for sk in batch.skipped)
            results = [out[i] for i in range(len(given.examples))]
        return given.with_manifest_problems(results), given.single


@dataclass
class Word:
    """One word of a transcript: times in seconds from the input's start (in frames where the input
    has no time axis in seconds, as for images), confidence in ``[0, 1]`` (decoders/confidence.py)."""

    word: str
    start: float
    end: float
    confidence: float | None = None

    def to_dict(self) -> dict:
        """``{word, start, end, confidence}``, times rounded to milliseconds, confidence to 3 decimals."""
        conf = None if self.confidence is None else round(self.confidence, 3)
        return {
            "word": self.word,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "confidence": conf,
        }


@dataclass
class Transcript:
    """What :meth:`Pipeline.transcribe` gives for one input: the best hypothesis's ``text``, ``words``,
    ``confidence`` (``[0, 1]``) and ``score`` (its log-probability from the decoder), the whole
    ``nbest`` (:class:`Hypothesis`, best first), the input's ``duration`` in seconds (None for images),
    and ``fields``: the manifest line's own fields (``audio_filepath``, ``text``, …), or for a file
    ``{"<modality>_filepath": path}``, empty for an array or bytes."""

    text: str
    words: list[Word]
    confidence: float | None
    score: float | None
    nbest: list[Hypothesis]
    duration: float | None = None
    fields: dict | None = None

    @classmethod
    def from_nbest(
        cls, nbest: list[Hypothesis], duration: float | None = None, fields: dict | None = None
    ) -> Transcript:
        """The transcript of an n-best list (annotated by :meth:`Pipeline.annotate`: else no confidences)."""
        if not nbest:
            return cls("", [], None, None, [], duration, fields)
        best = nbest[0]
        confs = (
            best.word_confidences
            if len(best.word_confidences) == len(best.words)
            else [None] * len(best.words)
        )
        words = [Word(w, s, e, c) for (w, s, e), c in zip(best.words, confs)]
        return cls(best.text, words, best.confidence, best.score, list(nbest), duration, fields)

    def to_dict(self, nbest: int = 1) -> dict:
        """A manifest-style row (NeMo's convention): the input's ``fields`` as they were (a manifest's
        ``text`` stays the reference), ``duration`` (the manifest's, else measured), then ``pred_text``,
        ``confidence``, ``score`` and ``words`` (``{word, start, end, confidence}``, seconds rounded to
        milliseconds); with ``nbest`` > 1, ``nbest``: up to that many ``{text, score, confidence}``."""
        row = dict(self.fields or {})
        if "duration" not in row and self.duration is not None:
            row["duration"] = round(self.duration, 3)
        row["pred_text"] = self.text
        row["confidence"] = None if self.confidence is None else round(self.confidence, 3)
        row["score"] = self.score
        row["words"] = [w.to_dict() for w in self.words]
        if nbest > 1:
            row["nbest"] = [
                {
                    "text": h.text,
                    "score": h.score,
                    "confidence": None if h.confidence is None else round(h.confidence, 3),
                }
                for h in self.nbest[:nbest]
            ]
        return row


def input_fields(example: Example, modality: str) -> dict:
    """The row an input starts from: a manifest line's fields (its media path resolved against the
    manifest's folder, ``duration`` and ``text`` where it has them, then the rest), a file's path
    under ``<modality>_filepath``, nothing for an array or bytes."""
    if isinstance(example, _InMemory):
        return {}
    row: dict[str, Any] = {f"{modality}_filepath": str(example.path)}
    if isinstance(example, _MediaFile):
        return row
    if example.duration is not None:
        row["duration"] = example.duration
    if example.text is not None:
        row["text"] = example.text
    row.update(example.fields)
    return row


def _seconds_per_raw_step(frontend: nn.Module) -> float | None:
    """Seconds per step along a raw input's time axis: ``1 / sample_rate`` for audio, ``1 / fps`` for
    video; None where time is not in seconds (images) or the frontend does not say."""
    cfg = getattr(frontend, "cfg", None)
    rate = getattr(cfg, "sample_rate", None) if frontend.modality == "audio" else getattr(cfg, "fps", None)
    return 1.0 / rate if rate else None


@dataclass(frozen=True)
class _MediaFile(Example):
    """A media file given by its path rather than a manifest line: errors name the file alone."""

    @property
    def where(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class _InMemory(_MediaFile):
    """An array or bytes given in memory, under the name errors use (``<array 2>``, ``<bytes>``)."""


_LAYOUT = {
    "audio": "1-D samples, with sample_rate=",
    "image": "(width, height) ink in [0, 1], as the frontend's load returns",
    "video": "(frames, C, H, W) in [0, 1], as the frontend's load returns",
}


class _Inputs:
    """What ``Pipeline.decode``/``transcribe`` were given, as examples a :class:`ManifestDataset` loads
    with :meth:`load`: paths and manifest lines as they are, arrays and bytes under a name. Checked
    when made (wrong types and shapes: ``TypeError``/``ValueError``); bytes are written to temporary
    files while the ``with`` block lasts, since every frontend reads files."""

    def __init__(
        self, frontend: nn.Module, inputs: Any, sample_rate: int | None, method: str, on_error: str = "raise"
    ) -> None:
        import numpy as np

        from speechkit.data.manifest import ManifestError, parse_manifest

        self.frontend, self.modality = frontend, frontend.modality
        self.method = method
        self.arrays: dict[str, Any] = {}  # name → array
        self.encoded: dict[str, bytes] = {}  # name → an encoded file's bytes
        self.files: dict[str, Path] = {}  # name → the temporary file holding them (inside ``with``)
        self.problems: list[tuple[int, str]] = []  # a manifest's unusable lines (on_error=skip)
        self.manifest: Path | None = None
        self.sample_rate = sample_rate
        self._tmp = None
        if isinstance(inputs, str | Path) and Path(inputs).suffix == ".jsonl":
            if sample_rate is not None:
                raise ValueError(
                    f"sample_rate={sample_rate!r} is the rate of arrays of samples, not of a manifest's files"
                )
            self.single, self.manifest = False, Path(inputs)
            self.examples, self.problems = parse_manifest(self.manifest, self.modality, require_text=False)
            if self.problems and on_error == "raise":
                raise ManifestError(self.manifest, self.problems)
            return
        if self._one(inputs):
            self.single, items = True, [inputs]
        elif isinstance(inputs, dict) or not hasattr(inputs, "__iter__"):
            raise TypeError(self._refusal(f"{type(inputs).__name__}"))
        else:
            self.single, items = False, list(inputs)
        self.examples: list[Example] = []
        for k, x in enumerate(items):
            label = "" if self.single else f" {k}"
            if isinstance(x, Example):
                self.examples.append(x)
            elif isinstance(x, str | Path):
                if not self.single and Path(x).suffix == ".jsonl":
                    raise ValueError(
                        f"input {k} ({x}) is a manifest: pass its path alone, not in a list of files"
                    )
                self.examples.append(_MediaFile(Path(x), None, Path(x), 0))
            elif isinstance(x, bytes | bytearray | memoryview):
                name = f"<bytes{label}>"
                self.encoded[name] = bytes(x)
                self.examples.append(_InMemory(Path(name), None, Path(name), 0))
            elif isinstance(x, np.ndarray | Tensor):
                name = f"<array{label}>"
                self.arrays[name] = self._checked(x, name)
                self.examples.append(_InMemory(Path(name), None, Path(name), 0))
            else:
                what = f"input {k}: {type(x).__name__}" if not self.single else type(x).__name__
                raise TypeError(self._refusal(what, nested=not self.single))
        if sample_rate is not None and not self.arrays:
            raise ValueError(
                f"sample_rate={sample_rate!r} is the rate of arrays of samples, and no array was given "
                "(a file carries its own rate): leave it out"
            )

    @staticmethod
    def _one(x: Any) -> bool:
        import numpy as np

        return isinstance(x, str | Path | bytes | bytearray | memoryview | np.ndarray | Tensor | Example)

    def _refusal(self, what: str, nested: bool = False) -> str:
        layout = _LAYOUT.get(self.modality, "in the layout the frontend's load returns")
        return (
            f"Pipeline.{self.method}: cannot take {what}; it takes a media file's path (str or Path; a .jsonl "
            f"path is a manifest), the bytes of an encoded file, a numpy array or torch tensor "
            f"({self.modality}: {layout}), a manifest Example, or a list of these"
            + ("" if not nested else " (a list of numbers is not samples: pass an array)")
        )

    def _checked(self, x: Any, name: str) -> Any:
        """``x`` if its dtype and shape fit the model's input (``ValueError``/``TypeError`` naming it if not)."""
        import numpy as np

        dtype = x.dtype
        numeric = (
            (x.is_floating_point() or not (x.is_complex() or dtype == torch.bool))
            if isinstance(x, Tensor)
            else (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer))
        )
        if not numeric:
            raise TypeError(f"{name}: an array of {dtype} is not {self.modality}; pass numbers")
        shape = tuple(x.shape)
        cfg = getattr(self.frontend, "cfg", None)
        if self.modality == "audio":
            if len(shape) != 1:
                raise ValueError(
                    f"{name}: audio arrays are 1-D samples, got shape {shape}; average the channels "
                    "(x.mean(axis=…)), or pass several clips as a list of 1-D arrays"
                )
            model_rate = getattr(cfg, "sample_rate", None)
            if model_rate is None:
                raise ValueError(f"{name}: this model's frontend does not say its sample rate; pass files")
            if self.sample_rate is None:
                raise ValueError(
                    f"{name}: an array of samples needs sample_rate= (its rate in Hz); the model takes "
                    f"{model_rate} Hz and resamples others"
                )
            if (
                isinstance(self.sample_rate, bool)
                or not isinstance(self.sample_rate, int)
                or self.sample_rate <= 0
            ):
                raise ValueError(f"sample_rate={self.sample_rate!r}: give a positive whole number of Hz")
        elif self.sample_rate is not None:
            raise ValueError(
                f"sample_rate= is for audio samples; this model reads {self.modality}: leave it out"
            )
        elif self.modality == "image":
            height = getattr(cfg, "height", None)
            if len(shape) != 2 or (height and shape[1] != height):
                raise ValueError(
                    f"{name}: image arrays are (width, {height or 'height'}) ink, got shape {shape}"
                )
        elif self.modality == "video":
            want = (
                getattr(self.frontend, "in_channels", None),
                getattr(cfg, "height", None),
                getattr(cfg, "width", None),
            )
            if len(shape) != 4 or (None not in want and shape[1:] != want):
                shown = "C, H, W" if None in want else ", ".join(map(str, want))
                raise ValueError(f"{name}: video arrays are (frames, {shown}), got shape {shape}")
        return x

    def __enter__(self) -> _Inputs:
        import tempfile

        if self.encoded:
            self._tmp = tempfile.TemporaryDirectory(prefix="speechkit-")
            for k, (name, data) in enumerate(self.encoded.items()):
                path = Path(self._tmp.name) / f"input{k}{_sniff_suffix(data)}"
                path.write_bytes(data)
                self.files[name] = path
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp, self.files = None, {}

    def load(self, path: Path) -> Tensor:
        """The raw tensor of the input named ``path`` (a file's path, or an in-memory input's name)."""
        from speechkit.data.errors import DataError

        name = str(path)
        if name in self.files:
            try:
                return self.frontend.load(self.files[name])
            except DataError as e:  # the temporary file stands for the bytes: name those
                raise DataError(name, e.problem.replace(str(self.files[name]), name), e.fix) from None
        if name in self.arrays:
            return self._raw(self.arrays[name], name)
        return self.frontend.load(path)

    def _raw(self, x: Any, name: str) -> Tensor:
        """An in-memory array as the frontend's ``load`` would return it (audio resampled to its rate)."""
        import numpy as np

        from speechkit.data.errors import DataError
        from speechkit.frontends.audio_io import to_waveform

        if self.modality == "audio":
            return to_waveform(x, self.sample_rate, self.frontend.cfg.sample_rate, name)
        t = x.detach().cpu() if isinstance(x, Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        t = t.float() / 255 if t.dtype == torch.uint8 else t.float()
        if t.shape[0] == 0:
            raise DataError(name, f"is empty (shape {tuple(t.shape)})", "pass at least one frame")
        if not bool(torch.isfinite(t).all()):
            raise DataError(name, "contains NaN or infinite values", "pass finite values")
        return t.contiguous()

    def fields(self, index: int) -> dict:
        return input_fields(self.examples[index], self.modality)

    def with_manifest_problems(self, results: list) -> list:
        """``results`` (one per example) with a :class:`Skipped` for each unusable manifest line, in line order."""
        if not self.problems:
            return results
        lines = [(ex.line, r) for ex, r in zip(self.examples, results)]
        lines += [(line, Skipped(-1, f"{self.manifest}:{line}", problem)) for line, problem in self.problems]
        lines.sort(key=lambda pair: pair[0])
        out = []
        for k, (_, r) in enumerate(lines):
            out.append(Skipped(k, r.where, r.reason) if isinstance(r, Skipped) else r)
        return out


def _sniff_suffix(data: bytes) -> str:
    """The file suffix an encoded file's first bytes announce ('' when unknown): loaders that read some
    formats by name (a NumPy stack, an MP4's box check) see the right one."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return ".wav"
    if data[4:8] == b"ftyp":
        return ".mp4"
    for magic, suffix in (
        (b"fLaC", ".flac"),
        (b"OggS", ".ogg"),
        (b"\x1a\x45\xdf\xa3", ".webm"),
        (b"ID3", ".mp3"),
        (b"\x93NUMPY", ".npy"),
        (b"\x89PNG", ".png"),
        (b"\xff\xd8\xff", ".jpg"),
    ):
        if data.startswith(magic):
            return suffix
    return ""

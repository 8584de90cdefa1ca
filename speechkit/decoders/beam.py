"""The ``beam`` decoder: CTC prefix beam search with LM fusion, a lexicon, hotwords, exact scores and timestamps.

Two engines run the search, both returning a :class:`SearchResult`: the batched torch search
(:mod:`speechkit.decoders.beam_torch`; any device, any LM, the reference) and the same search
compiled by numba for the CPU (:mod:`speechkit.decoders.beam_compiled`; no LM or ``ngram``).
:class:`BeamDecoder` chooses between them (``decoder.engine``, :meth:`BeamDecoder.engines`),
shortens runs of blank frames first when asked (:func:`collapse_blank_runs`, either engine),
rescores the n-best to exact CTC scores (:mod:`speechkit.decoders.ctc_score`) and turns the
per-frame paths into text and word times.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from speechkit.decoders.base import Decoder, Hypothesis, SearchResult, paths, tokens_to_text
from speechkit.decoders.beam_torch import prefix_beam_search
from speechkit.decoders.fusion import CharFusion, Fusion, WordFusion, build_lm
from speechkit.decoders.hotwords import HotwordTrie
from speechkit.decoders.lexicon import LexiconTrie, Spelling
from speechkit.decoders.timing import word_spans
from speechkit.functional import lengths_mask
from speechkit.registry import register

log = logging.getLogger(__name__)

# beam_compiled and ctc_score (numba) are imported where first used, so that importing the decoders
# (the package registers them all) does not import numba for a greedy decoder.

NEG_INF = float("-inf")
ENGINES = ("auto", "torch", "native")
_announced = False  # the compile (or the load from the disk cache) was announced: once per process


@dataclass
class BeamConfig:
    beam_size: int = 16  # hypotheses kept per utterance
    nbest: int = 1  # hypotheses returned per utterance
    token_topk: int = 0  # extend by only the k most likely tokens of a frame (0: all)
    token_min_logp: float | None = None  # extend by no token below this log-probability (None: off)
    beam_threshold: float | None = None  # drop hypotheses scoring this far below the best (None: off)
    blank_skip_logp: float | None = None  # frames with log P(blank) ≥ this count as pure blank; runs of
    # them take one search step (e.g. -0.001: P(blank) ≥ 0.999; None: off, every frame is searched)
    alpha: float = 0.5  # LM weight (natural-log LM probabilities)
    beta: float = 0.0  # bonus per unit: per character with a char LM, else per word
    lm: Any = None  # an `lm` plugin config (+decoder/lm=ngram decoder.lm.path=…), its name, or an LM
    lexicon: str | None = None  # word list (first field of each line): the only words allowed
    hotwords: Any = None  # words or phrases to favour: a file, one a line, optionally <TAB>boost; or a list
    hotword_boost: float = 1.0  # log-score per character of a completed hotword (lines without a boost)
    space: str = " "  # the word separator token
    exact_scores: bool = True  # rescore the n-best by the full CTC sum, then re-rank
    compile: bool = (
        False  # torch.compile the torch search's frame step (fused kernels; compiles on first use)
    )
    engine: str = "auto"  # auto: the compiled CPU engine (beam_compiled.py) for CPU tensors when it covers
    # the search (any but an LM other than ngram), else the batched torch search; torch; native


class Engines(NamedTuple):
    """What runs each part of a decoding: "native" (compiled by numba, on the CPU) or "torch"."""

    search: str  # the prefix beam search
    rescore: str  # the exact CTC scores of the n-best: the forward algorithm, or ctc_loss


def collapse_blank_runs(lp: Tensor, lengths: Tensor, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """Shorten ``lp`` ``(B, T, V)``: every run of frames with log P(blank) ≥ ``threshold`` becomes one
    frame that allows only blank, with the run's summed blank log-probability.

    On such a frame the search can only append blank: every prefix's probability gets the same
    factor and its "ends in a token" mass moves to "ends in blank" (the token's own probability,
    below ``1 - e^threshold``, is taken as zero), so a run is one step. Returns the short
    log-probabilities ``(B, T', V)``, their lengths, and ``src`` ``(B, T')``: each short frame's
    frame in ``lp`` (-1 for a collapsed run).
    """
    B, T, V = lp.shape
    dev = lp.device
    inside = lengths_mask(lengths, T)
    skip = (lp[:, :, 0] >= threshold) & inside
    opens = skip & ~torch.nn.functional.pad(skip[:, :-1], (1, 0), value=False)  # a run's first frame
    real = inside & ~skip
    pos = (real | opens).long().cumsum(1) - 1  # each frame's short frame (a run's frames share one)
    new_lengths = (real | opens).sum(1)
    Tn = int(new_lengths.max()) if B else 0
    out = torch.full((B, Tn, V), NEG_INF, device=dev)
    b, t = real.nonzero(as_tuple=True)
    out[b, pos[b, t]] = lp[b, t]
    src = torch.full((B, Tn), -1, dtype=torch.long, device=dev)
    src[b, pos[b, t]] = t
    run_blank = torch.zeros(B, Tn, device=dev).scatter_add_(
        1, pos.clamp(min=0), torch.where(skip, lp[:, :, 0], 0.0)
    )
    is_run = (src < 0) & lengths_mask(new_lengths, Tn)
    out[:, :, 0] = torch.where(is_run, run_blank, out[:, :, 0])
    return out, new_lengths, src


def uncollapse(res: SearchResult, src: Tensor, T_full: int) -> SearchResult:
    """``res``'s per-frame paths ``(T', B, N)`` of collapsed frames back on the input's ``T_full`` frames.

    A collapsed run of blanks emits nothing and ends every token (``src`` from :func:`collapse_blank_runs`).
    """
    _, B, N = res.emitted.shape
    b, t = (src >= 0).nonzero(as_tuple=True)
    emitted = torch.zeros(T_full, B, N, dtype=torch.long, device=res.emitted.device)
    nonblank = torch.zeros(T_full, B, N, dtype=torch.bool, device=res.emitted.device)
    emitted[src[b, t], b] = res.emitted[t, b]
    nonblank[src[b, t], b] = res.nonblank[t, b]
    return SearchResult(res.scores, res.ctc, emitted, nonblank)


@register("decoder", "beam", BeamConfig)
class BeamDecoder(Decoder):
    """CTC prefix beam search, batched on CPU or GPU, with optional LM fusion, lexicon and hotwords."""

    def __init__(self, cfg: BeamConfig, tokens: list[str], frame_shift_s: float | None = None) -> None:
        super().__init__(tokens, frame_shift_s)
        if cfg.beam_size < 1 or cfg.nbest < 1 or cfg.token_topk < 0:
            raise ValueError(
                "beam decoder: beam_size and nbest must be ≥ 1 and token_topk ≥ 0, "
                f"got {cfg.beam_size}, {cfg.nbest}, {cfg.token_topk}"
            )
        if cfg.engine not in ENGINES:
            raise ValueError(f"decoder.engine must be one of {', '.join(ENGINES)}, not {cfg.engine!r}")
        if len(self.tokens) < 2:
            raise ValueError(
                f"beam decoder: tokens must hold the blank and at least one symbol, got {tokens!r}"
            )
        self.cfg = cfg
        self.spelling = Spelling(self.tokens, cfg.space)  # which tokens start a word; words' letters
        self._check_words(cfg)
        self.lm = build_lm(cfg.lm)
        self.lexicon = LexiconTrie.from_file(cfg.lexicon, self.spelling) if cfg.lexicon else None
        self.hotwords = (
            HotwordTrie.from_spec(cfg.hotwords, self.tokens, cfg.hotword_boost, cfg.space)
            if cfg.hotwords not in (None, "", [], ())
            else None
        )
        if self.lm is None:
            self.fusion = Fusion(cfg.beta)
        elif self.lm.unit == "char":
            multi = self.spelling.multi_char
            if multi:
                raise ValueError(
                    "decoder.lm: a char LM scores one character a token, but this model's tokens are "
                    f"subwords that write several (e.g. {multi[-1]!r}), which the search would have to "
                    "score character by character; use a word LM (speechkit-ngram … unit=word, then "
                    "decoder.lm=ngram decoder.lm.path=word.arpa decoder.lm.unit=word), or a char model"
                )
            self.fusion = CharFusion(self.lm, self.tokens, cfg.alpha, cfg.beta)
        elif self.lm.unit == "word":
            self.fusion = WordFusion(self.lm, self.spelling, cfg.alpha, cfg.beta)
        else:
            raise ValueError(f"decoder.lm: unit must be 'char' or 'word', not {self.lm.unit!r}")
        # the fusion, lexicon and hotwords as the compiled engine reads them (native_fusion None: it
        # cannot run this)
        self.native_fusion = self.fusion.to_native() if cfg.engine != "torch" else None
        self.native_spelling = self.spelling.to_native()
        self.native_lexicon = self.lexicon.to_native() if self.lexicon is not None else None
        self.native_hotwords = self.hotwords.to_native() if self.hotwords is not None else None
        if self.native_fusion is None and cfg.engine == "native":
            raise ValueError(
                "decoder.engine=native takes no LM or the ngram LM; use decoder.engine=auto "
                "(the torch search for other LMs)"
            )

    def _check_words(self, cfg: BeamConfig) -> None:
        """Refuse an LM, lexicon or word bonus that the tokens cannot serve, saying what to do instead."""
        wants_lm = cfg.lm not in (None, "", "none")
        straddling = self.spelling.straddling
        if straddling and (wants_lm or cfg.lexicon or cfg.beta):
            raise ValueError(
                f"decoder.lm, decoder.lexicon and decoder.beta find words where a token starts with the "
                f"separator {cfg.space!r}, but this model's token {straddling[0]!r} writes one after its "
                "start (it ends one word and begins the next); decode without them (decoder.lm=null "
                "decoder.lexicon=null decoder.beta=0), or train subwords that do not cross words"
            )
        if not self.spelling.writes_words and (wants_lm or cfg.lexicon):
            example = next((t for t in self.tokens[1:] if len(t) > 1), self.tokens[-1])
            raise ValueError(
                "decoder.lm and decoder.lexicon take words spelt by the model's tokens, but every token "
                f"of this model is a whole word of its text (a phone or a word, such as {example!r}), which spell no "
                "words; decode it without them (decoder.lm=null decoder.lexicon=null; decoder.beta "
                "still rewards each token), or train with tokenizer=char or tokenizer=bpe"
            )

    def engines(self, device: torch.device) -> Engines:
        """The engines for log-probabilities on ``device``: the one place the engine is chosen.

        ``engine=torch``: the batched torch search and ``ctc_loss``. ``native``: the compiled search
        (on the CPU, whatever the device) and, for CPU tensors, the compiled forward algorithm.
        ``auto``: on CPU tensors the compiled forward algorithm, and the compiled search where it
        covers the search (no LM or ``ngram``) and ``compile`` is off; otherwise torch.
        """
        engine, on_cpu = self.cfg.engine, device.type == "cpu"
        compiled_search = self.native_fusion is not None and (
            engine == "native" or (on_cpu and not self.cfg.compile)
        )
        compiled_rescore = engine != "torch" and on_cpu
        return Engines("native" if compiled_search else "torch", "native" if compiled_rescore else "torch")

    def compile_state(self, device: torch.device) -> str:
        """How far decoding on ``device`` is from running: "ready" (the torch engines, or compiled in this
        process), "cached" (loads from the disk cache, about a second) or "cold" (compiles first)."""
        engines, states = self.engines(device), []
        if engines.search == "native":
            from speechkit.decoders import beam_compiled

            states.append(beam_compiled.compile_state())
        if engines.rescore == "native" and self.cfg.exact_scores:
            from speechkit.decoders import ctc_score

            states.append(ctc_score.compile_state())
        return "cold" if "cold" in states else "cached" if "cached" in states else "ready"

    def warm_up(
        self, device: torch.device | str = "cpu", announce: Callable[[str], None] | None = None
    ) -> None:
        """Compile the engines that decoding on ``device`` uses, or load them from the disk cache, by
        decoding one frame: what is timed after this is decoding alone.

        ``announce`` (default: the log, INFO for a compile, DEBUG for a load) hears what is about to
        happen before it starts, once per process; a command line passes a print to stderr.
        """
        device = torch.device(device)
        self._announce(device, announce)
        if "native" in self.engines(device):
            lp = torch.full((1, 1, len(self.tokens)), -30.0, device=device)
            lp[:, :, 0] = 0.0  # all blank: the empty hypothesis ends the search (a lexicon finds no fault)
            self(lp.log_softmax(-1), torch.ones(1, dtype=torch.long, device=device))

    def _announce(self, device: torch.device, announce: Callable[[str], None] | None) -> None:
        """Say that the compiled engines are about to be compiled or loaded, before that starts."""
        global _announced
        if _announced:
            return
        state = self.compile_state(device)
        if state == "ready":
            return
        _announced = True
        from speechkit.decoders import numba_cache_dir
        from speechkit.decoders.beam_compiled import COMPILE_SECONDS

        where = numba_cache_dir()
        if state == "cold":  # INFO: a wait worth explaining; a load takes about a second
            level = logging.INFO
            msg = f"compiling the beam search (once per machine, ~{COMPILE_SECONDS} s; cached in {where}) …"
        else:
            level, msg = logging.DEBUG, f"loading the compiled beam search from the cache ({where})"
        if announce is not None:
            announce(msg)
        else:
            log.log(level, msg)

    @torch.no_grad()
    def search(self, log_probs: Tensor, lengths: Tensor) -> SearchResult:
        """The n-best of ``log_probs`` ``(B, T, V)``, ``lengths`` ``(B,)`` as :meth:`check_inputs` returns
        them, on the engine :meth:`engines` picks; per-frame paths over the longest utterance's frames."""
        c = self.cfg
        dev = log_probs.device
        lengths = lengths.to(dev)
        T = int(lengths.max()) if log_probs.shape[0] else 0
        lp = log_probs[:, :T].float()
        src = None
        if c.blank_skip_logp is not None and T:
            lp, lengths, src = collapse_blank_runs(lp, lengths, c.blank_skip_logp)
        pruning = dict(
            beam_size=c.beam_size,
            nbest=c.nbest,
            token_topk=c.token_topk,
            token_min_logp=c.token_min_logp,
            beam_threshold=c.beam_threshold,
        )
        if self.engines(dev).search == "native":
            from speechkit.decoders import beam_compiled

            res = beam_compiled.search(
                lp,
                lengths,
                **pruning,
                fusion=self.native_fusion,
                lexicon=self.native_lexicon,
                hotwords=self.native_hotwords,
                spelling=self.native_spelling,
            )
            res = SearchResult(res.scores.to(dev), res.ctc.to(dev), res.emitted.to(dev), res.nonblank.to(dev))
        else:
            res = prefix_beam_search(
                lp,
                lengths,
                **pruning,
                fusion=self.fusion,
                lexicon=self.lexicon,
                hotwords=self.hotwords,
                spelling=self.spelling,
                compile=c.compile,
            )
        return uncollapse(res, src, T) if src is not None else res

    @torch.no_grad()
    def __call__(self, log_probs: Tensor, lengths: Tensor) -> list[list[Hypothesis]]:
        """``log_probs`` ``(B, T, V)``, ``lengths`` ``(B,)`` → per utterance, its n-best list, best first."""
        log_probs, lengths = self.check_inputs(log_probs, lengths)
        self._announce(log_probs.device, None)  # before a first call compiles (warm_up: announced already)
        res = self.search(log_probs, lengths)
        if self.cfg.exact_scores:
            from speechkit.decoders.ctc_score import rescore_exact

            compiled = self.engines(log_probs.device).rescore == "native"
            res = rescore_exact(log_probs, lengths, res, compiled=compiled)
        scores = res.scores.cpu().tolist()
        toks, starts, ends, offsets = paths(res.emitted, res.nonblank)
        N = res.emitted.shape[2]
        out = []
        for b, row in enumerate(scores):
            hyps = []
            for n, score in enumerate(row):
                if score == NEG_INF and hyps:
                    break
                lo, hi = offsets[b * N + n], offsets[b * N + n + 1]
                hyps.append(self._hypothesis(score, toks[lo:hi], starts[lo:hi], ends[lo:hi]))
            out.append(hyps)
        return out

    def _hypothesis(self, score: float, toks: list[int], starts: list[int], ends: list[int]) -> Hypothesis:
        text = tokens_to_text(toks, self.tokens)
        words = word_spans(toks, starts, self.tokens, self.frame_shift_s, ends, self.cfg.space)
        return Hypothesis(text, score, toks, starts, words)

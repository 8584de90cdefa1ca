"""``speechkit-transcribe checkpoint=PATH input=FILE|FOLDER|MANIFEST|-``: text of media files.

One file (``input=-``: one file's bytes on stdin): its text is printed, or with ``output=x.json`` written
as one JSON object (``x.jsonl``: one line). A folder (every file whose suffix the model's frontend
reads, audio in any container FFmpeg reads; the files left out are named on stderr) or a manifest:
predictions are written as JSON lines (``output=PATH``, default ``<run dir>/predictions.jsonl``;
``.json``: one JSON array) and a summary is printed. Each row follows NeMo's convention: the
manifest line's fields as they were (``text`` stays the reference), or ``audio_filepath`` and
``duration`` for a file, then ``pred_text``, ``confidence``, ``score`` and ``words``
(``{word, start, end, confidence}``, seconds to the millisecond); ``nbest`` with ``nbest=N``.
A progress bar (files/s, real-time factor) runs on stderr, and the real-time factor is printed there at the end.

A folder or manifest is written as it goes to part files, ``<output>.parts/rank<R>.jsonl``
(speechkit/shards.py), merged into the output in input order at the end (the folder is then removed).
A run that was killed or stopped by a bad file resumes from them (``resume=true``, the default:
inputs already there are not transcribed again; a half-written last line is dropped); parts written
for other inputs, checkpoint or decoder settings are refused, ``resume=false`` deletes them. Under
``torchrun`` (``torchrun --nproc-per-node=N -m speechkit.transcribe … output=PATH``) each process takes
a contiguous share of the inputs left, balanced by duration (CUDA: GPU ``LOCAL_RANK``), into its own
part file; rank 0 draws the bar for all of them, merges, and reports every skipped input.

``on_error=raise`` (default): an input that cannot be used is one ``error:`` line naming the
manifest line (or the file, for a folder) and nothing is written: the first manifest line that
cannot be parsed (all are checked before decoding), else the first media file that cannot be read
(the transcripts before it stay in the part files: fix the file and rerun to go on from there).
``on_error=skip``: those inputs are left out, each printed on stderr (``skipped MANIFEST:LINE:
reason``) and listed in ``<output stem>.skipped.jsonl`` beside the output, one ``{"where", "path",
"reason"}`` object a line; the rest are transcribed.

Long audio (``long_form.enabled=auto``: files longer than ``long_form.min_s``, 30 s; ``true``: every audio
file; ``false``: none) is transcribed in bounded memory (speechkit/longform.py): read in blocks, cut at
pauses by a voice activity detector (``long_form.vad=energy``, or ``silero`` with the silero-vad
package) into segments of at most ``long_form.max_segment_s``, decoded in batches; word times are on
the file's clock and its row adds ``segments`` (``{start, end, text}``).

``streaming=true chunk_ms=200``: one file, or a WAV arriving on stdin (``input=-``, read as its bytes
come), recognised chunk by chunk (speechkit/streaming.py; the model needs a unidirectional encoder
and ``online``, ``global`` or no feature normalisation). The greedy text so far is printed as it grows: on a
terminal on one line, rewritten in place; otherwise one line per change. Then the final text (the
chosen decoder's, on the whole utterance), or with ``output=`` its JSON row; speed on stderr.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("speechkit.transcribe")

STDIN = "-"  # input=- reads one media file from stdin
LEFT_OUT_SHOWN = 5  # names of files a folder scan leaves out, listed on stderr


def _extensions(frontend) -> set[str]:
    """File suffixes a folder scan picks up: the frontend's, and for audio every container
    ``load_audio`` reads through FFmpeg (m4a, opus, webm, …)."""
    exts = {e.lower() for e in frontend.extensions}
    if frontend.modality == "audio":
        from speechkit.frontends.audio_io import AUDIO_EXTENSIONS

        exts |= set(AUDIO_EXTENSIONS)
    return exts


def _inputs(pipe, source: Path, on_error: str, announce: bool = True) -> tuple[list, list[tuple[int, dict]]]:
    """The files (a folder's, or one) or manifest examples ``source`` names, and for every manifest
    line that cannot be parsed ``(line, report row)``; with ``on_error=raise`` the first is an error.
    ``announce``: name the files a folder scan leaves out on stderr (one process of several: not)."""
    from speechkit.data.files import check_media_file
    from speechkit.data.manifest import parse_manifest

    if source.is_dir():
        exts = _extensions(pipe.model.frontend)
        found = sorted(p for p in source.rglob("*") if p.suffix.lower() in exts)
        left_out = sorted(p for p in source.rglob("*") if p.suffix.lower() not in exts and p.is_file())
        if left_out and announce:  # said, never silently dropped
            names = ", ".join(str(p.relative_to(source)) for p in left_out[:LEFT_OUT_SHOWN])
            more = f" and {len(left_out) - LEFT_OUT_SHOWN} more" if len(left_out) > LEFT_OUT_SHOWN else ""
            print(
                f"left out {len(left_out)} file(s) of {source} not ending in {', '.join(sorted(exts))}: "
                f"{names}{more}",
                file=sys.stderr,
            )
        if not found:
            raise SystemExit(f"error: {source}: no files ending in {', '.join(sorted(exts))}")
        return found, []
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
    """A hypothesis as printed: its text, and with ``words`` one ``word start end confidence`` line a word."""
    if not words:
        return h.text
    confs = h.word_confidences if len(h.word_confidences) == len(h.words) else [float("nan")] * len(h.words)
    return (
        h.text + "\n" + "\n".join(f"  {w}\t{s:.2f}\t{e:.2f}\t{c:.2f}" for (w, s, e), c in zip(h.words, confs))
    )


def _plot_name(stem: str, used: set[str]) -> str:
    """``<stem>.png``, or ``<stem>_<n>.png`` when another input of the run has the same stem."""
    name, n = f"{stem}.png", 1
    while name in used:
        n += 1
        name = f"{stem}_{n}.png"
    used.add(name)
    return name


def write_plots(pipe, items: list, nbests: list, out_dir: Path) -> list[Path]:
    """One PNG per input in ``out_dir``: the input, its features, and the posteriorgram with the
    decoded text aligned (speechkit.plots.plot_utterance). ``items``: paths, manifest examples, or
    bytes (stdin's: ``stdin.png``). Returns the files written."""
    import torch

    from speechkit.plots import plot_utterance

    model, fe = pipe.model, pipe.model.frontend
    out_dir.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for item, nbest in zip(items, nbests):
        path = getattr(item, "path", item)
        raw = pipe.load(path)
        x, lengths = raw[None].to(pipe.device), torch.tensor([raw.shape[0]], device=pipe.device)
        with torch.no_grad():
            feats, frames = fe(x, lengths)
            log_probs, out_frames = model(x, lengths)
        cfg = getattr(fe, "cfg", None)
        is_file = isinstance(path, str | Path)
        target = out_dir / _plot_name(Path(path).stem if is_file else "stdin", used)
        plot_utterance(
            target,
            raw.cpu().numpy(),
            fe.modality,
            feats[0, : int(frames[0])].float().cpu().numpy(),
            log_probs[0, : int(out_frames[0])].float().cpu().numpy(),
            pipe.tokenizer.tokens,
            hyp=nbest[0] if nbest else None,  # words aligned and ended by the input's end (Pipeline.annotate)
            feat_shift_s=getattr(fe, "frame_shift_s", None),
            out_shift_s=model.frame_shift_s,
            sample_rate=getattr(cfg, "sample_rate", None),
            fps=getattr(cfg, "fps", None),
            title=str(path) if is_file else "<stdin>",
        )
        written.append(target)
    return written


def _speed(durations: list[float | None], seconds: float, modality: str, processes: int = 1) -> str:
    """The real-time factor (wall-clock seconds per second of input, over ``processes`` processes), or
    files/s without a time axis; ``durations``: seconds of each input transcribed."""
    on = f" on {processes} processes" if processes > 1 else ""
    if durations and all(d is not None for d in durations) and sum(durations) > 0:
        total = sum(durations)
        rtf = seconds / total
        return (
            f"real-time factor {rtf:.4f}: {total:.1f} s of {modality} in {seconds:.2f} s{on} "
            f"({1 / rtf if rtf else float('inf'):.0f}× real time)"
        )
    return (
        f"{len(durations)} file(s) in {seconds:.2f} s{on} ({len(durations) / max(seconds, 1e-9):.1f} files/s)"
    )


def _write(out: Path, rows: list[dict], single: bool) -> None:
    """``.json``: one object (a single input) or an array; any other name: JSON lines."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".json":
        out.write_text(json.dumps(rows[0] if single and rows else rows, indent=2, ensure_ascii=False) + "\n")
    else:
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _stdin_chunks(pipe, rate: int, size: int):
    """Chunks of ``size`` samples of the media file on stdin: a WAV as its bytes arrive, another
    container once it has arrived whole (it is decoded then)."""
    from speechkit import streaming

    if sys.stdin.isatty():
        raise SystemExit("error: input=-: stdin is a terminal; pipe a WAV file in (… input=- < a.wav)")
    f = sys.stdin.buffer
    head = streaming.read_bytes(f, 12)
    if not head:
        raise SystemExit("error: input=-: nothing arrived on stdin; pipe a WAV file in (… input=- < a.wav)")
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return streaming.chunked(pipe.load(head + f.read()), size)
    try:
        wav = streaming.wav_stream(f, head)
    except ValueError as e:
        raise SystemExit(f"error: input=-: {e}") from None
    if wav.rate != rate:
        raise SystemExit(
            f"error: input=-: the WAV on stdin is {wav.rate} Hz and the model takes {rate} Hz; resample it "
            f"first (sox … -r {rate} -t wav -), or pass the file as input=FILE"
        )
    return wav.chunks(size)


def transcribe_stream(pipe, cfg: DictConfig) -> None:
    """``streaming=true``: partial text on stdout as the chunks go in, then the final result."""
    from speechkit import streaming
    from speechkit.data.errors import DataError

    if isinstance(cfg.chunk_ms, bool) or not isinstance(cfg.chunk_ms, int | float) or cfg.chunk_ms <= 0:
        raise SystemExit(f"error: chunk_ms={cfg.chunk_ms}: give a positive number of milliseconds of audio")
    if cfg.plot:
        raise SystemExit("error: plot=true does not stream; run without streaming=true to plot")
    try:
        streamer = pipe.stream()
    except ValueError as e:
        raise SystemExit(_one_line(f"error: streaming=true: {e}")) from None
    size = max(1, round(streamer.rate * cfg.chunk_ms / 1000))  # samples per chunk
    tty = sys.stdout.isatty()
    shown, seconds, n = "", 0.0, 0
    try:
        if str(cfg.input) == STDIN:
            chunks = _stdin_chunks(pipe, streamer.rate, size)
        else:
            source = Path(str(cfg.input))
            if source.is_dir() or source.suffix in (".jsonl", ".json"):
                raise SystemExit(
                    f"error: streaming=true takes one media file or input=-, not {source}; drop streaming=true"
                )
            _inputs(pipe, source, "raise")  # a missing file, a dangling link: one error line
            chunks = streaming.chunked(pipe.load(source), size)
        for chunk in chunks:
            t0 = time.perf_counter()
            text = streamer.push(chunk).text
            seconds += time.perf_counter() - t0
            n += 1
            if text != shown:
                shown = text
                print("\r" + text + "\x1b[K" if tty else text, end="" if tty else "\n", flush=True)
        t0 = time.perf_counter()
        transcript = streamer.finish()
        seconds += time.perf_counter() - t0
    except DataError as e:
        where = "<stdin>" if str(cfg.input) == STDIN else e.where
        raise SystemExit(
            _one_line(f"error: {where}: {e.problem}" + (f" — {e.fix}" if e.fix else ""))
        ) from None
    if tty:
        print("\r\x1b[K", end="")
    if cfg.output:
        _write(Path(cfg.output), [transcript.to_dict(nbest=cfg.nbest)], True)
        print(f"transcribed 1 file: {cfg.output}")
    elif not transcript.nbest:
        print("")
    for rank, h in enumerate([] if cfg.output else transcript.nbest[: cfg.nbest]):
        prefix = f"{rank + 1}\t{h.score:.3f}\t" if cfg.nbest > 1 else ""
        print(prefix + _format(h, cfg.words), flush=True)
    duration = transcript.duration or 0.0
    print(
        f"streamed {duration:.2f} s in {n} chunk(s) of {cfg.chunk_ms:g} ms: {1000 * seconds / max(n, 1):.1f} ms "
        f"of compute per chunk, real-time factor {seconds / max(duration, 1e-9):.4f}",
        file=sys.stderr,
    )


def task(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from speechkit.checkpoint import CheckpointError, load_checkpoint
    from speechkit.data.errors import DataError
    from speechkit.transcribe_many import join, transcribe_many

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
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise SystemExit(f"error: batch_size={cfg.batch_size}: give the inputs decoded at once, 1 or more")
    output = Path(str(cfg.output)) if cfg.output else None
    if output is not None and output.is_dir():  # found now, not once every input is decoded
        raise SystemExit(
            f"error: output={output}: is a folder; give a file in it (e.g. {output / 'predictions.jsonl'})"
        )
    group, device = join(cfg)
    try:  # the decoder asked for here, so the checkpoint's own need not be buildable
        pipe = load_checkpoint(cfg.checkpoint, decoder=decoder, device=device, batch_size=cfg.batch_size)
    except CheckpointError as e:  # the checkpoint's, or an LM file's that the decoder names
        raise SystemExit(f"error: {'' if e.path == str(cfg.checkpoint) else 'decoder: '}{e}") from None
    except (OSError, ValueError) as e:  # an LM file that is missing or unreadable: one line, not a traceback
        raise SystemExit(f"error: decoder: {e}") from None
    if cfg.get("streaming"):
        return transcribe_stream(pipe, cfg)
    stdin = str(cfg.input) == STDIN
    if stdin:
        if sys.stdin.isatty():
            raise SystemExit(
                "error: input=-: stdin is a terminal; pipe one media file in (… input=- < a.wav)"
            )
        data = sys.stdin.buffer.read()
        if not data:
            raise SystemExit(
                "error: input=-: nothing arrived on stdin; pipe one media file in (… input=- < a.wav)"
            )
        source, single = None, True
    else:
        source = Path(str(cfg.input))
        single = not source.is_dir() and source.suffix not in (".jsonl", ".json")
    try:
        inputs, skipped = ([data], []) if stdin else _inputs(pipe, source, cfg.on_error, group.main)
        if hasattr(pipe.decoder, "warm_up"):  # the one-off compile announced on stderr: stdout holds the text
            pipe.decoder.warm_up(pipe.device, announce=lambda m: group.main and print(m, file=sys.stderr))
        if not single:
            return transcribe_many(pipe, cfg, group, inputs, skipped)
        t0 = time.perf_counter()
        results = _transcribe(pipe, inputs, cfg, single)  # long audio: the long-form path
        seconds = time.perf_counter() - t0
    except DataError as e:
        where = "<stdin>" if stdin else e.where  # the bytes' temporary name means nothing to the user
        raise SystemExit(
            _one_line(f"error: {where}: {e.problem}" + (f" — {e.fix}" if e.fix else ""))
        ) from None
    transcript = results[0]
    if cfg.plot:
        pngs = write_plots(
            pipe, inputs, [transcript.nbest], Path(HydraConfig.get().runtime.output_dir) / "plots"
        )
        print(f"plot: {pngs[0]}", file=sys.stderr)  # stderr: stdout carries only the text
    speed = _speed([transcript.duration], seconds, pipe.model.frontend.modality)
    if not cfg.output:
        for rank, h in enumerate(transcript.nbest[: cfg.nbest]):
            prefix = f"{rank + 1}\t{h.score:.3f}\t" if cfg.nbest > 1 else ""
            print(prefix + _format(h, cfg.words))
    else:
        _finish(Path(cfg.output), [transcript.to_dict(nbest=cfg.nbest)], [], cfg, True)
    print(speed, file=sys.stderr)


def _finish(
    out: Path, rows: list[dict], skipped: list[tuple[int, dict]], cfg: DictConfig, single: bool
) -> None:
    """Write the output and the report of skipped inputs beside it (a previous one removed); say so."""
    _write(out, rows, single)
    report = out.with_name(f"{out.stem}.skipped.jsonl")
    if skipped:
        report.write_text("".join(json.dumps(row) + "\n" for _, row in skipped))
    else:
        report.unlink(missing_ok=True)  # a previous run's, which would not describe this output
    if cfg.on_error == "skip":
        print(
            f"transcribed {len(rows)} file(s), skipped {len(skipped)}: {out}"
            + (f" (skipped inputs: {report})" if skipped else "")
        )
    else:
        print(f"transcribed {len(rows)} file(s): {out}")


def _transcribe(pipe, inputs: list, cfg: DictConfig, single: bool, progress: bool | None = None) -> list:
    """``pipe.transcribe(inputs)``, except that audio longer than ``long_form.min_s`` seconds
    (``long_form.enabled=auto``; with ``true`` every audio input) takes the long-form path one file at a
    time (``Pipeline.transcribe_long``: read in blocks, cut by the VAD, rows with ``segments``).
    ``progress``: bars on stderr (default: ``cfg.progress``; files/s only for more than one input)."""
    from speechkit.data.dataset import Skipped
    from speechkit.data.errors import DataError
    from speechkit.data.manifest import Example
    from speechkit.frontends.audio_blocks import audio_seconds
    from speechkit.longform import LongFormConfig
    from speechkit.pipeline import input_fields

    on_error = "raise" if single else cfg.on_error
    bars = cfg.progress and not single if progress is None else progress  # one bar per batch of files
    long_bar = cfg.progress if progress is None else progress  # seconds of audio: even for one file
    try:
        lf = LongFormConfig.from_node(cfg.get("long_form"))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    modality = pipe.model.frontend.modality
    if lf.mode == "true" and modality != "audio":
        raise SystemExit(f"error: long_form.enabled=true is for audio; this model reads {modality}")
    if lf.mode == "false" or modality != "audio":
        return pipe.transcribe(inputs, on_error=on_error, progress=bars)

    def seconds(x) -> float | None:
        return getattr(x, "duration", None) or audio_seconds(getattr(x, "path", x))

    long = [i for i, x in enumerate(inputs) if lf.mode == "true" or (seconds(x) or 0) > lf.min_s]
    if long and cfg.plot:
        raise SystemExit(
            f"error: plot=true draws each input whole, and {len(long)} input(s) take the long-form path "
            f"(long_form.enabled={lf.mode}, min_s={lf.min_s}): pass long_form.enabled=false to plot them whole"
        )
    results: list = [None] * len(inputs)
    short = sorted(set(range(len(inputs))) - set(long))
    if short:
        done = pipe.transcribe([inputs[i] for i in short], on_error=on_error, progress=bars)
        for i, r in zip(short, done):
            results[i] = Skipped(i, r.where, r.reason) if isinstance(r, Skipped) else r
    for i in long:
        x = inputs[i]
        where = x.where if isinstance(x, Example) else None  # a manifest line is named with the file
        fields = input_fields(x, "audio") if isinstance(x, Example) else None
        try:
            # a bar (stderr, seconds of audio) even for one file: a long file takes a while
            results[i] = pipe.transcribe_long(getattr(x, "path", x), lf, fields=fields, progress=long_bar)
        except DataError as e:
            if on_error == "raise":
                raise DataError(f"{where}: {e.where}" if where else e.where, e.problem, e.fix) from None
            results[i] = Skipped(i, where or e.where, e.problem + (f" ({e.where})" if where else ""))
        except (ImportError, ValueError) as e:  # long_form.vad=silero without the package, or at 22 kHz
            raise SystemExit(f"error: {e}") from None
    return results


def main() -> None:
    from speechkit.config import run_hydra

    run_hydra(task, "transcribe")


if __name__ == "__main__":
    main()

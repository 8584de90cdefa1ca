"""Streaming recognition: latency and speed per chunk size (speechkit/streaming.py).

For every utterance of a manifest, the audio is pushed to ``Pipeline.stream()`` in chunks of each size,
as fast as the model takes them (the audio is loaded first; chunks are not paced to real time), and:

- **real-time factor**: compute seconds (push + finish) per second of audio, and the compute of one
  chunk (mean, 95th percentile), with ``--threads`` torch threads;
- **word latency**: for each reference word the streamed text also has (words paired by
  ``difflib`` on the word sequences), the time from the end of the word in the audio to the moment
  its last character is out: the end of the chunk that emitted it (in the audio) plus that chunk's
  compute time. Word ends come from a forced alignment (``torchaudio.functional.forced_align``) of the
  reference text on the posteriors of ``--reference`` (a bidirectional model sees the whole
  utterance, so its CTC spikes are not delayed the way a unidirectional model's are) or, without it,
  of the streaming model itself; a word ends at the end of its last character's aligned frames, so
  within one output frame of the reference model (40 ms for the demo's). The row ``frame`` is the
  limit of ever smaller chunks: a token counts as out as soon as the last sample its output frame
  reads has arrived, with no compute time;
- **WER** of the streamed final text (the streaming model's greedy decoding, which equals its
  whole-utterance greedy decoding) and, with ``--reference``, of that model's whole-utterance
  greedy decoding on the same utterances.

    python benchmarks/streaming.py --checkpoint runs/demo_stream/lstm256x3_2000/checkpoints/best.pt \\
        --reference runs/demo/latest/checkpoints/best.pt --manifest data/demo/test.jsonl
"""

from __future__ import annotations

import argparse
import difflib
import statistics
import time
from pathlib import Path

import torch
import torchaudio.functional as AF

from speechkit import load_checkpoint
from speechkit.data.manifest import parse_manifest
from speechkit.metrics import wer_cer


def word_ends(pipe, wave: torch.Tensor, text: str) -> list[tuple[str, float]]:
    """``(word, end seconds)`` of ``text`` force-aligned on ``pipe``'s posteriors of ``wave``."""
    lp, n = pipe.log_probs(wave[None], torch.tensor([wave.shape[0]]))
    lp = lp[:, : n[0]].float().cpu()
    ids = pipe.tokenizer.encode(text)
    aligned, scores = AF.forced_align(lp, torch.tensor([ids], dtype=torch.int32), blank=0)
    spans = AF.merge_tokens(aligned[0], scores[0].exp())
    symbols, shift = pipe.tokenizer.tokens, pipe.model.frame_shift_s
    out, word, end = [], "", 0
    for span in spans:
        if symbols[span.token] == " ":
            if word:
                out.append((word, end * shift))
            word = ""
        else:
            word, end = word + symbols[span.token], span.end  # span.end: one past its last frame
    if word:
        out.append((word, end * shift))
    return out


def stream_once(pipe, wave: torch.Tensor, chunk: int) -> dict:
    """Push ``wave`` in chunks of ``chunk`` samples; per token when it was out, and the compute times."""
    rate = pipe.model.frontend.cfg.sample_rate
    s = pipe.stream()
    out_at, seconds = [], []  # per token: seconds from the audio's start when it was out; per chunk: compute
    for k in range(0, wave.shape[0], chunk):
        t0 = time.perf_counter()
        p = s.push(wave[k : k + chunk])
        seconds.append(time.perf_counter() - t0)
        arrived = min(k + chunk, wave.shape[0]) / rate
        out_at += [arrived + seconds[-1]] * (len(p.tokens) - len(out_at))
    t0 = time.perf_counter()
    final = s.finish()
    seconds.append(time.perf_counter() - t0)
    p = s.partial()
    out_at += [wave.shape[0] / rate + seconds[-1]] * (len(p.tokens) - len(out_at))
    return {
        "text": final.text,
        "tokens": p.tokens,
        "frames": p.token_frames,
        "out_at": out_at,
        "seconds": seconds,
    }


def frame_times(pipe, frames: list[int], n_samples: int) -> list[float]:
    """Seconds from the audio's start at which output frame ``f`` can first be computed: when the
    last sample of its last input frame (look-ahead included) has arrived (the utterance's end for the
    flushed last group)."""
    fe, enc = pipe.model.frontend, pipe.model.encoder
    sub = getattr(enc, "subsampling", 1)
    ahead = getattr(getattr(enc, "sub", None), "lookahead", 0)  # input frames of right context
    rate = fe.cfg.sample_rate
    last = [((f + 1) * sub - 1 + ahead) * fe.hop_length + fe.win_length for f in frames]  # samples read
    return [min(n, n_samples) / rate for n in last]


def word_latencies(ref: list[tuple[str, float]], symbols: list[str], tokens: list[int], at: list[float]):
    """Latency (s) of each reference word the hypothesis also has: when its last character was out
    minus the word's end."""
    words, lasts, word = [], [], ""  # the hypothesis' words, and the index of each one's last token
    for i, t in enumerate([*tokens, None]):
        if t is None or symbols[t] == " ":
            if word:
                words.append(word)
                lasts.append(i - 1)
            word = ""
        else:
            word += symbols[t]
    matcher = difflib.SequenceMatcher(None, [w for w, _ in ref], words, autojunk=False)
    out = []
    for block in matcher.get_matching_blocks():
        for j in range(block.size):
            out.append(at[lasts[block.b + j]] - ref[block.a + j][1])
    return out


def summary(values: list[float]) -> str:
    if not values:
        return "– | – | –"
    q = statistics.quantiles(values, n=10) if len(values) > 1 else [values[0]] * 9
    return (
        f"{1000 * statistics.median(values):.0f} | {1000 * statistics.fmean(values):.0f} | {1000 * q[8]:.0f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a streaming model (unidirectional encoder)")
    ap.add_argument("--reference", help="a model whose forced alignment gives the word ends (bidirectional)")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--limit", type=int, default=100, help="utterances of the manifest")
    ap.add_argument("--chunks-ms", type=float, nargs="+", default=[40, 100, 200, 400, 1000])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_checkpoint(args.checkpoint, decoder={"name": "greedy"})
    ref_pipe = load_checkpoint(args.reference, decoder={"name": "greedy"}) if args.reference else pipe
    examples, _ = parse_manifest(Path(args.manifest), "audio")
    examples = examples[: args.limit]
    rate = pipe.model.frontend.cfg.sample_rate
    sizes = [max(1, round(rate * ms / 1000)) for ms in args.chunks_ms]
    lat = {c: [] for c in [*sizes, 0]}  # 0: the frame-by-frame limit
    secs = {c: [] for c in sizes}
    texts, refs, ref_texts, audio_s = {c: [] for c in sizes}, [], [], 0.0
    for ex in examples:
        wave = pipe.load(ex.path)
        audio_s += wave.shape[0] / rate
        ends = word_ends(ref_pipe, wave, ex.text)
        refs.append(ex.text)
        if args.reference:
            ref_texts.append(ref_pipe.transcribe(wave.numpy(), sample_rate=rate).text)
        for c in sizes:
            r = stream_once(pipe, wave, c)
            texts[c].append(r["text"])
            secs[c] += r["seconds"]
            lat[c] += word_latencies(ends, pipe.tokenizer.tokens, r["tokens"], r["out_at"])
            if c == sizes[0]:
                at = frame_times(pipe, r["frames"], wave.shape[0])
                lat[0] += word_latencies(ends, pipe.tokenizer.tokens, r["tokens"], at)
    n_words = sum(len(t.split()) for t in refs)
    print(f"{len(examples)} utterances, {audio_s:.1f} s, {n_words} words; torch threads {args.threads}")
    wer = wer_cer(refs, texts[sizes[0]])[0]
    same = all(texts[c] == texts[sizes[0]] for c in sizes)
    print(f"streamed greedy WER {100 * wer:.2f} % (the same text at every chunk size: {same})")
    if args.reference:
        print(f"reference (whole utterance, greedy) WER {100 * wer_cer(refs, ref_texts)[0]:.2f} %")
    print("\n| chunk ms | RTF | compute ms / chunk: mean | p95 | latency ms: median | mean | p90 | words |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| frame | – | – | – | {summary(lat[0])} | {len(lat[0])} |")
    for ms, c in zip(args.chunks_ms, sizes):
        per = sorted(secs[c])
        p95 = per[int(0.95 * (len(per) - 1))]
        print(
            f"| {ms:g} | {sum(per) / audio_s:.4f} | {1000 * statistics.fmean(per):.2f} | {1000 * p95:.2f} | "
            f"{summary(lat[c])} | {len(lat[c])} |"
        )


if __name__ == "__main__":
    main()

"""Does a speech embedding trained on real people carry a model trained on synthetic speech to real voices?

A probe for issue 14 (real voices), outside the pipeline: the same small BiLSTM-CTC (characters,
40 ms frames) is trained twice on the same espeak-ng utterances (asr_grid), once on log-mel
filterbanks (80 bands, 4 frames stacked, speechkit's recipe features) and once on Google's speech
embedding (96 values per 40 ms; the frozen network openWakeWord 0.5.1 ships in its wheel under
``resources/models``, Apache-2.0, trained by Google on real speech), and both are scored on the
synthetic test voices and on a real person (the Asterisk prompts: benchmarks/real_voices.py,
never trained or tuned on). openWakeWord trains wake-word models on synthetic speech only on top of
this embedding; the question is whether it does the same for a CTC recogniser.

    pip install --no-deps openwakeword==0.5.1     # the last release whose wheel holds the models
    python benchmarks/pretrained_embedding.py --data data/asr_grid_12k --train 4000 --steps 2000

The embedding of an output frame reads the 76 mel frames (0.76 s) centred on it, so each frame sees
context a filterbank frame does not; the BiLSTM sees the whole utterance either way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_voices import SAMPLE_RATE, asterisk_items, pocketsphinx_items, read_16k, score  # noqa: E402

from speechkit.decoders.greedy import GreedyConfig, GreedyDecoder  # noqa: E402
from speechkit.metrics import error_counts, rates  # noqa: E402

HOP = 4  # mel frames (10 ms each) per output frame: 40 ms, as the asr_grid recipe's 4× stacking
WINDOW = 76  # mel frames the embedding network reads
VOCAB = ["<blank>", " ", *"abcdefghijklmnopqrstuvwxyz"]
BF16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()  # as the recipe
_sessions = None


def models_dir() -> Path:
    try:
        import openwakeword
    except ImportError:
        raise SystemExit(
            "error: pip install --no-deps openwakeword==0.5.1 (its wheel holds the models)"
        ) from None
    d = Path(openwakeword.__file__).parent / "resources" / "models"
    if not (d / "embedding_model.onnx").is_file():
        raise SystemExit(
            f"error: {d}/embedding_model.onnx is missing: pip install --no-deps openwakeword==0.5.1"
        )
    return d


def _init() -> None:
    global _sessions
    import onnxruntime as ort

    torch.set_num_threads(1)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    d = models_dir()
    _sessions = tuple(
        ort.InferenceSession(str(d / f), opts, providers=["CPUExecutionProvider"])
        for f in ("melspectrogram.onnx", "embedding_model.onnx")
    )


def embedding(audio: np.ndarray) -> np.ndarray:
    """``(N,)`` float32 at 16 kHz → ``(ceil(N / 640), 96)``: one embedding per 40 ms, centred."""
    mel_s, emb_s = _sessions
    n_out = -(-audio.size // (160 * HOP))
    pad = np.zeros(WINDOW // 2 * 160, np.float32)
    x = np.concatenate([pad, audio, pad, np.zeros(160 * HOP * 2, np.float32)])
    # openWakeWord scales the mel model's output this way before the embedding network
    mel = mel_s.run(None, {"input": x[None] * 32767})[0][:, 0] / 10 + 2  # (1, F, 32)
    mel = mel[0]
    starts = np.arange(n_out) * HOP
    starts = np.minimum(starts, mel.shape[0] - WINDOW)
    windows = np.stack([mel[s : s + WINDOW] for s in starts])[..., None].astype(np.float32)
    return emb_s.run(None, {"input_1": windows})[0].reshape(n_out, 96)


def fbank(audio: np.ndarray) -> np.ndarray:
    """``(N,)`` → ``(ceil(N / 640), 320)``: 80 log-mel bands every 10 ms, 4 frames stacked."""
    import torchaudio

    f = torchaudio.compliance.kaldi.fbank(torch.from_numpy(audio)[None] * 32768, num_mel_bins=80,
                                          sample_frequency=SAMPLE_RATE, dither=0.0).numpy()  # fmt: skip
    n_out = -(-audio.size // (160 * HOP))
    f = np.concatenate([f, np.repeat(f[-1:], n_out * HOP - f.shape[0] + HOP, 0)])[: n_out * HOP]
    return f.reshape(n_out, HOP * 80)


def features_of(audio: np.ndarray | str) -> tuple[np.ndarray, np.ndarray]:
    """Both feature kinds of a 16 kHz waveform or an audio file."""
    audio = read_16k(Path(audio)) if isinstance(audio, str) else audio
    return embedding(audio), fbank(audio)


def load(manifest: Path, limit: int) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in manifest.read_text().splitlines()[:limit]]
    return [str(manifest.parent / r["audio_filepath"]) for r in rows], [r["text"] for r in rows]


class Model(nn.Module):
    def __init__(self, dim: int, hidden: int = 192, layers: int = 3) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.rnn = nn.LSTM(dim, hidden, layers, batch_first=True, bidirectional=True, dropout=0.1)
        self.out = nn.Linear(2 * hidden, len(VOCAB))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(self.norm(x))[0]).log_softmax(-1)


def pad(feats: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([f.shape[0] for f in feats])
    x = torch.zeros(len(feats), int(lengths.max()), feats[0].shape[1])
    for i, f in enumerate(feats):
        x[i, : f.shape[0]] = torch.from_numpy(f)
    return x, lengths


def greedy(model: Model, feats: list[np.ndarray]) -> list[str]:
    decode = GreedyDecoder(GreedyConfig(), VOCAB)
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(feats), 64):
            x, lengths = pad(feats[i : i + 64])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=BF16):
                log_probs = model(x).float()
            out += [nbest[0].text for nbest in decode(log_probs, lengths)]
    model.train()
    return out


def train(feats: list[np.ndarray], texts: list[str], steps: int, seed: int, batch: int = 32) -> Model:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = Model(feats[0].shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    targets = [torch.tensor([VOCAB.index(c) for c in t]) for t in texts]
    ctc = nn.CTCLoss(zero_infinity=True)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        idx = rng.choice(len(feats), min(batch, len(feats)), replace=False)
        x, lengths = pad([feats[i] for i in idx])
        for b, n in enumerate(lengths.tolist()):  # two time masks of ≤ 10 % each (SpecAugment's time masks)
            for _ in range(2):
                w = int(rng.integers(0, max(1, n // 10)))
                t0 = int(rng.integers(0, max(1, n - w)))
                x[b, t0 : t0 + w] = 0
        y = [targets[i] for i in idx]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=BF16):
            lp = model(x).float()
        loss = ctc(lp.transpose(0, 1), torch.cat(y), lengths, torch.tensor([len(t) for t in y]))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps:
            rate = step / (time.perf_counter() - start)
            print(f"  step {step}/{steps}  loss {loss.item():.3f}  {rate:.1f} steps/s  "
                  f"ETA {(steps - step) / rate:.0f} s", flush=True)  # fmt: skip
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/asr_grid_12k"))
    ap.add_argument("--train", type=int, default=4000, help="training utterances (the first N)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--sentences", type=int, default=200, help="real sentences (real_voices.py)")
    ap.add_argument("--out", type=Path, help="write the results here (JSON)")
    ap.add_argument(
        "--pocketsphinx",
        type=Path,
        help="also score real_voices.py's other speakers' digits "
        "(the test/data folder of pocketsphinx's sdist)",
    )
    ap.add_argument("--cache", type=Path, help="keep the features here (torch.save) and reuse them next time")
    a = ap.parse_args()
    models_dir()
    torch.set_num_threads(1)
    splits = {"train": load(a.data / "train.jsonl", a.train), "test": load(a.data / "test.jsonl", 10**9)}
    real = asterisk_items(a.sentences)
    jobs = [p for s in splits.values() for p in s[0]] + [it.audio for it in real]
    key = {"data": str(a.data.resolve()), "train": a.train, "sentences": a.sentences, "hop": HOP}
    if a.cache and a.cache.is_file() and (cached := torch.load(a.cache, weights_only=False))["key"] == key:
        feats = cached["feats"]
        print(f"features: {len(feats)} utterances from {a.cache}")
    else:
        start = time.perf_counter()
        with Pool(a.jobs, initializer=_init) as pool:
            feats = []
            for i, f in enumerate(pool.imap(features_of, jobs, chunksize=16), 1):
                feats.append(f)
                if i % 500 == 0 or i == len(jobs):
                    rate = i / (time.perf_counter() - start)
                    print(
                        f"features {i}/{len(jobs)}  {rate:.1f} utt/s  ETA {(len(jobs) - i) / rate:.0f} s",
                        flush=True,
                    )
        if a.cache:
            torch.save({"key": key, "feats": feats}, a.cache)
    if a.pocketsphinx:  # a dozen files: computed every time, outside the cache
        _init()
        others = pocketsphinx_items(a.pocketsphinx)
        real += others
        feats += [features_of(it.audio) for it in others]
    n_train, n_test = len(splits["train"][0]), len(splits["test"][0])
    results = {}
    for k, name in enumerate(("embedding", "fbank")):
        f = [pair[k] for pair in feats]
        train_f, test_f, real_f = f[:n_train], f[n_train : n_train + n_test], f[n_train + n_test :]
        print(f"{name}: training on {n_train} utterances, {f[0].shape[1]} features per 40 ms", flush=True)
        model = train(train_f, splits["train"][1], a.steps, a.seed)
        test_wer = 100 * rates(error_counts(splits["test"][1], greedy(model, test_f)))[0]
        res = {"synthetic test WER": test_wer, **score(real, greedy(model, real_f))}
        results[name] = res
        print(f"{name}: " + ", ".join(f"{m} {v:.1f} %" for m, v in res.items()), flush=True)
    metrics = list(next(iter(results.values())))
    print(f"\n| features | {' | '.join(metrics)} |\n| --- |{' ---: |' * len(metrics)}")
    for name, res in results.items():
        print(f"| {name} | {' | '.join(f'{res[m]:.1f} %' for m in metrics)} |")
    if a.out:
        a.out.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "results": results}, indent=1)
        )


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

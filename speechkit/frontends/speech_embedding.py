"""``speech_embedding``: a frozen speech embedding trained by Google on real people, as a frontend.

Everything speechkit trains on is synthetic, and a filterbank model trained on synthesised voices hears
a real person at chance. Google's speech embedding (the network openWakeWord builds its wake-word models
on, trained on real speech; Apache-2.0) was trained to tell words apart across many real speakers, and
openWakeWord trains on synthetic speech alone on top of it. On the same espeak-ng utterances, a
BiLSTM-CTC on it found a real person's letters and digits in sentences 1.9-3.8× as often as on
filterbanks (benchmarks/README.md, "A speech embedding learned from real people").

The two networks are rebuilt here in torch and their weights read once from the ONNX files that the
``openwakeword`` 0.5.1 wheel ships (``pip install onnx && pip install --no-deps openwakeword==0.5.1``;
its other dependencies are not needed). The weights are buffers, frozen and saved in every checkpoint,
so a trained model loads without the package. The pipeline:

- log-mel: a 512-sample window every 160 samples (no centring), |STFT|² through the file's DFT and
  32-band mel matrices, ``10 log10`` floored at 1e-10 and at the utterance's maximum − 80 dB, then
  ``/ 10 + 2`` (openWakeWord's scaling); the waveform is scaled to 16-bit range first, as there;
- the embedding network: 20 convolutions (batch norm fused) over 76 mel frames × 32 bands, LeakyReLU
  0.2 floored at −0.4, four max-pools → 96 values. Its time convolutions are unpadded, so instead of
  cutting 76-frame windows it runs over a whole utterance at once, one output every 8 mel frames (80 ms)
  — exactly the windows' values, at a fraction of their cost (each mel frame is convolved once instead
  of 19 times); at ``hop_ms=40`` the two offsets, four mel frames apart, share all but the last pool and
  convolution (:meth:`SpeechEmbedding.embed`).

Output frame ``i`` is the embedding of the 76 mel frames starting 38 frames before sample ``i * hop``
(so centred 11 ms after it; zeros pad the waveform at both ends), ``ceil(N / hop)`` frames for ``N``
samples. Each frame reads 0.76 s of audio around it, so frames are not computed from their own samples
alone: no streaming.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

from speechkit.frontends.audio_io import load_audio
from speechkit.frontends.base import Frontend, invalid_setting
from speechkit.functional import mask_padding, masked_standardize
from speechkit.registry import register

SAMPLE_RATE = 16000  # Hz: the networks' rate
MEL_HOP = 160  # samples between mel frames (10 ms)
MEL_WINDOW = 512  # samples per mel frame
CONTEXT = 76  # mel frames the embedding network reads per output
NET_STRIDE = 8  # mel frames between outputs of the network run over a whole utterance (its pooling)
DIM = 96  # values per embedding
CHANNELS = (24, 24, 24, 48, 48, 48, 48, 72, 72, 72, 72, 96, 96, 96, 96, 96, 96, 96, 96)  # convs 0-18
POOL_AFTER = {2: (2, 2), 6: (1, 2), 10: (2, 2), 14: (1, 2), 18: (2, 2)}  # conv index → max-pool (time, mel)
LEFT_PAD = CONTEXT // 2 * MEL_HOP  # zeros before the first sample: output 0 reads 38 mel frames before it
# Zeros after the last: N + LEFT_PAD + RIGHT_PAD samples give M = 1 + (that - 512) // 160 mel frames, and the
# network floor((M - 72) / 4) outputs at the 40 ms hop (its convolutions and pools, composed); this pad
# makes that ceil(N / 640) for every N (and ceil(N / 1280) at 80 ms), without a data-dependent slice.
RIGHT_PAD = MEL_WINDOW + (CONTEXT - 5) * MEL_HOP - LEFT_PAD + 4 * MEL_HOP - 1  # 6 431 samples
NORMALIZE_MODES = ("frame", "utterance", "none")
INSTALL = "pip install onnx && pip install --no-deps openwakeword==0.5.1"


@dataclass
class SpeechEmbeddingConfig:
    """Google's speech embedding: 96 features every ``hop_ms``."""

    sample_rate: int = 16000  # Hz, the networks' only rate: files at other rates are resampled on load
    hop_ms: int = 40  # ms per output frame: 80 (the network's own stride) or 40 (it runs twice)
    # frame (each frame to mean 0 and std 1 over its 96 values, as a layer norm) | utterance | none
    normalize: str = "frame"
    weights: str = ""  # folder holding melspectrogram.onnx and embedding_model.onnx; "" = openwakeword's


def default_weights_dir() -> Path | None:
    """The installed openwakeword package's model folder, or None where it is not installed."""
    try:
        import openwakeword
    except ImportError:
        return None
    return Path(openwakeword.__file__).parent / "resources" / "models"


def read_onnx_weights(folder: Path) -> dict[str, Tensor]:
    """The two networks' weights from ``folder``'s ONNX files, named as this module's buffers."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise RuntimeError(
            f"frontend 'speech_embedding' reads its weights with the onnx package: {INSTALL}"
        ) from None
    files = {name: folder / name for name in ("melspectrogram.onnx", "embedding_model.onnx")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise RuntimeError(
            f"frontend 'speech_embedding': {', '.join(missing)} not found; {INSTALL} "
            "(or frontend.weights=FOLDER holding both files)"
        )
    arrays = {}
    for path in files.values():
        try:
            for t in onnx.load(str(path)).graph.initializer:
                arrays[t.name] = torch.from_numpy(numpy_helper.to_array(t).copy())
        except Exception as e:  # noqa: BLE001 - protobuf's decode errors have no common public base
            raise RuntimeError(
                f"frontend 'speech_embedding': {path} is not a readable ONNX model ({e}); {INSTALL}"
            ) from None
    try:
        return _named(arrays)
    except KeyError as e:
        raise RuntimeError(
            f"frontend 'speech_embedding': {folder} holds other ONNX models (no weight {e}); "
            f"the weights are openWakeWord 0.5.1's: {INSTALL}"
        ) from None


def _named(arrays: dict[str, Tensor]) -> dict[str, Tensor]:
    """The ONNX initialisers under this module's buffer names."""
    out = {
        "dft_real": arrays["0.stft.conv_real.weight"],
        "dft_imag": arrays["0.stft.conv_imag.weight"],
        "mel_matrix": arrays["1.melW"],
    }
    for i in range(len(CHANNELS)):
        stem = f"model/conv2d{'' if i == 0 else f'_{i}'}/Conv2D"
        out[f"conv{i}_weight"] = arrays[f"{stem}_weights_fused_bn"]
        out[f"conv{i}_bias"] = arrays[f"{stem}_bias_fused_bn"]
    out[f"conv{len(CHANNELS)}_weight"] = arrays["model/conv2d_19/Conv2D/ReadVariableOp:0"]
    return out


def _kernel(i: int) -> tuple[int, int]:
    """Conv ``i``'s kernel (time, mel): 3×3 first, then mel (1×3) and time (3×1) by turns; the last 3×1."""
    return (3, 3) if i == 0 else (1, 3) if i % 2 == 1 and i < len(CHANNELS) else (3, 1)


@register("frontend", "speech_embedding", SpeechEmbeddingConfig)
class SpeechEmbedding(Frontend):
    """Waveforms ``(B, N)`` at 16 kHz → Google's speech embedding ``(B, ceil(N / hop), 96)``, frozen."""

    modality = "audio"
    extensions = (".wav", ".flac", ".ogg", ".mp3")
    output_dim = DIM

    def __init__(self, cfg: SpeechEmbeddingConfig) -> None:
        super().__init__()
        if cfg.sample_rate != SAMPLE_RATE:
            raise invalid_setting(
                "speech_embedding", "sample_rate", cfg.sample_rate, f"{SAMPLE_RATE} (the networks' rate)"
            )
        if cfg.hop_ms not in (40, 80):
            raise invalid_setting("speech_embedding", "hop_ms", cfg.hop_ms, "40 or 80")
        if cfg.normalize not in NORMALIZE_MODES:
            raise invalid_setting("speech_embedding", "normalize", cfg.normalize, ", ".join(NORMALIZE_MODES))
        self.cfg = cfg
        self.phases = NET_STRIDE * 10 // cfg.hop_ms  # network runs per utterance (1 or 2)
        self.hop = MEL_HOP * NET_STRIDE // self.phases  # samples per output frame
        self.frame_shift_s = self.hop / SAMPLE_RATE
        shapes = {"dft_real": (257, 1, MEL_WINDOW), "dft_imag": (257, 1, MEL_WINDOW), "mel_matrix": (257, 32)}
        c_in = 1
        for i, c_out in enumerate((*CHANNELS, DIM)):
            shapes[f"conv{i}_weight"] = (c_out, c_in, *_kernel(i))
            if i < len(CHANNELS):
                shapes[f"conv{i}_bias"] = (c_out,)
            c_in = c_out
        from speechkit.checkpoint import rebuilding  # here: checkpoint.py imports the registry's plugins

        folder = Path(cfg.weights) if cfg.weights else default_weights_dir()
        weights = {}  # rebuilding: the checkpoint brings them, whatever this machine has
        if not rebuilding():
            if folder is None:
                raise RuntimeError(
                    f"frontend 'speech_embedding' reads Google's speech embedding from the openwakeword package, "
                    f"which is not installed: {INSTALL} (or frontend.weights=FOLDER holding its two .onnx files)"
                )
            weights = read_onnx_weights(folder)  # or an error naming what is missing
        for name, shape in shapes.items():
            w = weights.get(name, torch.zeros(shape))
            if tuple(w.shape) != shape:
                raise RuntimeError(
                    f"frontend 'speech_embedding': {name} has shape {tuple(w.shape)} in {folder}, "
                    f"expected {shape}: not openWakeWord 0.5.1's model; {INSTALL}"
                )
            self.register_buffer(name, w.float())
        self.has_weights = bool(weights)  # else the checkpoint being rebuilt brings them (load_state_dict)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if f"{prefix}conv0_weight" in state_dict:
            self.has_weights = True

    def extra_repr(self) -> str:
        return f"output_dim={DIM}, hop_ms={self.cfg.hop_ms}, normalize={self.cfg.normalize!r}"

    def load(self, path: Path) -> Tensor:
        """One audio file → mono float32 waveform ``(samples,)`` at 16 kHz."""
        return load_audio(path, SAMPLE_RATE)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """``ceil(N / hop)`` frames for ``N`` samples."""
        return torch.div(lengths + self.hop - 1, self.hop, rounding_mode="floor")

    def log_mel(self, x: Tensor) -> Tensor:
        """Waveforms ``(B, N)`` (zero past each length) → openWakeWord's scaled log-mel ``(B, M, 32)``,
        ``M = 1 + (N - 512) // 160``; the 80 dB floor is each row's own."""
        spec = x[:, None] * 32767.0
        power = (
            F.conv1d(spec, self.dft_real, stride=MEL_HOP) ** 2
            + F.conv1d(spec, self.dft_imag, stride=MEL_HOP) ** 2
        )
        db = 10 * torch.log10((power.transpose(1, 2) @ self.mel_matrix).clamp_min(1e-10))  # (B, M, 32)
        db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - 80.0)
        return db / 10 + 2

    def embed(self, mel: Tensor) -> Tensor:
        """Scaled log-mel ``(B, M, 32)`` → ``(B, T, 96)``: output ``k`` is the network on mel frames
        ``[k * s, k * s + 76)``, ``s`` = 8 at ``hop_ms=80``, 4 at 40.

        Up to the last max-pool every layer is shift-equivariant in time on a grid of 4 mel frames, so a
        window starting 4 frames later sees the same activations shifted by one; only that pool (stride
        2) and the last convolution differ between the two offsets. So the network runs once: the last
        pool slides by one step instead of two, and the last convolution reads every second step
        (dilation 2), which gives both offsets' outputs interleaved."""
        # (B, 1, M, 32), time the height; channels last: 1.5× faster on a CPU than channels first
        h = mel[:, None].contiguous(memory_format=torch.channels_last)
        last = len(CHANNELS)
        for i in range(last):
            w = getattr(self, f"conv{i}_weight").contiguous(memory_format=torch.channels_last)
            h = F.conv2d(h, w, getattr(self, f"conv{i}_bias"), padding=(0, 1) if _kernel(i)[1] == 3 else 0)
            h = F.leaky_relu_(h, 0.2).clamp_min_(-0.4)
            if i in POOL_AFTER and i != last - 1:
                h = F.max_pool2d(h, POOL_AFTER[i])
        h = F.max_pool2d(h, (2, 2), stride=(1, 2))  # the last pool at every offset of the 4-frame grid
        h = F.conv2d(h, getattr(self, f"conv{last}_weight"), dilation=(2, 1))
        h = h[..., 0].transpose(1, 2).contiguous()  # (B, T, 96)
        return h if self.phases == 2 else h[:, ::2]

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Padded waveforms ``(B, N)`` (full scale 1), ``lengths`` ``(B,)`` samples → ``(B, T, 96)``
        (zero past each length), frames ``(B,)``."""
        if not self.has_weights:
            raise RuntimeError(f"frontend 'speech_embedding' has no weights: {INSTALL}, or load a checkpoint")
        if x.dim() != 2:
            raise ValueError(
                f"frontend 'speech_embedding' expects mono waveforms (B, N), got {tuple(x.shape)}"
            )
        lengths = lengths.to(device=x.device, dtype=torch.long)
        frames = self.output_lengths(lengths)
        if x.shape[1] == 0:
            return x.new_zeros(x.shape[0], 0, DIM), frames
        with torch.autocast(x.device.type, enabled=False):
            x = F.pad(mask_padding(x.float(), lengths), (LEFT_PAD, RIGHT_PAD))
            feats = self.embed(self.log_mel(x))  # ceil(N / hop) frames: no slicing, so it traces for export
        if self.cfg.normalize == "frame":
            std = feats.std(-1, unbiased=False, keepdim=True)
            feats = (feats - feats.mean(-1, keepdim=True)) / std.clamp_min(1e-5)
        elif self.cfg.normalize == "utterance":
            feats = masked_standardize(feats, frames)
        return mask_padding(feats, frames), frames


__all__ = ["SpeechEmbedding", "SpeechEmbeddingConfig", "read_onnx_weights", "default_weights_dir"]

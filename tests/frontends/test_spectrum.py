"""The spectrum paths: real FFT, the DFT matrix used for export, and cache-sized chunks on the CPU."""

from __future__ import annotations

import torch

from speechkit.frontends import functional as FF
from speechkit.registry import build


def _batch(lengths=(16000, 9001, 12345)):
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        x[i, :n] = 0.3 * torch.randn(n, generator=g)
    return x, torch.tensor(lengths)


def test_dft_matrix_spectrum_equals_the_fft_spectrum():
    x, _ = _batch()
    window = torch.hann_window(400)
    fft = FF.power_spectrogram(x, window, 512, 160)
    dft = FF.power_spectrogram(x, window, 512, 160, dft=FF.dft_matrix(window, 512))
    assert fft.shape == dft.shape == (3, 98, 257)
    assert torch.allclose(dft, fft, rtol=1e-4, atol=1e-4 * float(fft.max()))


def test_fft_spectrum_matches_a_direct_dft_of_one_frame():
    x, _ = _batch()
    window = torch.hann_window(400, dtype=torch.float64)
    frame = x[1, 5 * 160 : 5 * 160 + 400].double() * window
    want = torch.fft.rfft(frame, n=512).abs() ** 2
    got = FF.power_spectrogram(x.double(), window, 512, 160)[1, 5]
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-9)


def test_features_computed_in_cpu_chunks_equal_the_whole_batch_at_once():
    x, lengths = _batch()
    fe = build("frontend", "mfcc").eval()
    whole, n_whole = fe(x, lengths)
    fe.cpu_chunk_frames = 100  # one utterance (98 frames) a chunk
    chunked, n_chunked = fe(x, lengths)
    assert torch.equal(n_whole, n_chunked)
    assert torch.allclose(whole, chunked, atol=1e-5)

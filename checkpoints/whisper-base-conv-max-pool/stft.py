"""Short-time power spectra of centred frames, as `torch.stft` computes them.

In PyTorch the spectra come from `torch.stft`. While a model is being exported (ONNX, `torch.export`)
the same discrete Fourier transform runs as a strided 1-D convolution with a fixed basis (the windowed
cosines and sines), because ONNX export cannot carry `torch.stft`'s complex output. The two agree to
float32 rounding; PyTorch results stay exactly those the checkpoints were trained with.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def exporting() -> bool:
    """Return True while a model is being traced for export (either ONNX exporter, or `torch.export`)."""
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


def dft_basis(window: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Return the (2F, 1, n_fft) convolution weights of a windowed one-sided DFT: F cosine rows, then F sine rows.

    A window shorter than `n_fft` is centred in the frame, zeros either side, as `torch.stft` does.
    """
    left = (n_fft - window.shape[-1]) // 2
    window = nn.functional.pad(window, (left, n_fft - window.shape[-1] - left))
    angle = 2 * np.pi * np.outer(np.arange(n_fft // 2 + 1), np.arange(n_fft)) / n_fft  # (F, n_fft), float64
    cos_sin = torch.from_numpy(np.concatenate([np.cos(angle), -np.sin(angle)]).astype(np.float32))
    return (cos_sin.to(window.device) * window.to(torch.float32))[:, None, :]


def power_spectrogram(wave: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor,
                      pad_mode: str = "reflect") -> torch.Tensor:
    """Return |STFT|^2 of `wave` (..., N): (..., 1 + n_fft // 2, 1 + N // hop), frames centred (padded by n_fft // 2)."""
    if not exporting():
        flat = wave.reshape(-1, wave.shape[-1])
        stft = torch.stft(flat, n_fft, hop, win_length=window.shape[-1], window=window, center=True,
                          pad_mode=pad_mode, return_complex=True)
        power = stft.abs() ** 2  # (S, F, T)
    else:
        flat = wave.reshape(-1, 1, wave.shape[-1])  # (S, 1, N)
        flat = nn.functional.pad(flat, (n_fft // 2, n_fft // 2), mode=pad_mode)
        spectrum = nn.functional.conv1d(flat, dft_basis(window, n_fft), stride=hop)  # (S, 2F, T)
        real, imag = spectrum.chunk(2, dim=1)
        power = real ** 2 + imag ** 2
    return power.reshape(*wave.shape[:-1], *power.shape[-2:])

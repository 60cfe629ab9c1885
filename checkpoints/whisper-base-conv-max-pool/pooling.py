"""Pooling heads: (B, T, D) frames and a (B, T) frame mask (True = real frame) -> (B, D') vectors.

Every head ignores padded frames exactly, so padding a batch never changes an output.
"""
from __future__ import annotations

import torch
from torch import nn


class MaxPool(nn.Module):
    """Largest value of each feature over the real frames."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        self.output_dim = dim

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return hidden.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)  # (B, D)


class MeanPool(nn.Module):
    """Average of each feature over the real frames."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        self.output_dim = dim

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(hidden.dtype)[..., None]  # (B, T, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class MeanStdPool(nn.Module):
    """Average and standard deviation of each feature over the real frames, side by side."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        self.output_dim = 2 * dim

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(hidden.dtype)[..., None]  # (B, T, 1)
        count = weights.sum(dim=1).clamp(min=1.0)
        mean = (hidden * weights).sum(dim=1) / count
        var = (((hidden - mean[:, None]) ** 2) * weights).sum(dim=1) / count
        return torch.cat([mean, var.clamp(min=1e-8).sqrt()], dim=-1)  # (B, 2D)


class AttentionPool(nn.Module):
    """Attention-weighted mean and standard deviation of the frames (a learned score per frame)."""

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.output_dim = 2 * dim

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(hidden).squeeze(-1).masked_fill(~mask, float("-inf"))  # (B, T)
        weights = torch.softmax(scores, dim=1)[..., None]  # (B, T, 1)
        mean = (weights * hidden).sum(dim=1)
        var = (weights * (hidden - mean[:, None]) ** 2).sum(dim=1)
        return torch.cat([mean, var.clamp(min=1e-6).sqrt()], dim=-1)  # (B, 2D)


class ConvMaxPool(nn.Module):
    """A temporal convolution over the frames, then the max over real frames.

    Leaky, not plain ReLU: with ReLU every channel could go negative on every clip early in training (lr 1e-3), after
    which no gradient reaches the convolution and the head answers one emotion for every clip, as 2 of 5 RAVDESS folds
    of `whisper_cat_conv_max` did (UA 0.125, 8 classes).
    """

    def __init__(self, dim: int, channels: int = 256, kernel_size: int = 5):
        super().__init__()
        self.conv = nn.Conv1d(dim, channels, kernel_size, padding=kernel_size // 2)
        self.output_dim = channels

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Zeroed padding looks to the convolution exactly like its own zero padding of a lone clip.
        hidden = hidden.masked_fill(~mask[..., None], 0.0).transpose(1, 2)  # (B, D, T)
        frames = nn.functional.leaky_relu(self.conv(hidden)).transpose(1, 2)  # (B, T, C)
        return MaxPool(self.output_dim)(frames, mask)


POOLINGS = {"max": MaxPool, "mean": MeanPool, "mean_std": MeanStdPool, "attention": AttentionPool,
            "conv_max": ConvMaxPool}
PARAMETER_FREE_POOLINGS = ("max", "mean", "mean_std")  # what embedding_norm can follow

"""1-D CNN on the raw waveform, the original design's two presets."""
from __future__ import annotations

import torch
from torch import nn

# preset -> (kernel sizes, channels); each block is conv -> ReLU -> batch norm -> max pool 2
PRESETS = {
    "light": ((19, 17, 15, 13), (32, 64, 128, 256)),
    "deep": ((21, 19, 17, 15, 13, 11, 9), (32, 64, 128, 256, 512, 1024, 1024)),
}


class CNN1DBackbone(nn.Module):
    """Raw waveform (B, N) -> frames (B, 1, T, C) and their mask (B, T)."""

    normalize_waveform = True  # zero mean, unit variance per clip: gain does not matter

    def __init__(self, config):
        super().__init__()
        if config.cnn_preset not in PRESETS:
            raise ValueError(f"unknown cnn_preset {config.cnn_preset!r}; one of {sorted(PRESETS)}")
        kernels, channels = PRESETS[config.cnn_preset]
        self.strides = [config.cnn_first_stride] + [1] * (len(kernels) - 1)
        self.kernels = kernels
        blocks, in_ch = [], 1
        for kernel, out_ch, stride in zip(kernels, channels, self.strides):
            blocks.append(nn.ModuleDict({
                "conv": nn.Conv1d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2),
                "norm": nn.BatchNorm1d(out_ch),
            }))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.output_dim, self.num_layers = in_ch, 1

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        x = input_values[:, None]  # (B, 1, N)
        lengths = attention_mask.sum(-1).long() if attention_mask is not None else None  # None: every sample real
        for block, kernel, stride in zip(self.blocks, self.kernels, self.strides):
            x = nn.functional.max_pool1d(block["norm"](torch.relu(block["conv"](x))), 2)
            if lengths is not None:
                lengths = ((lengths + 2 * (kernel // 2) - kernel) // stride + 1) // 2
                # zero the padding so the next conv sees what it sees past the end of a lone clip
                x = x * (torch.arange(x.shape[-1], device=x.device)[None] < lengths[:, None])[:, None]
        mask = (torch.arange(x.shape[-1], device=x.device)[None] < lengths[:, None] if lengths is not None
                else torch.ones_like(x[:, 0], dtype=torch.bool))  # (B, T)
        return x.transpose(1, 2)[:, None], mask  # (B, 1, T, C), (B, T)

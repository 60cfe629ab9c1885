"""EmotionClassifier: backbone -> layer mix -> projector -> pooling -> classifier, a `PreTrainedModel`."""
from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from config import EmotionConfig
from models.cnn1d import CNN1DBackbone
from models.encoders import HFEncoderBackbone, WhisperBackbone
from models.pooling import POOLINGS

BACKBONES = {
    "cnn1d": CNN1DBackbone,
    "whisper": WhisperBackbone,
    "wav2vec2": HFEncoderBackbone,
    "hubert": HFEncoderBackbone,
    "wavlm": HFEncoderBackbone,
    "data2vec-audio": HFEncoderBackbone,
}


class LayerMix(nn.Module):
    """(B, L, T, D) -> (B, T, D): a learned softmax-weighted sum of the layers, or the last one."""

    def __init__(self, num_layers: int, weighted: bool, normalize: bool):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers)) if weighted else None
        self.normalize = normalize

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        if self.normalize:  # encoder layers differ in scale by orders of magnitude; put them on one footing
            layers = nn.functional.layer_norm(layers, layers.shape[-1:])
        if self.weights is None:
            return layers[:, -1]
        return torch.einsum("bltd,l->btd", layers, torch.softmax(self.weights, dim=0))


class EmotionClassifier(PreTrainedModel):
    """Speech emotion classifier; `forward` takes the raw waveform or cached encoder layers."""

    config_class = EmotionConfig
    base_model_prefix = "emotion"
    main_input_name = "input_values"

    def __init__(self, config: EmotionConfig):
        super().__init__(config)
        if config.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {config.backbone!r}; one of {sorted(BACKBONES)}")
        if config.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {config.pooling!r}; one of {sorted(POOLINGS)}")
        self.backbone = BACKBONES[config.backbone](config)
        self.layer_mix = LayerMix(self.backbone.num_layers, config.layer_weighted, config.normalize_layers)
        dim = self.backbone.output_dim
        if config.projector_dim:
            self.projector, dim = nn.Linear(dim, config.projector_dim), config.projector_dim
        else:
            self.projector = nn.Identity()
        self.pool = POOLINGS[config.pooling](dim, config.pool_hidden) if config.pooling in ("attention", "conv_max") \
            else POOLINGS[config.pooling](dim)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(self.pool.output_dim, config.num_labels)
        self.post_init()

    def _init_weights(self, module):
        # only the new head is initialised here; pretrained encoder weights are loaded afterwards
        if isinstance(module, nn.Linear) and module is self.classifier:
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)

    def encode(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Return the backbone's layers (B, L, T, D) and frame mask (B, T): what the cache stores."""
        return self.backbone(input_values, attention_mask)

    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        encoder_layers: torch.Tensor | None = None,  # (B, L, T, D) cached backbone output
        frame_mask: torch.Tensor | None = None,  # (B, T) with encoder_layers
        **kwargs,
    ) -> SequenceClassifierOutput:
        if encoder_layers is None:
            encoder_layers, frame_mask = self.encode(input_values, attention_mask)
        hidden = self.projector(self.layer_mix(encoder_layers.to(self.dtype)))  # (B, T, D)
        logits = self.classifier(self.dropout(self.pool(hidden, frame_mask.bool())))  # (B, C)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

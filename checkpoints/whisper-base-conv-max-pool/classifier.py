"""EmotionClassifier: backbone -> layer mix -> projector -> pooling -> classifier, a `PreTrainedModel`.

Every module of `models/` is imported relatively, so `save_pretrained` copies this file and everything it
imports into the checkpoint (transformers' custom-code mechanism, `auto_map` in config.json): the checkpoint
loads with `trust_remote_code=True` where this project is not installed.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from .configuration import EmotionConfig
from .cnn1d import CNN1DBackbone
from .encoders import HFEncoderBackbone, WhisperBackbone
from .key_segments import KeySegmentCNNBiLSTM
from .pooling import PARAMETER_FREE_POOLINGS, POOLINGS
from .spectral import LogMelCNN, MelEfficientNet, MFCCLSTM

BACKBONES = {
    "cnn1d": CNN1DBackbone,
    "whisper": WhisperBackbone,
    "wav2vec2": HFEncoderBackbone,
    "hubert": HFEncoderBackbone,
    "wavlm": HFEncoderBackbone,
    "data2vec-audio": HFEncoderBackbone,
    "logmel_cnn": LogMelCNN,
    "mfcc_lstm": MFCCLSTM,
    "keyseg_cnn_bilstm": KeySegmentCNNBiLSTM,
    "mel_efficientnet": MelEfficientNet,
}


class LastLayer(nn.Module):
    """(B, L, T, D) -> (B, T, D): the top layer only."""

    text = "last layer"

    def __init__(self, num_layers: int, dim: int):
        super().__init__()
        self.output_dim = dim

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        return layers[:, -1]


class WeightedLayers(LastLayer):
    """(B, L, T, D) -> (B, T, D): a learned softmax-weighted sum of the layers."""

    text = "learned weighted sum of all layers"

    def __init__(self, num_layers: int, dim: int):
        super().__init__(num_layers, dim)
        self.weights = nn.Parameter(torch.zeros(num_layers))

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bltd,l->btd", layers, torch.softmax(self.weights, dim=0))


class ConcatLayers(LastLayer):
    """(B, L, T, D) -> (B, T, L*D): every layer side by side, so the projector learns one map per layer."""

    text = "all layers side by side"

    def __init__(self, num_layers: int, dim: int):
        super().__init__(num_layers, dim * num_layers)

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        return layers.permute(0, 2, 1, 3).flatten(2)


LAYER_MIXES = {"last": LastLayer, "weighted": WeightedLayers, "concat": ConcatLayers}


def pool_frames(layers: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average every k consecutive real frames: (B, L, T, D), (B, T) -> (B, L, ceil(T/k), D), mask."""
    pad = -layers.shape[2] % k
    layers = nn.functional.pad(layers * mask[:, None, :, None], (0, 0, 0, pad))
    mask = nn.functional.pad(mask, (0, pad))
    B, L, T, D = layers.shape
    counts = mask.view(B, T // k, k).sum(-1)  # (B, T/k)
    summed = layers.view(B, L, T // k, k, D).sum(3)
    return summed / counts.clamp(min=1)[:, None, :, None], counts > 0


class EmotionClassifier(PreTrainedModel):
    """Speech emotion classifier; `forward` takes the raw waveform or cached encoder layers."""

    config_class = EmotionConfig
    base_model_prefix = "emotion"
    main_input_name = "input_values"

    def __init__(self, config: EmotionConfig):
        super().__init__(config)
        if config.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {config.backbone!r}; one of {sorted(BACKBONES)}")
        if config.layer_mix not in LAYER_MIXES:
            raise ValueError(f"unknown layer_mix {config.layer_mix!r}; one of {sorted(LAYER_MIXES)}")
        if config.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {config.pooling!r}; one of {sorted(POOLINGS)}")
        self.backbone = BACKBONES[config.backbone](config)
        if not 0 <= config.first_layer < self.backbone.num_layers:
            raise ValueError(f"first_layer {config.first_layer}: the backbone has layers 0 to {self.backbone.num_layers - 1}")
        self.layer_mix = LAYER_MIXES[config.layer_mix](self.backbone.num_layers - config.first_layer,
                                                       self.backbone.output_dim)
        dim = self.layer_mix.output_dim
        if config.projector_dim:
            self.projector, dim = nn.Linear(dim, config.projector_dim), config.projector_dim
        else:
            self.projector = nn.Identity()
        self.pool = POOLINGS[config.pooling](dim, config.pool_hidden)
        self.dropout = nn.Dropout(config.classifier_dropout)
        hidden = config.classifier_hidden
        self.classifier = nn.Linear(self.pool.output_dim, config.num_labels) if not hidden else nn.Sequential(
            nn.Linear(self.pool.output_dim, hidden), nn.ReLU(), nn.Dropout(config.classifier_dropout),
            nn.Linear(hidden, config.num_labels))
        if self.normalizes:
            if config.embedding_norm != "posthoc" and any(
                    p.requires_grad for m in (self.layer_mix, self.projector, self.pool) for p in m.parameters()):
                raise ValueError("embedding_norm standardises the pooled embedding with statistics of groups of clips: the "
                                 "path to it must have no learned weights (layer_mix last or concat, projector_dim 0, "
                                 f"pooling {'/'.join(PARAMETER_FREE_POOLINGS)}); a head with learned weights there "
                                 "adapts with embedding_norm posthoc")
            # statistics for a clip heard alone: the training groups' average (set by train.py, saved with the weights);
            # with posthoc, the training clips' own, the scale the head learned on
            self.register_buffer("embedding_mean", torch.zeros(self.pool.output_dim))
            self.register_buffer("embedding_std", torch.ones(self.pool.output_dim))
            # where calm (neutral) speech sits in a standardised group, on average: a user's few seconds of calm speech
            # then place that user's own mean (normalization.from_calm_speech)
            self.register_buffer("neutral_offset", torch.zeros(self.pool.output_dim))
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Load as `PreTrainedModel` does; a head-only checkpoint (config `shared_encoder`, models/shared_encoder.py)
        gets the frozen encoder its config names, loaded once per process and shared by every head that names it."""
        from .shared_encoder import load_head_only  # a relative import: transformers copies that file too

        folder = Path(str(pretrained_model_name_or_path))
        config = kwargs.get("config")
        if not isinstance(config, EmotionConfig):
            config = None
            if (folder / "config.json").is_file():
                import json

                if not json.loads((folder / "config.json").read_text()).get("shared_encoder"):
                    return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
                config = EmotionConfig.from_pretrained(folder)
        if config is None or not getattr(config, "shared_encoder", None) or not folder.is_dir():
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        return load_head_only(cls, folder, config, kwargs.get("dtype", kwargs.get("torch_dtype")))

    @property
    def shares_encoder(self) -> bool:
        """Whether this model's backbone is a shared, frozen encoder (loaded from a head-only checkpoint)."""
        return bool(getattr(self.config, "shared_encoder", None))

    @property
    def normalizes(self) -> bool:
        return self.config.embedding_norm != "none"

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as `PreTrainedModel` does, with this code and the windowed `pipeline("audio-classification")` beside."""
        from .audio_pipeline import custom_pipelines  # a relative import: transformers copies that file too

        self.config.custom_pipelines = custom_pipelines()
        shared = (self.config.shared_encoder, self.config.shared_encoder_sha256) if self.shares_encoder else None
        if shared:  # the full weights are written: the copy is self-contained, it names no shared encoder
            self.config.shared_encoder = self.config.shared_encoder_sha256 = None
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            if shared:
                self.config.shared_encoder, self.config.shared_encoder_sha256 = shared

    def _init_weights(self, module):
        pass  # PyTorch's own initialisation for the new head; pretrained encoder weights are loaded afterwards

    def encode(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Return the backbone's layers (B, L, T, D) and frame mask (B, T): what the cache stores."""
        layers, mask = self.backbone(input_values, attention_mask)
        if self.config.normalize_layers:  # encoder layers differ in scale by orders of magnitude
            layers = nn.functional.layer_norm(layers, (self.backbone.output_dim,))  # a constant size, for export
        if self.config.frame_pooling > 1:
            layers, mask = pool_frames(layers, mask, self.config.frame_pooling)
        return layers, mask

    def pool_layers(self, encoder_layers: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, T, D) layers and (B, T) mask -> (B, F) pooled embedding, before any normalisation."""
        layers = encoder_layers[:, self.config.first_layer:].to(self.dtype)  # the layers the head reads
        hidden = self.projector(self.layer_mix(layers))  # (B, T, D)
        return self.pool(hidden, frame_mask.bool())

    def embed(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Raw 16 kHz audio (B, N) -> (B, F) pooled embedding: what the classifier reads, before normalisation."""
        return self.pool_layers(*self.encode(input_values, attention_mask))

    def classify(self, embeddings: torch.Tensor, embedding_mean: torch.Tensor | None = None,
                 embedding_std: torch.Tensor | None = None) -> torch.Tensor:
        """(B, F) embeddings -> (B, C) calibrated logits (divided by the calibration temperature of the mode).

        With embedding_norm, each embedding is standardised with its group's statistics (F,) or (B, F) when given
        (a corpus, speaker, folder or user: the adapted mode), else with the training groups' average kept in the
        checkpoint (a clip judged alone). With embedding_norm posthoc (a head trained on raw embeddings), the
        standardised embedding is then put back on the training clips' scale, the one the head learned on: alone, that
        leaves the embedding as it is.
        """
        raw = embeddings
        if self.normalizes:
            mean = self.embedding_mean if embedding_mean is None else embedding_mean.to(embeddings)
            std = self.embedding_std if embedding_std is None else embedding_std.to(embeddings)
            embeddings = (embeddings - mean) / std
            if self.config.embedding_norm == "posthoc":
                embeddings = self.embedding_mean + self.embedding_std * embeddings
        logits = self.classifier(self.dropout(embeddings))
        return logits / self.temperature(raw, "adapted" if embedding_mean is not None else "alone")

    def temperature(self, embeddings: torch.Tensor, mode: str) -> torch.Tensor | float:
        """Return the calibration temperature of `mode` ("alone" or "adapted"): one number, or one per clip (B, 1)
        growing with the clip's distance from the training data (its mean squared embedding standardised with the
        model's statistics, whatever statistics judge it)."""
        modes = self.config.calibration
        if not modes:
            return self.config.calibration_temperature
        fit = modes.get(mode) or modes["alone"]
        if not fit.get("slope") or not self.normalizes:
            return float(math.exp(fit["intercept"]))
        novelty = ((embeddings - self.embedding_mean) / self.embedding_std).pow(2).mean(-1, keepdim=True)
        log_t = fit["intercept"] + fit["slope"] * novelty.clamp_min(1e-6).log()
        return log_t.clamp(math.log(0.05), math.log(50.0)).exp()

    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        encoder_layers: torch.Tensor | None = None,  # (B, L, T, D) cached backbone output
        frame_mask: torch.Tensor | None = None,  # (B, T) with encoder_layers
        embeddings: torch.Tensor | None = None,  # (B, F) pooled embeddings (a parameter-free path, cached)
        embedding_mean: torch.Tensor | None = None,  # (B, F) or (F,): the group statistics of each embedding
        embedding_std: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        if embeddings is None:
            if encoder_layers is None:
                encoder_layers, frame_mask = self.encode(input_values, attention_mask)
            embeddings = self.pool_layers(encoder_layers, frame_mask)
        logits = self.classify(embeddings, embedding_mean, embedding_std)  # (B, C)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


# save_pretrained writes auto_map into config.json and copies the code: the checkpoint is self-contained
EmotionClassifier.register_for_auto_class("AutoModelForAudioClassification")

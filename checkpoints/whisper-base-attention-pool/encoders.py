"""Pretrained speech encoders from `transformers` as backbones: the Whisper encoder and the wav2vec2 family.

Each takes the raw 16 kHz waveform (B, N) and its sample mask, and returns every hidden layer
(B, L, T, D) with the frame mask (B, T), so a head can use the last layer or a weighted sum.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, WhisperConfig, WhisperForAudioClassification
from transformers.audio_utils import mel_filter_bank
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from .stft import exporting, power_spectrogram

ENCODER_MODES = ("frozen", "finetune", "freeze_feature_encoder")


def _set_trainable(layers: nn.ModuleList, everything: nn.Module, mode: str, top: int, frontend: nn.Module | None):
    """Freeze or unfreeze encoder parameters for `mode` (see ENCODER_MODES)."""
    if mode not in ENCODER_MODES:
        raise ValueError(f"unknown encoder_mode {mode!r}; one of {ENCODER_MODES}")
    everything.requires_grad_(mode != "frozen")
    if mode == "frozen":
        return
    if frontend is not None and mode == "freeze_feature_encoder":
        frontend.requires_grad_(False)
    if top:  # only the top layers learn
        everything.requires_grad_(False)
        for layer in layers[-top:]:
            layer.requires_grad_(True)


class WhisperBackbone(nn.Module):
    """The Whisper encoder run on each clip's own length, with a key-padding mask in every layer."""

    normalize_waveform = False  # Whisper's log-mel has its own level normalisation
    hop, n_fft = 160, 400
    min_samples = n_fft  # shorter clips are zero-padded to this length

    def __init__(self, config):
        super().__init__()
        self.encoder = WhisperEncoder(WhisperConfig(**config.encoder_config))
        # numpy, turned into tensors on first use: `from_pretrained` builds modules on the meta device and
        # would leave non-persistent buffers empty, and persistent ones would change the checkpoint's keys
        self.mel_numpy = mel_filter_bank(num_frequency_bins=1 + self.n_fft // 2, num_mel_filters=self.encoder.num_mel_bins,
                                         min_frequency=0.0, max_frequency=8000.0, sampling_rate=16000,
                                         norm="slaney", mel_scale="slaney").T.astype(np.float32)  # (M, F)
        self.stft_constants: dict = {}
        self.output_dim = self.encoder.config.d_model
        self.num_layers = len(self.encoder.layers) + 1

    @staticmethod
    def load_encoder(name_or_path: str) -> tuple[dict, dict]:
        """Return (encoder config dict, encoder state dict) from a hub id or a local folder."""
        model = WhisperForAudioClassification.from_pretrained(name_or_path, dtype=torch.float32)
        return model.config.to_dict(), model.encoder.state_dict()

    def load_pretrained(self, state: dict) -> None:
        self.encoder.load_state_dict(state)

    def set_trainable(self, mode: str, top: int = 0) -> None:
        _set_trainable(self.encoder.layers, self.encoder, mode, top, frontend=None)

    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """Whisper's log-mel of clips (..., N) on their own length -> (..., M, N // hop), levels set per clip."""
        if audio.device not in self.stft_constants:
            self.stft_constants[audio.device] = (torch.hann_window(self.n_fft, device=audio.device),
                                                 torch.from_numpy(self.mel_numpy).to(audio.device))
        window, mel_filters = self.stft_constants[audio.device]
        power = power_spectrogram(audio, self.n_fft, self.hop, window)[..., :-1]  # (..., F, frames)
        log_spec = (mel_filters @ power).clamp(min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.amax(dim=(-2, -1), keepdim=True) - 8.0)
        return (log_spec + 4.0) / 4.0

    def mels(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the log-mel of each clip (B, M, F), zero after a clip's end, and each clip's mel length (None: all full)."""
        if attention_mask is None:  # clips of one length: one batched log-mel (what an ONNX export traces)
            short = 0 if exporting() else self.min_samples - input_values.shape[-1]  # an export pads before (export.py)
            return self.log_mel(nn.functional.pad(input_values, (0, short)) if short > 0 else input_values), None
        lengths = attention_mask.sum(-1).long().tolist()
        mels = [self.log_mel(wave[:n]) if n >= self.min_samples else
                self.log_mel(nn.functional.pad(wave[:n], (0, self.min_samples - n))) for wave, n in zip(input_values, lengths)]
        mel_len = torch.tensor([m.shape[-1] for m in mels], device=input_values.device)
        return nn.utils.rnn.pad_sequence([m.T for m in mels], batch_first=True).transpose(1, 2), mel_len

    def frames(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Return the input embedding (B, T, D) (the convolutions' output with positions: hidden state 0), the frame
        mask (B, T) and the key-padding bias (B, 1, 1, T) every transformer layer takes (None: every frame real)."""
        mel, mel_len = self.mels(input_values, attention_mask)  # (B, M, F), (B,)
        enc = self.encoder
        x = nn.functional.gelu(enc.conv1(mel))
        if mel_len is not None:  # zero padding, as a lone clip sees
            x = x * (torch.arange(mel.shape[-1], device=mel.device)[None] < mel_len[:, None])[:, None]
        x = nn.functional.gelu(enc.conv2(x)).transpose(1, 2)  # (B, T, D)
        if not exporting() and x.shape[1] > enc.max_source_positions:
            raise ValueError(f"clip of {x.shape[1] / 50:.1f} s is longer than the encoder's 30 s: score it in windows")
        x = x + enc.embed_positions.weight[: x.shape[1]]
        if mel_len is None:
            return x, torch.ones_like(x[..., 0], dtype=torch.bool), None  # (B, T): every frame real
        mask = torch.arange(x.shape[1], device=x.device)[None] < ((mel_len + 1) // 2)[:, None]  # (B, T)
        return x, mask, self.padding_bias(mask, x.dtype)

    @staticmethod
    def padding_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B, T) frame mask -> (B, 1, 1, T) attention bias: padded keys get no attention."""
        bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
        return bias[:, None, None, :]

    def run_layers(self, x: torch.Tensor, bias: torch.Tensor | None, start: int = 0, stop: int | None = None
                   ) -> list[torch.Tensor]:
        """Run transformer layers start..stop-1 on hidden state `start` (B, T, D); return hidden states start+1..stop,
        the encoder's last one through its final layer norm (stop None: to the top)."""
        stop = len(self.encoder.layers) if stop is None else stop
        out = []
        for layer in self.encoder.layers[start:stop]:
            x = layer(x, bias)
            out.append(x)
        if out and stop == len(self.encoder.layers):
            out[-1] = self.encoder.layer_norm(x)
        return out

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        x, mask, bias = self.frames(input_values, attention_mask)
        layers = [x, *self.run_layers(x, bias)]
        return torch.stack(layers, dim=1), mask  # (B, L, T, D), (B, T)


class HFEncoderBackbone(nn.Module):
    """wav2vec2, HuBERT, WavLM or data2vec-audio from `transformers`.

    Models whose feature encoder uses group norm (wav2vec2-base, HuBERT-base) were trained
    without an attention mask and cannot honour padding: their outputs for a padded clip differ
    slightly from the clip alone. Batch such models by length, or score one clip at a time.
    """

    normalize_waveform = True

    def __init__(self, config):
        super().__init__()
        enc_config = AutoConfig.for_model(**config.encoder_config)
        self.encoder = AutoModel.from_config(enc_config)
        self.output_dim = enc_config.hidden_size
        self.num_layers = enc_config.num_hidden_layers + 1
        self.use_mask = getattr(enc_config, "feat_extract_norm", "layer") == "layer"

    @staticmethod
    def load_encoder(name_or_path: str) -> tuple[dict, dict]:
        model = AutoModel.from_pretrained(name_or_path, dtype=torch.float32)
        return model.config.to_dict(), model.state_dict()

    def load_pretrained(self, state: dict) -> None:
        self.encoder.load_state_dict(state)

    def set_trainable(self, mode: str, top: int = 0) -> None:
        _set_trainable(self.encoder.encoder.layers, self.encoder, mode, top, frontend=self.encoder.feature_extractor)

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_values, dtype=torch.long)
        out = self.encoder(input_values, attention_mask=attention_mask if self.use_mask else None,
                           output_hidden_states=True)
        layers = torch.stack(out.hidden_states, dim=1)  # (B, L, T, D)
        frames = self.encoder._get_feat_extract_output_lengths(attention_mask.sum(-1))
        mask = torch.arange(layers.shape[2], device=layers.device)[None] < frames[:, None]
        return layers, mask

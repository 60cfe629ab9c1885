"""Backbones on spectral features, trained from scratch: a log-mel 2-D CNN, an MFCC stacked LSTM and an
image CNN (EfficientNet) on mel spectrograms.

Each takes the raw 16 kHz waveform (B, N) with its sample mask and computes its features inside
`forward`, one clip at a time on the clip's own length, so every checkpoint loads with the same
`Wav2Vec2FeatureExtractor`, `infer.py` and `pipeline("audio-classification")`, and padding a batch
changes no output. Each returns (layers (B, 1, T, D), frame mask (B, T)) like the other backbones.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn
from transformers import EfficientNetConfig, EfficientNetModel
from transformers.audio_utils import mel_filter_bank

from .stft import power_spectrogram
from .waveform import SAMPLE_RATE, peak_normalize, trim_silence

TOP_DB = 80.0  # log-mel floor under the clip's loudest bin (as librosa.power_to_db): digital silence is no outlier

logger = logging.getLogger(__name__)


class LogMel(nn.Module):
    """Log-mel power spectrogram in dB: (..., N) samples -> (..., M, 1 + N // hop) centred frames."""

    def __init__(self, n_mels: int, n_fft: int, hop: int, win_length: int | None = None, min_samples: int = 0):
        super().__init__()
        self.n_fft, self.hop, self.win_length = n_fft, hop, win_length or n_fft
        self.min_samples = max(n_fft, min_samples)  # shorter clips are zero-padded to this length first
        mel = mel_filter_bank(num_frequency_bins=1 + n_fft // 2, num_mel_filters=n_mels, min_frequency=0.0,
                              max_frequency=SAMPLE_RATE / 2, sampling_rate=SAMPLE_RATE, norm="slaney",
                              mel_scale="slaney")
        # saved with the weights: `from_pretrained` builds the model on the meta device and leaves
        # non-persistent buffers uninitialised (garbage or NaN) after loading
        self.register_buffer("filters", torch.tensor(mel.T, dtype=torch.float32))  # (M, F)
        self.register_buffer("window", torch.hann_window(self.win_length))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.shape[-1] < self.min_samples:
            wave = nn.functional.pad(wave, (0, self.min_samples - wave.shape[-1]))
        flat = wave.reshape(-1, wave.shape[-1])
        power = power_spectrogram(flat, self.n_fft, self.hop, self.window, pad_mode="constant")  # (S, F, T), as librosa
        db = 10.0 * torch.log10(self.filters @ power + 1e-10)  # (S, M, T)
        return db.reshape(*wave.shape[:-1], *db.shape[-2:])


def floor_db(db: torch.Tensor) -> torch.Tensor:
    """Return the dB values `db` floored at TOP_DB under their maximum."""
    return torch.maximum(db, db.max() - TOP_DB)


def standardize(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Return `x` z-scored over `dim` (None: over every value)."""
    if dim is None:
        return (x - x.mean()) / x.std(unbiased=False).clamp(min=1e-5)
    return (x - x.mean(dim, keepdim=True)) / x.std(dim, unbiased=False, keepdim=True).clamp(min=1e-5)


def clips(input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> list[torch.Tensor]:
    """Return each clip of the batch cut to its own length (the mask's count of real samples)."""
    if attention_mask is None:
        return list(input_values)
    return [wave[:n] for wave, n in zip(input_values, attention_mask.sum(-1).long().tolist())]


def pad_time(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (..., T_i) tensors into (B, ..., T) with zeros after each one's end; return it and the lengths (B,)."""
    lengths = torch.tensor([f.shape[-1] for f in features], device=features[0].device)
    padded = torch.zeros(len(features), *features[0].shape[:-1], int(lengths.max()), device=features[0].device)
    for i, f in enumerate(features):
        padded[i, ..., : f.shape[-1]] = f
    return padded, lengths


def time_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(B,) lengths -> (B, frames) bool mask, True for real frames."""
    return torch.arange(frames, device=lengths.device)[None] < lengths[:, None]


class LogMelCNN(nn.Module):
    """Log-mel 2-D CNN: 40 log-mel bands (n_fft 1024, hop 512) -> two conv blocks (32 then 64 filters, 5x5,
    ReLU, 2x2 max pool) -> dense 1024 per frame + dropout 0.4 -> frames for the pooling head.

    Every clip keeps its own length: the pooling head, not a fixed 40-frame cut, handles the variable length.
    """

    normalize_waveform = False  # the log-mel is z-scored per clip: gain does not matter
    n_fft, hop = 1024, 512

    def __init__(self, config):
        super().__init__()
        n_mels = config.n_mels or 40
        self.mel = LogMel(n_mels, self.n_fft, self.hop, min_samples=4 * self.hop)  # >= 4 frames: 1 after two pools
        self.convs = nn.ModuleList([nn.Conv2d(1, 32, 5, padding=2), nn.Conv2d(32, 64, 5, padding=2)])
        self.dense = nn.Linear(64 * (n_mels // 4), 1024)
        self.dropout = nn.Dropout(0.4)
        self.output_dim, self.num_layers = 1024, 1

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        x, lengths = pad_time([standardize(floor_db(self.mel(w))) for w in clips(input_values, attention_mask)])
        x = x[:, None]  # (B, 1, M, T)
        for conv in self.convs:
            # zero the padding so each conv sees what it sees past the end of a lone clip
            x = x * time_mask(lengths, x.shape[-1])[:, None, None]
            x = nn.functional.max_pool2d(torch.relu(conv(x)), 2)  # (B, C, M/2, T/2)
            lengths = lengths // 2
        mask = time_mask(lengths, x.shape[-1])  # (B, T')
        frames = x.flatten(1, 2).transpose(1, 2)  # (B, T', C * M')
        frames = self.dropout(torch.relu(self.dense(frames))) * mask[..., None]  # (B, T', 1024)
        return frames[:, None], mask  # (B, 1, T', 1024), (B, T')


class MFCCLSTM(nn.Module):
    """MFCC stacked LSTM: 13 MFCCs (25 ms window, 10 ms step, 40 mel bands), z-scored per utterance and
    coefficient, through `lstm_layers` LSTM layers of `lstm_hidden` units.

    Returns the top layer's output at each clip's last real step as a single frame with a one-frame mask,
    so any pooling head classifies from the last valid step. A forward LSTM's output at step t depends on
    steps <= t only, so reading it there ignores the padding exactly, like pack_padded_sequence, whose
    backward pass is about 15x slower on CPU (2.3 s against 0.15 s for 32 clips of 4 s).
    """

    normalize_waveform = False  # per-utterance MFCC normalisation makes gain irrelevant
    n_mfcc, n_mels, n_fft, win_length, hop = 13, 40, 512, 400, 160

    def __init__(self, config):
        super().__init__()
        self.mel = LogMel(self.n_mels, self.n_fft, self.hop, win_length=self.win_length)
        # DCT-II with orthonormal scaling (as librosa.feature.mfcc): (n_mfcc, n_mels)
        k, n = np.arange(self.n_mfcc)[:, None], np.arange(self.n_mels)[None]
        dct = np.cos(np.pi / self.n_mels * (n + 0.5) * k) * np.sqrt(2.0 / self.n_mels)
        dct[0] /= np.sqrt(2.0)
        self.register_buffer("dct", torch.tensor(dct, dtype=torch.float32))  # saved, as LogMel's
        self.lstm = nn.LSTM(self.n_mfcc, config.lstm_hidden, config.lstm_layers, batch_first=True)
        self.output_dim, self.num_layers = config.lstm_hidden, 1

    def mfcc(self, wave: torch.Tensor) -> torch.Tensor:
        """One clip (N,) -> (T, 13) MFCCs, z-scored per coefficient over the clip's frames."""
        return standardize(self.dct @ floor_db(self.mel(wave)), dim=-1).T  # (T, 13)

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        feats = [self.mfcc(w) for w in clips(input_values, attention_mask)]
        lengths = torch.tensor([len(f) for f in feats], device=input_values.device)
        out, _ = self.lstm(nn.utils.rnn.pad_sequence(feats, batch_first=True))  # (B, T, H)
        last = out[torch.arange(len(out), device=out.device), lengths - 1]  # (B, H): each clip's last real step
        mask = torch.ones(len(last), 1, dtype=torch.bool, device=last.device)
        return last[:, None, None], mask  # (B, 1, 1, H), (B, 1)


# Image CNN architectures (transformers' EfficientNet; the `timm` models of the design need torchvision).
# "efficientnet-b0" matches the hub checkpoint google/efficientnet-b0; the small one is for quick tries and tests.
EFFICIENTNETS = {
    "efficientnet-b0": dict(width_coefficient=1.0, depth_coefficient=1.0, hidden_dim=1280, image_size=224,
                            dropout_rate=0.2),
    "efficientnet-tiny": dict(width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320, image_size=224,
                              dropout_rate=0.2),
}


def reinit_for_scratch(cnn: nn.Module) -> nn.Module:
    """Return `cnn` with He-initialised convolutions and unit batch-norm scales, for training from scratch.

    transformers' EfficientNet init (N(0, 0.02) for every conv weight and batch-norm scale) makes the
    activations of a random network vanish to zero (and crawl through denormal floats on CPU).
    """
    for module in cnn.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")  # fan_in suits depthwise
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return cnn


def load_image_weights(cnn: nn.Module, model_class, name_or_path: str | None, what: str, hub_id: str) -> None:
    """Load image-pretrained weights into the one-channel `cnn` (RGB first conv summed), or log that it stays random."""
    if not name_or_path:
        logger.warning("%s: RANDOM INITIALISATION, no image-pretrained weights (ImageNet weights, where you have "
                       "them: --image_weights %s)", what, hub_id)
        return
    state = model_class.from_pretrained(name_or_path, dtype=torch.float32).state_dict()
    own = cnn.state_dict()
    for key, value in state.items():
        if key in own and value.dim() == 4 and value.shape[1] == 3 and own[key].shape[1] == 1:
            state[key] = value.sum(dim=1, keepdim=True)  # RGB filters -> one grey channel, same response to grey
    try:
        cnn.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{name_or_path}: its weights do not fit {what} ({err})") from None
    logger.warning("%s: image-pretrained weights loaded from %s", what, name_or_path)


class MelEfficientNet(nn.Module):
    """Image CNN on mel spectrograms: silence trimmed, peak-normalised, 128-band log-mel (hop 10 ms) as a
    one-channel image -> EfficientNet -> the last feature map averaged over frequency -> frames (T / 32).

    EfficientNet's squeeze-excitation averages over the whole image, so padding would leak into every
    output: clips of equal length are run together and no padded sample ever enters the CNN.
    """

    normalize_waveform = False  # peak normalisation happens here, so inference does the same
    trim_db = 30.0  # silence quieter than this under the peak is trimmed (augment.training_dataset reads it too)
    n_fft, hop = 1024, 160

    def __init__(self, config):
        super().__init__()
        self.name = name = config.image_model or "efficientnet-b0"
        if name not in EFFICIENTNETS:
            raise ValueError(f"unknown image_model {name!r} for mel_efficientnet; one of {sorted(EFFICIENTNETS)}")
        self.cnn = reinit_for_scratch(EfficientNetModel(EfficientNetConfig(num_channels=1, **EFFICIENTNETS[name])))
        self.mel = LogMel(config.n_mels or 128, self.n_fft, self.hop, min_samples=SAMPLE_RATE // 4)
        self.output_dim, self.num_layers = self.cnn.config.hidden_dim, 1

    def load_image_weights(self, name_or_path: str | None) -> None:
        load_image_weights(self.cnn, EfficientNetModel, name_or_path, f"mel_efficientnet ({self.name})",
                           "google/efficientnet-b0")

    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """One clip (N,) -> (M, T): trimmed, peak-normalised, log-mel z-scored over the clip."""
        audio = peak_normalize(trim_silence(wave.detach().cpu().numpy(), self.trim_db))
        return standardize(floor_db(self.mel(torch.from_numpy(audio).to(wave.device))))

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        specs = [self.spectrogram(w) for w in clips(input_values, attention_mask)]
        outputs: list[torch.Tensor | None] = [None] * len(specs)
        for frames in sorted({s.shape[-1] for s in specs}):
            group = [i for i, s in enumerate(specs) if s.shape[-1] == frames]
            image = torch.stack([specs[i] for i in group])[:, None]  # (G, 1, M, T)
            fmap = self.cnn(image).last_hidden_state  # (G, C, M', T')
            for i, out in zip(group, fmap.mean(dim=2).transpose(1, 2)):  # (T', C) each
                outputs[i] = out
        x, lengths = pad_time([o.T for o in outputs])  # (B, C, T')
        return x.transpose(1, 2)[:, None], time_mask(lengths, x.shape[-1])  # (B, 1, T', C), (B, T')

"""Key-segment CNN-BiLSTM: an utterance cut into 500 ms segments, its key segments chosen by K-means, each key
segment's log-mel spectrogram through a ResNet-style CNN, a bidirectional LSTM over the key segments in time
order, then the pooling head and classifier.

K is set from the adjacent-segment distances: K = 1 + the number of distances above `beta` x their mean,
so an utterance whose spectrum changes abruptly a few times keeps one segment per steady stretch.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from transformers import ResNetConfig, ResNetModel

from .spectral import SAMPLE_RATE, LogMel, clips, floor_db, load_image_weights, standardize, time_mask

SEGMENT_OVERLAP = 0.25  # share of a segment shared with the next one

# ResNet architectures (transformers' ResNet; "resnet-18" matches the hub checkpoint microsoft/resnet-18)
RESNETS = {
    "resnet-18": dict(embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2], layer_type="basic"),
    "resnet-tiny": dict(embedding_size=16, hidden_sizes=[16, 32, 64, 64], depths=[1, 1, 1, 1], layer_type="basic"),
}


def segment(audio: torch.Tensor, size: int, overlap: float = SEGMENT_OVERLAP) -> torch.Tensor:
    """Return (S, size): `audio` (N,) cut into `size`-sample segments overlapping by `overlap`, the last zero-padded."""
    hop = max(1, round(size * (1 - overlap)))
    count = 1 + max(0, int(np.ceil((len(audio) - size) / hop)))
    padded = nn.functional.pad(audio, (0, (count - 1) * hop + size - len(audio)))
    return padded.unfold(0, size, hop)  # (S, size)


def key_segment_count(features: np.ndarray, beta: float) -> int:
    """Return K = 1 + the number of adjacent-segment distances above `beta` x their mean, for (S, F) features."""
    if len(features) < 2:
        return 1
    distances = np.linalg.norm(np.diff(features, axis=0), axis=1)  # (S - 1,)
    return 1 + int(np.sum(distances > beta * distances.mean()))


def select_key_segments(features: np.ndarray, beta: float = 5.0, seed: int = 0) -> list[int]:
    """Return the indices of the key segments, in time order: for each of K K-means centres, the segment closest to it.

    features: (S, F), one row per segment. K comes from `key_segment_count`; a fixed seed keeps the choice
    the same at every call, so a clip always gets the same key segments.
    """
    from sklearn.cluster import KMeans

    features = np.asarray(features, dtype=np.float64)
    k = min(key_segment_count(features, beta), len(np.unique(features, axis=0)))
    if k <= 1:
        centres = features.mean(axis=0, keepdims=True)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # near-duplicate segments: fewer distinct clusters than asked
            centres = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(features).cluster_centers_
    nearest = np.linalg.norm(features[None] - centres[:, None], axis=-1).argmin(axis=1)  # (K,)
    return sorted(set(nearest.tolist()))


class KeySegmentCNNBiLSTM(nn.Module):
    """Raw waveform -> key segments' log-mel (64 bands, 25 ms / 10 ms) -> ResNet per segment -> BiLSTM -> frames.

    The frames are the BiLSTM outputs at the key segments (B, K, 2H) with their mask, so the pooling head
    sees one frame per key segment; everything up to the BiLSTM is computed per clip on its own length.
    """

    normalize_waveform = False  # the log-mel is z-scored per utterance
    n_fft, win_length, hop = 512, 400, 160

    def __init__(self, config):
        super().__init__()
        self.name = name = config.image_model or "resnet-18"
        if name not in RESNETS:
            raise ValueError(f"unknown image_model {name!r} for keyseg_cnn_bilstm; one of {sorted(RESNETS)}")
        self.segment_samples = int(config.segment_seconds * SAMPLE_RATE)
        self.beta = config.key_beta
        self.mel = LogMel(config.n_mels or 64, self.n_fft, self.hop, win_length=self.win_length)
        self.cnn = ResNetModel(ResNetConfig(num_channels=1, **RESNETS[name]))
        self.lstm = nn.LSTM(self.cnn.config.hidden_sizes[-1], config.lstm_hidden, batch_first=True, bidirectional=True)
        self.output_dim, self.num_layers = 2 * config.lstm_hidden, 1

    def load_image_weights(self, name_or_path: str | None) -> None:
        load_image_weights(self.cnn, ResNetModel, name_or_path, f"keyseg_cnn_bilstm ({self.name})",
                           "microsoft/resnet-18")

    def key_spectrograms(self, wave: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """One clip (N,) -> (its key segments' spectrograms (K, M, T), their segment indices)."""
        specs = self.mel(segment(wave, self.segment_samples))  # (S, M, T)
        specs = standardize(floor_db(specs))  # one level for the whole utterance
        # a segment's mean spectrum describes what it holds; flattened spectrograms of any two speech
        # segments are about equally far apart, which hides the changes K is counted from
        keys = select_key_segments(specs.detach().mean(dim=-1).cpu().numpy(), self.beta)
        return specs[keys], keys

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        chosen = [self.key_spectrograms(w)[0] for w in clips(input_values, attention_mask)]
        counts = [len(c) for c in chosen]
        embedded = self.cnn(torch.cat(chosen)[:, None]).pooler_output.flatten(1)  # (sum K, C)
        x = nn.utils.rnn.pad_sequence(embedded.split(counts), batch_first=True)  # (B, K, C)
        packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor(counts), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (B, K, 2H)
        mask = time_mask(torch.tensor(counts, device=out.device), out.shape[1])
        return out[:, None], mask  # (B, 1, K, 2H), (B, K)

"""Waveform steps a model needs at inference, kept inside `models/` so that they travel with a checkpoint:
silence trimming, peak normalisation, and the half-overlapping scoring windows of long audio."""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000
MIN_TRIMMED = SAMPLE_RATE // 10  # a trim that leaves less than 0.1 s is not trusted: keep the clip


def trim_silence(audio: np.ndarray, top_db: float = 30.0) -> np.ndarray:
    """Return `audio` without its leading and trailing parts quieter than `top_db` under the peak (librosa)."""
    import librosa

    if not top_db or len(audio) < MIN_TRIMMED:
        return audio
    trimmed, _ = librosa.effects.trim(audio, top_db=top_db, frame_length=1024, hop_length=256)
    return trimmed if len(trimmed) >= MIN_TRIMMED else audio


def peak_normalize(audio: np.ndarray, peak: float = 1.0) -> np.ndarray:
    """Return `audio` scaled so its largest absolute sample is `peak` (silence is returned unchanged)."""
    top = float(np.max(np.abs(audio))) if len(audio) else 0.0
    return (audio * (peak / top)).astype(np.float32) if top > 0 else audio


def window_starts(samples: int, size: int, hop: int | None = None) -> list[int]:
    """Return the first sample of each scoring window of `size` samples over `samples` samples.

    Audio that fits is one window; longer audio gets windows every `hop` samples (default `size // 2`, half
    overlapping), and the last window ends with the audio, so no tail is scored on a sliver.
    """
    hop = hop or size // 2
    if samples <= size:
        return [0]
    return list(range(0, samples - size, hop)) + [samples - size]

"""Waveform steps a model needs at inference, kept inside `models/` so that they travel with a checkpoint:
silence trimming, peak normalisation, the half-overlapping scoring windows of long audio, and which of those
windows hold speech (webrtcvad: the project's input checks, audio_checks.py, use the same voice-activity code)."""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000
MIN_TRIMMED = SAMPLE_RATE // 10  # a trim that leaves less than 0.1 s is not trusted: keep the clip
VAD_MODE = 2             # webrtcvad aggressiveness 0-3; 3 misses some quiet acted speech
VAD_FRAME_S = 0.03
MIN_SPEECH_S = 0.2       # voiced time needed to call audio (or a window of it) speech
SPEECH_PAD_S = 0.3       # a window with speech is scored from this before its first voiced frame to this after its last


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


def voiced_frames(audio: np.ndarray) -> np.ndarray:
    """Return webrtcvad's speech decision (mode VAD_MODE) for each whole 30 ms frame of 16 kHz `audio`."""
    import webrtcvad

    vad = webrtcvad.Vad(VAD_MODE)
    size = int(VAD_FRAME_S * SAMPLE_RATE)
    pcm = (np.clip(audio[: len(audio) // size * size], -1, 1) * 32767).astype(np.int16).reshape(-1, size)
    return np.array([vad.is_speech(frame.tobytes(), SAMPLE_RATE) for frame in pcm], dtype=bool)


def speech_parts(audio: np.ndarray, spans: list[tuple[int, int]]) -> list[tuple[int, int] | None]:
    """Return, for each scoring window (start, end) of 16 kHz `audio`, the part of it to score, or None: no speech.

    A window with under MIN_SPEECH_S of voiced frames holds no speech; one with speech is scored from SPEECH_PAD_S
    before its first voiced frame to SPEECH_PAD_S after its last, without exact zeros at either end (a minute of
    silence before a sentence must neither outvote it nor dilute its window). A single window, audio where no
    window holds speech (scored anyway on request), or a missing webrtcvad: the windows are returned as they are.
    """
    if len(spans) < 2:
        return list(spans)
    try:
        voiced = voiced_frames(audio - audio.mean())
    except ImportError:
        return list(spans)
    size, pad = int(VAD_FRAME_S * SAMPLE_RATE), int(SPEECH_PAD_S * SAMPLE_RATE)
    parts = []
    for start, end in spans:
        first = -(-start // size)  # the frames wholly inside the window
        frames = np.flatnonzero(voiced[first:end // size]) + first
        if len(frames) * VAD_FRAME_S < MIN_SPEECH_S:
            parts.append(None)
            continue
        first, last = max(start, frames[0] * size - pad), min(end, (frames[-1] + 1) * size + pad)
        sound = np.flatnonzero(audio[first:last])  # and never digital silence (exact zeros), which no microphone gives
        parts.append((first + sound[0], first + sound[-1] + 1))
    return parts if any(parts) else list(spans)

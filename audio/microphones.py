"""Augmentation that imitates real microphones and rooms, reproducible per (clip, variant) so it can be cached.

One variant applies, each with its own chance: background noise at 5-20 dB SNR (babble of other speakers,
or coloured noise), a room (pyroomacoustics through audiomentations.RoomSimulator), band-limiting (a
telephone band or a laptop microphone), a low-bitrate codec round trip (ffmpeg: Opus or MP3), and gain
with clipping. `MicrophoneAugmenter.name` is part of the encoder cache's key of every variant, so a change
to the chain never reuses old variants and a variant never collides with the clean clip.
"""
from __future__ import annotations

import random
import subprocess
from typing import Sequence

import numpy as np

from data_process import SAMPLE_RATE, load_audio

SNR_DB = (5.0, 20.0)
CODECS = {  # ffmpeg encoder settings of the low-bitrate round trip
    "opus": (["-c:a", "libopus", "-b:a", "{kbps}k", "-f", "ogg"], (8, 24)),
    "mp3": (["-c:a", "libmp3lame", "-b:a", "{kbps}k", "-f", "mp3"], (24, 64)),
}


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Return speech + noise scaled to `snr_db` below the speech's power (noise looped or cut to length)."""
    if len(noise) < len(speech):
        noise = np.tile(noise, int(np.ceil(len(speech) / max(len(noise), 1))))
    noise = noise[: len(speech)]
    speech_power, noise_power = np.mean(speech ** 2), np.mean(noise ** 2)
    if noise_power <= 0 or speech_power <= 0:
        return speech
    return (speech + noise * np.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))).astype(np.float32)


def codec_round_trip(audio: np.ndarray, codec: str, kbps: int) -> np.ndarray:
    """Return `audio` encoded with ffmpeg at `kbps` and decoded back to 16 kHz float32 (same length)."""
    args, _ = CODECS[codec]
    raw = ["-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1"]
    encoded = subprocess.run(["ffmpeg", "-v", "error", *raw, "-i", "pipe:0", *[a.format(kbps=kbps) for a in args],
                              "pipe:1"], input=audio.astype(np.float32).tobytes(), capture_output=True, check=True).stdout
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", "pipe:0", *raw, "pipe:1"], input=encoded,
                             capture_output=True, check=True).stdout
    out = np.frombuffer(decoded, dtype=np.float32)
    return np.pad(out, (0, max(0, len(audio) - len(out))))[: len(audio)].copy()


class MicrophoneAugmenter:
    """Turns a clean clip into variant k of itself: noise, room, band, codec, gain and clipping, each by chance."""

    name = "mic1"  # part of every variant's cache key: change it whenever the chain changes

    def __init__(self, voices: int = 4):
        from audiomentations import (AddColorNoise, BandPassFilter, ClippingDistortion, Compose, Gain,
                                     HighPassFilter, LowPassFilter, OneOf, RoomSimulator)

        self.voices = voices
        self.colour = AddColorNoise(min_snr_db=SNR_DB[0], max_snr_db=SNR_DB[1], p=1.0)
        self.room = RoomSimulator(min_target_rt60=0.2, max_target_rt60=0.8, calculation_mode="rt60",
                                  use_ray_tracing=False, max_order=6, leave_length_unchanged=True, p=1.0)
        self.band = OneOf([  # a telephone line, or a laptop's small microphone
            BandPassFilter(min_center_freq=1700.0, max_center_freq=2000.0, min_bandwidth_fraction=1.5,
                           max_bandwidth_fraction=1.8, p=1.0),  # about 300-3400 Hz
            Compose([HighPassFilter(min_cutoff_freq=100.0, max_cutoff_freq=300.0, p=1.0),
                     LowPassFilter(min_cutoff_freq=3500.0, max_cutoff_freq=7000.0, p=1.0)]),
        ])
        self.level = Compose([Gain(min_gain_db=-12.0, max_gain_db=12.0, p=1.0),
                              ClippingDistortion(min_percentile_threshold=0, max_percentile_threshold=10, p=0.5)])
        self.chances = {"noise": 0.7, "room": 0.4, "band": 0.5, "codec": 0.4, "level": 0.3}

    def babble(self, rng: np.random.Generator, length: int, paths: Sequence[str]) -> np.ndarray | None:
        """Return `voices` clips of `paths` summed at equal level, each from a random start, `length` samples long."""
        if not paths:
            return None
        mixed = np.zeros(length, dtype=np.float32)
        for path in rng.choice(list(paths), size=min(self.voices, len(paths)), replace=False):
            voice = load_audio(path)
            voice = np.tile(voice, int(np.ceil(length / len(voice))) + 1)
            start = int(rng.integers(0, len(voice) - length + 1))
            part = voice[start:start + length]
            mixed += part / (np.sqrt(np.mean(part ** 2)) + 1e-8)
        return mixed

    def __call__(self, audio: np.ndarray, seed: int, babble: Sequence[str] = ()) -> np.ndarray:
        """Return variant `seed` of `audio` (babble voices drawn from `babble`): the same seed, the same variant."""
        rng = np.random.default_rng(seed)
        random.seed(seed)  # audiomentations draws its parameters from `random` and numpy's global generator
        np.random.seed(seed % 2 ** 32)
        chosen = {step for step, p in self.chances.items() if rng.random() < p}
        audio = np.asarray(audio, dtype=np.float32)
        if "room" in chosen:
            audio = self.room(samples=audio, sample_rate=SAMPLE_RATE)
        if "noise" in chosen:
            noise = self.babble(rng, len(audio), babble) if rng.random() < 0.5 else None
            audio = (mix_at_snr(audio, noise, rng.uniform(*SNR_DB)) if noise is not None
                     else self.colour(samples=audio, sample_rate=SAMPLE_RATE))
        if "band" in chosen:
            audio = self.band(samples=audio, sample_rate=SAMPLE_RATE)
        if "codec" in chosen:
            codec = str(rng.choice(sorted(CODECS)))
            audio = codec_round_trip(audio, codec, int(rng.integers(*CODECS[codec][1], endpoint=True)))
        if "level" in chosen:
            audio = np.clip(self.level(samples=audio, sample_rate=SAMPLE_RATE), -1.0, 1.0)
        return np.asarray(audio, dtype=np.float32)


def variant_maker(rows, k: int, augmenter: MicrophoneAugmenter | None = None):
    """Return (cache key, make) for variant k of every row, as feature_cache.cached_layers takes it.

    Babble comes from other speakers of the clip's own corpus: in leave-one-corpus-out, a corpus left out for
    testing then never lends its voices (or its recording setup) to the training clips' noise.
    """
    augmenter = augmenter or MicrophoneAugmenter()
    voices: dict[str, list] = {}
    for row in rows:
        voices.setdefault(row.corpus, []).append(row)

    def make(i: int, audio: np.ndarray, digest: str) -> np.ndarray:
        row = rows[i]
        others = [r.path for r in voices[row.corpus] if r.speaker != row.speaker]
        return augmenter(audio, int(digest[:12], 16) + 1_000_003 * k, babble=others)
    return f"{augmenter.name}-{k}", make

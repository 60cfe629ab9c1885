"""Training-time audio augmentation (audiomentations: noise, gain, time shift), and the silence trimming
and peak normalisation of the image-CNN system.

`trim_silence` and `peak_normalize` live in models/waveform.py (so they travel with a checkpoint's code):
`models.spectral.MelEfficientNet` calls them inside its forward (so training, evaluation, `infer.py` and the
app all see the same audio), and `AugmentedWaveDataset` trims before it takes the random training crop, so that crops hold speech.
"""
from __future__ import annotations

import numpy as np

from data_process import SAMPLE_RATE, WaveDataset, load_audio
from models.waveform import MIN_TRIMMED, peak_normalize, trim_silence  # noqa: F401  (they live with the models)


def augmenter(p: float = 0.5):
    """Return an audiomentations chain: Gaussian noise, gain and time shift, each applied with probability `p`."""
    from audiomentations import AddGaussianNoise, Compose, Gain, Shift

    return Compose([
        AddGaussianNoise(min_amplitude=0.001, max_amplitude=0.015, p=p),
        Gain(min_gain_db=-6.0, max_gain_db=6.0, p=p),
        Shift(min_shift=-0.1, max_shift=0.1, shift_unit="fraction", rollover=False, p=p),
    ])


class AugmentedWaveDataset(WaveDataset):
    """WaveDataset that trims silence before the random crop (`trim_db`) and augments each training clip."""

    def __init__(self, paths, label_ids, crop_seconds: float | None = None, seed: int = 0, augment: bool = True,
                 trim_db: float | None = None):
        super().__init__(paths, label_ids, crop_seconds, seed)
        self.trim_db = trim_db
        self.augment = augmenter() if augment else None

    def __getitem__(self, i: int) -> dict:
        audio = load_audio(self.paths[i])
        if self.trim_db:
            audio = trim_silence(audio, self.trim_db)
        if self.crop and len(audio) > self.crop:
            start = int(self.rng.integers(0, len(audio) - self.crop + 1))
            audio = audio[start:start + self.crop]
        if self.augment is not None:
            audio = self.augment(samples=audio, sample_rate=SAMPLE_RATE).astype(np.float32)
        return {"audio": audio, "labels": self.label_ids[i]}


def training_dataset(dataset: WaveDataset, augment: bool, trim_db: float | None = None) -> WaveDataset:
    """Return `dataset` itself, or an AugmentedWaveDataset of the same clips when `augment` or `trim_db` asks."""
    if not augment and not trim_db:
        return dataset
    crop = dataset.crop / SAMPLE_RATE if dataset.crop else None
    wrapped = AugmentedWaveDataset(dataset.paths, dataset.label_ids, crop, augment=augment, trim_db=trim_db)
    wrapped.rng = dataset.rng
    return wrapped

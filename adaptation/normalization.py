"""Standardising pooled embeddings per group of clips: a corpus, a speaker, a folder, one user's recordings.

Recording conditions and language move a frozen encoder's embeddings more than emotion does; subtracting
each group's own mean and dividing by its spread removes most of that shift (docs/benchmarks.md,
leave-one-corpus-out). A model trained with `embedding_norm` keeps the average statistics of its training
groups for a clip heard alone; given several clips of one speaker or setup, their own statistics do better.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

EPS = 1e-5
MIN_EMOTIONS = 3  # a speaker's own statistics stand for their voice only over a mix of emotions (URDU speakers mostly
                  # recorded one: standardising them with their own mean would remove the emotion itself)


def speaker_or_corpus(rows) -> list[str]:
    """Return each row's group for per-speaker statistics: its speaker where that speaker's clips carry at least
    MIN_EMOTIONS emotions, else its corpus (the closest group whose statistics hold a mix)."""
    emotions: dict = {}
    for row in rows:
        emotions.setdefault((row.corpus, row.speaker), set()).add(row.label)
    return [f"{row.corpus}:{row.speaker}" if len(emotions[row.corpus, row.speaker]) >= MIN_EMOTIONS
            else f"{row.corpus}:*" for row in rows]


# How clips are grouped for their statistics, in training (train.py --embedding_norm) and in the benchmark's test
# modes: all (one group: the training set), per corpus, or per speaker (speaker_or_corpus). Whatever the training
# groups, a group of clips at inference may use its own statistics.
GROUPINGS: dict[str, Callable] = {"all": lambda rows: ["all"] * len(rows),
                                  "corpus": lambda rows: [row.corpus for row in rows],
                                  "speaker": speaker_or_corpus}


def statistics(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the mean and standard deviation (F,) of a group's embeddings (N, F)."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    return embeddings.mean(0).astype(np.float32), (embeddings.std(0) + EPS).astype(np.float32)


def novelty(embeddings: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Return each embedding's mean squared standardised value (N,): about 1 for a clip like those the statistics
    came from, larger the further it sits from them (a new voice, language or microphone)."""
    z = (np.asarray(embeddings, np.float64) - mean) / std
    return (z ** 2).mean(-1)


def group_statistics(embeddings: np.ndarray, groups: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Return each row's group mean and std, (N, F) each, computed over the rows of its group."""
    groups = np.asarray(groups)
    mean, std = np.empty_like(embeddings, dtype=np.float32), np.empty_like(embeddings, dtype=np.float32)
    for group in np.unique(groups):
        rows = groups == group
        mean[rows], std[rows] = statistics(embeddings[rows])
    return mean, std


def average_statistics(embeddings: np.ndarray, groups: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Return the statistics for a clip heard alone: the groups' mean of means and root-mean-square std."""
    groups = np.asarray(groups)
    pairs = [statistics(embeddings[groups == g]) for g in np.unique(groups)]
    means, stds = np.stack([m for m, _ in pairs]), np.stack([s for _, s in pairs])
    return means.mean(0), np.sqrt((stds.astype(np.float64) ** 2).mean(0)).astype(np.float32)


def remapped(embeddings: np.ndarray, groups: Sequence, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The adapted mode of a model that does not standardise (an encoder fine-tuned without --embedding_norm): each
    embedding standardised with its group's statistics, then put back on the training set's scale (`mean`, `std`), the
    scale its head learned on."""
    own_mean, own_std = group_statistics(embeddings, groups)
    return (mean + std * (embeddings - own_mean) / np.maximum(own_std, EPS)).astype(np.float32)


def neutral_offset(embeddings: np.ndarray, speakers: Sequence, is_neutral: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Return how far a speaker's calm (neutral) speech sits from that speaker's mean, in units of `std` (the
    model's spread), averaged over the speakers who have some: a user's few calm clips then place their mean."""
    speakers = np.asarray(speakers)
    offsets = []
    for speaker in np.unique(speakers):
        rows = speakers == speaker
        if (rows & is_neutral).any() and (rows & ~is_neutral).any():
            offsets.append(embeddings[rows & is_neutral].mean(0) - embeddings[rows].mean(0))
    if not offsets:
        return np.zeros(embeddings.shape[1], np.float32)
    return (np.mean(offsets, axis=0) / std).astype(np.float32)


def from_calm_speech(calm: np.ndarray, std: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return a user's statistics from embeddings (N, F) of their calm speech: calm speech sits `offset` (in units of
    the model's `std`) from its speaker's mean, so the user's mean is placed that far back; the spread is the model's."""
    return (np.asarray(calm, dtype=np.float32).mean(0) - offset * std).astype(np.float32), np.asarray(std, np.float32)


def shrunk_statistics(seen: np.ndarray, mean: np.ndarray, std: np.ndarray,
                      prior: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Return a group's statistics from its embeddings (N, F) when it may hold only a few: its own mean and
    variance, drawn towards the model's (`mean`, `std`: its training groups' average) as if `prior` more clips
    had the model's. One user's recordings in the app, or a small folder, are such groups."""
    seen = np.asarray(seen, dtype=np.float64).reshape(-1, len(mean))
    if not len(seen):
        return np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return _shrunk(len(seen), seen.mean(0), seen.var(0), mean, std, prior)


def _shrunk(count: int, own_mean: np.ndarray, own_var: np.ndarray, mean: np.ndarray, std: np.ndarray,
            prior: float) -> tuple[np.ndarray, np.ndarray]:
    weight = count / (count + prior)
    blended = weight * own_mean + (1 - weight) * np.asarray(mean, np.float64)
    variance = weight * own_var + (1 - weight) * np.asarray(std, np.float64) ** 2
    return blended.astype(np.float32), (np.sqrt(variance) + EPS).astype(np.float32)


@dataclass
class Speaker:
    """What a recognizer has heard of one speaker: the count, sum and sum of squares of their recordings' pooled
    embeddings (one per recording), so statistics can be carried between calls (`to_dict` is plain JSON)."""

    count: int = 0
    total: np.ndarray | None = None
    squares: np.ndarray | None = None

    def add(self, embedding: np.ndarray) -> "Speaker":
        """Count one recording, given its pooled embedding (F,) (the mean over its windows for a long one)."""
        x = np.asarray(embedding, np.float64).reshape(-1)
        self.total = x if self.total is None else self.total + x
        self.squares = x ** 2 if self.squares is None else self.squares + x ** 2
        self.count += 1
        return self

    def statistics(self, mean: np.ndarray, std: np.ndarray, prior: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
        """Return the (mean, std) that standardise this speaker's embeddings: their own, drawn towards the model's
        (`mean`, `std`) as if `prior` more recordings had the model's (the app's shrinkage)."""
        if not self.count:
            return np.asarray(mean, np.float32), np.asarray(std, np.float32)
        own_mean = self.total / self.count
        return _shrunk(self.count, own_mean, np.maximum(self.squares / self.count - own_mean ** 2, 0.0), mean, std,
                       prior)

    def to_dict(self) -> dict:
        return {"count": self.count, "total": None if self.total is None else self.total.tolist(),
                "squares": None if self.squares is None else self.squares.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "Speaker":
        as_array = lambda v: None if v is None else np.asarray(v, np.float64)  # noqa: E731
        return cls(int(data["count"]), as_array(data["total"]), as_array(data["squares"]))

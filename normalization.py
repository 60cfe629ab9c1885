"""Standardising pooled embeddings per group of clips: a corpus, a speaker, a folder, one user's recordings.

Recording conditions and language move a frozen encoder's embeddings more than emotion does; subtracting
each group's own mean and dividing by its spread removes most of that shift (docs/benchmarks.md,
leave-one-corpus-out). A model trained with `embedding_norm` keeps the average statistics of its training
groups for a clip heard alone; given several clips of one speaker or setup, their own statistics do better.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

EPS = 1e-5
# How training groups its clips (train.py --embedding_norm): each key names a field of corpora.Utterance
TRAIN_GROUPS: dict[str, Callable] = {"corpus": lambda row: row.corpus, "speaker": lambda row: row.speaker}


def statistics(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the mean and standard deviation (F,) of a group's embeddings (N, F)."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    return embeddings.mean(0).astype(np.float32), (embeddings.std(0) + EPS).astype(np.float32)


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

"""PNG figures for a run: confusion matrix and training curves (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def confusion_png(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Write a row-normalised confusion matrix with counts to `path` and return it."""
    counts = np.asarray(confusion)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(labels), 0.8 + 0.6 * len(labels)))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{counts[i, j]}", ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def curves_png(log_history: list[dict], path: str | Path) -> Path:
    """Write training loss and validation loss / UA per epoch (from Trainer's log history) to `path`."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    train = [(h["epoch"], h["loss"]) for h in log_history if "loss" in h]
    val = [(h["epoch"], h["eval_loss"], h.get("eval_ua")) for h in log_history if "eval_loss" in h]
    if train:
        left.plot(*zip(*train), label="train loss")
    if val:
        left.plot([v[0] for v in val], [v[1] for v in val], label="validation loss")
        right.plot([v[0] for v in val], [v[2] for v in val], color="tab:green", label="validation UA")
    left.set_xlabel("epoch")
    left.legend()
    right.set_xlabel("epoch")
    right.set_ylim(0, 1)
    if val:
        right.legend()
    else:
        right.text(0.5, 0.5, "no validation set", ha="center", va="center", transform=right.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)

"""Classification metrics for emotion recognition: plain numpy and scikit-learn, no torch."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, recall_score


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict:
    """Return WA (accuracy), UA (mean per-class recall), macro-F1, per-class recall and the confusion matrix.

    Classes absent from `y_true` are left out of UA and macro-F1 (a speaker who never
    shows an emotion must not count as a zero recall), but keep their confusion-matrix row.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    ids = list(range(len(labels)))
    present = sorted(set(y_true.tolist()))
    recall = recall_score(y_true, y_pred, labels=ids, average=None, zero_division=0)
    return {
        "wa": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "ua": float(np.mean(recall[present])) if present else 0.0,
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "recall": {labels[i]: float(recall[i]) for i in present},
        "confusion": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
        "labels": list(labels),
        "n": int(len(y_true)),
    }


def compute_metrics(eval_pred, labels: Sequence[str]) -> dict:
    """Return the scalar metrics the `transformers` Trainer logs (it keeps floats only)."""
    logits, y_true = eval_pred.predictions, eval_pred.label_ids
    logits = logits[0] if isinstance(logits, tuple) else logits
    report = classification_report(y_true, np.argmax(logits, axis=-1), labels)
    return {"ua": report["ua"], "wa": report["wa"], "macro_f1": report["macro_f1"]}


def summarize_folds(reports: Sequence[dict]) -> dict:
    """Return mean and std over folds of UA, WA and macro-F1, and the pooled confusion matrix."""
    summary = {}
    for key in ("ua", "wa", "macro_f1"):
        values = np.array([r[key] for r in reports])
        summary[key] = {"mean": float(values.mean()), "std": float(values.std()), "folds": values.tolist()}
    pooled = np.sum([np.asarray(r["confusion"]) for r in reports], axis=0)
    labels = reports[0]["labels"]
    diag = np.diag(pooled) / np.maximum(pooled.sum(axis=1), 1)
    summary["pooled"] = {
        "confusion": pooled.tolist(),
        "labels": labels,
        "ua": float(diag[pooled.sum(axis=1) > 0].mean()),
        "wa": float(np.trace(pooled) / max(pooled.sum(), 1)),
    }
    return summary


def format_summary(summary: dict) -> str:
    """Return one line such as 'UA 0.912 +- 0.041 | WA 0.920 +- 0.035 | F1 0.905 +- 0.044'."""
    parts = [f"{name} {summary[key]['mean']:.3f} +- {summary[key]['std']:.3f}"
             for key, name in (("ua", "UA"), ("wa", "WA"), ("macro_f1", "F1"))]
    return " | ".join(parts)

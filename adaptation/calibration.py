"""Honest probabilities: temperature scaling fit on held-out predictions, and how to measure honesty.

A model trained on some corpora is over-confident on others. One temperature T, fit on the logits of
clips the model never trained on (the folds of a cross-validation, or the left-out corpora of
leave-one-corpus-out), divides the logits so that a top probability of 0.7 is right about 70 % of the time.
T is stored in the checkpoint's config (`calibration_temperature`) and applied inside the model's
forward, so the app, infer.py and `pipeline` all report calibrated probabilities.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

BINS = 15


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the true labels at this temperature."""
    probs = softmax(logits, temperature)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))))


def fit_temperature(logits: np.ndarray, labels: Sequence[int]) -> float:
    """Return the temperature (0.05 to 20) that minimises the held-out negative log-likelihood."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels)
    result = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))),
                             bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def reliability(probs: np.ndarray, labels: Sequence[int], bins: int = BINS) -> dict:
    """Return per-bin mean confidence, accuracy and count of the top predictions (equal-width bins on [0, 1])."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # (k/bins, (k+1)/bins] -> bin k
    counts = np.bincount(which, minlength=bins)
    total = np.maximum(counts, 1)
    return {"confidence": (np.bincount(which, confidence, bins) / total).tolist(),
            "accuracy": (np.bincount(which, correct.astype(float), bins) / total).tolist(),
            "count": counts.tolist()}


def expected_calibration_error(probs: np.ndarray, labels: Sequence[int], bins: int = BINS) -> float:
    """Return ECE: the count-weighted mean gap between accuracy and confidence over `bins` equal-width bins."""
    table = reliability(probs, labels, bins)
    counts = np.asarray(table["count"], dtype=float)
    gaps = np.abs(np.asarray(table["accuracy"]) - np.asarray(table["confidence"]))
    return float((counts * gaps).sum() / max(counts.sum(), 1.0))


def unsure_threshold(probs: np.ndarray, labels: Sequence[int]) -> float:
    """Return the top probability under which held-out predictions are more often wrong than right.

    An isotonic fit of correctness against confidence gives the accuracy expected at each confidence;
    the threshold is where that first reaches one half (1.0 when it never does).
    """
    from sklearn.isotonic import IsotonicRegression

    probs, labels = np.asarray(probs), np.asarray(labels)
    confidence, correct = probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(float)
    grid = np.linspace(0.0, 1.0, 201)
    accuracy = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(confidence, correct).predict(grid)
    above = np.nonzero(accuracy >= 0.5)[0]
    return round(float(grid[above[0]]), 3) if len(above) else 1.0  # a grid step of 0.005: 0.57, not 0.5700000000000001


def calibrate_folds(fold_logits: dict[str, np.ndarray], fold_labels: dict[str, np.ndarray]) -> dict:
    """Fit and check a temperature on held-out folds.

    Each fold is checked with a temperature fit on the other folds only (so no fold grades itself), giving ECE
    and UA-free figures before and after; the temperature to ship is then fit on all folds together.
    """
    names = list(fold_logits)
    every_logits = np.concatenate([fold_logits[n] for n in names])
    every_labels = np.concatenate([fold_labels[n] for n in names])
    folds = {}
    for name in names:
        others = [n for n in names if n != name]
        t = fit_temperature(np.concatenate([fold_logits[n] for n in others]),
                            np.concatenate([fold_labels[n] for n in others])) if others else 1.0
        before, after = softmax(fold_logits[name]), softmax(fold_logits[name], t)
        folds[name] = {"temperature_from_other_folds": t, "n": int(len(fold_labels[name])),
                       "ece_before": expected_calibration_error(before, fold_labels[name]),
                       "ece_after": expected_calibration_error(after, fold_labels[name]),
                       "mean_confidence_before": float(before.max(1).mean()),
                       "mean_confidence_after": float(after.max(1).mean()),
                       "accuracy": float(np.mean(before.argmax(1) == fold_labels[name])),
                       "reliability_before": reliability(before, fold_labels[name]),
                       "reliability_after": reliability(after, fold_labels[name])}
    temperature = fit_temperature(every_logits, every_labels)
    calibrated = softmax(every_logits, temperature)
    return {"temperature": temperature, "bins": BINS, "folds": folds,
            "ece_before": expected_calibration_error(softmax(every_logits), every_labels),
            "ece_after": expected_calibration_error(calibrated, every_labels),
            "unsure_below": unsure_threshold(calibrated, every_labels)}


def reliability_png(fold: dict, path: str | Path, title: str) -> Path:
    """Draw a fold's reliability diagram, before and after temperature scaling, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=100)
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
    for key, colour, name in (("before", "tab:red", "before"), ("after", "tab:blue", "after")):
        table = fold[f"reliability_{key}"]
        shown = [i for i, c in enumerate(table["count"]) if c > 0]
        ax.plot([table["confidence"][i] for i in shown], [table["accuracy"][i] for i in shown], "o-", color=colour,
                label=f"{name}: ECE {fold[f'ece_{key}']:.3f}")
    ax.set_xlabel("top probability (confidence)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def scaled_softmax(logits: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """Return softmax probabilities with one temperature per row (N,)."""
    return softmax(np.asarray(logits) / np.asarray(temperatures, dtype=np.float64)[:, None])


def novelty_temperatures(novelty: np.ndarray, intercept: float, slope: float) -> np.ndarray:
    """Return each clip's temperature: log T = intercept + slope * log(novelty), bounded to 0.05-50."""
    log_t = intercept + slope * np.log(np.maximum(np.asarray(novelty, dtype=np.float64), 1e-6))
    return np.exp(np.clip(log_t, np.log(0.05), np.log(50.0)))


def fit_novelty_temperature(logits: np.ndarray, labels: Sequence[int], novelty: np.ndarray) -> tuple[float, float]:
    """Return (intercept, slope) of the temperature that grows with a clip's distance from its statistics
    (normalization.novelty), minimising the held-out negative log-likelihood."""
    from scipy.optimize import minimize

    labels = np.asarray(labels)
    rows = np.arange(len(labels))

    def loss(params):
        probs = scaled_softmax(logits, novelty_temperatures(novelty, *params))
        return float(-np.mean(np.log(np.clip(probs[rows, labels], 1e-12, None))))

    start = np.array([np.log(fit_temperature(logits, labels)), 0.0])
    result = minimize(loss, start, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-7, "maxiter": 400})
    return float(result.x[0]), float(result.x[1])


# The two ways a clip is judged -> the name train.py gives the held-out logits of each (test_logits.npz: logits_<name>)
MODES = {"alone": "none", "adapted": "speaker"}
CALIBRATIONS = ("temperature", "novelty")  # one temperature per mode, or one that grows with the clip's distance


def unsure_below(config: dict, adapted: bool = False) -> float | None:
    """Return a checkpoint config's threshold under which a top probability is unsure, in the mode asked for."""
    modes = config.get("calibration") or {}
    fit = modes.get("adapted" if adapted else "alone") or modes.get("alone")
    return fit.get("unsure_below") if fit else config.get("unsure_below")


def fit_modes(folds: Sequence, how: str = "novelty") -> dict:
    """Fit each mode's calibration on held-out folds (train.py's test_logits.npz contents: logits, labels and novelty
    per mode) of unseen corpora and unseen speakers together. Returns, per mode, the config's calibration entry
    (intercept, slope, unsure_below) with the ECE it leaves on those folds."""
    if how not in CALIBRATIONS:
        raise ValueError(f"calibration {how!r} is not one of {CALIBRATIONS}")
    out = {}
    for mode, key in MODES.items():
        logits = np.concatenate([f[f"logits_{key}"] for f in folds])
        labels = np.concatenate([f["labels"] for f in folds])
        novelty = np.concatenate([f[f"novelty_{key}"] for f in folds])
        intercept, slope = (fit_novelty_temperature(logits, labels, novelty) if how == "novelty"
                            else (float(np.log(fit_temperature(logits, labels))), 0.0))
        probs = scaled_softmax(logits, novelty_temperatures(novelty, intercept, slope))
        out[mode] = {"intercept": intercept, "slope": slope, "unsure_below": unsure_threshold(probs, labels),
                     "ece": expected_calibration_error(probs, labels), "ece_before": expected_calibration_error(
                         softmax(logits), labels), "n": int(len(labels))}
    return out

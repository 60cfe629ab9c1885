"""Model cards (README.md in a checkpoint folder): what a checkpoint is, what it was trained on, how good it is."""
from __future__ import annotations

from pathlib import Path

from models.configuration import read_layer_mix
from models.classifier import LAYER_MIXES

LICENCES = {
    "emodb": "EmoDB (Berlin Database of Emotional Speech): free for research use.",
    "ravdess": "RAVDESS (Livingstone & Russo 2018): CC BY-NC-SA 4.0. Models trained on it inherit the "
               "non-commercial, share-alike condition.",
    "urdu": "URDU dataset (Latif et al.): for research purposes only.",
    "cremad": "CREMA-D: Open Database License (ODbL).",
    "tess": "TESS (Toronto emotional speech set): CC BY-NC-ND 4.0.",
    "iemocap": "IEMOCAP: licensed by USC SAIL for research; not redistributable.",
}

KEPT_SECTION = "## Known limits"  # written by hand; a rewritten card keeps it


def _confusion_table(confusion: list[list[int]], labels: list[str]) -> str:
    head = "| true \\ predicted | " + " | ".join(labels) + " |"
    rule = "|---" * (len(labels) + 1) + "|"
    rows = [f"| **{label}** | " + " | ".join(str(c) for c in row) + " |" for label, row in zip(labels, confusion)]
    return "\n".join([head, rule, *rows])


def _figures(metrics: dict) -> tuple[str, str]:
    """Return (a sentence with the held-out figures, the confusion table) from a run's metrics."""
    cv = metrics.get("cross_validation") or (metrics if metrics.get("summary") and len(metrics["folds"]) > 1 else None)
    if cv and "summary" in cv:
        s = cv["summary"]
        text = (f"Cross-validated with the same recipe, protocol **{cv['protocol']}** over {len(cv['folds'])} folds "
                f"({cv['n_speakers']} speakers, no speaker in both training and test): "
                f"**UA {s['ua']['mean']:.3f} ± {s['ua']['std']:.3f}**, WA {s['wa']['mean']:.3f} ± {s['wa']['std']:.3f}, "
                f"macro-F1 {s['macro_f1']['mean']:.3f} ± {s['macro_f1']['std']:.3f} (mean ± std over folds). "
                f"{_by_corpus(cv)}Confusion matrix pooled over the folds' test speakers:")
        return text, _confusion_table(s["pooled"]["confusion"], s["pooled"]["labels"])
    test = metrics.get("test")
    if test:
        text = (f"Held-out test speakers {', '.join(test.get('test_speakers', []))}: **UA {test['ua']:.3f}**, "
                f"WA {test['wa']:.3f}, macro-F1 {test['macro_f1']:.3f} ({test['n']} clips).")
        return text, _confusion_table(test["confusion"], test["labels"])
    return "No held-out evaluation was run for this checkpoint: its accuracy is unknown.", ""


def _by_corpus(cv: dict) -> str:
    """Return per-corpus pooled UA of a cross-validation over several corpora ('' for one corpus)."""
    by_corpus = cv.get("by_corpus") or {}
    if len(by_corpus) < 2:
        return ""
    parts = ", ".join(f"{name} {m['ua']:.3f} ({m['n']} clips)" for name, m in by_corpus.items())
    return (f"Per corpus, pooled over the folds: UA {parts}; these are {len(cv['labels'])}-way decisions over "
            f"every label, so they are not comparable with single-corpus benchmarks. ")


def _training(metrics: dict) -> str:
    """Return how long training ran, when the run recorded it."""
    if "epochs_run" not in metrics:
        return ""
    best = f", best validation epoch {metrics['best_epoch']:.0f}" if metrics.get("best_epoch") else ""
    return (f"\n- **Training**: {metrics['epochs_run']:.0f} epochs{best}, "
            f"{metrics['train_seconds'] / 60:.0f} min on the machine that trained it")


def write_model_card(folder: str | Path, settings: dict, metrics: dict) -> Path:
    """Write README.md describing the checkpoint in `folder` and return its path."""
    model, data = settings["model"], settings["data"]
    corpora = sorted({spec.split("=")[0].split(":")[0] for spec in data["corpus"]})
    licences = [LICENCES.get(c, f"{c}: check its licence before use.") for c in corpora]
    non_commercial = any(c in ("ravdess", "tess", "urdu", "emodb", "iemocap") for c in corpora)
    encoder = (f"`{model['encoder']}` ({model['encoder_mode']}"
               + f", {LAYER_MIXES[read_layer_mix(model)].text})"
               if model["backbone"] != "cnn1d" else f"1-D CNN on the raw waveform, preset `{model['cnn_preset']}`")
    text, table = _figures(metrics)
    card = f"""---
library_name: transformers
pipeline_tag: audio-classification
license: {"cc-by-nc-sa-4.0" if "ravdess" in corpora else "other"}
tags: [speech-emotion-recognition, audio-classification]
---
# Speech emotion classifier: {model['backbone']} + {model['pooling']} pooling

- **Backbone**: {encoder}
- **Pooling head**: `{model['pooling']}`
- **Labels**: {', '.join(metrics['labels'])}
- **Data**: {', '.join(data['corpus'])} ({metrics.get('n_utterances', '?')} clips,
  {metrics.get('n_speakers', '?')} speakers), protocol `{data['protocol']}`{_training(metrics)}

## Held-out performance
{text}

{table}

## Training data and licence conditions
{chr(10).join('- ' + line for line in licences)}
{"These corpora are for research or non-commercial use: so is this model." if non_commercial else ""}

Acted corpora (EmoDB, RAVDESS) hold exaggerated, read emotions by few speakers; expect lower
accuracy on spontaneous speech, other languages and other recording conditions.

## Use
```python
import models  # registers the architecture with transformers
from transformers import pipeline
classify = pipeline("audio-classification", model="{Path(folder).name}")
classify("speech.wav")  # or a 16 kHz float32 numpy array
```
or `python infer.py --checkpoint {Path(folder).name} --output out.csv FILES_OR_FOLDERS`.
"""
    path = Path(folder) / "README.md"
    kept = path.read_text().partition(KEPT_SECTION)[2] if path.exists() else ""
    path.write_text(card + (f"\n{KEPT_SECTION}{kept}" if kept else ""))
    return path


def attach_cross_validation(folder: str | Path, cv_metrics: str | Path) -> Path:
    """Quote a cross-validation run's figures in a checkpoint's metrics.json, confusion.png and card."""
    import json

    from plots import confusion_png

    folder = Path(folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    cv = json.loads(Path(cv_metrics).read_text())
    if cv["labels"] != metrics["labels"]:
        raise ValueError(f"{cv_metrics} has labels {cv['labels']}, the checkpoint {metrics['labels']}: not the same recipe")
    metrics["cross_validation"] = cv
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
    pooled = cv["summary"]["pooled"]
    confusion_png(pooled["confusion"], pooled["labels"], folder / "confusion.png",
                  f"{cv['protocol']} ({len(cv['folds'])} folds), pooled: UA {pooled['ua']:.3f}")
    return write_model_card(folder, json.loads((folder / "settings.json").read_text()), metrics)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Quote a cross-validation run's held-out figures in a checkpoint's card.")
    parser.add_argument("checkpoint", help="checkpoint folder written by train.py")
    parser.add_argument("--cv_metrics", required=True, help="metrics.json of the same recipe's cross-validation run")
    args = parser.parse_args()
    print(attach_cross_validation(args.checkpoint, args.cv_metrics))

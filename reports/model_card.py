"""Model cards (README.md in a checkpoint folder): what a checkpoint is, what it was trained on, how good it is.

The card is a Hugging Face Hub card written with `huggingface_hub` (`ModelCard`, `ModelCardData`,
`EvalResult`): YAML metadata (licence from the corpora, base model, datasets, languages, metrics and a
model-index of the held-out results) above a Markdown body. The body is the list SECTIONS of functions
(folder, settings, metrics) -> Markdown; add a function there to add a section. A hand-written
"## Known limits" section at the end of an existing card is kept when the card is rewritten.

    python -m reports.model_card CHECKPOINT                      # rewrite a checkpoint's card from its own files
    python -m reports.model_card CHECKPOINT --cv_metrics M.json  # quote a cross-validation run's held-out figures
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from models.classifier import BACKBONES
from models.configuration import layers_text


@dataclass(frozen=True)
class Corpus:
    name: str       # as cited
    language: str | None  # ISO 639-1 code
    license: str    # Hub licence id; "other" where the corpus has none
    terms: str      # one line on its conditions


RESEARCH_ONLY = "research-use-only"  # license_name where a corpus allows research use only
CORPORA = {  # corpus reader name (corpora.py) -> what a card says about it
    "emodb": Corpus("EmoDB", "de", "other", "EmoDB (Berlin Database of Emotional Speech): free for research use."),
    "ravdess": Corpus("RAVDESS", "en", "cc-by-nc-sa-4.0", "RAVDESS (Livingstone & Russo 2018): CC BY-NC-SA 4.0. "
                      "Models trained on it inherit the non-commercial, share-alike condition."),
    "urdu": Corpus("URDU", "ur", "other", "URDU dataset (Latif et al.): for research purposes only."),
    "ased": Corpus("ASED", "am", "other", "ASED, Amharic Speech Emotion Dataset (Retta et al. 2022): no licence "
                   "file; research use only, cite the authors."),
    "emotiontts_ko": Corpus("emotiontts_ko", "ko", "cc-by-nc-sa-4.0", "emotiontts open DB, Korean emotional speech: "
                            "CC BY-NC-SA 4.0, research use only, no commercial use."),
    "cremad": Corpus("CREMA-D", "en", "odbl", "CREMA-D: Open Database License (ODbL)."),
    "tess": Corpus("TESS", "en", "cc-by-nc-nd-4.0", "TESS (Toronto emotional speech set): CC BY-NC-ND 4.0."),
    "casia": Corpus("CASIA", "zh", "other", "CASIA Chinese emotional speech: licensed by CASIA; research use."),
    "iemocap": Corpus("IEMOCAP", "en", "other", "IEMOCAP: licensed by USC SAIL for research; not redistributable."),
}
RESEARCH_ONLY_CORPORA = {"emodb", "urdu", "ased", "casia", "iemocap", "emotiontts_ko"}
WHISPER_SIZES = {(384, 4): "tiny", (512, 6): "base", (768, 12): "small", (1024, 24): "medium", (1280, 32): "large"}
KEPT_SECTION = "## Known limits"  # written by hand; a rewritten card keeps it
TASK = "audio-classification"


def read_config(folder: Path) -> dict:
    """Return the checkpoint's config.json as a dict ({} before it is written)."""
    return json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}


def corpus_names(settings: dict) -> list[str]:
    """Return the corpus reader names of a run's `--corpus` specs (`cremad=/data/x` -> cremad), sorted; a Hub
    dataset read with `hf=ORG/NAME` (or --dataset_name ORG/NAME) is named by its id."""
    def name(spec: str) -> str:
        reader, _, root = spec.partition("=")
        root = root.split(":")[0]
        return root if reader.strip().lower() == "hf" and _is_hub_id(root) else reader.split(":")[0]
    return sorted({name(spec) for spec in settings["data"]["corpus"]})


def _corpus(name: str) -> Corpus:
    return CORPORA.get(name, Corpus(name, None, "other", f"{name}: check its licence before use."))


def licence(corpora: list[str]) -> dict:
    """Return the card's licence fields: the corpora's one shared licence, else `other` with a name saying why."""
    ids = {_corpus(c).license for c in corpora}
    if len(ids) == 1 and "other" not in ids:
        return {"license": ids.pop()}
    research = [c for c in corpora if c in RESEARCH_ONLY_CORPORA or c not in CORPORA]
    return {"license": "other", "license_name": RESEARCH_ONLY if research else "combined-corpus-licences"}


def pretrained(settings: dict) -> bool:
    """Return True when the backbone is a pretrained encoder (Whisper, wav2vec2 family), not trained from scratch."""
    return hasattr(BACKBONES.get(settings["model"]["backbone"]), "load_encoder")


def _is_hub_id(name: str | None) -> bool:
    return bool(name) and name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()


def base_model(settings: dict, config: dict) -> str | None:
    """Return the Hub id of the pretrained encoder: the one trained from, or the Whisper size its config matches."""
    name = settings["model"].get("encoder") or config.get("encoder_name")
    if not pretrained(settings):
        return None
    if _is_hub_id(name):
        return name
    encoder = config.get("encoder_config") or {}
    if encoder.get("model_type") == "whisper":
        size = WHISPER_SIZES.get((encoder.get("d_model"), encoder.get("encoder_layers")))
        return f"openai/whisper-{size}" if size else None
    return None


def _summary(metrics: dict) -> tuple[dict | None, dict | None]:
    """Return (cross-validation dict with a summary, or None; single test report, or None)."""
    cv = metrics.get("cross_validation") or (metrics if metrics.get("summary") and len(metrics.get("folds", [])) > 1
                                             else None)
    return (cv if cv and cv.get("summary") else None), metrics.get("test")


def eval_results(settings: dict, metrics: dict) -> list[EvalResult]:
    """Return the model-index entries: UA, WA and macro-F1 on held-out speakers, and UA per corpus."""
    cv, test = _summary(metrics)
    names = [_corpus(c).name for c in corpus_names(settings)]
    if cv:
        values = {k: cv["summary"][k]["mean"] for k in ("ua", "wa", "macro_f1")}
        split = f"held-out speakers, {cv['protocol']} over {len(cv['folds'])} folds (mean over folds)"
    elif test:
        values = {k: test[k] for k in ("ua", "wa", "macro_f1")}
        split = f"held-out test speakers {', '.join(test.get('test_speakers', []))}"
    else:
        return []
    dataset = dict(task_type=TASK, task_name="Speech emotion recognition", dataset_type="+".join(corpus_names(settings)),
                   dataset_name=" + ".join(names), dataset_split=split)
    results = [
        EvalResult(**dataset, metric_type="recall", metric_value=round(values["ua"], 4), metric_args={"average": "macro"},
                   metric_name="UA (unweighted accuracy: mean per-class recall)"),
        EvalResult(**dataset, metric_type="accuracy", metric_value=round(values["wa"], 4),
                   metric_name="WA (weighted accuracy)"),
        EvalResult(**dataset, metric_type="f1", metric_value=round(values["macro_f1"], 4), metric_args={"average": "macro"},
                   metric_name="macro-F1"),
    ]
    by_corpus = (cv or {}).get("by_corpus") or {}
    for name, m in by_corpus.items() if len(by_corpus) > 1 else ():  # one corpus: the figures above already
        results.append(EvalResult(task_type=TASK, task_name="Speech emotion recognition", dataset_type=name,
                                  dataset_name=_corpus(name).name,
                                  dataset_split=f"held-out speakers, {cv['protocol']} over {len(cv['folds'])} folds "
                                                "(pooled over folds)",
                                  metric_type="recall", metric_value=round(m["ua"], 4), metric_args={"average": "macro"},
                                  metric_name="UA (unweighted accuracy: mean per-class recall)"))
    return results


def card_data(folder: Path, settings: dict, metrics: dict) -> ModelCardData:
    """Return the card's YAML metadata."""
    config = read_config(folder)
    corpora = corpus_names(settings)
    languages = sorted({_corpus(c).language for c in corpora} - {None})
    return ModelCardData(
        model_name=folder.name, library_name="transformers", pipeline_tag=TASK, base_model=base_model(settings, config),
        datasets=[_corpus(c).name for c in corpora], language=languages or None, metrics=["recall", "accuracy", "f1"],
        tags=["speech-emotion-recognition", "audio-classification", "custom_code"],
        eval_results=eval_results(settings, metrics) or None, **licence(corpora))


# ---- the body: each section is a function (folder, settings, metrics) -> Markdown ('' leaves it out) ----

def _confusion_table(confusion: list[list[int]], labels: list[str]) -> str:
    head = "| true \\ predicted | " + " | ".join(labels) + " |"
    rule = "|---" * (len(labels) + 1) + "|"
    rows = [f"| **{label}** | " + " | ".join(str(c) for c in row) + " |" for label, row in zip(labels, confusion)]
    return "\n".join([head, rule, *rows])


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
    seconds = metrics["train_seconds"]
    took = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
    return f"\n- **Training**: {metrics['epochs_run']:.0f} epochs{best}, {took} on the machine that trained it"


def overview(folder: Path, settings: dict, metrics: dict) -> str:
    model, data = settings["model"], settings["data"]
    config = read_config(folder) or model  # the layers actually read (settings may leave them to the default)
    name = base_model(settings, config) or model["encoder"]  # the Hub id of a local copy, never a local path
    encoder = (f"`{name}` ({model['encoder_mode']}, {layers_text(config)})"
               if pretrained(settings) else
               f"1-D CNN on the raw waveform, preset `{model['cnn_preset']}`" if model["backbone"] == "cnn1d" else
               f"`{model['backbone']}`, trained from scratch")
    return f"""# Speech emotion classifier: {model['backbone']} + {model['pooling']} pooling

- **Backbone**: {encoder}
- **Pooling head**: `{model['pooling']}`
- **Labels**: {', '.join(metrics['labels'])}
- **Data**: {', '.join(data['corpus'])} ({metrics.get('n_utterances', '?')} clips,
  {metrics.get('n_speakers', '?')} speakers), protocol `{data['protocol']}`{_training(metrics)}"""


def held_out(folder: Path, settings: dict, metrics: dict) -> str:
    cv, test = _summary(metrics)
    if cv:
        s = cv["summary"]
        text = (f"Cross-validated with the same recipe, protocol **{cv['protocol']}** over {len(cv['folds'])} folds "
                f"({cv['n_speakers']} speakers, no speaker in both training and test): "
                f"**UA {s['ua']['mean']:.3f} ± {s['ua']['std']:.3f}**, WA {s['wa']['mean']:.3f} ± {s['wa']['std']:.3f}, "
                f"macro-F1 {s['macro_f1']['mean']:.3f} ± {s['macro_f1']['std']:.3f} (mean ± std over folds). "
                f"{_by_corpus(cv)}Confusion matrix pooled over the folds' test speakers:")
        table = _confusion_table(s["pooled"]["confusion"], s["pooled"]["labels"])
    elif test:
        text = (f"Held-out test speakers {', '.join(test.get('test_speakers', []))}: **UA {test['ua']:.3f}**, "
                f"WA {test['wa']:.3f}, macro-F1 {test['macro_f1']:.3f} ({test['n']} clips).")
        table = _confusion_table(test["confusion"], test["labels"])
    elif metrics.get("leave_one_corpus_out"):
        text, table = ("No within-corpus evaluation (new speakers of the corpora it learned from) was run for this "
                       "checkpoint: its held-out figure is the one on corpora it never heard, below."), ""
    else:
        text, table = "No held-out evaluation was run for this checkpoint: its accuracy is unknown.", ""
    return f"## Held-out performance\n{text}\n\n{table}".rstrip()


def training_data(folder: Path, settings: dict, metrics: dict) -> str:
    corpora = corpus_names(settings)
    lines = "\n".join(f"- {_corpus(c).terms}" for c in corpora)
    fields = licence(corpora)
    why = (f"Licence of this model: `{fields['license']}`, that of its training data." if fields["license"] != "other"
           else f"Licence of this model: `other` ({fields['license_name']}): it inherits every condition above.")
    if any(c in RESEARCH_ONLY_CORPORA or "-nc" in _corpus(c).license for c in corpora):
        why += " These corpora are for research or non-commercial use: so is this model."
    return f"""## Training data and licence conditions
{lines}

{why}
{_emotions(metrics.get("label_sources"))}

Acted corpora (EmoDB, RAVDESS) hold exaggerated, read emotions by few speakers; expect lower
accuracy on spontaneous speech, other languages and other recording conditions."""


def _clips(corpora: dict[str, int]) -> str:
    return ", ".join(f"{_corpus(c).name} {n}" for c, n in sorted(corpora.items()))


def _emotions(sources: dict | None) -> str:
    """Return the emotions, the corpora (and clips) that carry each, and those left out, as Markdown."""
    if not sources or not sources.get("kept"):
        return ""
    rows = "\n".join(f"| {label} | {len(c)} | {_clips(c)} |" for label, c in sorted(sources["kept"].items()))
    text = f"\n| emotion | corpora | clips per corpus |\n|---|---|---|\n{rows}\n"
    left = sources.get("left_out") or {}
    if left:
        single = all(len(c) == 1 for c in left.values())
        text += ("\nLeft out (`--labels`): " + "; ".join(f"{label} ({_clips(c)})" for label, c in sorted(left.items()))
                 + (". Each comes from one corpus only: a model could learn it from one recording setup and never be "
                    "tested on it elsewhere." if single else ".") + "\n")
    return text


def usage(folder: Path, settings: dict, metrics: dict) -> str:
    name = Path(folder).name
    return f"""## Use
The model's code is in this folder (`trust_remote_code=True` runs it); transformers, torch, soundfile
and soxr are all it needs. From the folder that holds `{name}` (or with its Hub repo id):
```python
from transformers import pipeline
classify = pipeline("audio-classification", model="{name}", trust_remote_code=True)
print(classify("speech.wav", top_k=None))  # or a 16 kHz float32 numpy array; long audio is scored in windows
```
With this project: `python infer.py --checkpoint {name} --output out.csv FILES_OR_FOLDERS`, or
`python export.py --checkpoint {name} --format onnx` for one ONNX graph (waveform in, probabilities out)."""


def _left_out(report: dict) -> str:
    return "+".join(report.get("test_corpora") or sorted({s.split(":")[0] for s in report.get("test_speakers", [])}))


def generalization(folder: Path, settings: dict, metrics: dict) -> str:
    """Leave-one-corpus-out figures of the same recipe and its calibration, when the checkpoint quotes them."""
    loco = metrics.get("leave_one_corpus_out")
    if not loco:
        return ""
    folds = loco["folds"]
    names = [_left_out(r) for r in folds]
    modes = [("none", "each clip alone (the app, `infer.py`)")]
    if all("normalization" in r for r in folds):
        modes += [("speaker", "with its speaker's other clips (`infer.py --normalize speaker`; a speaker with fewer "
                              "than three emotions: their corpus's)"),
                  ("corpus", "with the other clips of its corpus (`infer.py --normalize folder`)")]
    rows = []
    for mode, text in modes:
        values = [(r["normalization"][mode]["ua"] if "normalization" in r else r["ua"]) for r in folds]
        rows.append(f"| {text} | " + " | ".join(f"{v:.3f}" for v in values) + f" | **{sum(values) / len(values):.3f}** |")
    table = "\n".join([f"| UA, a clip judged | {' | '.join(names)} | mean |", "|---" * (len(names) + 2) + "|", *rows])
    cal = loco.get("calibration")
    calibration = ""
    if cal:
        by_fold = list(cal["folds"].values())
        calibration = (f"\n\nProbabilities are calibrated: the logits are divided by a temperature of "
                       f"{cal['temperature']:.2f}, fit on these left-out corpora's predictions. Expected calibration "
                       "error (15 bins), each corpus checked with a temperature fit on the other four: "
                       + ", ".join(f"{n} {f['ece_before']:.3f} → {f['ece_after']:.3f}" for n, f in zip(names, by_fold))
                       + f". A top probability under {cal['unsure_below']:.2f} was wrong more often than right on "
                       "unseen corpora: the app then says the model is unsure.")
    return (f"## On corpora it never heard (leave one corpus out)\nThe same recipe trained on all corpora but one and "
            f"tested on that one, over the emotions the others also carry ({len(folds)} folds):\n\n{table}"
            f"{calibration}")


def adaptation(folder: Path, settings: dict, metrics: dict) -> str:
    """Calibration and "unsure" per mode (a clip alone; adapted to its speaker), and the simulated users' curve."""
    modes, users = metrics.get("calibration_by_mode"), metrics.get("simulated_users")
    if not modes and not users:
        return ""
    text = ["## Alone and adapted to the speaker",
            "A clip is judged **alone** (with the model's statistics: the app's first recording) or **adapted** to its "
            "speaker (with the statistics of the speaker's recordings: the app from the second recording on, "
            "`infer.py --normalize`, `Recognizer.adapt`)."]
    if modes:
        text += ["", "Each mode has its own calibration, fit on the held-out clips of leave-one-corpus-out and of the "
                 "speaker folds together (unseen languages and unseen speakers of known ones): log T = intercept + "
                 "slope × log(the clip's mean squared distance from the training data, in the model's units).", "",
                 "| mode | intercept | slope | ECE before → after (held-out clips) | unsure below |", "|---|---|---|---|---|"]
        text += [f"| {mode} | {fit['intercept']:.2f} | {fit['slope']:.2f} | {fit['ece_before']:.3f} → {fit['ece']:.3f} "
                 f"({fit['n']} clips) | {fit['unsure_below']:.2f} |" for mode, fit in modes.items()]
    if users:
        ways = list(users["mean"])
        text += ["", "Simulated users (every speaker of a left-out corpus records their clips in a random order; UA "
                 "over the five left-out corpora, judged with the statistics of their first K recordings):", "",
                 "| " + " | ".join(ways) + " |", "|---" * len(ways) + "|",
                 "| " + " | ".join(f"{users['mean'][w]:.3f}" for w in ways) + " |"]
    return "\n".join(text)


def shared_weights(folder: Path, settings: dict, metrics: dict) -> str:
    """A head-only checkpoint (models/shared_encoder.py): where its encoder is, and how to get a copy that loads alone."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    if not config.get("shared_encoder"):
        return ""
    return (f"## Weights: the head only\n"
            f"This folder holds the classifier head only; the frozen encoder it runs on is shared with other models "
            f"in `{config['shared_encoder']}` (relative to this folder; SHA-256 `{config.get('shared_encoder_sha256', '?')[:16]}…`"
            f"), loaded once per process. It loads as any checkpoint where that folder is beside it. For a copy that "
            f"loads alone (the full weights, the code, `auto_map`): `python export.py --checkpoint THIS_FOLDER "
            f"--format transformers --output DIR`.")


SECTIONS: list[Callable[[Path, dict, dict], str]] = [overview, held_out, generalization, adaptation, training_data,
                                                      shared_weights, usage]


def write_model_card(folder: str | Path, settings: dict, metrics: dict) -> Path:
    """Write README.md describing the checkpoint in `folder` and return its path."""
    folder = Path(folder)
    body = "\n\n".join(text for section in SECTIONS if (text := section(folder, settings, metrics).strip()))
    path = folder / "README.md"
    kept = path.read_text().partition(KEPT_SECTION)[2] if path.exists() else ""
    card = ModelCard(f"---\n{card_data(folder, settings, metrics).to_yaml()}\n---\n{body}\n"
                     + (f"\n{KEPT_SECTION}{kept}" if kept else ""))
    card.save(path)
    return path


def attach_cross_validation(folder: str | Path, cv_metrics: str | Path) -> Path:
    """Quote a cross-validation run's figures in a checkpoint's metrics.json, confusion.png and card."""
    from reports.plots import confusion_png

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


def rewrite(folder: str | Path) -> Path:
    """Rewrite a checkpoint's card from its own settings.json and metrics.json."""
    folder = Path(folder)
    return write_model_card(folder, json.loads((folder / "settings.json").read_text()),
                            json.loads((folder / "metrics.json").read_text()))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint folder written by train.py")
    parser.add_argument("--cv_metrics", help="metrics.json of the same recipe's cross-validation run, to quote")
    args = parser.parse_args()
    print(attach_cross_validation(args.checkpoint, args.cv_metrics) if args.cv_metrics else rewrite(args.checkpoint))

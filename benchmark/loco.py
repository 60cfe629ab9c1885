"""Leave-one-corpus-out in the benchmark: the generalization protocol, the ideas measured on it, its tables.

The protocol trains on four of the five shared corpora and tests on the fifth, over the emotions they share
(`data_process.make_folds(..., "loco")`). Every idea of issue 12 is a system here, run on the same folds, and
`generalization_section` writes its table: one column per left-out corpus, their mean, the change against
the shipped default recipe, and the calibration of each system's probabilities.
"""
from __future__ import annotations

import numpy as np

LOCO_CORPORA = ("emodb", "ravdess", "urdu", "ased", "emotiontts_ko")
# The default's label set: every emotion at least two corpora carry. calm (RAVDESS only) is merged into neutral,
# boredom (EmoDB only) and surprised (RAVDESS only) are left out (docs/benchmarks.md has the LOCO figures).
LOCO_LABELS = ("angry", "disgust", "fearful", "happy", "neutral", "sad")
LOCO_MERGE = "calm:neutral"
BASELINE_SYSTEM = "whisper_lw_mean_shipped"  # the recipe of the checkpoint shipped before issue 12

WHISPER = ("--backbone", "whisper", "--encoder", "{encoder}", "--save_fp16", "true")


def linear(*extra: str, pooling: str = "mean", norm: str = "none") -> tuple[str, ...]:
    """Flags of a linear classifier on every layer's pooled frames side by side, trained on pooled embeddings (no
    learned weights before it: the path where per-group standardisation of the embedding is possible)."""
    return WHISPER + ("--layer_mix", "concat", "--projector_dim", "0", "--pooling", pooling, "--classifier_hidden", "0",
                      "--num_train_epochs", "20", "--per_device_train_batch_size", "32", "--val_speakers", "0",
                      "--embedding_norm", norm) + (() if "--first_layer" in extra else ("--first_layer", "0")) + (
                      () if "--train_alone" in extra else ("--train_alone", "false")) + extra


# (name, title, flags): each a LOCO idea, measured against BASELINE_SYSTEM on the same folds
IDEAS = [
    (BASELINE_SYSTEM, "the shipped default's recipe: layer-weighted sum, mean pooling, 256-unit hidden layer, 12 epochs",
     WHISPER + ("--pooling", "mean", "--layer_mix", "weighted", "--num_train_epochs", "12", "--val_speakers", "0",
                "--projector_dim", "256", "--classifier_hidden", "256", "--embedding_norm", "none", "--first_layer", "0")),
    ("whisper_linear", "linear classifier on every layer's mean", linear()),
    ("whisper_linear_std", "+ embeddings standardised (the training set's statistics, or a group's own)",
     linear(norm="all")),
    ("whisper_linear_std_l1", "standardised, without layer 0 (the convolutions' output, before any transformer layer)",
     linear("--first_layer", "1", norm="all")),
    ("whisper_linear_corpusnorm", "+ embeddings standardised per training corpus", linear(norm="corpus")),
    ("whisper_linear_speakernorm", "+ embeddings standardised per training speaker",
     linear(norm="speaker")),
    ("whisper_linear_meanstd", "linear classifier on every layer's mean and standard deviation",
     linear(pooling="mean_std")),
    ("whisper_linear_speakernorm_alone", "per-speaker standardisation, also trained on clips standardised as if alone",
     linear("--train_alone", "true", norm="speaker")),
    ("whisper_linear_std_balanced", "standardised, (corpus, emotion) pairs drawn equally often",
     linear("--balanced_sampling", "true", norm="all")),
    ("whisper_linear_std_smooth", "standardised, label smoothing 0.1",
     linear("--label_smoothing_factor", "0.1", norm="all")),
    ("whisper_linear_std_aug", "standardised, + one microphone/room variant of every clip",
     linear("--augment_variants", "1", norm="all")),
    ("whisper_linear_std_l1_aug", "the default recipe (layers 1-6) + one microphone/room variant of every clip",
     linear("--first_layer", "1", "--augment_variants", "1", norm="all")),
]


def corpus_of(report: dict) -> str:
    """Return the test corpus of a LOCO fold report (its test speakers are 'corpus:id')."""
    corpora = report.get("test_corpora") or sorted({s.split(":", 1)[0] for s in report.get("test_speakers", [])})
    return corpora[0] if len(corpora) == 1 else "+".join(corpora)


def by_left_out(reports: list[dict], key: str = "ua", mode: str | None = None) -> dict[str, float]:
    """Return {left-out corpus: metric} of a LOCO cell; `mode` reads a normalisation mode's figure instead."""
    out = {}
    for report in reports:
        source = report if mode is None else report.get("normalization", {}).get(mode)
        if source is not None:
            out[corpus_of(report)] = source[key]
    return out


def row(values: dict[str, float], baseline: dict[str, float] | None = None) -> list[str]:
    cells = [f"{values[c]:.3f}" if c in values else "–" for c in LOCO_CORPORA]
    complete = all(c in values for c in LOCO_CORPORA)
    mean = float(np.mean([values[c] for c in LOCO_CORPORA])) if complete else None
    cells.append(f"**{mean:.3f}**" if mean is not None else "–")
    if baseline is not None:
        base = [baseline.get(c) for c in LOCO_CORPORA]
        cells.append(f"{100 * (mean - np.mean(base)):+.1f}" if mean is not None and None not in base else "–")
    return cells


def users_lines(cells: dict) -> list[str]:
    """Return the table of simulated app users (benchmark.users, kept in the record's LOCO cell) of every system
    `cells` ({system: cell state}) has one for."""
    found = {s: c["users"] for s, c in cells.items() if c.get("users")}
    if not found:
        return []
    lines = ["", "### One person, one microphone: calibrating in the app", "",
             "Each speaker of a left-out corpus plays a new user of the app (`python -m benchmark.users`): two of their neutral "
             "clips are kept for calibration and never judged; every other clip of theirs is judged alone, after "
             "calibrating on one or two calm clips, with the statistics of their earlier clips in the session (a "
             "random order, drawn towards the model's own by a prior of a few pseudo-clips), or with all of their "
             "clips (an upper bound). UA on the same clips in every row:", ""]
    for s, result in found.items():
        ways = list(result["mean"])
        lines += [f"`{s}`:", "", "| judged | " + " | ".join(LOCO_CORPORA) + " | mean |", "|---|" + "---|" * 6]
        for way in ways:
            values = {c: result["by_corpus"][c][way] for c in LOCO_CORPORA if c in result["by_corpus"]}
            lines.append(f"| {way} | " + " | ".join(row(values)) + " |")
        lines.append("")
    return lines


def predictions(cell) -> dict[str, tuple[str, str, str]]:
    """Return {clip path: (corpus, label, predicted)} over the folds of a train.py run folder."""
    import csv

    out = {}
    for path in sorted(cell.glob("fold_*/predictions.csv")):
        with open(path, newline="") as f:
            out.update({r["path"]: (r["corpus"], r["label"], r["predicted"]) for r in csv.DictReader(f)})
    return out


def label_set_lines(six: dict) -> list[str]:
    """Return the table comparing calm merged into neutral (loco) with calm left out (loco_six) on the same clips, from
    the figures benchmark/record.py computed into each system's loco_six cell (`six`: {system: cell state})."""
    pairs = {s: c["label_set"] for s, c in six.items() if c.get("label_set")}
    if not pairs:
        return []
    lines = ["", "### Which emotions", "",
             "Calm (RAVDESS), boredom (EmoDB) and surprised (RAVDESS) each come from one corpus only, so a model "
             "learns them from one recording setup and no other corpus can test them. Merging calm into neutral "
             "keeps its clips; leaving it out keeps neutral as the other corpora record it. Both trained on the same "
             "folds, judged on the clips both tested (every clip but RAVDESS calm), each clip alone:", "",
             "| system | calm | " + " | ".join(LOCO_CORPORA) + " | mean |", "|---|---|" + "---|" * 6]
    for s, pair in pairs.items():
        for text, values in pair.items():
            lines.append(f"| `{s}` | {text} | " + " | ".join(row(values)) + " |")
    return lines


def generalization_section(cells: dict, systems: dict, protocol: str = "loco") -> list[str]:
    """Return the document's leave-one-corpus-out section from the cells of `protocol`."""
    ran = {s: c for (s, p), c in cells.items() if p == protocol and c["reports"]}
    if not ran:
        return ["## Generalization: leave one corpus out", "", "> Not run yet: `python -m benchmark.run --protocols loco "
                "--systems egemaps_svm mfcc_mlp " + " ".join(name for name, _, _ in IDEAS) + "`.", ""]
    names = list(LOCO_CORPORA)
    base = by_left_out(ran[BASELINE_SYSTEM]["reports"]) if BASELINE_SYSTEM in ran else None
    lines = ["## Generalization: leave one corpus out", "",
             "Each column is a corpus the system never heard: it trains on the other four and is tested on that one, "
             f"over the emotions they share (labels {', '.join(LOCO_LABELS)}; RAVDESS calm merged into neutral; "
             "EmoDB boredom and RAVDESS surprised left out, as no other corpus has them). UA per left-out corpus, "
             "their mean, and the change of that mean against the recipe of the previous default checkpoint "
             f"(whisper-base-mean, `{BASELINE_SYSTEM}`) in points. Each clip is judged alone, as the app judges one "
             "recording. The shipped default, whisper-base-std-linear, is `whisper_linear_std_l1`'s recipe (with calm left "
             "out: *Which emotions* below).", "",
             "| system | what | " + " | ".join(names) + " | mean | vs previous default |", "|---|---|" + "---|" * (len(names) + 2)]
    for s, cell in ran.items():
        lines.append(f"| `{s}` | {systems[s].title} | " + " | ".join(row(by_left_out(cell["reports"]), base or {})) + " |")
    modes = {s: c for s, c in ran.items() if any("normalization" in r for r in c["reports"])}
    if modes:
        lines += ["", "### With the statistics of several clips", "",
                  "Systems trained with `--embedding_norm` standardise a clip's embedding with statistics: a clip "
                  "alone uses the training groups' average (above); given several clips of one speaker, or of one "
                  "corpus (a folder of one recording setup), their own statistics are used (`infer.py --normalize "
                  "speaker|folder`). Same folds, same trained models:", "",
                  "| system | statistics | " + " | ".join(names) + " | mean |", "|---|---|" + "---|" * (len(names) + 1)]
        for s, cell in modes.items():
            for mode, text in (("none", "each clip alone"), ("speaker", "per test speaker"), ("corpus", "per corpus")):
                lines.append(f"| `{s}` | {text} | " + " | ".join(row(by_left_out(cell["reports"], mode=mode))) + " |")
    lines += users_lines(ran)
    lines += label_set_lines({s: c for (s, p), c in cells.items() if p == "loco_six" and s in ran})
    calibrated = {s: c["calibration"] for s, c in ran.items() if c.get("calibration")}
    if calibrated:
        lines += ["", "### Calibration (expected calibration error, 15 bins)", "",
                  "Before: the model's own probabilities. After: divided by a temperature fit on the *other* left-out "
                  "corpora's predictions (so no corpus grades its own temperature). The shipped temperature is fit on "
                  "all five. Reliability diagrams: `reliability_fold_NN.png` in each cell's run folder (`runs/bench`, "
                  "not committed).", "",
                  "| system | " + " | ".join(names) + " | all | temperature |", "|---|" + "---|" * (len(names) + 2)]
        for s, cal in calibrated.items():
            folds = {corpus_of(r): f for r, f in zip(ran[s]["reports"], cal["folds"].values())}
            lines.append(f"| `{s}` | " + " | ".join(
                f"{folds[c]['ece_before']:.3f} → {folds[c]['ece_after']:.3f}" if c in folds else "–" for c in names)
                + f" | {cal['ece_before']:.3f} → {cal['ece_after']:.3f} | {cal['temperature']:.2f} |")
    return lines + [""]

"""Issue 17, item 4: Whisper-base's top 2 layers fine-tuned from cached inputs, leave one corpus out, fold by fold.

    nohup nice -n 15 python3 -m benchmark.finetune_cached > runs/ft_top2_cached_loco.log 2>&1 &   # run or resume
    python3 -m benchmark.finetune_cached --collect                    # only write the finished folds' JSON
    python3 -m benchmark.finetune_cached --report                     # rebuild README.md from the committed JSON

Each fold runs as its own `train.py --run_folds I` (a fold whose metrics.json exists is kept, so an interrupted run
resumes where it stopped, across sessions); each finished fold is written to
benchmark/results/finetune_cached/fold_XX.json (test corpus, UA, seconds, the command, date, load average), which is
committed. Folds run smallest training set first (ASED left out first). Corpus order (train.py's loco folds):
0 ased, 1 emodb, 2 emotiontts_ko, 3 ravdess, 4 urdu.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmark.common import CPU_FINETUNE, ROOT

RESULTS = ROOT / "benchmark" / "results" / "finetune_cached"
OUTPUT = "runs/ft_top2_cached_loco"
RECIPE = ["--corpus", "emodb", "ravdess", "urdu", "ased", "emotiontts_ko",
          "--labels", "angry", "disgust", "fearful", "happy", "neutral", "sad", "--protocol", "loco",
          "--encoder", "../shared/models/whisper-base-encoder", "--encoder_mode", "finetune", "--trainable_layers", "2",
          "--first_layer", "1", "--pooling", "mean", "--layer_mix", "concat", "--classifier_hidden", "0",
          "--embedding_norm", "none", "--head_epochs", "40", "--learning_rate", "1e-3",
          "--encoder_learning_rate", "5e-5", "--per_device_train_batch_size", "16", "--num_train_epochs", "4",
          "--val_speakers", "0", "--disable_tqdm", "true", "--output_dir", OUTPUT]
# a fold resumes from its last epoch; progress in the log; bf16 autocast for the two trainable layers and batches of
# similar lengths (little padding): together about 4x faster on this CPU than float32 random batches
RUNNING = ["--save_strategy", "epoch", "--logging_steps", "10", *CPU_FINETUNE]
ORDER = (0, 3, 1, 4, 2)  # smallest training set first
MODES = {"alone": "none", "adapted": "speaker"}  # the benchmark's names for train.py's test modes


def collect(fold: int, command: list[str], wall_seconds: float | None = None) -> dict | None:
    """Write fold_XX.json for a finished fold; return it (None if the fold has not finished)."""
    metrics_file = ROOT / OUTPUT / f"fold_{fold:02d}" / "metrics.json"
    target = RESULTS / f"fold_{fold:02d}.json"
    if not metrics_file.exists():
        return None
    if target.exists() and wall_seconds is None:
        return json.loads(target.read_text())
    metrics = json.loads(metrics_file.read_text())
    test = metrics["test"]
    corpus = test["test_corpora"][0]
    result = {
        "fold": fold, "test_corpus": corpus, "ua": test["ua"], "wa": test["wa"], "macro_f1": test.get("macro_f1"),
        "n_test": test.get("n"), "normalization": test.get("normalization"),  # UA per test mode: none, speaker, corpus
        "fold_seconds": metrics.get("fold_seconds"), "train_seconds": metrics.get("train_seconds"),
        "process_seconds": wall_seconds,  # train.py's whole process: loading the caches too
        "finetune_from_cache": metrics.get("finetune_from_cache"), "sizes": metrics.get("sizes"),
        "command": "python train.py " + " ".join(command), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"), "loadavg": os.getloadavg(), "cpus": os.cpu_count()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", default=",".join(map(str, ORDER)), help="fold numbers, in run order")
    parser.add_argument("--collect", action="store_true", help="only write the JSON of folds already finished")
    parser.add_argument("--report", action="store_true", help="only rebuild README.md from the committed JSON")
    args = parser.parse_args(argv)
    if args.report:
        print(write_report())
        return
    for fold in [int(f) for f in args.folds.split(",")]:
        command = [*RECIPE, *RUNNING, "--run_folds", str(fold)]
        if args.collect or (ROOT / OUTPUT / f"fold_{fold:02d}" / "metrics.json").exists():
            result = collect(fold, command)
        else:
            start = time.time()
            subprocess.run([sys.executable, "train.py", *command], cwd=ROOT, check=True)
            result = collect(fold, command, time.time() - start)
        print(f"fold {fold}: {json.dumps(result) if result else 'not finished'}", flush=True)
    write_report()


def frozen_default() -> dict:
    """The shipped default's UA per left-out corpus and mode (benchmark/results/adaptation.json)."""
    results = json.loads((ROOT / "benchmark" / "results" / "adaptation.json").read_text())
    modes = results["recipes"][results["chosen"]]["modes"]
    return {mode: {corpus: fold["ua"] for corpus, fold in modes[mode]["folds"].items()} for mode in MODES}


def write_report(doc: Path = RESULTS / "README.md") -> Path:
    """Rebuild README.md's results from the committed fold JSON (and the default's figures), both modes, and with
    all five folds the verdict."""
    folds = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("fold_*.json"))]
    default = frozen_default()
    lines = ["| fold | left out | train clips | FT alone | FT adapted | default alone | default adapted | fold minutes |",
             "|---|---|---|---|---|---|---|---|"]
    sums = {key: [] for key in ("ft_alone", "ft_adapted", "alone", "adapted")}
    for f in folds:
        corpus, by_mode = f["test_corpus"], f.get("normalization") or {}
        ft = {mode: (by_mode.get(test) or {}).get("ua") for mode, test in MODES.items()}
        ft["alone"] = ft["alone"] if by_mode else f["ua"]  # folds run before both modes were saved: alone only
        for key, value in (("ft_alone", ft["alone"]), ("ft_adapted", ft["adapted"]),
                           ("alone", default["alone"][corpus]), ("adapted", default["adapted"][corpus])):
            sums[key].append(value)
        cell = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"| {f['fold']} | {corpus} | {f['sizes']['train']} | {cell(ft['alone'])} | {cell(ft['adapted'])} | "
                     f"{default['alone'][corpus]:.3f} | {default['adapted'][corpus]:.3f} | {f['fold_seconds'] / 60:.1f} |")
    if folds and all(v is not None for values in sums.values() for v in values):
        mean = {k: sum(v) / len(v) for k, v in sums.items()}
        lines.append(f"| mean | {len(folds)} of 5 folds | | {mean['ft_alone']:.3f} | {mean['ft_adapted']:.3f} | "
                     f"{mean['alone']:.3f} | {mean['adapted']:.3f} | |")
        if len(folds) == 5:
            lines += ["", verdict(folds, sums)]
    text = doc.read_text()
    start, end = text.index(TABLE_START), text.index(TABLE_END)
    doc.write_text(text[:start + len(TABLE_START)] + "\n" + "\n".join(lines) + "\n" + text[end:])
    return doc


def verdict(folds: list[dict], sums: dict) -> str:
    """Return the verdict on all five folds: adopted only if it wins adapted without losing alone (issue 17)."""
    gain = {mode: [100 * (ft - frozen) for ft, frozen in zip(sums[f"ft_{mode}"], sums[mode])]
            for mode in ("alone", "adapted")}
    mean = {mode: sum(g) / len(g) for mode, g in gain.items()}
    adopted = mean["adapted"] > 0 and mean["alone"] >= 0
    corpora = [f["test_corpus"] for f in folds]
    wins = [c for c, a, b in zip(corpora, gain["alone"], gain["adapted"]) if a > 0 and b > 0]
    worst = min(range(len(folds)), key=lambda i: gain["adapted"][i])
    minutes = [f["fold_seconds"] / 60 for f in folds]
    lift = [100 * (a - b) for a, b in zip(sums["ft_adapted"], sums["ft_alone"])]
    return (f"**Verdict: {'adopted' if adopted else 'not adopted'}.** Against the frozen default, mean over the five "
            f"folds: {mean['alone']:+.1f} points alone, {mean['adapted']:+.1f} adapted; it wins in both modes with "
            f"{', '.join(wins) or 'no corpus'} left out and loses most adapted with {corpora[worst]} left out "
            f"({gain['adapted'][worst]:+.1f}). The adapted mode adds {min(lift):.1f}-{max(lift):.1f} points to the "
            f"fine-tuned model on every fold. A fold took {min(minutes):.0f}-{max(minutes):.0f} minutes on this 2-core "
            "CPU (load average in each JSON).")


TABLE_START, TABLE_END = "<!-- results: python3 -m benchmark.finetune_cached --report -->", "<!-- end of results -->"


if __name__ == "__main__":
    main()

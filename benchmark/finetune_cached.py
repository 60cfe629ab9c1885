"""Issue 17, item 4: Whisper-base's top 2 layers fine-tuned from cached inputs, leave one corpus out, fold by fold.

    nohup nice -n 15 python3 -m benchmark.finetune_cached > runs/ft_top2_cached_loco.log 2>&1 &   # run or resume
    python3 -m benchmark.finetune_cached --collect                    # only write the finished folds' JSON

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

ROOT = Path(__file__).resolve().parents[1]
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
RUNNING = ["--save_strategy", "epoch", "--logging_steps", "10", "--bf16", "true", "--use_cpu", "true",
           "--train_sampling_strategy", "group_by_length"]
ORDER = (0, 3, 1, 4, 2)  # smallest training set first
FROZEN_DEFAULT_UA = {"ased": 0.418, "emodb": 0.562, "emotiontts_ko": 0.510, "ravdess": 0.490, "urdu": 0.383}


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
        "n_test": test.get("n"), "normalization": test.get("normalization"),  # per-mode UA where the model standardises
        "frozen_default_ua": FROZEN_DEFAULT_UA.get(corpus),
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
    args = parser.parse_args(argv)
    for fold in [int(f) for f in args.folds.split(",")]:
        command = [*RECIPE, *RUNNING, "--run_folds", str(fold)]
        if args.collect or (ROOT / OUTPUT / f"fold_{fold:02d}" / "metrics.json").exists():
            result = collect(fold, command)
        else:
            start = time.time()
            subprocess.run([sys.executable, "train.py", *command], cwd=ROOT, check=True)
            result = collect(fold, command, time.time() - start)
        print(f"fold {fold}: {json.dumps(result) if result else 'not finished'}", flush=True)


if __name__ == "__main__":
    main()

"""What running the benchmark, measuring its speed and writing its report share.

The protocols (the columns of the table) and the systems (its rows), the folds every system sees
(`prepare`), where things are (ROOT, the Whisper-base encoder, the default results folder and document)
and small helpers for the results' JSON files and the machine the figures were taken on.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from benchmark.loco import IDEAS, LOCO_CORPORA, LOCO_LABELS, LOCO_MERGE

# torch's OpenMP threads spin while idle by default; on a CPU shared with other jobs that makes them several
# times slower (as app.py found). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]  # the project root: train.py, checkpoints/, docs/
SHARED = Path(os.environ.get("SER_SHARED", ROOT.parent / "shared"))
WHISPER_BASE = SHARED / "models" / "whisper-base-encoder"
RESULTS = "runs/bench"  # default results folder (relative to the working directory, as train.py's runs/)
QUICK_RESULTS = "runs/bench-quick"
DOC = ROOT / "docs" / "benchmarks.md"
SPEED_PARTS = ("rtf", "latency", "lengths", "training", "finetune")  # what benchmark.speed measures
SPEED_BASELINE = "egemaps_svm"  # the speed ratios' reference


# ---------------------------------------------------------------------------------------------
# Protocols: the columns of the table. Each becomes train.py's --corpus/--protocol/... flags, and
# the same folds are rebuilt here (data_process.make_folds, same rows, same seed) for the baselines.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    corpus: tuple[str, ...]
    split: str  # a make_folds / train.py protocol
    folds: int = 5  # k of speaker_kfold
    labels: tuple[str, ...] | None = None  # keep only these (after merges)
    merge: str | None = None
    test_corpus: str | None = None  # split "fixed": every speaker of this corpus is tested, the others train
    note: str = ""


SHARED_CLASSES = ("angry", "happy", "neutral", "sad")
PROTOCOLS = {p.name: p for p in [
    Protocol("emodb_loso", "EmoDB LOSO", ("emodb",), "loso",
             note="7 classes, leave one of the 10 speakers out (10 folds)."),
    Protocol("ravdess_5fold", "RAVDESS 1-20, 5 folds", ("ravdess",), "speaker_kfold", 5,
             note="8 classes, actors 1-20 in 5 folds of 4 actors (actors 21-24 are kept for independent evaluation)."),
    Protocol("urdu_5fold", "URDU, 5 folds", ("urdu",), "speaker_kfold", 5,
             note="4 classes, the 29 speaker IDs in 5 speaker-disjoint folds."),
    Protocol("cross_corpus", "RAVDESS+EmoDB → URDU", ("ravdess", "emodb", "urdu"), "fixed", labels=SHARED_CLASSES,
             merge="calm:neutral", test_corpus="urdu",
             note="train on RAVDESS 1-20 + EmoDB, test on every URDU speaker, over angry/happy/neutral/sad. RAVDESS "
                  "'calm' is merged into neutral: URDU's neutral is unexcited conversational speech, which is what "
                  "calm is, and the merge gives the English neutral class 240 clips instead of 80. EmoDB boredom, "
                  "fear and disgust and RAVDESS fearful, disgust and surprised have no URDU counterpart and are left out."),
    Protocol("loco", "Leave one corpus out", LOCO_CORPORA, "loco", labels=LOCO_LABELS, merge=LOCO_MERGE,
             note="5 folds: each corpus (EmoDB, RAVDESS 1-20, URDU, ASED, emotiontts_ko) is tested once by a model "
                  "trained on the other four, over the emotions they share (see *Generalization* below)."),
    Protocol("loco_six", "Leave one corpus out, calm left out", LOCO_CORPORA, "loco", labels=LOCO_LABELS,
             note="the same folds and emotions, with RAVDESS calm left out instead of merged into neutral: the label "
                  "set of the shipped default (see *Which emotions* below)."),
]}


# ---------------------------------------------------------------------------------------------
# Systems: the rows. Ours are train.py flag sets; baselines are benchmark/baselines.py names.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class System:
    name: str
    title: str
    family: str  # "ours", "baseline" or "extra" (other backbones in models.BACKBONES)
    flags: tuple[str, ...] = ()  # train.py flags; "{encoder}" becomes --encoder's value
    default: bool = True  # run when --systems is not given
    needs_gpu: bool = False
    from_scratch: bool = False  # no pretrained weights at all


# train.py's defaults before issue 12 made the best measured recipe its default: the systems measured before keep them
PRE_ISSUE_12 = {"--pooling": "attention", "--layer_mix": "last", "--projector_dim": "256", "--classifier_hidden": "256",
                "--val_speakers": "1", "--num_train_epochs": "40", "--embedding_norm": "none", "--first_layer": "0",
                "--train_alone": "false"}


def pinned(flags: tuple[str, ...]) -> tuple[str, ...]:
    """Return `flags` with the pre-issue-12 default of every setting they leave out."""
    return tuple(flags) + tuple(x for key, value in PRE_ISSUE_12.items() if key not in flags for x in (key, value))


WHISPER = ("--backbone", "whisper", "--encoder", "{encoder}", "--save_fp16", "true")
# Frozen-encoder heads: 20 epochs of batches of 8 on every non-test speaker, no early stopping (on EmoDB LOSO this
# gave UA 0.864 where 12 epochs of batches of 32 gave 0.748: with a few hundred clips those heads were undertrained).
HEAD = ("--num_train_epochs", "20", "--per_device_train_batch_size", "8", "--val_speakers", "0")
POOLINGS = ("mean", "max", "attention", "conv_max")
LAYER_MIXES = {"cat": ("concat", "all layers side by side"), "lw": ("weighted", "layer-weighted"),
               "": ("last", "last layer only")}
CNN = ("--backbone", "cnn1d", "--cnn_first_stride", "4", "--pooling", "max", "--crop_seconds", "1.5",
       "--num_train_epochs", "6", "--patience", "3")  # as tests/checkpoints/cnn1d-light
# Fine-tuning: the best frozen head (all layers side by side, mean pooling, linear) is first fit alone on the cached
# frozen layers (40 epochs, about 2 minutes), then the encoder's top layers at 5e-5 and the head at 1e-3 train together
# for 4 epochs, no validation speaker. A head starting from random weights with the encoder (attention pooling,
# weighted layers, 6 epochs) gave EmoDB LOSO folds 0 and 1 UA 0.550 and 0.594; fit first, fold 0 gave 0.944.
FINETUNE = ("--encoder_mode", "finetune", "--pooling", "mean", "--layer_mix", "concat", "--classifier_hidden", "0",
            "--head_epochs", "40", "--learning_rate", "1e-3", "--encoder_learning_rate", "5e-5",
            "--per_device_train_batch_size", "16", "--crop_seconds", "4", "--num_train_epochs", "4", "--val_speakers", "0")
# Fine-tuning top layers on CPU, as benchmark/results/finetune_cached measured: they train from the cached inputs of
# the frozen ones (train.py's default), in bf16 autocast, on batches of similar lengths: about 5x less work than audio.
CPU_FINETUNE = ("--bf16", "true", "--use_cpu", "true", "--train_sampling_strategy", "group_by_length")

SYSTEMS = {s.name: s for s in [  # in run order: cheap first, so an interrupted benchmark has the most cells
    System("egemaps_svm", "eGeMAPSv02 + SVM", "baseline"),
    System("mfcc_mlp", "MFCC/chroma/mel + MLP", "baseline"),
    *[System(f"whisper_{key}_{p}".replace("__", "_"), f"Whisper-base frozen, {text}, {p} pooling", "ours",
             pinned(WHISPER + ("--pooling", p, "--layer_mix", mix) + HEAD), default=key == "cat" or p == "mean")
      for key, (mix, text) in LAYER_MIXES.items() for p in POOLINGS],
    # The heads above end in a 256-unit ReLU layer; a linear classifier on the same frozen features fits ~430 EmoDB
    # clips per fold better (closer to the issue's logistic-regression reference).
    System("whisper_cat_mean_linear", "Whisper-base frozen, all layers side by side, mean pooling, linear classifier",
           "ours", pinned(WHISPER + ("--pooling", "mean", "--layer_mix", "concat", "--classifier_hidden", "0") + HEAD)),
    System("cnn1d_light", "1-D CNN light, from scratch", "ours", pinned(CNN + ("--cnn_preset", "light")),
           from_scratch=True),
    # The four other systems of the original design notes, with the recipes their issue measured.
    System("logmel_cnn", "log-mel 2-D CNN, from scratch", "ours",
           pinned(("--backbone", "logmel_cnn", "--num_train_epochs", "30")), from_scratch=True),
    System("mfcc_lstm", "MFCC stacked LSTM (3 x 78), from scratch", "ours",
           pinned(("--backbone", "mfcc_lstm", "--pooling", "mean", "--num_train_epochs", "30")), from_scratch=True),
    System("keyseg_cnn_bilstm", "key-segment CNN-BiLSTM (ResNet-18, random init)", "ours",
           pinned(("--backbone", "keyseg_cnn_bilstm", "--num_train_epochs", "25")), from_scratch=True),
    System("mel_efficientnet", "EfficientNet-B0 on mel spectrograms (random init), augmented", "ours",
           pinned(("--backbone", "mel_efficientnet", "--crop_seconds", "2", "--augment", "true", "--num_train_epochs", "20")),
           from_scratch=True),
    System("whisper_ft_top2", "Whisper-base, top 2 layers fine-tuned after fitting the head (CPU)", "ours",
           pinned(WHISPER + FINETUNE + ("--trainable_layers", "2") + CPU_FINETUNE)),
    System("cnn1d_deep", "1-D CNN deep, from scratch", "ours", pinned(CNN + ("--cnn_preset", "deep")),
           from_scratch=True),
    # Every encoder layer trains; the head reads layers 1-6 without a projector, as the shipped default and issue 17's
    # top-2 fine-tuning from cached inputs (benchmark/finetune_cached.py) do, so the three compare directly.
    System("whisper_ft_full", "Whisper-base, fully fine-tuned after fitting the head, layers 1-6 (GPU, bf16)", "ours",
           pinned(WHISPER + FINETUNE + ("--trainable_layers", "0", "--first_layer", "1", "--projector_dim", "0",
                                        "--bf16", "true")), needs_gpu=True),
    # issue 12's ideas for generalization, measured on leave-one-corpus-out (benchmark/loco.py)
    *[System(name, title, "ours", flags, default=False) for name, title, flags in IDEAS],
]}
# Pretrained encoders of the other backbones, used when --encoder_path does not name one.
HUB_ENCODERS = {"wav2vec2": "facebook/wav2vec2-base", "hubert": "facebook/hubert-base-ls960",
                "wavlm": "microsoft/wavlm-base-plus", "data2vec-audio": "facebook/data2vec-audio-base"}


def all_systems() -> dict[str, System]:
    """Return SYSTEMS plus an optional system for every other key of models.BACKBONES (present at run time)."""
    import models

    systems = dict(SYSTEMS)
    for key in sorted(set(models.BACKBONES) - {"whisper", "cnn1d"}):
        encoder = ("--encoder", f"{{encoder:{key}}}") if key in HUB_ENCODERS else ()
        systems.setdefault(key, System(key, f"{key} (models.BACKBONES; recipe not tuned)", "extra",
                                       pinned(("--backbone", key, *encoder, "--num_train_epochs", "30", "--patience", "6")),
                                       default=False))
    return systems


# ---------------------------------------------------------------------------------------------
# Folds
# ---------------------------------------------------------------------------------------------
def prepare(protocol: Protocol, seed: int, max_files: int | None = None):
    """Return (rows, folds, train.py data flags) of `protocol`, the rows and folds train.py builds from those flags."""
    from data.corpora import parse_merge, read_corpora
    from data_process import make_folds
    from train import subsample

    rows = read_corpora(list(protocol.corpus), keep=list(protocol.labels) if protocol.labels else None,
                        merge=parse_merge(protocol.merge) if protocol.merge else None)
    beyond = sorted({r.speaker for r in rows if r.corpus == "ravdess" and int(r.speaker.split(":")[1]) > 20})
    if beyond:
        raise ValueError(f"RAVDESS actors {beyond} found: the protocols use actors 1-20 only (21-24 are kept for "
                         "independent evaluation); point SER_CORPORA at a copy without them")
    if max_files:
        rows = subsample(rows, max_files, seed)  # exactly train.py --max_files
    test_speakers = sorted({r.speaker for r in rows if r.corpus == protocol.test_corpus}) if protocol.test_corpus else None
    folds = make_folds([r.label for r in rows], [r.speaker for r in rows], protocol.split, k=protocol.folds,
                       sessions=[r.session for r in rows], test_speakers=test_speakers, val_speakers=1, seed=seed)
    flags = ["--corpus", *protocol.corpus, "--protocol", protocol.split, "--seed", str(seed)]
    if protocol.split.endswith("kfold"):  # the only splits that read --folds
        flags[4:4] = ["--folds", str(protocol.folds)]
    if protocol.labels:
        flags += ["--labels", *protocol.labels]
    if protocol.merge:
        flags += ["--merge", protocol.merge]
    if test_speakers:
        flags += ["--test_speakers", *test_speakers]
    if max_files:
        flags += ["--max_files", str(max_files)]
    return rows, folds, flags


def fold_speakers(rows, folds) -> list[list[str]]:
    """Return the sorted test speakers of each fold."""
    return [sorted({rows[i].speaker for i in fold["test"]}) for fold in folds]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def machine() -> dict:
    """Return what the figures depend on: CPU model, cores, memory, library versions, GPU."""
    import torch
    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor() or "unknown") if Path("/proc/cpuinfo").exists() else platform.processor()
    memory = next((int(line.split()[1]) / 2**20 for line in open("/proc/meminfo") if line.startswith("MemTotal")),
                  None) if Path("/proc/meminfo").exists() else None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "memory_gib": round(memory, 1) if memory else None, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "transformers": transformers.__version__,
            "python": platform.python_version(), "os": platform.platform(), "gpu": gpu,
            "load_average": list(os.getloadavg())}


def rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def paths(results: str | None, doc: str | None, quick: bool) -> tuple[Path, Path]:
    """Return the results folder and the document: the given ones, else the defaults (a quick run's document goes
    into its results folder, so a quick run never overwrites the real one)."""
    folder = Path(results or (QUICK_RESULTS if quick else RESULTS))
    return folder, Path(doc or (folder / "benchmarks.md" if quick else DOC))

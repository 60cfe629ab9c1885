"""Run settings of train.py: the data, model and training flags (HfArgumentParser dataclasses) and their defaults.

What rebuilds a trained model is not here: that is `models.EmotionConfig`, saved in each checkpoint.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser, TrainingArguments

import models

PROTOCOLS = ("loso", "speaker_kfold", "loso_session", "fixed", "random", "random_kfold", "loco", "all")


SPLIT_FLAGS = ("protocol", "folds", "test_speakers", "val_speakers", "run_folds")  # --dataset_name's splits replace


@dataclass
class DataArguments:
    corpus: list[str] = field(default_factory=lambda: ["emodb"], metadata={
        "help": "Corpus specs, several allowed: emodb, ravdess, urdu, ased, emotiontts_ko (from ../shared/corpora or "
                "$SER_CORPORA), NAME=PATH for cremad, tess, casia, iemocap[:merge_excited], folder, csv, hf. The known "
                "corpora give the canonical emotion names; folder, csv and hf give their labels as written (any names: "
                "frustrated, bonafide, low/mid/high), or emotion names mapped to the canonical ones with the option "
                ":canonical. See data/corpora.py."})
    dataset_name: str | None = field(default=None, metadata={
        "help": "A Hugging Face dataset instead of --corpus, as in the transformers audio-classification example: a "
                "hub id, a save_to_disk folder or a data folder. Its own splits are kept: training on "
                "--train_split_name, evaluation and the test report on --eval_split_name (no re-splitting, so --protocol and the speaker "
                "flags do not apply; to re-split a dataset by speakers, use --corpus hf=NAME). The best checkpoint is "
                "not chosen on the eval split (it is the test split) unless --load_best_model_at_end true."})
    dataset_config_name: str | None = field(default=None, metadata={
        "help": "The dataset's configuration (subset) name."})
    audio_column_name: str = field(default="audio", metadata={
        "help": "Column of --dataset_name holding the audio (an Audio feature, file paths or bytes; never decoded by "
                "`datasets`)."})
    label_column_name: str = field(default="label", metadata={
        "help": "Column of --dataset_name holding the labels (ClassLabel or text; the names are the model's labels)."})
    train_split_name: str = field(default="train", metadata={"help": "Split of --dataset_name to train on."})
    eval_split_name: str = field(default="validation", metadata={
        "help": "Split of --dataset_name to evaluate and test on (e.g. test)."})
    speaker_column_name: str | None = field(default=None, metadata={
        "help": "Column of --dataset_name naming the speaker (default: a column named 'speaker' if there is one); "
                "the fold report lists the test speakers."})
    labels: list[str] | None = field(default=None, metadata={
        "help": "Keep only these labels (names as in the data, after merges; matched ignoring case); default: every "
                "label found. A name in neither the data nor the merges is an error that lists the labels."})
    merge: str | None = field(default=None, metadata={
        "help": "Label merges FROM:TO, e.g. 'calm:neutral,boredom:neutral' or 'mid:high' (FROM: a label of the data; "
                "TO: a label of the data or a new name)."})
    protocol: str = field(default="loso", metadata={
        "help": f"Split protocol, one of {PROTOCOLS}: leave-one-speaker-out, k speaker folds, leave-one-session-out, "
                "fixed test speakers, stratified random (9:1), k stratified random folds (speaker-dependent), "
                "leave one corpus out (loco: each corpus tested once, trained on the others, over the emotions they "
                "share: the generalization figure), or 'all' (train on everything, no test)."})
    folds: int = field(default=5, metadata={"help": "k for speaker_kfold and random_kfold."})
    test_speakers: list[str] | None = field(default=None, metadata={"help": "Speakers for --protocol fixed, e.g. emodb:03."})
    val_speakers: int = field(default=0, metadata={
        "help": "Speakers held out of each training fold for validation (early stopping and the best epoch; 0: train "
                "every epoch on every non-test speaker, the default recipe)."})
    run_folds: str = field(default="all", metadata={"help": "'all' (cross-validation) or fold numbers, e.g. '0,3'."})
    crop_seconds: float | None = field(default=4.0, metadata={
        "help": "Random crop of each training clip when learning from raw audio (speed); none when the encoder is cached."})
    cache_dir: str | None = field(default=None, metadata={"help": "Encoder-output cache; default $SER_CACHE or ~/.cache/ser."})
    max_files: int | None = field(default=None, metadata={"help": "Use only this many files, drawn at random with the seed (a quick try)."})
    normalize_test: str = field(default="none", metadata={
        "help": "With --embedding_norm: how the test clips are standardised for the reported figures: none (each clip "
                "alone, with the training groups' average statistics, as the app scores one recording), speaker or "
                "corpus (the statistics of each test speaker's / corpus's clips, as infer.py --normalize does). The "
                "fold reports hold all three."})
    balanced_sampling: bool = field(default=False, metadata={
        "help": "Draw the training clips so that every (corpus, emotion) pair is equally frequent (as many clips per "
                "epoch as before): a large corpus or a frequent emotion no longer dominates what the model learns."})
    augment_variants: int = field(default=0, metadata={
        "help": "With a frozen encoder: also train on K augmented variants of every training clip that imitate real "
                "microphones and rooms (babble or coloured noise at 5-20 dB SNR, a room, a telephone or laptop band, "
                "an Opus/MP3 round trip, gain and clipping; audio/microphones.py). Each variant's encoder output is cached "
                "under its own key, so only the first run pays for it."})
    augment: bool = field(default=False, metadata={
        "help": "Augment training clips (audiomentations: Gaussian noise, gain, time shift; see audio/augment.py)."})


@dataclass
class ModelArguments:
    backbone: str = field(default="whisper", metadata={"help": f"One of {sorted(models.BACKBONES)}."})
    encoder: str = field(default="openai/whisper-base", metadata={
        "help": "Pretrained encoder: hub id (e.g. facebook/wav2vec2-base) or local folder. Ignored by cnn1d."})
    encoder_mode: str = field(default="frozen", metadata={"help": "frozen | finetune | freeze_feature_encoder."})
    trainable_layers: int = field(default=0, metadata={"help": "With finetune: train only the top N encoder layers (0 = all)."})
    encoder_learning_rate: float | None = field(default=None, metadata={
        "help": "With finetune: learning rate of the encoder's weights, while the new head (layer mix, projector, "
                "pooling, classifier) keeps --learning_rate. Default: --learning_rate for both. A head that starts "
                "from random weights needs a larger rate than pretrained layers, e.g. 1e-3 and 5e-5."})
    head_epochs: int = field(default=0, metadata={
        "help": "With finetune: first train the new head alone for this many epochs on the cached frozen-encoder "
                "layers (seconds per epoch), then fine-tune the encoder with it (linear probing, then fine-tuning). "
                "0 = the head starts from random weights together with the encoder."})
    finetune_from_cache: bool = field(default=True, metadata={
        "help": "With --encoder_mode finetune --trainable_layers K on a Whisper backbone: cache the hidden state that "
                "enters the first trainable layer once per clip (data/finetune_cache.py) and run only the top K layers and "
                "the head each step, instead of the whole encoder from audio (the same model, a fraction of the "
                "time; --crop_seconds and --augment do not apply, --augment_variants does). false: from audio."})
    # The defaults are the recipe that generalised best to unseen corpora (docs/benchmarks.md, leave one corpus out):
    # a frozen Whisper-base, the mean of every layer side by side, standardised, a linear classifier.
    pooling: str = field(default="mean", metadata={"help": f"One of {sorted(models.POOLINGS)}."})
    layer_mix: str = field(default="concat", metadata={
        "help": f"How the head reads the encoder's layers: one of {sorted(models.LAYER_MIXES)}. last: the top layer; "
                "weighted: a learned softmax-weighted sum of every layer; concat: every layer side by side (the "
                "projector learns one map per layer: the most accurate frozen head, about 1.5x the head's cost)."})
    first_layer: int | None = field(default=None, metadata={
        "help": "The head reads the encoder's layers from this one on: 0 is the input embedding (Whisper: the output "
                "of its two convolutions, before any transformer layer), 1 the first transformer layer. Default: 1 "
                "for a pretrained encoder (leaving out layer 0 gained 2 points of leave-one-corpus-out UA: it carries "
                "the microphone more than the emotion), 0 for models with one layer (cnn1d, spectral models)."})
    cnn_preset: str = field(default="light", metadata={"help": "cnn1d preset: light (4 blocks) or deep (7 blocks)."})
    cnn_first_stride: int = field(default=1, metadata={"help": "Stride of the first cnn1d conv (1 = the original design)."})
    frame_pooling: int = field(default=2, metadata={
        "help": "Average every k encoder frames before the head (2 halves the head's cost; 1 = none). Ignored by cnn1d."})
    projector_dim: int = field(default=0, metadata={"help": "Frame projection before pooling (0 = none)."})
    classifier_dropout: float = field(default=0.5, metadata={"help": "Dropout before the classifier."})
    classifier_hidden: int = field(default=0, metadata={"help": "Hidden ReLU layer in the classifier (0 = linear)."})
    n_mels: int = field(default=0, metadata={"help": "Mel bands of logmel_cnn, mel_efficientnet, keyseg_cnn_bilstm (0 = theirs)."})
    lstm_layers: int = field(default=3, metadata={"help": "mfcc_lstm: stacked LSTM layers."})
    lstm_hidden: int = field(default=78, metadata={"help": "mfcc_lstm: units per layer; keyseg_cnn_bilstm: per direction."})
    key_beta: float = field(default=5.0, metadata={"help": "keyseg_cnn_bilstm: K = 1 + segment distances above beta x mean."})
    image_model: str | None = field(default=None, metadata={
        "help": "mel_efficientnet: efficientnet-b0 (default) | efficientnet-tiny; keyseg_cnn_bilstm: resnet-18 | resnet-tiny."})
    image_weights: str | None = field(default=None, metadata={
        "help": "Image-pretrained weights for that CNN (google/efficientnet-b0, microsoft/resnet-18); none: random init."})
    embedding_norm: str = field(default="auto", metadata={
        "help": "Standardise the pooled embedding: auto (speaker where the path allows it, else none), none, all "
                "(with the training set's mean and std), corpus or speaker (each group of training clips with its "
                "own: removes the shift of language and recording setup; a speaker whose clips carry fewer than three "
                "emotions gets their corpus's). "
                "Whatever the training groups, a model that standardises can judge a group of clips (a speaker, a "
                "folder, one user's recordings) with the group's own statistics (infer.py --normalize). Needs a path "
                "to the embedding without learned weights: a frozen encoder, --layer_mix concat or last, --projector_dim 0, --pooling "
                "mean, mean_std or max. The checkpoint keeps the groups' average statistics for a clip heard alone. "
                "posthoc: for a head with learned weights before the embedding (attention or conv-then-max pooling, a "
                "weighted layer mix, a projector) on a frozen encoder: trained on raw embeddings, it keeps the "
                "training clips' statistics and adapts to a group by standardising the group's embeddings and "
                "putting them back on that scale (leave one corpus out, conv-then-max pooling: 0.460 alone, 0.527 "
                "adapted to the speaker)."})
    train_alone: bool = field(default=True, metadata={
        "help": "With --embedding_norm: also train on every clip standardised with the model's own statistics, as a "
                "clip heard alone is at inference, so that one model serves single clips and groups of clips (the "
                "default: with --embedding_norm speaker, leave one corpus out gained 1.2 points adapted to the "
                "speaker and lost none alone, docs/adaptation.md)."})
    class_weighted: bool = field(default=False, metadata={"help": "Weight the loss by inverse class frequency."})
    patience: int = field(default=8, metadata={
        "help": "Early stopping: evaluations (epochs, or --eval_steps with --eval_strategy steps) without a better "
                "validation UA; only while the best checkpoint is kept (--load_best_model_at_end)."})
    save_fp16: bool = field(default=False, metadata={"help": "Store the final weights in float16 (half the size)."})
    loco_metrics: str | None = field(default=None, metadata={
        "help": "With --protocol all: metrics.json of the same recipe's leave-one-corpus-out run, quoted in the model "
                "card; its calibration (temperature, unsure threshold) is stored in the checkpoint."})
    cv_metrics: str | None = field(default=None, metadata={
        "help": "With --protocol all: metrics.json of the same recipe's cross-validation, quoted in the model card."})
    users_metrics: str | None = field(default=None, metadata={
        "help": "With --protocol all: users.json of the same recipe's simulated users (python -m benchmark.adaptation "
                "users --cell LOCO_RUN), quoted in the model card."})
    calibration: str = field(default="novelty", metadata={
        "help": "With --protocol all and --loco_metrics/--cv_metrics of runs that standardise: how the checkpoint's "
                "probabilities are calibrated, per mode (a clip alone; adapted to its speaker), on those runs' "
                "held-out clips together (unseen corpora and unseen speakers): novelty (a temperature that grows "
                "with the clip's distance from its statistics) or temperature (one per mode)."})


# Defaults that differ from TrainingArguments' own; anything on the command line overrides them. Evaluation and
# checkpoints are per epoch; a run without a validation set does not evaluate (see evaluation_settings).
TRAINING_DEFAULTS = {
    "output_dir": "runs/latest", "num_train_epochs": 20, "learning_rate": 1e-3, "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 32, "warmup_steps": 0.05, "weight_decay": 0.01, "lr_scheduler_type": "cosine",
    "logging_strategy": "epoch", "save_total_limit": 2, "report_to": "none", "seed": 0,
    "dataloader_pin_memory": False, "eval_strategy": "epoch", "save_strategy": "epoch",
}


def given_flags(argv: list[str]) -> dict[str, str | bool]:
    """Return the settings the user gave, {name: first value, or True for a bare flag}: a JSON file's keys or the
    command line's `--name value`, `--name=value`, `--name` (dashes in names read as underscores)."""
    if len(argv) == 1 and argv[0].endswith(".json"):
        return dict(json.loads(Path(argv[0]).read_text()))
    given: dict[str, str | bool] = {}
    for i, token in enumerate(argv):
        match = re.fullmatch(r"--([A-Za-z][\w-]*)(?:=(.*))?", token)
        if match:
            following = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else True
            given[match[1].replace("-", "_")] = match[2] if match[2] is not None else following
    return given


def _defaults(given: dict) -> dict:
    """Return TRAINING_DEFAULTS, with checkpoints following the user's --eval_strategy / --eval_steps where they gave
    those and not --save_strategy / --save_steps (keeping the best checkpoint needs them to match)."""
    defaults = dict(TRAINING_DEFAULTS)
    if str(given.get("eval_strategy")) in ("epoch", "steps") and "save_strategy" not in given:
        defaults["save_strategy"] = given["eval_strategy"]
        if "eval_steps" in given and "save_steps" not in given:
            defaults["save_steps"] = given["eval_steps"]
    return defaults


def parse_args(argv: list[str]) -> tuple[DataArguments, ModelArguments, TrainingArguments]:
    """Return the three settings dataclasses from a JSON file or command-line flags."""
    parser = HfArgumentParser((DataArguments, ModelArguments, TrainingArguments))
    defaults = _defaults(given_flags(argv))
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_dict({**defaults, **json.loads(Path(argv[0]).read_text())})
    return parser.parse_args_into_dataclasses([f"--{key}={value}" for key, value in defaults.items()] + argv)


def check_settings(dargs: DataArguments, targs: TrainingArguments, given: dict, folds: int | None) -> None:
    """Raise ValueError, before any work, for settings that cannot hold together; `folds`: the protocol's fold
    count when it is known from the flags alone (None: it depends on the data)."""
    if dargs.dataset_name:
        clash = [f"--{name}" for name in ("corpus", *SPLIT_FLAGS) if name in given]
        if clash:
            raise ValueError(f"--dataset_name trains on its split {dargs.train_split_name!r} and tests on "
                             f"{dargs.eval_split_name!r}, its own splits: {', '.join(clash)} do not apply (to read "
                             "the data with --corpus and split it by a protocol, use --corpus hf=NAME)")
    if targs.push_to_hub:
        if folds != 1:
            raise ValueError(f"--push_to_hub pushes one final checkpoint, and --protocol {dargs.protocol} trains one "
                             "per fold: train the final model with --protocol all (quoting this cross-validation with "
                             "--cv_metrics RUN/metrics.json), --protocol fixed or --dataset_name, and push that")
        if "hub_strategy" in given and _name(targs.hub_strategy) != "end":
            raise ValueError(f"--hub_strategy {targs.hub_strategy}: train.py pushes the final best checkpoint with its "
                             "code and model card once, at the end (hub_strategy end); it does not push during "
                             "training")


def _name(strategy) -> str:
    """Return a TrainingArguments strategy (an enum or text) as its text: "epoch", "steps", "no"."""
    return str(getattr(strategy, "value", strategy))


def resolve_embedding_norm(margs) -> str:
    """Return --embedding_norm with auto resolved: speaker where the path to the pooled embedding has no learned
    weights (a frozen pretrained encoder, last or concat layers, no projector, parameter-free pooling), else none."""
    known = ("auto", "none", "all", "corpus", "speaker", "posthoc")
    if margs.embedding_norm not in known:
        raise ValueError(f"--embedding_norm {margs.embedding_norm!r}: one of {', '.join(known)}")
    if margs.embedding_norm == "posthoc" and not (frozen_encoder(margs) and not parameter_free_path(margs)):
        raise ValueError("--embedding_norm posthoc adapts a head with learned weights before the pooled embedding on "
                         "a frozen pretrained encoder (--pooling attention or conv_max, --layer_mix weighted, "
                         "--projector_dim); this path standardises directly: --embedding_norm speaker"
                         if parameter_free_path(margs) else "--embedding_norm posthoc needs a frozen pretrained "
                         "encoder (--encoder_mode frozen), whose cached layers give the training statistics")
    if margs.embedding_norm != "auto":
        return margs.embedding_norm
    return "speaker" if frozen_encoder(margs) and parameter_free_path(margs) else "none"


def frozen_encoder(margs) -> bool:
    return hasattr(models.BACKBONES[margs.backbone], "load_encoder") and margs.encoder_mode == "frozen"


def parameter_free_path(margs) -> bool:
    """Whether nothing learned sits between the encoder's layers and the pooled embedding."""
    return (margs.layer_mix in ("last", "concat") and not margs.projector_dim
            and margs.pooling in models.PARAMETER_FREE_POOLINGS)


def evaluation_settings(targs: TrainingArguments, given: dict, has_val: bool, val_is_test: bool = False,
                        why_none: str = "") -> dict:
    """Return one fold's TrainingArguments for evaluation, checkpoints and keeping the best checkpoint.

    The user's --eval_strategy, --save_strategy, --load_best_model_at_end and --metric_for_best_model are kept as
    given; the defaults follow the data: with a validation set, evaluate every epoch and keep the checkpoint with the
    best validation UA (early stopping after --patience evaluations without a better one); without one, no
    evaluation. `val_is_test`: the validation set is the test set (--dataset_name's eval split), so the best
    checkpoint is chosen on it only when the user asks. ValueError where the user's settings cannot hold.
    """
    evaluate = _name(targs.eval_strategy) if "eval_strategy" in given or has_val else "no"
    if not has_val:
        for name, value in (("eval_strategy", evaluate), ("load_best_model_at_end", targs.load_best_model_at_end)):
            if name in given and value not in ("no", False):
                raise ValueError(f"--{name} {given[name]} needs a validation set, and this run has none{why_none}: "
                                 "hold out validation speakers with --val_speakers N, or leave the flag out")
        return dict(eval_strategy="no", load_best_model_at_end=False, metric_for_best_model=None)
    keep_best = targs.load_best_model_at_end if "load_best_model_at_end" in given else (
        evaluate != "no" and not val_is_test)
    if keep_best and evaluate == "no":
        raise ValueError("--load_best_model_at_end keeps the checkpoint with the best validation score: it needs "
                         "--eval_strategy epoch or steps, not no")
    save = _name(targs.save_strategy)
    if keep_best and save not in (evaluate, "best"):
        why = " true" if "load_best_model_at_end" in given else ", the default with a validation set"
        raise ValueError(f"keeping the best checkpoint (--load_best_model_at_end{why}) needs a checkpoint where it "
                         f"evaluates: --save_strategy {save} and --eval_strategy {evaluate} differ; give both the "
                         "same, or --load_best_model_at_end false")
    metric = (targs.metric_for_best_model if "metric_for_best_model" in given else "ua") if keep_best else None
    explicit_direction = "greater_is_better" in given or "metric_for_best_model" in given
    return dict(eval_strategy=evaluate, load_best_model_at_end=keep_best, metric_for_best_model=metric,
                greater_is_better=targs.greater_is_better if explicit_direction and keep_best else None)



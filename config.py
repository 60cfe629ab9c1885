"""Run settings of train.py: the data, model and training flags (HfArgumentParser dataclasses) and their defaults.

What rebuilds a trained model is not here: that is `models.EmotionConfig`, saved in each checkpoint.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser, TrainingArguments

import models

PROTOCOLS = ("loso", "speaker_kfold", "loso_session", "fixed", "random", "random_kfold", "loco", "all")


@dataclass
class DataArguments:
    corpus: list[str] = field(default_factory=lambda: ["emodb"], metadata={
        "help": "Corpus specs, several allowed: emodb, ravdess, urdu (from ../shared/corpora or $SER_CORPORA), "
                "NAME=PATH for cremad, tess, casia, iemocap[:merge_excited], folder, csv, hf. See corpora.py."})
    labels: list[str] | None = field(default=None, metadata={
        "help": "Keep only these emotions (canonical names, after merges); default: every label found."})
    merge: str | None = field(default=None, metadata={"help": "Label merges, e.g. 'calm:neutral,boredom:neutral'."})
    protocol: str = field(default="loso", metadata={
        "help": f"Split protocol, one of {PROTOCOLS}: leave-one-speaker-out, k speaker folds, leave-one-session-out, "
                "fixed test speakers, stratified random (9:1), k stratified random folds (speaker-dependent), "
                "leave one corpus out (loco: each corpus tested once, trained on the others, over the emotions they "
                "share: the generalization figure), or 'all' (train on everything, no test)."})
    folds: int = field(default=5, metadata={"help": "k for speaker_kfold and random_kfold."})
    test_speakers: list[str] | None = field(default=None, metadata={"help": "Speakers for --protocol fixed, e.g. emodb:03."})
    val_speakers: int = field(default=1, metadata={"help": "Speakers held out of each training fold for validation."})
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
                "an Opus/MP3 round trip, gain and clipping; microphones.py). Each variant's encoder output is cached "
                "under its own key, so only the first run pays for it."})
    augment: bool = field(default=False, metadata={
        "help": "Augment training clips (audiomentations: Gaussian noise, gain, time shift; see augment.py)."})


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
    pooling: str = field(default="attention", metadata={"help": f"One of {sorted(models.POOLINGS)}."})
    layer_mix: str = field(default="last", metadata={
        "help": f"How the head reads the encoder's layers: one of {sorted(models.LAYER_MIXES)}. last: the top layer; "
                "weighted: a learned softmax-weighted sum of every layer; concat: every layer side by side (the "
                "projector learns one map per layer: the most accurate frozen head, about 1.5x the head's cost)."})
    cnn_preset: str = field(default="light", metadata={"help": "cnn1d preset: light (4 blocks) or deep (7 blocks)."})
    cnn_first_stride: int = field(default=1, metadata={"help": "Stride of the first cnn1d conv (1 = the original design)."})
    frame_pooling: int = field(default=2, metadata={
        "help": "Average every k encoder frames before the head (2 halves the head's cost; 1 = none). Ignored by cnn1d."})
    projector_dim: int = field(default=256, metadata={"help": "Frame projection before pooling (0 = none)."})
    classifier_dropout: float = field(default=0.5, metadata={"help": "Dropout before the classifier."})
    classifier_hidden: int = field(default=256, metadata={"help": "Hidden ReLU layer in the classifier (0 = linear)."})
    n_mels: int = field(default=0, metadata={"help": "Mel bands of logmel_cnn, mel_efficientnet, keyseg_cnn_bilstm (0 = theirs)."})
    lstm_layers: int = field(default=3, metadata={"help": "mfcc_lstm: stacked LSTM layers."})
    lstm_hidden: int = field(default=78, metadata={"help": "mfcc_lstm: units per layer; keyseg_cnn_bilstm: per direction."})
    key_beta: float = field(default=5.0, metadata={"help": "keyseg_cnn_bilstm: K = 1 + segment distances above beta x mean."})
    image_model: str | None = field(default=None, metadata={
        "help": "mel_efficientnet: efficientnet-b0 (default) | efficientnet-tiny; keyseg_cnn_bilstm: resnet-18 | resnet-tiny."})
    image_weights: str | None = field(default=None, metadata={
        "help": "Image-pretrained weights for that CNN (google/efficientnet-b0, microsoft/resnet-18); none: random init."})
    embedding_norm: str = field(default="none", metadata={
        "help": "Standardise the pooled embedding per group of training clips: none, corpus or speaker (each group's "
                "own mean and std; removes the shift of language and recording setup). Needs a path to the embedding "
                "without learned weights: a frozen encoder, --layer_mix concat or last, --projector_dim 0, --pooling "
                "mean, mean_std or max. The checkpoint keeps the groups' average statistics for a clip heard alone."})
    train_alone: bool = field(default=False, metadata={
        "help": "With --embedding_norm: also train on every clip standardised with the model's own statistics, as a "
                "clip heard alone is at inference, so that one model serves single clips and groups of clips."})
    class_weighted: bool = field(default=False, metadata={"help": "Weight the loss by inverse class frequency."})
    patience: int = field(default=8, metadata={"help": "Early stopping: epochs without a better validation UA."})
    save_fp16: bool = field(default=False, metadata={"help": "Store the final weights in float16 (half the size)."})
    loco_metrics: str | None = field(default=None, metadata={
        "help": "With --protocol all: metrics.json of the same recipe's leave-one-corpus-out run, quoted in the model "
                "card; its calibration (temperature, unsure threshold) is stored in the checkpoint."})
    cv_metrics: str | None = field(default=None, metadata={
        "help": "With --protocol all: metrics.json of the same recipe's cross-validation, quoted in the model card."})


# Defaults that differ from TrainingArguments' own; anything on the command line overrides them.
TRAINING_DEFAULTS = {
    "output_dir": "runs/latest", "num_train_epochs": 40, "learning_rate": 1e-3, "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 32, "warmup_steps": 0.05, "weight_decay": 0.01, "lr_scheduler_type": "cosine",
    "logging_strategy": "epoch", "save_total_limit": 2, "report_to": "none", "seed": 0,
    "dataloader_pin_memory": False,
}


def parse_args(argv: list[str]) -> tuple[DataArguments, ModelArguments, TrainingArguments]:
    """Return the three settings dataclasses from a JSON file or command-line flags."""
    parser = HfArgumentParser((DataArguments, ModelArguments, TrainingArguments))
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_dict({**TRAINING_DEFAULTS, **json.loads(Path(argv[0]).read_text())})
    defaults = [f"--{key}={value}" for key, value in TRAINING_DEFAULTS.items()]
    return parser.parse_args_into_dataclasses(defaults + argv)



#!/usr/bin/env bash
# Trains the two default checkpoints committed in checkpoints/, exactly as shipped.
# Whisper: one fixed recipe (12 epochs, no early stopping) trains on every corpus in ../shared; the same
# recipe over 5 speaker folds gives the held-out figures quoted in its model card.
# CNN: trained on the speakers left after fixed held-out test speakers of every corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
ENC=${ENC:-../shared/models/whisper-base-encoder}
CORPORA="emodb ravdess urdu"
WHISPER="--corpus $CORPORA --backbone whisper --encoder $ENC --pooling mean --layer_mix weighted --num_train_epochs 12"

python train.py $WHISPER --protocol all --save_fp16 true --disable_tqdm true --output_dir checkpoints/whisper-base-mean
python train.py $WHISPER --protocol speaker_kfold --folds 5 --val_speakers 0 --disable_tqdm true \
    --output_dir runs/default_whisper_cv
python model_card.py checkpoints/whisper-base-mean --cv_metrics runs/default_whisper_cv/metrics.json

# The CNN learns from raw audio (no cache): a first-conv stride of 4 and 1.5 s crops make it trainable on a CPU.
python train.py --corpus $CORPORA --backbone cnn1d --cnn_preset light --cnn_first_stride 4 --pooling max \
    --crop_seconds 1.5 --protocol fixed --test_speakers emodb:03 emodb:08 ravdess:01 ravdess:02 ravdess:11 ravdess:12 \
    urdu:SM1 urdu:SF1 urdu:SM5 urdu:SF5 urdu:SM7 urdu:SF9 --num_train_epochs 6 --patience 3 --disable_tqdm true \
    --output_dir checkpoints/cnn1d-light

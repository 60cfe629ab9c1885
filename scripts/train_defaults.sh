#!/usr/bin/env bash
# Trains the two default checkpoints committed in checkpoints/, exactly as shipped.
# Whisper: 5 speaker folds over every corpus in ../shared give the held-out figures, then the same
# recipe trains on everything for the number of epochs the folds chose. CNN: fixed held-out speakers.
set -euo pipefail
cd "$(dirname "$0")/.."
ENC=${ENC:-../shared/models/whisper-base-encoder}
CORPORA="emodb ravdess urdu"
WHISPER="--backbone whisper --encoder $ENC --pooling mean --layer_weighted true --disable_tqdm true"

python train.py --corpus $CORPORA $WHISPER --protocol speaker_kfold --folds 5 --num_train_epochs 20 --patience 5 \
    --output_dir runs/default_whisper_cv
EPOCHS=$(python -c "import json,statistics as s;m=json.load(open('runs/default_whisper_cv/metrics.json'));\
print(max(3,round(s.median(json.load(open(f'runs/default_whisper_cv/fold_0{i}/metrics.json'))['best_epoch'] for i in range(5)))))")
python train.py --corpus $CORPORA $WHISPER --protocol all --num_train_epochs "$EPOCHS" --save_fp16 true \
    --cv_metrics runs/default_whisper_cv/metrics.json --output_dir checkpoints/whisper-base-mean

# The CNN learns from raw audio (no cache): a first-conv stride of 4 and 1.5 s crops make it trainable on a CPU.
python train.py --corpus $CORPORA --backbone cnn1d --cnn_preset light --cnn_first_stride 4 --pooling max \
    --crop_seconds 1.5 --protocol fixed --test_speakers emodb:03 emodb:08 ravdess:01 ravdess:02 ravdess:11 ravdess:12 \
    urdu:SM1 urdu:SF1 urdu:SM5 urdu:SF5 urdu:SM7 urdu:SF9 --num_train_epochs 6 --patience 3 --disable_tqdm true \
    --output_dir checkpoints/cnn1d-light

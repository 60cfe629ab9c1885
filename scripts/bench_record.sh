#!/usr/bin/env bash
# Fill the benchmark record (benchmark/results/cells/) on CPU, cheapest cells first, and rewrite docs/benchmarks.md
# after each cell. Resumable: run it again after an interruption and finished cells and folds are kept.
#
#   OMP_NUM_THREADS=1 STOP_AT=13:05 nohup nice -n 15 scripts/bench_record.sh > runs/bench_record.log 2>&1 &
#
# STOP_AT (HH:MM, its next occurrence, or YYYY-MM-DDTHH:MM, local time): start no new cell after it. Commit benchmark/results and
# docs/benchmarks*.{md,png} as cells finish: runs/ is not committed. Before the machine goes away (a session's end),
# stop it and run `python -m benchmark.carry`, then commit benchmark/results: the finished folds of the cell it was
# in are kept there, and the script on a fresh checkout trains only the folds still missing.
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # the 2 cores are shared: one torch thread
# one moment for every step below: an HH:MM read again by a later step could mean the next day
STOP_AT=$(python -c 'import sys; from benchmark.run import deadline; d = deadline(sys.argv[1]); print(d.isoformat(timespec="minutes") if d else "")' "${STOP_AT:-}")
stop=(--stop_at "$STOP_AT")

bench() { python -m benchmark.run --speed no "${stop[@]}" "$@"; }

# 1. baselines: seconds to minutes a cell once their features are cached
bench --systems egemaps_svm mfcc_mlp
# 2. the shipped default's recipe, then the frozen-encoder heads of the main table (minutes a cell on cached layers),
#    within-corpus and cross-corpus protocols first
bench --systems whisper_linear_std_l1
heads=(whisper_cat_mean whisper_cat_max whisper_cat_attention whisper_cat_conv_max whisper_lw_mean whisper_mean
       whisper_cat_mean_linear)
bench --systems "${heads[@]}" --protocols emodb_loso ravdess_5fold urdu_5fold cross_corpus
# 3. the leave-one-corpus-out ideas of issue 12 (a linear head on pooled embeddings; rows shown once they have
#    results), then the heads above on the two LOCO protocols (every layer's frames of 4,668 clips: the longest)
bench --protocols loco --systems whisper_lw_mean_shipped whisper_linear_std whisper_linear_corpusnorm \
    whisper_linear_speakernorm whisper_linear_std_balanced whisper_linear_std_smooth whisper_linear_std_l1_aug
bench --systems "${heads[@]}" --protocols loco loco_six
# 4. the top two encoder layers fine-tuned on CPU from the frozen layers' cached outputs, in bf16
#    (benchmark.common.CPU_FINETUNE): 5-25 minutes a within- or cross-corpus cell, about 25 minutes a LOCO fold
bench --systems whisper_ft_top2
# 5. from scratch, on audio: 15-90 minutes a cell (cnn1d_deep about 3 hours over four protocols)
bench --systems cnn1d_light mfcc_lstm logmel_cnn
bench --systems keyseg_cnn_bilstm mel_efficientnet cnn1d_deep

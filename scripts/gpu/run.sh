#!/usr/bin/env bash
# What a lent GPU machine runs, in one call of the device tool: the fully fine-tuned Whisper-base encoder
# (`whisper_ft_full`, GPU only) on leave one corpus out first (both modes: alone and adapted to the speaker), then
# on the other protocols while time is left. Resumable within the call; what finished comes back in
# $OUT/gpu_results.tar.gz (per-fold metrics and logits, the record's cells, the run log; no weights).
#
# It needs what the GPU image lacks, carried beside the tracked files (64 MiB a call, so over three calls that
# keep the machine warm): .whl (the wheels of datasets, librosa, soundfile, ...), .gpu/{a,b,c}/corpora
# (scripts/gpu/pack_corpora.sh: the five corpora as 24 kbit/s Opus) and .gpu/a/encoder (the shared encoder's
# config files; its weights are the repository's own copy, scripts/gpu/encoder.py).
#
# Prepare here: scripts/gpu/pack_corpora.sh; mkdir -p .gpu/a/encoder && cp ../shared/models/whisper-base-encoder/*.json
# .gpu/a/encoder/; git rev-parse --short HEAD > .gpu/commit; the wheels (Python 3.12, manylinux x86-64):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     datasets==5.2.0 dill multiprocess soundfile==0.14.0 cffi pycparser soxr librosa==0.11.0 audioread pooch \
#     decorator platformdirs
# Then three device calls in a row (the machine stays warm 30 s): carry .whl .gpu/a .gpu/commit (command: true),
# carry .gpu/b (true), carry .gpu/c with the command below.
#   BUDGET_S=540 scripts/gpu/run.sh      # seconds for the whole run, packing included
# QUICK=1 runs benchmark.run --quick (a few clips, one epoch): a check of the machinery; SYSTEM picks another system.
set -u
cd "$(dirname "$0")/../.."
begin=$(date +%s); budget=${BUDGET_S:-540}; out=${OUT:-runs/gpu_out}; system=${SYSTEM:-whisper_ft_full}
mkdir -p "$out"
exec > >(tee -a "$out/run.log") 2>&1
if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
[ -f .gpu/commit ] && export SER_COMMIT="$(cat .gpu/commit)"
# every cell says so in the record (benchmark.report lists it under "Notes on cells")
export SER_BENCH_NOTE="run on a lent GPU machine from the corpora re-encoded as 24 kbit/s Opus (scripts/gpu/pack_corpora.sh)"
export SER_CORPORA=/tmp/gpu_corpora SER_SHARED=/tmp/gpu_shared SER_CACHE=${SER_CACHE:-/tmp/gpu_cache} PYTHONUNBUFFERED=1
mkdir -p "$SER_CORPORA"
for d in .gpu/*/corpora; do cp -rs "$PWD/$d/." "$SER_CORPORA/"; done  # the chunks, merged (links)
ls "$SER_CORPORA"
python3 scripts/gpu/encoder.py .gpu/a/encoder "$SER_SHARED/models/whisper-base-encoder" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"

left() { echo $(( budget - 25 - ($(date +%s) - begin) )); }  # 25 s kept for packing
step() {
  local t; t=$(left)
  [ "$t" -gt 30 ] || { echo "== no time left for: $*"; return 1; }
  echo "== $(date +%T), $t s left: $*"
  timeout --signal=INT --kill-after=10 "$t" "$@"
}
bench() { step python3 -m benchmark.run ${QUICK:+--quick} --speed no --systems "$system" \
            --train_args "--dataloader_num_workers 8" "$@"; }
bench --protocols loco
bench --protocols cross_corpus urdu_5fold emodb_loso ravdess_5fold loco_six

results=runs/bench; [ -n "${QUICK:-}" ] && results=runs/bench-quick
tar czf "$out/gpu_results.tar.gz" --exclude='*.safetensors' --exclude='checkpoint-*' --exclude='*.png' \
    "$results/$system" benchmark/results/runs.json $(ls benchmark/results/cells/"$system"__* "$results"/record/cells/"$system"__* 2>/dev/null)
echo "== packed $(du -h "$out/gpu_results.tar.gz" | cut -f1), $(( $(date +%s) - begin )) s in all"

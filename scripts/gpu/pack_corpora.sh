#!/usr/bin/env bash
# Re-encode ../shared/corpora as 16 kHz mono Ogg Opus at a low bit rate, same folders and names (suffix .opus), in
# chunks small enough to travel to a lent GPU machine (the device tool carries at most 64 MiB a call, the tracked
# files included). The GPU run (scripts/gpu/run.sh) reads them through SER_CORPORA; its figures say so.
#
#   scripts/gpu/pack_corpora.sh [BITRATE, default 24k] [OUT, default .gpu]
set -eu
cd "$(dirname "$0")/../.."
rate="${1:-24k}"; out="${2:-.gpu}"; src="${SER_CORPORA:-../shared/corpora}"
# three chunks of 10-15 MiB (the tracked files take 46 of a call's 64 MiB); scripts/gpu/run.sh merges them
declare -A chunk=([emodb]=a [urdu]=a [emotiontts_ko]=a [ravdess]=b [ased/04Sad]=b [ased/05Angry]=b
                  [ased/01Neutral]=c [ased/02Fearful]=c [ased/03Happy]=c)
for part in "${!chunk[@]}"; do
  dest="$out/${chunk[$part]}/corpora/$part"
  (cd "$src/$part" && find . -type f \( -name '*.wav' -o -name '*.flac' -o -name '*.opus' \)) | while read -r f; do
    target="$dest/${f%.*}.opus"
    [ -s "$target" ] && continue
    mkdir -p "$(dirname "$target")"
    echo "ffmpeg -nostdin -loglevel error -i '$src/$part/$f' -ac 1 -ar 16000 -c:a libopus -b:a $rate '$target'"
  done
done | xargs -P 2 -I{} sh -c '{}'
du -sh "$out"/*

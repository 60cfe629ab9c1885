#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine: system packages, then Python packages.
#   ffmpeg: decodes browser recordings (webm/opus) and m4a; chromium: the browser tests;
#   espeak-ng: synthetic speech for the bona fide vs synthetic task.
set -euo pipefail
cd "$(dirname "$0")"
missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v chromium >/dev/null || missing+=(chromium)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -m pip install -q -r requirements.txt

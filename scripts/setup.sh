#!/usr/bin/env bash
# Set up ser-live on a fresh Debian/Ubuntu machine: system packages, a virtual environment in
# .venv and the project.
#
#   bash scripts/setup.sh          the main job only: ser-live, ser-analyze, ser-report, ser-serve,
#                                  ser-call on the shipped models (no torch, no Ray, no browser)
#   bash scripts/setup.sh --dev    everything the tests and training need too: the vosk, train,
#                                  cluster and test extras (torch pinned by constraints.txt),
#                                  espeak-ng and sox (speech for the tests), PulseAudio (a virtual
#                                  microphone), chromium (the desk in a browser), redis-server,
#                                  jemalloc (the server's memory figures under another allocator)
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
case "${1:-}" in
  "") ;;
  --dev) DEV=1 ;;
  *) echo "usage: bash scripts/setup.sh [--dev]" >&2; exit 2 ;;
esac

APT_PACKAGES="libportaudio2 libsndfile1"
[ "$DEV" = 1 ] && APT_PACKAGES="$APT_PACKAGES espeak-ng sox libsox-fmt-all pulseaudio pulseaudio-utils libasound2-plugins chromium redis-server libjemalloc2"
missing=""
for p in $APT_PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing system packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "$DEV" = 1 ]; then
  # torch comes with the train extra; where the package index would give the multi-GB CUDA
  # build, take the CPU one from PyTorch's own index when it can be reached
  extra=()
  if ! .venv/bin/python -c "import torch" 2>/dev/null && command -v curl >/dev/null \
     && curl -sfI --max-time 3 https://download.pytorch.org/whl/cpu/ >/dev/null 2>&1; then
    extra=(--extra-index-url https://download.pytorch.org/whl/cpu)
  fi
  .venv/bin/python -m pip install -q "${extra[@]}" -c constraints.txt -e '.[vosk,train,cluster,test]'
  echo "ser-live is set up in .venv, with the test and training extras"
else
  .venv/bin/python -m pip install -q -c constraints.txt -e .
  echo "ser-live is set up in .venv (the main job; scripts/setup.sh --dev adds the tests' and training's extras)"
fi

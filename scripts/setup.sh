#!/usr/bin/env bash
# Set up ser-live on a fresh Debian/Ubuntu machine: system packages, a virtual environment
# in .venv and the project with its dependencies (torch pinned by constraints.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="espeak-ng sox libsox-fmt-all libportaudio2 libsndfile1 pulseaudio pulseaudio-utils libasound2-plugins chromium redis-server"
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
.venv/bin/python -m pip install -q -c constraints.txt -e '.[vosk,train,cluster,test]'
echo "ser-live is set up in .venv"

#!/usr/bin/env bash
# Capture the ser-live dashboard as text (for the README): run it on the demo recording in a
# tmux session of a fixed size and print the screen after N seconds (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
after=${1:-30}
session=ser-live-capture-$$
tmux new-session -d -s "$session" -x 120 -y 38 \
  "HF_HUB_OFFLINE=1 .venv/bin/ser-live --file demo/demo.flac --log /tmp/$session.ndjson; sleep 30"
sleep "$after"
tmux capture-pane -p -t "$session"
tmux kill-session -t "$session"

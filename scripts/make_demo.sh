#!/usr/bin/env bash
# Make demo/demo.flac: a short call-like recording of synthetic speech (espeak-ng, GPL tool;
# the generated audio is ours, released with the project under MIT). Several utterances with
# pauses between them, 16 kHz mono. Needs espeak-ng and sox (scripts/setup.sh --dev installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
i=0
say() {  # say VOICE SPEED PITCH "text"
  espeak-ng -v "$1" -s "$2" -p "$3" -w "$tmp/raw$i.wav" "$4"
  sox "$tmp/raw$i.wav" -r 16000 -c 1 -b 16 "$tmp/u$i.wav" pad 0 1.2
  i=$((i + 1))
}
say en-us 150 50 "Hello, thank you for calling. How can I help you today?"
say en-us+m3 175 35 "I have been waiting for two weeks and nobody called me back. This is absolutely unacceptable."
say en-us+f2 140 60 "I am so sorry to hear that. Let me look at your account right now."
say en-us+m3 120 30 "I just feel so tired of all of this. My mother is sick and I cannot deal with more problems."
say en-us+f2 165 70 "Good news! Your refund was approved this morning. You will get it tomorrow."
say en-us+m3 160 55 "Wow, really? That is wonderful. Thank you so much, you made my day."
sox -n -r 16000 -c 1 -b 16 "$tmp/lead.wav" trim 0 0.8
sox "$tmp/lead.wav" $(ls "$tmp"/u*.wav | sort -V) demo/demo.flac
soxi -D demo/demo.flac

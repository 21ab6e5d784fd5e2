#!/bin/sh
# Remake ko_a.flac and ko_b.flac (Korean speech for tests/test_vosk.py): espeak-ng's Korean voice,
# 16 kHz mono 16-bit, 0.5 s of silence at each end (1 s between ko_a's sentences), a white-noise
# floor (sox -R: the same noise each time). Needs espeak-ng and sox (apt-get install espeak-ng sox).
set -eu
out=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
say() { espeak-ng -v ko -s 140 -w raw.wav "$2" && sox -R raw.wav -r 16000 -c 1 -b 16 "$1.wav"; }
say a1 "안녕하세요. 만나서 정말 반갑습니다"
say a2 "오늘은 날씨가 아주 좋습니다"
say b1 "저는 한국어를 조금 할 수 있어요"
sox -R -n -r 16000 -c 1 -b 16 s05.wav trim 0 0.5
sox -R -n -r 16000 -c 1 -b 16 s1.wav trim 0 1.0
sox -R s05.wav a1.wav s1.wav a2.wav s05.wav -b 16 speech_a.wav
sox -R s05.wav b1.wav s05.wav -b 16 speech_b.wav
for x in a b; do
  sox -R -n -r 16000 -c 1 -b 16 noise.wav synth "$(soxi -D speech_$x.wav)" whitenoise vol 0.002
  sox -R -m speech_$x.wav noise.wav -r 16000 -c 1 -b 16 "$out/ko_$x.flac"
done

#!/usr/bin/env bash
# Make the two tracks of the desk's demo call, demo/angry_customer.flac and demo/calm_agent.flac:
# a customer shouting at an agent who answers calmly, in turns (while one speaks, the other's
# track is silent, as a phone call's two tracks are). `ser-call twilio URL --demo` plays them;
# the shipped models read enough of the customer's windows as angry (or aroused and negative) in
# a row, over Twilio's 8 kHz mu-law too, for the desk's "angry customer" alert
# (tests/test_demo_call.py checks that through ser-serve).
#
# Synthetic speech (espeak-ng, GPL tool; the generated audio is ours, released with the project
# under MIT), 16 kHz mono FLAC. The shouting is espeak-ng's en-us+m3 voice, raised pitch, full
# amplitude, and sox's overdrive (the clipped sound of someone shouting into a phone); the
# agent is plain en-us+f2. Needs espeak-ng and sox (scripts/setup.sh --dev installs them).
# sox -R: no random dither, so the same tools make the same files.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
RATE=16000
n=0
silence() {  # silence SECONDS OUT
  sox -R -n -r $RATE -c 1 -b 16 "$2" trim 0 "$1"
}
shout() {  # shout "text": one customer sentence, then 0.9 s of silence
  espeak-ng -v en-us+m3 -s 150 -p 80 -a 200 -w "$tmp/raw.wav" "$1"
  sox -R "$tmp/raw.wav" -r $RATE -c 1 -b 16 "$tmp/s$n.wav" overdrive 35 gain -n -1 pad 0 0.9
  n=$((n + 1))
}
calm() {  # calm "text": one agent sentence, then 0.9 s of silence
  espeak-ng -v en-us+f2 -s 150 -p 50 -w "$tmp/raw.wav" "$1"
  sox -R "$tmp/raw.wav" -r $RATE -c 1 -b 16 "$tmp/s$n.wav" gain -n -3 pad 0 0.9
  n=$((n + 1))
}
customer=() agent=()
turn() {  # turn customer|agent: the sentences made since the last turn are that speaker's; the other is silent as long
  sox -R $(for ((k = first; k < n; k++)); do echo "$tmp/s$k.wav"; done) "$tmp/turn$n.wav"
  silence "$(soxi -D "$tmp/turn$n.wav")" "$tmp/quiet$n.wav"
  if [ "$1" = customer ]; then customer+=("$tmp/turn$n.wav"); agent+=("$tmp/quiet$n.wav")
  else agent+=("$tmp/turn$n.wav"); customer+=("$tmp/quiet$n.wav"); fi
  first=$n
}
silence 0.5 "$tmp/lead.wav"
first=0
calm "Thank you for calling. How can I help you?"
turn agent
shout "I am so angry with you people!"
shout "Stop lying to me!"
shout "I hate this company!"
shout "This is ridiculous!"
turn customer
calm "I am sorry. Let me look at your account."
turn agent
shout "I am really angry!"
shout "How dare you hang up on me!"
shout "You are useless!"
turn customer
sox -R "$tmp/lead.wav" "${customer[@]}" demo/angry_customer.flac
sox -R "$tmp/lead.wav" "${agent[@]}" demo/calm_agent.flac
soxi -D demo/angry_customer.flac demo/calm_agent.flac

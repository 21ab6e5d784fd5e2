"""Where the Whisper recogniser's time goes, and what the encoder's input length costs in words.

    .venv/bin/python bench/asr_profile.py [--clips 80] [--json bench/results/asr_profile.json]

Part 1, per stage for one 3.5 s window (1 s of context + a 2.5 s window), one thread: the
log-mel features, the encoder on 30 s (Whisper's own input, what faster-whisper's
``transcribe`` does) and on 10 s (this project's default), greedy decoding, word alignment,
and faster-whisper's whole ``transcribe`` call for comparison.

Part 2, word recall on real speech with known scripts (TESS "say the word X", RAVDESS "kids
are talking / dogs are sitting by the door") for each encoder length: reference words found
in the hypothesis, extra words per reference word (inventions and loops), and milliseconds
per clip.

Part 3: several streams' windows batched into one CTranslate2 call (encoder and decoder),
milliseconds per window.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "speech"


def reference(path: Path) -> list[str]:
    if "TESS" in path.parts:
        return ["say", "the", "word", path.name.split("_")[1].lower()]
    statement = path.name.split("-")[4]
    return (["kids", "are", "talking"] if statement == "01" else ["dogs", "are", "sitting"]) + ["by", "the", "door"]


def median_ms(fn, n: int = 7) -> float:
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=80)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ctranslate2

    from streamer.asr.decode import WhisperAsrConfig, whisper_tokenizer, decode
    from streamer.audio.encoder import WhisperHandle
    from streamer.audio.io import load_audio

    handle = WhisperHandle.shared()
    model, tok = handle.model, whisper_tokenizer(handle)
    rng = np.random.default_rng(0)
    files = sorted(SHARED.rglob("*.flac"))
    picked = [files[i] for i in rng.choice(len(files), size=args.clips, replace=False)]
    clips = [(load_audio(f), reference(f)) for f in picked]

    # Part 1: one 3.5 s window
    x = np.concatenate([clips[1][0][-16000:], clips[0][0]])[:56000].astype(np.float32)
    sv = lambda mel: ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None]))  # noqa: E731
    stages = {}
    for seconds in (30, 10):
        padded = np.zeros(seconds * 16000, np.float32)
        padded[: len(x)] = x
        mel = model.feature_extractor(padded, padding=0)[:, : seconds * 100]
        stages[f"log-mel, {seconds} s"] = median_ms(lambda: model.feature_extractor(padded, padding=0))
        stages[f"encoder, {seconds} s"] = median_ms(lambda: model.model.encode(sv(mel)))
        enc = model.model.encode(sv(mel))
        prompt = list(tok.sot_sequence)
        res = model.model.generate(enc, [prompt], beam_size=1, max_length=60)[0]
        ids = [t for t in res.sequences_ids[0] if t < tok.eot]
        stages[f"greedy decoding, {seconds} s"] = median_ms(lambda: model.model.generate(enc, [prompt], beam_size=1, max_length=60))
        stages[f"word alignment, {seconds} s"] = median_ms(lambda: model.find_alignment(tok, [ids], enc, len(x) // 160))
    stages["faster-whisper transcribe (30 s, word timestamps)"] = median_ms(lambda: list(model.transcribe(
        x, language="en", beam_size=1, condition_on_previous_text=False, word_timestamps=True, vad_filter=False,
        temperature=0.0)[0]))
    stages["this project's decode (10 s, word times)"] = median_ms(lambda: decode(handle, x, WhisperAsrConfig()))
    print("| stage (one 3.5 s window, 1 thread) | median ms |\n|---|---|")
    for k, v in stages.items():
        print(f"| {k} | {v:.1f} |")

    # Part 3 (printed after part 2): several streams' windows in one CTranslate2 call
    padded = np.zeros(160000, np.float32)
    padded[: len(x)] = x
    mel = model.feature_extractor(padded, padding=0)[:, :1000]
    batched = {}
    for b in (1, 2, 4, 8):
        batch = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.repeat(mel[None], b, 0)))
        enc = model.model.encode(batch)
        prompts = [list(tok.sot_sequence)] * b
        batched[b] = {"encoder_ms_per_window": round(median_ms(lambda: model.model.encode(batch), 3) / b, 1),
                      "decoding_ms_per_window": round(median_ms(lambda: model.model.generate(enc, prompts, beam_size=1, max_length=40), 3) / b, 1)}

    # Part 2: recall per encoder length
    recall = {}
    for seconds in (6, 8, 10, 15, 30):
        cfg = WhisperAsrConfig(encode_s=seconds)
        hit = total = extra = 0
        t0 = time.perf_counter()
        for audio, ref in clips:
            hyp = re.sub(r"[^a-z' ]", " ", " ".join(w[0] for w in decode(handle, audio, cfg)).lower()).split()
            left = list(hyp)
            for w in ref:
                total += 1
                if w in left:
                    left.remove(w)
                    hit += 1
            extra += len(left)
        ms = (time.perf_counter() - t0) / len(clips) * 1000
        recall[f"{seconds} s"] = {"recall": round(hit / total, 3), "extra_per_word": round(extra / total, 3), "ms_per_clip": round(ms)}
    print("\n| encoder input | word recall | extra words per word | ms per clip |\n|---|---|---|---|")
    for k, v in recall.items():
        print(f"| {k} | {v['recall']:.3f} | {v['extra_per_word']:.3f} | {v['ms_per_clip']} |")
    print("\n| windows per call (10 s each) | encoder ms per window | decoding ms per window |\n|---|---|---|")
    for b, v in batched.items():
        print(f"| {b} | {v['encoder_ms_per_window']} | {v['decoding_ms_per_window']} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": date.today().isoformat(), "clips": len(clips), "batched": batched,
                                         "command": "python bench/asr_profile.py " + " ".join(sys.argv[1:]),
                                         "stages_ms": {k: round(v, 1) for k, v in stages.items()}, "recall": recall}, indent=2) + "\n")


if __name__ == "__main__":
    main()

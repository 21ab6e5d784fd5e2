"""Per-window latency of the audio emotion model on one CPU thread.

Times one 2.5 s window end to end (preparation, Whisper encoder, prosody features, the
network) and each stage alone, over real RAVDESS speech windows, and prints a table and
writes JSON. Usage (from the repository root):

    .venv/bin/python bench/audio_latency.py --json bench/results/audio_latency.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)), "max_ms": float(a.max()), "n": len(a)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "speech" / "RAVDESS")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "audio-emotion")
    ap.add_argument("--windows", type=int, default=200)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    torch.set_num_threads(1)
    from streamer.audio.emotion import AudioEmotion
    from streamer.audio.features import prepare, prosody_frames
    from streamer.audio.io import load_audio

    model = AudioEmotion.load(args.model)
    found = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in (".flac", ".wav", ".ogg"))
    files = found[:: max(1, len(found) // args.windows)][: args.windows]
    windows = []
    for f in files:
        x = load_audio(f)
        mid = max(0, x.size // 2 - 20_000)
        windows.append(x[mid: mid + 40_000])  # 2.5 s of the clip, speech and its edges
    for w in windows[:5]:  # warm-up: numba JIT of librosa, CTranslate2 first calls
        model.predict(w)
    pooled = getattr(model, "kind", None) == "pooled"
    stream = model.stream() if pooled else None  # a live stream's running statistics
    encoders = model.encoders if pooled else [model.whisper]
    names = [e.name.removeprefix("embedded:") for e in encoders]
    stages = {"end_to_end": [], "prepare": [], **{f"encoder {n}": [] for n in names}, "prosody": [], "head" if pooled else "network": []}
    for w in windows:
        t0 = time.perf_counter()
        model.predict(w, stream=stream) if pooled else model.predict(w)
        stages["end_to_end"].append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        x = prepare(w)
        stages["prepare"].append((time.perf_counter() - t0) * 1e3)
        encoded = []
        for n, e in zip(names, encoders):
            t0 = time.perf_counter()
            encoded.append(e.encode(x))
            stages[f"encoder {n}"].append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        pro = prosody_frames(x)
        stages["prosody"].append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        if pooled:
            from streamer.audio.linear import stats_row

            t = min(len(pro), *(len(e) for e in encoded))
            model.row_logits(stats_row([e[:t] for e in encoded] + [pro[:t]])[None])
            stages["head"].append((time.perf_counter() - t0) * 1e3)
        else:
            from streamer.audio.windows import FrameInputs

            n = min(len(encoded[0]), len(pro))
            model.window_probs([FrameInputs(encoded[0][:n], pro[:n])])
            stages["network"].append((time.perf_counter() - t0) * 1e3)
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}, 1 thread".strip(),
        "window_seconds": 2.5,
        "model": f"{args.model} ({getattr(model, 'kind', 'network')}: {', '.join(names)})",
        "stages": {k: percentiles(v) for k, v in stages.items()},
    }
    print(f"{'stage':<16} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
    for k, v in result["stages"].items():
        print(f"{k:<16} {v['median_ms']:>10.2f} {v['p95_ms']:>8.2f} {v['max_ms']:>8.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

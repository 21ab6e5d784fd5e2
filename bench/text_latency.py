"""Per-sentence latency of the text emotion model on one CPU thread.

Times ``TextEmotion.predict`` on single sentences (what the live pipeline does per window)
over real MELD dev utterances in ASR style, after a warm-up, and prints a table and writes
JSON. Usage (from the repository root):

    .venv/bin/python bench/text_latency.py --json bench/results/text_latency.json
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
COMMAND = ".venv/bin/python bench/text_latency.py --json bench/results/text_latency.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "text" / "meld" / "dev.tsv")
    ap.add_argument("--model", default=None, help="text model (default: the shipped one)")
    ap.add_argument("--sentences", type=int, default=300)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    torch.set_num_threads(1)
    from streamer.text.load import load_text_emotion
    from streamer.text.normalize import asr_style
    from streamer.train.textdata import read_tsv

    t0 = time.perf_counter()
    model = load_text_emotion(args.model)
    load_s = time.perf_counter() - t0
    texts = [t for t in (asr_style(x) for x in read_tsv(args.data).head(args.sentences).texts) if t]
    for t in texts[:10]:
        model.predict(t)
    ms = []
    for t in texts:
        t0 = time.perf_counter()
        model.predict(t)
        ms.append((time.perf_counter() - t0) * 1e3)
    a = np.asarray(ms)
    words = np.array([len(t.split()) for t in texts])
    result = {"date": date.today().isoformat(), "command": COMMAND, "model": model.name,
              "machine": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}, 1 thread".strip(),
              "n": len(a), "mean_words": float(words.mean()), "max_words": int(words.max()),
              "median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)), "max_ms": float(a.max()),
              "load_s": round(load_s, 2)}
    print(f"{len(a)} sentences ({result['mean_words']:.1f} words on average, at most {result['max_words']}): "
          f"median {result['median_ms']:.2f} ms, p95 {result['p95_ms']:.2f} ms, max {result['max_ms']:.2f} ms; load {load_s:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

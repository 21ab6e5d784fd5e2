"""Where ser-live's resident memory goes: RSS after each import, model load and warm-up step,
in a fresh process, then over 300 windows of varying length through each model (growth).

    .venv/bin/python bench/memory_profile.py [--json bench/results/memory_profile.json]

Each step is measured in the order ser-live does it; a step's figure is what it added.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "speech"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--windows", type=int, default=300)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import psutil

    proc = psutil.Process()
    steps: list[tuple[str, float]] = [("python + numpy + psutil", proc.memory_info().rss / 2**20)]

    def step(name: str) -> None:
        steps.append((name, proc.memory_info().rss / 2**20))

    import onnxruntime  # noqa: F401
    import faster_whisper  # noqa: F401

    step("import onnxruntime, faster-whisper, CTranslate2")
    from streamer.runtime import models as runtime_models
    from streamer.runtime.heap import tune_allocator
    from streamer.runtime.config import Config

    cfg = Config.load()
    tune_allocator()
    step("import streamer (config, runtime)")
    # the order of streamer.runtime.models.load_models
    from streamer.text.load import load_text_emotion

    text = load_text_emotion(cfg.text.model)
    step(f"text model ({text.name})")
    from streamer.audio.encoder import EMBEDDED

    handle = runtime_models.whisper_handle(cfg, EMBEDDED)
    step("Whisper tiny.en (faster-whisper, CTranslate2 int8)")
    from streamer.audio.load import load_audio_model

    audio = load_audio_model(cfg.audio.model_path, handle)
    names = ", ".join(getattr(e, "name", "?") for e in getattr(audio, "encoders", []))
    step(f"audio emotion model ({cfg.audio.model_path.name}; encoders {names or 'its own'})")
    asr = runtime_models.asr_factory(cfg)()
    step("speech recogniser (shares the Whisper model)")
    models = runtime_models.Models(audio, text, lambda: asr, {})
    runtime_models.warm_up(models)
    step("warm-up (first calls, then malloc_trim)")

    from streamer.audio.io import load_audio
    from streamer.core.messages import Window

    clips = [load_audio(f) for f in sorted(SHARED.rglob("*.flac"))[::97][:40]]
    rng = np.random.default_rng(0)
    words = "i can't believe you did that to me after everything we went through together".split()
    for i in range(args.windows):
        n = int(rng.integers(16000, 40000))
        x = np.resize(clips[i % len(clips)], n).astype(np.float32)
        try:
            audio.predict(x)
        except Exception:  # a silent window: counted in the pipeline, irrelevant here
            pass
        asr.words_for(Window(i, i * 40000, i * 40000 + n, (x * 32767).astype(np.int16)))
        text.predict(" ".join(words[: int(rng.integers(1, len(words)))]))
        if i == args.windows // 10:
            step(f"{i} windows (audio model, recogniser, text)")
    step(f"{args.windows} windows")

    import resource

    steps.append(("peak (ru_maxrss)", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    rows = [(name, rss, rss - (steps[k - 1][1] if k else 0.0)) for k, (name, rss) in enumerate(steps)]
    print("| step | RSS MB | added MB |\n|---|---|---|")
    for name, rss, added in rows:
        print(f"| {name} | {rss:.0f} | {added:+.0f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "date": date.today().isoformat(), "command": "python bench/memory_profile.py " + " ".join(sys.argv[1:]),
            "steps": [{"step": n, "rss_mb": round(r, 1), "added_mb": round(a, 1)} for n, r, a in rows]}, indent=2) + "\n")


if __name__ == "__main__":
    main()

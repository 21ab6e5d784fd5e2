"""Benchmarks of the live pipeline: latency, real-time factor, concurrent streams, memory.

Each subcommand prints a table and writes JSON under bench/results/. The test recording is
built from RAVDESS and TESS clips (real speech, with pauses between utterances) at the
length asked for, and cached under out/bench/. Usage, from the repository root:

    .venv/bin/python bench/live_bench.py latency  --minutes 5           # real-time replay, dashboard off and on
    .venv/bin/python bench/live_bench.py rtf      --minutes 5           # whole pipeline --fast and each stage, 1 and 2 threads
    .venv/bin/python bench/live_bench.py streams  --counts 8 16 32      # concurrent real-time streams in one process
    .venv/bin/python bench/live_bench.py memory   --minutes 30          # ser-live --fast: RSS, windows logged vs expected
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "speech"
OUT = ROOT / "out" / "bench"
RESULTS = ROOT / "bench" / "results"
SR = 16000


def set_work(folder: Path) -> None:
    global OUT
    OUT = folder


def recording(minutes: float, seed: int = 0) -> Path:
    """A mono 16 kHz WAV of real speech clips separated by 0.4-1.5 s pauses."""
    import soundfile as sf

    from streamer.audio.io import load_audio

    path = OUT / f"speech_{minutes:g}min.wav"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = sorted(SHARED.rglob("*.flac"))
    parts, total = [], 0
    while total < minutes * 60 * SR:
        x = load_audio(files[int(rng.integers(len(files)))])
        x = x / max(1e-3, float(np.abs(x).max())) * 0.5
        pause = np.zeros(int(rng.uniform(0.4, 1.5) * SR), np.float32)
        parts += [x, pause]
        total += len(x) + len(pause)
    sf.write(path, np.concatenate(parts)[: int(minutes * 60 * SR)], SR, subtype="PCM_16")
    return path


def machine(threads: int) -> str:
    import torch

    return f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, {threads} thread(s)"


def stats(values) -> dict:
    a = np.asarray(values, float)
    if a.size == 0:
        return {"p50": None, "p95": None, "max": None, "n": 0}
    return {"p50": round(float(np.median(a)), 1), "p95": round(float(np.percentile(a, 95)), 1),
            "max": round(float(a.max()), 1), "n": int(a.size)}


def setup(threads: int, with_asr: bool = True):
    import torch

    from streamer.runtime.config import Config
    from streamer.runtime.models import load_models, warm_up

    torch.set_num_threads(threads)
    cfg = Config.load()
    models = load_models(cfg, with_asr=with_asr)
    warm_up(models)
    return cfg, models


def run_stream(cfg, models, path: Path, fast: bool, stop: threading.Event | None = None, dashboard: bool = False,
               with_asr: bool = True):
    from streamer.core.counters import Counters
    from streamer.core.messages import WindowResult
    from streamer.runtime.streams import open_stream
    from streamer.live.sources import FileSource
    from streamer.ui.state import LiveState

    results = []  # window results (utterance records are not timed per window)
    counters = Counters()
    state = LiveState(path.name, models.names)
    source = FileSource(path, fast=fast)
    pipe = open_stream(cfg, models, source, [lambda r: isinstance(r, WindowResult) and results.append(r)], observer=state,
                       block_when_full=fast, counters=counters, asr=None if with_asr else (lambda: None))
    live = None
    if dashboard:
        from rich.console import Console
        from rich.live import Live

        from streamer.ui.dashboard import Dashboard

        console = Console(file=io.StringIO(), force_terminal=True, width=130, height=40)
        live = Live(Dashboard(lambda: state.snapshot(counters.snapshot())), console=console,
                    refresh_per_second=cfg.live.refresh_per_second)
        live.start()
    t0 = time.perf_counter()
    summary = pipe.run(stop or threading.Event())
    wall = time.perf_counter() - t0
    if live:
        live.stop()
    return results, summary, wall, pipe


def cmd_latency(args) -> dict:
    path = recording(args.minutes)
    cfg, models = setup(1)
    out = {}
    for dashboard in (False, True):
        results, summary, wall, _ = run_stream(cfg, models, path, fast=False, dashboard=dashboard)
        t = lambda key: [r.timings_ms.get(key, 0.0) for r in results]
        emotion = [r.timings_ms["audio"] + r.timings_ms["text"] + r.timings_ms["fusion"] for r in results]
        after_words = [r.timings_ms["text"] + r.timings_ms["fusion"] for r in results]
        out["dashboard on" if dashboard else "dashboard off"] = {
            "windows": len(results), "end_to_end_ms": stats([r.latency_ms for r in results]),
            "asr_ms": stats(t("asr")), "audio_model_ms": stats(t("audio")), "text_ms": stats(t("text")),
            "fusion_ms": stats(t("fusion")), "emotion_path_ms": stats(emotion), "after_words_ms": stats(after_words),
            "dropped": summary["counters"]}
    return {"recording_minutes": args.minutes, "runs": out}


def cmd_rtf(args) -> dict:
    from streamer.core.messages import Chunk
    from streamer.core.vad import VadSegmenter

    path = recording(args.minutes)
    audio_s = args.minutes * 60
    out = {}
    from dataclasses import replace

    from streamer.asr.whisper import WhisperEngine
    from streamer.audio.prepare import SilentAudio
    from streamer.runtime.models import whisper_handle

    for threads in (1, 2):
        cfg, models = setup(threads)
        # CTranslate2 threads are fixed when a model loads: the recogniser gets its own handle
        cfg = replace(cfg, whisper=replace(cfg.whisper, cpu_threads=threads))
        handle = whisper_handle(cfg, cfg.whisper.model)
        models.asr_factory = lambda: WhisperEngine(handle)
        results, summary, wall, _ = run_stream(cfg, models, path, fast=True)
        # stages alone, on the same windows
        import soundfile as sf

        x = sf.read(path, dtype="int16")[0]
        seg = VadSegmenter(cfg.vad, cfg.audio.window_samples, cfg.audio.min_window_samples)
        t0 = time.perf_counter()
        for s in range(0, len(x), 1600):
            seg.push(Chunk(s, x[s: s + 1600]))
        windows = seg.poll() + seg.flush()
        vad_s = time.perf_counter() - t0
        asr = models.asr_factory()
        t0 = time.perf_counter()
        words = [asr.words_for(w) for w in windows]
        asr_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for w in windows:
            try:
                models.audio.predict(w.samples.astype(np.float32) / 32768.0)
            except SilentAudio:  # the pipeline counts these as silent_windows
                pass
        audio_model_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for ws in words:
            if ws:
                models.text.predict(" ".join(w.word for w in ws))
        text_s = time.perf_counter() - t0
        out[f"{threads} thread(s)"] = {
            "pipeline_fast": round(wall / audio_s, 4), "vad": round(vad_s / audio_s, 5), "asr": round(asr_s / audio_s, 4),
            "audio_model": round(audio_model_s / audio_s, 4), "text": round(text_s / audio_s, 5),
            "windows": len(windows), "pipeline_windows": len(results)}
    return {"recording_minutes": args.minutes, "rtf": out}


def cmd_streams(args) -> dict:
    """N copies of one recording in one process, each a real-time stream with its own
    pipeline over the shared models. By default all start together, so their windows close
    at the same moments (the worst case: every stream's work arrives in one burst);
    ``--stagger`` starts stream k after k/N of a window, as independent calls would be."""
    path = recording(args.seconds / 60)
    out = {}
    from streamer.runtime.config import Config

    window_s = Config.load().audio.window_seconds
    for with_asr in (False, True):
        cfg, models = setup(1, with_asr=with_asr)
        for n in (args.counts_asr if with_asr else args.counts):
            runs = [None] * n

            offset = window_s / n if args.stagger else 0.0

            def one(k):
                time.sleep(k * offset)
                # each stream its own stop event: a pipeline sets it when its source ends
                runs[k] = run_stream(cfg, models, path, fast=False, stop=threading.Event(), with_asr=with_asr)

            threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            lat = [r.latency_ms for res, _, _, _ in runs for r in res]
            windows = [len(res) for res, _, _, _ in runs]
            drops = sum(s["counters"].get("asr_queue_dropped", 0) + s["counters"].get("windows_dropped", 0)
                        for _, s, _, _ in runs)
            p95 = stats(lat)["p95"]
            behind = drops > 0 or (p95 is not None and p95 > 1000) or wall > args.seconds * 1.1 + window_s
            key = f"{'whisper + emotion' if with_asr else 'emotion path (VAD, audio, text, fusion)'}: {n} streams"
            out[key] = {"streams": n, "latency_ms": stats(lat), "drops": drops, "wall_s": round(wall, 1),
                        "windows_per_stream": sorted(set(windows)),
                        "keeps_up": not behind}
            print(key, out[key], flush=True)
    return {"seconds_per_stream": args.seconds, "start": "staggered" if args.stagger else "together", "streams": out}


def vad_windows(cfg, path: Path) -> int:
    """Windows the VAD alone cuts from ``path``: what the pipeline must log, none lost."""
    import soundfile as sf

    from streamer.core.messages import Chunk
    from streamer.core.vad import VadSegmenter

    x = sf.read(path, dtype="int16")[0]
    seg = VadSegmenter(cfg.vad, cfg.audio.window_samples, cfg.audio.min_window_samples)
    n = 0
    for s in range(0, len(x), SR):
        seg.push(Chunk(s, x[s: s + SR]))
        n += len(seg.poll())
    return n + len(seg.flush())


def cmd_memory(args) -> dict:
    """``ser-live --file REC --fast --no-dashboard`` as its own process (what a user runs),
    its resident memory sampled twice a second; windows logged against what the VAD cuts."""
    import subprocess
    import tempfile

    import psutil

    from streamer.runtime.config import Config
    from streamer.live.session_log import read_log

    path = recording(args.minutes)
    cfg = Config.load()
    expected = vad_windows(cfg, path)
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "session.ndjson"
        cmd = [sys.executable, "-m", "streamer.cli.live", "--file", str(path), "--fast", "--no-dashboard", "--log", str(log_path)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ps = psutil.Process(proc.pid)
        samples, started = [], None  # (seconds, MB); when the session began (models loaded, warmed up)
        while proc.poll() is None:
            try:
                rss = ps.memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                break
            t = time.perf_counter() - t0
            if started is None and log_path.exists() and log_path.stat().st_size > 0:
                started = t
            samples.append((t, rss))
            time.sleep(0.5)
        err = proc.stderr.read()
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"ser-live failed ({proc.returncode}): {err.strip().splitlines()[-1:]}")
        contents = read_log(log_path)
        windows = len(contents.of_type("window"))
        counters = contents.of_type("session_end")[0]["counters"]
    session = [(t, m) for t, m in samples if started is not None and t >= started]
    rss = np.array([m for _, m in session]) if session else np.array([m for _, m in samples])
    tenth = max(1, len(rss) // 10)
    warm = float(rss[:tenth].max())  # the first tenth of the session: the last allocations of warm-up
    return {"recording_minutes": args.minutes, "windows": windows, "expected_windows": expected,
            "expected_windows_match": windows == expected, "wall_s": round(wall, 1),
            "session_s": round(wall - (started or 0.0), 1),
            "rss_mb": {"at_session_start": round(float(rss[0]), 1), "first_tenth_max": round(warm, 1),
                       "last_tenth_max": round(float(rss[-tenth:].max()), 1), "end": round(float(rss[-1]), 1),
                       "peak": round(float(max(m for _, m in samples)), 1)},
            "growth_mb_after_first_tenth": round(float(rss[-tenth:].max()) - warm, 1),
            "series_mb": [round(float(m), 1) for m in rss[:: max(1, len(rss) // 60)]],
            "counters": counters}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON results")
    ap.add_argument("--work", type=Path, default=None, help="folder for the generated recordings (default: out/bench)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("latency")
    p.add_argument("--minutes", type=float, default=5)
    p = sub.add_parser("rtf")
    p.add_argument("--minutes", type=float, default=5)
    p = sub.add_parser("streams")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--counts", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--counts-asr", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--stagger", action="store_true", help="start stream k after k/N of a window (else all at once)")
    p = sub.add_parser("memory")
    p.add_argument("--minutes", type=float, default=30)
    args = ap.parse_args()
    if args.work:
        set_work(args.work)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = {"date": date.today().isoformat(), "machine": machine(1),
              "command": ".venv/bin/python bench/live_bench.py " + " ".join(sys.argv[1:])}
    result.update({"latency": cmd_latency, "rtf": cmd_rtf, "streams": cmd_streams, "memory": cmd_memory}[args.cmd](args))
    args.results.mkdir(parents=True, exist_ok=True)
    name = f"live_memory_{args.minutes:g}min" if args.cmd == "memory" else f"live_{args.cmd}"
    if args.cmd == "streams" and args.stagger:
        name += "_staggered"
    (args.results / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

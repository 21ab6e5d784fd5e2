"""What a call track costs ser-serve when nothing is said: the CPU of moving its audio through
the track's threads (ring, reader, VAD, lane, worker), without the socket or the models' work.

``--tracks`` call tracks (``streamer.serve.calls.tracks.TrackRunner``, over the real models as
ser-serve loads them) are fed 20 ms frames of 8 kHz low-level noise (Twilio's frame size and
rate) by one thread, in real time, for ``--seconds``; the VAD finds no speech, so no model runs.
Reported: the process's CPU per track-second (ms), its threads while the tracks run, and the
context switches per track-second (voluntary and involuntary, summed over the process's threads).

Usage, from the repository root:

    .venv/bin/python bench/track_cost.py --tracks 32 --seconds 20
    .venv/bin/python bench/track_cost.py --tracks 32 --seconds 20 --gather-ms 0   # each frame read as it comes
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import threading
import time
from pathlib import Path

import numpy as np


def switches() -> int:
    """Context switches of every thread of this process so far."""
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except FileNotFoundError:  # the thread ended
            pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--gather-ms", type=int, default=None, help="[server] gather_ms (default: the config's)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from streamer.runtime.config import Config, for_server
    from streamer.runtime.models import load_models
    from streamer.serve.calls.pace import PaceLimits
    from streamer.serve.calls.tracks import TrackRunner

    cfg = for_server(Config.load())
    if args.gather_ms is not None:
        cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, gather_ms=args.gather_ms))
    models = load_models(cfg)
    rate, frame = 8000, 160
    noise = np.random.default_rng(0).normal(0, 20, int(args.seconds * rate)).astype(np.int16)
    runners = [TrackRunner(f"CA{k:04d}", "customer", rate, models, cfg, lambda record: None,
                           pace=PaceLimits(max_speed=0.0)).start() for k in range(args.tracks)]
    threads = threading.active_count()
    cpu0, sw0, t0 = time.process_time(), switches(), time.monotonic()
    for n, i in enumerate(range(0, len(noise), frame), start=1):
        for r in runners:
            r.push(noise[i:i + frame])
        time.sleep(max(0.0, t0 + n * frame / rate - time.monotonic()))
    cpu, sw = time.process_time() - cpu0, switches() - sw0
    track_s = args.seconds * args.tracks
    for r in runners:
        r.close(timeout=60)
    result = {"tracks": args.tracks, "seconds": args.seconds, "gather_ms": cfg.server.gather_ms,
              "cpu_ms_per_track_s": round(cpu / track_s * 1e3, 2), "cores": round(cpu / args.seconds, 3),
              "threads": threads, "switches_per_track_s": round(sw / track_s, 1)}
    print(json.dumps(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""ser-analyze throughput: seconds of audio analysed per second of wall time, --jobs 1
versus --jobs 2, over a folder of recordings built from RAVDESS and TESS clips.

    .venv/bin/python bench/analyze_throughput.py --files 8 --minutes 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=1.0)
    args = ap.parse_args()
    from live_bench import OUT, recording

    folder = OUT / f"calls_{args.files}x{args.minutes:g}"
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(args.files):
        target = folder / f"call{k:02d}.wav"
        if not target.exists():
            shutil.copy(recording(args.minutes, seed=100 + k), target)
            (OUT / f"speech_{args.minutes:g}min.wav").unlink()
    audio_s = args.files * args.minutes * 60
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = {}
    for jobs in (1, 2):
        dest = OUT / f"analysis_j{jobs}"
        shutil.rmtree(dest, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run([str(ROOT / ".venv" / "bin" / "ser-analyze"), str(folder), "--out", str(dest), "--jobs", str(jobs)],
                       check=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - t0
        out[f"jobs {jobs}"] = {"wall_s": round(wall, 1), "audio_s_per_s": round(audio_s / wall, 2)}
        print(jobs, out[f"jobs {jobs}"], flush=True)
    result = {"date": date.today().isoformat(), "command": "python bench/analyze_throughput.py " + " ".join(sys.argv[1:]),
              "files": args.files, "minutes_each": args.minutes, "cores": os.cpu_count(), "runs": out,
              "note": "wall time includes starting the processes and loading the models"}
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "analyze_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

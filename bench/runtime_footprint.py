"""What the main job costs a user: ``ser-live`` on the demo's peak resident memory, its cold
start to the first window, and (``--install-size``) the size of ``pip install .`` into an
empty virtual environment.

    .venv/bin/python bench/runtime_footprint.py [--root CHECKOUT] [--runs 3] [--install-size]
        [--json bench/results/runtime_footprint.json]

``--root`` measures another checkout (its ``streamer`` package and models) with this
interpreter, which is how the figures before a change are taken: ``git worktree add /tmp/before
REV`` and ``--root /tmp/before``. Each run is a fresh process: ``ser-live --file demo/demo.flac
--fast --no-dashboard --log LOG`` (the demo is 41 s of speech). Cold start is the time from
launching the process to the first ``window`` record in its log (models loaded and warmed,
the first window analysed); peak RSS is the process's ``ru_maxrss``. The install size is the
``du`` of a new venv after ``pip install ROOT`` (its dependencies from the package index; the
``constraints.txt`` of ROOT applies, so torch, where a checkout still needs it, is the CPU build).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def one_run(root: Path, log: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "streamer.cli.live", "--file", str(root / "demo" / "demo.flac"),
                             "--fast", "--no-dashboard", "--log", str(log)], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    first = None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # this child's own rusage when it ends
        if pid:
            break
        if first is None and log.is_file() and '"type":"window"' in log.read_text():
            first = time.monotonic() - t0
        time.sleep(0.02)
    total = time.monotonic() - t0
    err = proc.stderr.read().decode(errors="replace")
    code = proc.returncode = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"ser-live failed ({code}): {err[-2000:]}")
    if first is None:
        first = total
    return {"cold_start_to_first_window_s": round(first, 2), "total_s": round(total, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "windows": log.read_text().count('"type":"window"')}


def install_size(root: Path) -> dict:
    venv = Path(tempfile.mkdtemp(prefix="ser-size-")) / "venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        cmd = [str(venv / "bin" / "pip"), "install", "-q"]
        if (root / "constraints.txt").is_file():
            cmd += ["-c", str(root / "constraints.txt")]
        t0 = time.monotonic()
        subprocess.run(cmd + [str(root)], check=True, stdin=subprocess.DEVNULL)
        took = time.monotonic() - t0
        size = int(subprocess.run(["du", "-sm", str(venv)], capture_output=True, text=True, check=True).stdout.split()[0])
        heavy = subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import importlib.util as u; print([m for m in ('torch', 'transformers', 'librosa', 'peft') "
                                "if u.find_spec(m)])"], capture_output=True, text=True).stdout.strip()
        return {"install_mb": size, "install_s": round(took, 1), "training_libraries_installed": heavy}
    finally:
        shutil.rmtree(venv.parent, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=HERE, help="the checkout to measure (default: this one)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--install-size", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    root = args.root.resolve()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.runs):
            runs.append(one_run(root, Path(tmp) / f"run{k}.ndjson"))
            print(json.dumps(runs[-1]), flush=True)
    out = {"date": date.today().isoformat(), "root": str(root),
           "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip(),
           "command": " ".join([".venv/bin/python", "bench/runtime_footprint.py", *sys.argv[1:]]), "runs": runs,
           "cold_start_s_median": sorted(r["cold_start_to_first_window_s"] for r in runs)[len(runs) // 2],
           "peak_rss_mb_max": max((r["peak_rss_mb"] or 0) for r in runs)}
    if args.install_size:
        out.update(install_size(root))
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

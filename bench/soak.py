"""ser-serve for an hour: ``--calls`` two-track Twilio calls at a time, end to end, each replaced
by a new one when it ends, for ``--minutes``; per ``--period`` the server's resident memory, open
file descriptors, threads and event-loop tasks, the window latency (window close -> its event on
``/events``) p50/p95, what was dropped, the server's and this client's CPU (cores; both share the
host) and the host's steal time (the share of the host's CPU time a hypervisor gave other guests:
a virtual machine's capacity varies with it, so it tells a slow server from a slow host).

    .venv/bin/python bench/soak.py --minutes 60 --calls 16 [--json bench/results/soak_60min.json]
    .venv/bin/python bench/soak.py --minutes 1 --calls 2 --period 20 --call-seconds 20   # the CI smoke

One short round of calls warms the server up first; its idle level after them is the baseline. The
calls are real speech (RAVDESS/TESS clips from ``../shared``, as ``bench/server_bench.py``
plays them: the customer and the agent take turns), 8 kHz mu-law, paced in real time, started
``--stagger`` s apart and each ``--call-seconds`` long, so calls start and end all the time.
Before the first call and after the last one ends the server is idle: its fds, threads and tasks
then must come back to the idle level (nothing leaks per call).

Ended calls stay in memory for ``[server] keep_ended_min`` (30) minutes (``/api/calls``, the desk),
so resident memory rises by design until that long after the first call ended; ``--config
bench/soak.toml`` (5 minutes) puts that inside the first 10 minutes, so what still grows after
them is a leak:

    .venv/bin/python bench/soak.py --minutes 60 --calls 16 --config bench/soak.toml --json bench/results/soak_60min.json

The verdict (issue 28): after the first 10 minutes (or the first third of a shorter run) resident
memory grows by at most 5 % (each period's median of samples every 10 s: ser-serve gives freed
memory back after calls, so one sample would measure that instant's load); fds, threads and
tasks after the calls equal the idle level before them; p95 under 1 s in every period; no drops
(audio, windows, feed events).

Where the memory is, per period, to tell a leak from fragmentation: the process's resident
memory by kind of mapping (``parts_mb``: glibc's main heap, other anonymous memory, files,
stack; ``/proc/PID/smaps``) and what the C allocator holds (``c_heap_mb``: in use, free in its
arenas, mapped; ``/metrics``' ``ser_serve_heap_bytes``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from server_bench import (free_port, percentile, play_twilio, prebuilt, scrape, speech_clips,  # noqa: E402
                          turn_taking_call, wait_healthy)

DROPS = {"audio_s": "ser_serve_audio_dropped_seconds_total", "windows": "ser_serve_windows_dropped_total",
         "events": "ser_serve_events_dropped_total"}


RSS_EVERY_S = 10.0  # resident memory is sampled this often within a period


def process_figures(pid: int) -> dict:
    import psutil

    p = psutil.Process(pid)
    return {"rss_mb": round(p.memory_info().rss / 2**20, 1), "fds": p.num_fds(), "threads": p.num_threads()}


def memory_parts(pid: int) -> dict:
    """Where the resident memory is (MB, ``/proc/PID/smaps``): ``heap`` (glibc's main arena),
    ``anon`` (other anonymous mappings: glibc's thread arenas, mapped buffers, Python's object
    arenas), ``file`` (libraries and mapped model files) and ``stack``. Which part grows tells
    a leak of objects or buffers (heap, anon) from fragmentation nobody can use (heap and
    anon, with the allocator's free bytes) or pages of files (file). ``huge`` is the part of
    heap and anon held in transparent huge pages (``AnonHugePages``; counted in those too): a
    2 MB page stays whole while only some of it is in use."""
    parts = {"heap": 0, "anon": 0, "file": 0, "stack": 0, "huge": 0}
    kind = "anon"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(None, 5)
        if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line
            path = head[5].strip() if len(head) > 5 else ""
            kind = ("heap" if path == "[heap]" else "stack" if path.startswith("[stack") else
                    "file" if path.startswith("/") else "anon")
        elif line.startswith("Rss:"):
            parts[kind] += int(line.split()[1])
        elif line.startswith("AnonHugePages:"):
            parts["huge"] += int(line.split()[1])
    return {k: round(v / 1024, 1) for k, v in parts.items()}


def c_heap(metrics: dict) -> dict:
    """The C allocator's bytes (MB) from ``/metrics``: in use, free in its arenas, mapped on their
    own (-1 where the server's malloc is not glibc's: another C library, or jemalloc preloaded)."""
    return {part: round(metrics.get(f'ser_serve_heap_bytes{{part="{part}"}}', -2**20) / 2**20, 1)
            for part in ("in_use", "free", "mapped")}


def cpu_ticks(pid: int) -> dict:
    """The server's CPU time and the host's ticks so far (``/proc``): what a period's ``cores``
    (the server's CPU) and ``steal_pct`` (of the host's time, taken by the hypervisor for other
    guests: a virtual machine given less than its cores) come from."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    host = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return {"server_s": t.user + t.system, "host_total": sum(host[:8]), "host_steal": host[7] if len(host) > 7 else 0,
            "client_s": time.process_time(), "mono": time.monotonic()}


def cpu_between(a: dict, b: dict) -> dict:
    total, wall = max(1, b["host_total"] - a["host_total"]), max(1e-9, b["mono"] - a["mono"])
    return {"cores": round((b["server_s"] - a["server_s"]) / wall, 2),
            "client_cores": round((b["client_s"] - a["client_s"]) / wall, 2),
            "steal_pct": round(100 * (b["host_steal"] - a["host_steal"]) / total, 1)}


async def soak(args, work: Path) -> dict:
    import aiohttp

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("SER_SERVE_TOKEN", None)
    cmd = [sys.executable, "-m", "streamer.cli.serve", "--host", "127.0.0.1", "--port", str(port),
           "--max-calls", str(args.calls), "--log-dir", str(work / "logs")]
    if args.config:
        cmd += ["--config", str(args.config)]
    log_file = open(work / "serve.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    clips = speech_clips(60, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    windows: list[tuple[float, float]] = []  # (arrival, feed latency ms)
    ended: set[str] = set()
    started: list[str] = []
    codes: list[int | None] = []
    periods: list[dict] = []
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, base, proc, timeout=args.start_timeout)

            async def metrics() -> dict:
                async with session.get(f"{base}/metrics") as r:
                    return scrape(await r.text())

            feed = await session.ws_connect(f"ws://127.0.0.1:{port}/events", max_msg_size=0)

            async def follow() -> None:
                async for msg in feed:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    ev = json.loads(msg.data)
                    if ev.get("type") == "window" and ev.get("feed_latency_ms") is not None:
                        windows.append((time.monotonic(), float(ev["feed_latency_ms"])))
                    elif ev.get("type") == "call_end":
                        ended.add(ev["call_id"])

            follower = asyncio.ensure_future(follow())

            async def play(sid: str, seconds: float) -> None:
                customer, agent = turn_taking_call(seconds, clips, rng)
                played = await play_twilio(session, f"ws://127.0.0.1:{port}/twilio", prebuilt(customer, agent, sid))
                codes.append(played.close_code)

            # one short round of calls first, as many at once as the soak plays: what the server makes
            # once and keeps (thread pools grown to their size, the models' first-call buffers) is then
            # part of the idle level the calls must come back to
            warm = [f"CAwarm{i:03d}" + "0" * 23 for i in range(args.calls)]
            await asyncio.gather(*(play(sid, 8.0) for sid in warm))
            deadline = time.monotonic() + 60
            while not set(warm) <= ended and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            await asyncio.sleep(3.0)
            first = await metrics()
            idle_before = {**process_figures(proc.pid), "tasks": int(first.get("ser_serve_asyncio_tasks", -1)),
                           "c_heap_mb": c_heap(first)}
            t0 = time.monotonic()
            stop_at = t0 + args.minutes * 60

            async def slot(i: int) -> None:
                await asyncio.sleep(i * args.stagger)
                k = 0
                while time.monotonic() + args.call_seconds <= stop_at + args.call_seconds / 2:
                    sid = f"CA{i:03d}{k:05d}{'0' * 24}"[:34]
                    started.append(sid)
                    await play(sid, args.call_seconds)
                    k += 1

            async def sample() -> None:
                last = await metrics()
                ticks = cpu_ticks(proc.pid)
                mark = t0
                while True:
                    rss = []  # sampled through the period: its level, not one instant's load
                    end = time.monotonic() + args.period
                    while (left := end - time.monotonic()) > 0:
                        await asyncio.sleep(min(RSS_EVERY_S, left))
                        rss.append(process_figures(proc.pid)["rss_mb"])
                    now = await metrics()
                    later = cpu_ticks(proc.pid)
                    cpu, ticks = cpu_between(ticks, later), later
                    lat = [ms for t, ms in windows if mark <= t < mark + args.period + 1e-6]
                    mark += args.period
                    periods.append({"minute": round((time.monotonic() - t0) / 60, 2), **process_figures(proc.pid),
                                    "rss_median_mb": round(float(np.median(rss)), 1), "rss_max_mb": max(rss),
                                    "parts_mb": memory_parts(proc.pid),
                                    "c_heap_mb": c_heap(now),
                                    "tasks": int(now.get("ser_serve_asyncio_tasks", -1)),
                                    "active_calls": int(now.get("ser_serve_active_calls", 0)), **cpu,
                                    "windows": len(lat), "p50_ms": percentile(lat, 50), "p95_ms": percentile(lat, 95),
                                    "drops": {k: round(now.get(m, 0.0) - last.get(m, 0.0), 2) for k, m in DROPS.items()}})
                    last = now
                    print(json.dumps(periods[-1]), file=sys.stderr, flush=True)

            sampler = asyncio.ensure_future(sample())
            await asyncio.gather(*(slot(i) for i in range(args.calls)))
            deadline = time.monotonic() + 60
            while not set(started) <= ended and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            sampler.cancel()
            wall_min = (time.monotonic() - t0) / 60
            await feed.close()
            follower.cancel()
            await asyncio.sleep(3.0)  # the server lets go of the ended calls' sockets and tasks
            final = await metrics()
            idle_after = {**process_figures(proc.pid), "tasks": int(final.get("ser_serve_asyncio_tasks", -1)),
                          "c_heap_mb": c_heap(final)}  # in use at idle, before and after: what the calls left
            totals = {k: round(final.get(m, 0.0), 2) for k, m in DROPS.items()}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()
    return verdict(args, periods, idle_before, idle_after, totals, started, ended, codes, wall_min)


def verdict(args, periods, idle_before, idle_after, totals, started, ended, codes, wall_min) -> dict:
    warm = min(10.0, args.minutes / 3)
    after = [p for p in periods if p["minute"] >= warm] or periods[-1:]
    # each period's median: the server gives freed memory back after calls, so its resident memory
    # follows what the calls in flight hold, and one sample would measure that instant's load
    level = [p["rss_median_mb"] for p in after]
    base_rss = level[0] if level else None
    growth = round(100 * (max(level) - base_rss) / base_rss, 1) if level else None
    p95s = [p["p95_ms"] for p in periods if p["p95_ms"] is not None]
    checks = {
        "rss_growth_after_warmup_pct": growth, "rss_ok": growth is not None and growth <= 5.0,
        "fds_return": idle_after["fds"] <= idle_before["fds"],
        "threads_return": idle_after["threads"] <= idle_before["threads"],
        "tasks_return": idle_after["tasks"] <= idle_before["tasks"],
        "p95_max_ms": max(p95s) if p95s else None, "p95_ok": bool(p95s) and max(p95s) < 1000,
        "no_drops": not any(totals.values()),
        "every_call_ended": set(started) <= ended and all(c == 1000 for c in codes),
    }
    met = all(v for k, v in checks.items() if k.endswith(("_ok", "_return", "no_drops", "every_call_ended")))
    return {"command": "bench/soak.py " + " ".join(sys.argv[1:]), "minutes": round(wall_min, 1), "calls_at_once": args.calls,
            "call_seconds": args.call_seconds, "calls_played": len(started), "calls_ended": len(ended & set(started)),
            "close_codes": sorted({str(c) for c in codes}), "idle_before": idle_before, "idle_after": idle_after,
            "drops_total": totals, "periods": periods, "checks": checks, "met": met}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--calls", type=int, default=16, help="calls at a time (default 16)")
    ap.add_argument("--call-seconds", type=float, default=90.0, help="each call's length (default 90 s)")
    ap.add_argument("--stagger", type=float, default=2.0, help="seconds between the first calls' starts")
    ap.add_argument("--period", type=float, default=300.0, help="seconds per reported period (default 5 min)")
    ap.add_argument("--start-timeout", type=float, default=180.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", type=Path, default=None,
                    help="the server's config.toml (e.g. a shorter [server] keep_ended_min: ended calls are kept "
                         "that long for /api/calls and the desk, so memory rises until then by design)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None, help="folder for the server's log and call logs (default: a temp folder)")
    args = ap.parse_args()
    if args.minutes <= 0 or args.calls < 1 or args.period <= 0 or args.call_seconds < 5:
        ap.error("--minutes and --period must be positive, --calls at least 1, --call-seconds at least 5")
    import signal
    import tempfile

    # killed (SIGTERM) as when interrupted: the run is cancelled and its server stopped, not orphaned;
    # Ctrl-C too where the shell started it with SIGINT ignored (`nohup ... &` from a script)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    with tempfile.TemporaryDirectory(prefix="ser-soak-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        out = asyncio.run(soak(args, work))
    print("| minute | RSS MB (end / median / max) | fds | threads | tasks | calls | windows | p50 ms | p95 ms | drops (audio s / windows / events) "
          "| server cores | client cores | host steal % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in out["periods"]:
        d = p["drops"]
        print(f"| {p['minute']} | {p['rss_mb']} / {p['rss_median_mb']} / {p['rss_max_mb']} | {p['fds']} | {p['threads']} | {p['tasks']} | {p['active_calls']} | "
              f"{p['windows']} | {p['p50_ms']} | {p['p95_ms']} | {d['audio_s']} / {d['windows']} / {d['events']} | "
              f"{p['cores']} | {p['client_cores']} | {p['steal_pct']} |")
    print(json.dumps({k: out[k] for k in ("idle_before", "idle_after", "checks", "met", "calls_played", "close_codes")}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0 if out["met"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""ser-serve under load: N concurrent two-track Twilio calls in real time, through /twilio.

For each N a fresh ``ser-serve`` process is started (127.0.0.1, a free port); N calls are played
to it with ser-call's Twilio client, in real time, each call ``--seconds`` long, the agent and
the customer taking turns (one speaks while the other's track is silence, so each track speaks
about half the time), with real speech clips (RAVDESS actors 01-20 and TESS, read in place).
The bench follows ``/events`` and reports, per N:

- window-close -> event-on-the-feed latency (the events' ``feed_latency_ms``), p50 and p95;
- drops: audio and windows the server dropped (``/metrics``), feed events dropped;
- the server process's CPU (cores used during the calls) and peak RSS (sampled every 0.25 s);
- the calls' end lag (stop sent -> ``call_end`` on the feed) and the client's own pacing lag;
- whether it keeps up: no drops, p95 under ``--p95-target`` (1.0 s), every call ended.

``--separate`` runs the same calls as one ``ser-live --file`` process per track instead (two per
call; the same 8 kHz mu-law audio, as WAV), to show what sharing the models gains: the sum of
their RSS, their CPU (from their launch, so each one's model loading is in it), and window
latency from their logs (window close -> result).

Usage, from the repository root (the full run takes about (seconds + 30) x 5 x 2 s):

    .venv/bin/python bench/server_bench.py --counts 4 8 16 24 32 --seconds 60
    .venv/bin/python bench/server_bench.py --counts 4 8 --seconds 60 --separate
    .venv/bin/python bench/server_bench.py --counts 4 --seconds 20 --out runs/server_smoke.json   # a smoke run

Results: a table on stdout and JSON (default bench/results/server_bench.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SPEECH = ROOT.parent / "shared" / "data" / "speech"
RESULTS = ROOT / "bench" / "results"
RATE = 8000


# --- the calls' audio --------------------------------------------------------------------------

def speech_clips(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` real speech clips as 8 kHz int16, peak-normalised to half scale."""
    from streamer.audio.io import load_audio, to_int16

    files = sorted((SPEECH / "RAVDESS").rglob("*.flac")) + sorted((SPEECH / "TESS").rglob("*.flac"))
    if not files:
        files = sorted(SPEECH.rglob("*.wav")) + sorted(SPEECH.rglob("*.flac"))
    if not files:
        raise SystemExit(f"no speech clips under {SPEECH}: the bench needs the shared RAVDESS/TESS data")
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.choice(len(files), size=n, replace=n > len(files)):
        x = load_audio(files[int(i)], target_rate=RATE)
        out.append(to_int16(x / max(1e-3, float(np.abs(x).max())) * 0.5))
    return out


def turn_taking_call(seconds: float, clips: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(customer, agent) tracks of ``seconds``: one speaks a few clips, then the other, ..."""
    n = int(seconds * RATE)
    tracks = [np.zeros(n, np.int16), np.zeros(n, np.int16)]
    t, who = int(rng.uniform(0.2, 1.0) * RATE), int(rng.integers(2))
    while t < n:
        for _ in range(int(rng.integers(1, 4))):  # a turn: 1-3 clips with short pauses
            c = clips[int(rng.integers(len(clips)))]
            end = min(n, t + len(c))
            tracks[who][t:end] = c[:end - t]
            t = end + int(rng.uniform(0.1, 0.3) * RATE)
            if t >= n:
                break
        t += int(rng.uniform(0.2, 0.5) * RATE)  # the gap before the other answers
        who = 1 - who
    return tracks[0], tracks[1]


def prebuilt(customer: np.ndarray, agent: np.ndarray, call_sid: str) -> list[tuple[int, str]]:
    """The call's Twilio messages as JSON text, made before the clock starts."""
    from streamer.serve.client import twilio_messages

    return [(k, json.dumps(m)) for k, m in twilio_messages(customer, agent, call_sid, "MZ" + call_sid[2:])]


# --- one run ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sampler:
    """CPU seconds and peak RSS of a process (and its children), sampled in a thread."""

    def __init__(self, pids: list[int], every: float = 0.25) -> None:
        import threading

        import psutil

        self.procs = [psutil.Process(p) for p in pids]
        self.every = every
        self.peak_rss = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def cpu(self) -> float:
        total = 0.0
        for p in self.procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except Exception:
                pass
        return total

    def rss(self) -> int:
        total = 0
        for p in self.procs:
            try:
                total += p.memory_info().rss
            except Exception:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak_rss = max(self.peak_rss, self.rss())

    def start(self) -> "Sampler":
        self.peak_rss = self.rss()
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._t.join(2)


def percentile(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 1) if xs else None


async def wait_healthy(session, base: str, proc, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"ser-serve exited with {proc.returncode} before it served")
        try:
            async with session.get(f"{base}/healthz") as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        await asyncio.sleep(0.5)
    raise SystemExit(f"ser-serve did not answer /healthz within {timeout:.0f} s")


def scrape(text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if not s.labels:
                out[s.name] = s.value
    return out


async def run_server(n: int, args, plans: list[tuple[str, list[tuple[int, str]]]], work: Path) -> dict:
    import aiohttp

    from streamer.serve.client import FRAME_S, Pacer

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("SER_SERVE_TOKEN", None)
    cmd = [sys.executable, "-m", "streamer.cli.serve", "--host", "127.0.0.1", "--port", str(port),
           "--max-calls", str(max(n, 1)), "--log-dir", str(work / f"logs-{n}")]
    if args.config:
        cmd += ["--config", str(args.config)]
    log_file = open(work / f"serve-{n}.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    windows: list[dict] = []
    ends: dict[str, float] = {}
    stops: dict[str, float] = {}
    late: dict[str, float] = {}
    codes: dict[str, int | None] = {}
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, base, proc)
            feed = await session.ws_connect(f"ws://127.0.0.1:{port}/events", max_msg_size=0)

            async def follow() -> None:
                async for msg in feed:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    ev = json.loads(msg.data)
                    if ev.get("type") == "window":
                        windows.append({"call": ev.get("call_id"), "track": ev.get("track"),
                                        "feed_ms": ev.get("feed_latency_ms"), "latency_ms": ev.get("latency_ms"),
                                        "timings": ev.get("timings_ms") or {}})
                    elif ev.get("type") == "call_end":
                        ends[ev["call_id"]] = time.monotonic()

            follower = asyncio.ensure_future(follow())
            sampler = Sampler([proc.pid]).start()
            cpu0, t0 = sampler.cpu(), time.monotonic()

            async def one(i: int, sid: str, messages: list[tuple[int, str]]) -> None:
                await asyncio.sleep(i * args.stagger)
                async with session.ws_connect(f"ws://127.0.0.1:{port}/twilio", max_msg_size=0) as ws:
                    pacer = Pacer(FRAME_S)
                    for k, text in messages:
                        await pacer.wait(k)
                        if ws.closed:
                            break
                        await ws.send_str(text)
                    stops[sid] = time.monotonic()
                    late[sid] = pacer.late_s
                    await ws.receive(timeout=60)  # the server's close after stop
                    codes[sid] = ws.close_code

            await asyncio.gather(*(one(i, sid, msgs) for i, (sid, msgs) in enumerate(plans)))
            deadline = time.monotonic() + args.end_timeout
            while len([s for s, _ in plans if s in ends]) < len(plans) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            wall, cpu = time.monotonic() - t0, sampler.cpu() - cpu0
            sampler.stop()
            async with session.get(f"{base}/metrics") as r:
                metrics = scrape(await r.text())
            await feed.close()
            follower.cancel()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()
    feed_ms = [w["feed_ms"] for w in windows if w["feed_ms"] is not None]
    pipe_ms = [w["latency_ms"] for w in windows if w["latency_ms"] is not None]
    ended = [s for s, _ in plans if s in ends]
    drops = {"audio_s": round(metrics.get("ser_serve_audio_dropped_seconds_total", 0.0), 2),
             "windows": int(metrics.get("ser_serve_windows_dropped_total", 0)),
             "events": int(metrics.get("ser_serve_events_dropped_total", 0))}
    end_lag = [ends[s] - stops[s] for s in ended if s in stops]
    p95 = percentile(feed_ms, 95)
    keeps_up = (len(ended) == len(plans) and not any(drops.values()) and p95 is not None
                and p95 < args.p95_target * 1000 and all(c == 1000 for c in codes.values()))
    return {"mode": "server", "calls": n, "tracks": 2 * n, "seconds": args.seconds, "stagger_s": args.stagger,
            "windows": len(feed_ms), "p50_ms": percentile(feed_ms, 50), "p95_ms": p95,
            "max_ms": round(max(feed_ms), 1) if feed_ms else None,
            "pipeline_p50_ms": percentile(pipe_ms, 50), "pipeline_p95_ms": percentile(pipe_ms, 95),
            "timings_p50_ms": {k: percentile([w["timings"][k] for w in windows if k in w["timings"]], 50)
                               for k in sorted({k for w in windows for k in w["timings"]})},
            "timings_p95_ms": {k: percentile([w["timings"][k] for w in windows if k in w["timings"]], 95)
                               for k in sorted({k for w in windows for k in w["timings"]})},
            "drops": drops,
            "cpu_cores": round(cpu / wall, 2), "peak_rss_mb": round(sampler.peak_rss / 2**20),
            "calls_ended": len(ended), "end_lag_s_max": round(max(end_lag), 2) if end_lag else None,
            "client_late_s_max": round(max(late.values()), 3) if late else None,
            "close_codes": sorted({str(c) for c in codes.values()}), "keeps_up": bool(keeps_up)}


def run_separate(n: int, args, calls: list[tuple[str, np.ndarray, np.ndarray]], work: Path) -> dict:
    """The same calls as one ``ser-live --file`` process per track (real time)."""
    import soundfile as sf

    from streamer.serve import mulaw

    procs, logs = [], []
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for i, (sid, customer, agent) in enumerate(calls):
        for name, x in (("customer", customer), ("agent", agent)):
            wav = work / f"sep-{n}-{sid}-{name}.wav"
            sf.write(str(wav), mulaw.decode(mulaw.encode(x)), RATE, subtype="PCM_16")  # what Twilio delivers
            log = work / f"sep-{n}-{sid}-{name}.ndjson"
            cmd = [str(Path(sys.executable).parent / "ser-live"), "--file", str(wav), "--no-dashboard", "--log", str(log)]
            if args.config:
                cmd += ["--config", str(args.config)]
            logs.append(log)
            procs.append((i, cmd))
    t0 = time.monotonic()
    running = []
    for i, cmd in procs:
        delay = t0 + i * args.stagger - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        running.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    sampler = Sampler([p.pid for p in running]).start()
    cpu0 = sampler.cpu()
    cpu_last = cpu0
    deadline = time.monotonic() + args.seconds + 180 + args.end_timeout
    while any(p.poll() is None for p in running) and time.monotonic() < deadline:
        cpu_last = max(cpu_last, sampler.cpu())  # a finished process's times are gone: keep the last total
        time.sleep(0.5)
    wall = time.monotonic() - t0
    sampler.stop()
    for p in running:
        if p.poll() is None:
            p.kill()
    lat = []
    for log in logs:
        if log.exists():
            for line in log.read_text().splitlines():
                rec = json.loads(line)
                if rec.get("type") == "window" and rec.get("latency_ms") is not None:
                    lat.append(float(rec["latency_ms"]))
    p95 = percentile(lat, 95)
    ok = all(p.returncode == 0 for p in running)
    return {"mode": "separate", "calls": n, "tracks": 2 * n, "processes": len(running), "seconds": args.seconds,
            "windows": len(lat), "p50_ms": percentile(lat, 50), "p95_ms": p95, "max_ms": round(max(lat), 1) if lat else None,
            "cpu_cores": round((cpu_last - cpu0) / wall, 2), "peak_rss_mb": round(sampler.peak_rss / 2**20),
            "wall_s": round(wall, 1), "all_exited_0": ok,
            "keeps_up": bool(ok and p95 is not None and p95 < args.p95_target * 1000 and wall < args.seconds + 120)}


def table(rows: list[dict]) -> str:
    head = f"{'mode':<9}{'calls':>6}{'windows':>9}{'p50 ms':>9}{'p95 ms':>9}{'drops':>16}{'CPU':>7}{'RSS MB':>8}{'ends':>6}  keeps up"
    lines = [head, "-" * len(head)]
    for r in rows:
        d = r.get("drops", {})
        drops = f"{d.get('audio_s', 0):g}s/{d.get('windows', 0)}w/{d.get('events', 0)}e" if d else "-"
        ends = f"{r.get('calls_ended', r['calls'])}"
        lines.append(f"{r['mode']:<9}{r['calls']:>6}{r['windows']:>9}{str(r['p50_ms']):>9}{str(r['p95_ms']):>9}"
                     f"{drops:>16}{r['cpu_cores']:>7}{r['peak_rss_mb']:>8}{ends:>6}  {'yes' if r['keeps_up'] else 'NO'}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", type=int, nargs="+", default=[4, 8, 16, 24, 32], help="concurrent calls to try")
    ap.add_argument("--seconds", type=float, default=60.0, help="each call's length (default: 60)")
    ap.add_argument("--stagger", type=float, default=0.25, help="seconds between the calls' starts (default: 0.25)")
    ap.add_argument("--separate", action="store_true", help="also run each N as one ser-live process per track")
    ap.add_argument("--p95-target", type=float, default=1.0, help="keeps up only below this p95, seconds (default: 1)")
    ap.add_argument("--end-timeout", type=float, default=60.0, help="wait this long after the last stop for call_end")
    ap.add_argument("--config", type=Path, default=None, help="settings file for ser-serve / ser-live")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "server_bench.json")
    args = ap.parse_args()

    clips = speech_clips(200, args.seed)
    rng = np.random.default_rng(args.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="server_bench-") as tmp:
        work = Path(tmp)
        for n in args.counts:
            calls = [(f"CA{n:02d}{i:04d}{'0' * 26}", *turn_taking_call(args.seconds, clips, rng)) for i in range(n)]
            speaking = np.mean([np.mean(c != 0) for _, c, a in calls] + [np.mean(a != 0) for _, c, a in calls])
            plans = [(sid, prebuilt(c, a, sid)) for sid, c, a in calls]
            print(f"N={n}: {n} two-track calls of {args.seconds:g} s (each track speaks {speaking:.0%} of the time)...",
                  file=sys.stderr, flush=True)
            row = asyncio.run(run_server(n, args, plans, work))
            row["speaking_fraction"] = round(float(speaking), 2)
            rows.append(row)
            print(table([row]).splitlines()[-1], file=sys.stderr, flush=True)
            if args.separate:
                rows.append(run_separate(n, args, calls, work))
                print(table([rows[-1]]).splitlines()[-1], file=sys.stderr, flush=True)
    print(table(rows))
    result = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "python": platform.python_version(), "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

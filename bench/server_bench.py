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
- whether it keeps up: no drops, p95 under ``--p95-target`` (1.0 s), every call ended;
- the idle cost: cores and memory in the ``--idle-seconds`` (10 s) after /healthz answers and
  before the calls.

CPU and memory count the server's whole process tree: with ``--engine ray`` that is the
driver (``ser-serve --engine ray``) and every process of the local Ray cluster it starts
(gcs_server, raylet, the dashboard and runtime-env agents, the Serve controller, the
ProxyActor or HAProxy, the ServeReplica actors of the models and the CallGateway). CPU is
the sum of every process's CPU time over the window (a process that ends keeps what it had
used at the last sample); memory is the sum of their PSS (``/proc/PID/smaps_rollup``: Ray's
processes share pages, so summed RSS would count those pages many times) and, as before, of
their RSS.

``--engine ray`` starts ``ser-serve --engine ray`` (one CallGateway replica, the models as
their own deployments) with a copy of the settings whose ``[ray] proxy`` is ``--proxy``:
``default`` (Ray Serve's proxy actor) or ``haproxy`` (``RAY_SERVE_ENABLE_HA_PROXY=1``; the
replicas' ports then listen on every interface, so a token is set and sent as ``?token=``).
After each N every process of that run's cluster is checked to be gone (SIGTERM to ser-serve,
then the tree's and the Ray session's leftovers by PID; ``ray stop --force`` only when no
other Ray cluster runs on the machine).

``--separate`` runs the same calls as one ``ser-live --file`` process per track instead (two per
call; the same 8 kHz mu-law audio, as WAV), to show what sharing the models gains: the sum of
their RSS, their CPU (from their launch, so each one's model loading is in it), and window
latency from their logs (window close -> result).

Usage, from the repository root (the full run takes about (seconds + 30) x 5 x 2 s):

    .venv/bin/python bench/server_bench.py --counts 4 8 16 24 32 --seconds 60
    .venv/bin/python bench/server_bench.py --counts 4 8 --seconds 60 --separate
    .venv/bin/python bench/server_bench.py --counts 4 --seconds 20 --out runs/server_smoke.json   # a smoke run
    .venv/bin/python bench/server_bench.py --engine ray --proxy default --counts 4 8 16 --seconds 60 \
        --out bench/results/server_bench_ray.json
    .venv/bin/python bench/server_bench.py --engine ray --proxy haproxy --counts 4 8 16 --seconds 60 \
        --out bench/results/server_bench_ray_haproxy.json

Results: a table on stdout and JSON (default bench/results/server_bench.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SPEECH = Path(os.environ.get("SER_SHARED", ROOT.parent / "shared")) / "data" / "speech"
RESULTS = ROOT / "bench" / "results"
RATE = 8000


# --- the calls' audio --------------------------------------------------------------------------

def speech_clips(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` real speech clips as 8 kHz int16, peak-normalised to half scale."""
    from streamer.audio.io import load_audio, to_int16

    files = sorted((SPEECH / "RAVDESS").rglob("*.flac")) + sorted((SPEECH / "TESS").rglob("*.flac"))
    if not files:
        files = sorted(SPEECH.rglob("*.wav")) + sorted(SPEECH.rglob("*.flac"))
    rng = np.random.default_rng(seed)
    out = []
    if not files:  # no corpora here: the shipped demo recordings, cut into 3 s pieces
        print(f"no speech clips under {SPEECH}: playing the shipped demo recordings instead", file=sys.stderr)
        pieces = []
        for f in sorted((ROOT / "demo").glob("*.flac")):
            x = load_audio(f, target_rate=RATE)
            pieces += [x[k:k + 3 * RATE] for k in range(0, len(x) - RATE, 3 * RATE)]
        pieces = [x for x in pieces if np.abs(x).max() > 0.01]
        for i in rng.choice(len(pieces), size=n, replace=n > len(pieces)):
            x = pieces[int(i)]
            out.append(to_int16(x / max(1e-3, float(np.abs(x).max())) * 0.5))
        return out
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


@dataclass
class Played:
    """How one call's playing went: messages sent, how late the pacer fell behind, when the
    last one went (monotonic s), the server's close code."""

    sent: int
    late_s: float
    stopped_at: float
    close_code: int | None


async def play_twilio(session, url: str, messages: list[tuple[int, str]]) -> Played:
    """One call's prebuilt messages to ``url`` (a ``/twilio`` WebSocket), paced in real time,
    then at most 60 s for the server's close after the stop. (bench/soak.py plays with it too.)"""
    from streamer.serve.client import FRAME_S, Pacer

    async with session.ws_connect(url, max_msg_size=0) as ws:
        async def read() -> None:  # answers pings (Ray's uvicorn cuts a socket with no pong in 40 s)
            async for _ in ws:
                pass

        reader = asyncio.ensure_future(read())
        pacer = Pacer(FRAME_S)
        n_sent = 0
        try:
            for k, text in messages:
                await pacer.wait(k)
                if ws.closed or reader.done():
                    break
                await ws.send_str(text)
                n_sent += 1
        except ConnectionResetError:
            pass
        stopped = time.monotonic()
        try:
            await asyncio.wait_for(reader, 60)  # the server's close after stop
        except asyncio.TimeoutError:
            reader.cancel()
        return Played(n_sent, pacer.late_s, stopped, ws.close_code)


# --- one run ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Periodic:
    """``sample()`` now, then every ``every`` s on a thread, between ``start()`` and ``stop()``."""

    every = 1.0
    join_s = 5.0

    def sample(self) -> None:  # pragma: no cover - each sampler's own
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def start(self):
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self.sample()
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._t.join(self.join_s)


class Sampler(Periodic):
    """CPU seconds and peak RSS of a process (and its children), sampled in a thread."""

    join_s = 2.0

    def __init__(self, pids: list[int], every: float = 0.25) -> None:
        import psutil

        self.procs = [psutil.Process(p) for p in pids]
        self.every = every
        self.peak_rss = 0

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

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, self.rss())


def pss_bytes(pid: int) -> int:
    """The process's proportional set size (its share of every page it maps), from smaps_rollup.

    >>> pss_bytes(os.getpid()) > 0
    True
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class TreeSampler(Periodic):
    """CPU seconds, summed PSS and summed RSS of a process and all its descendants (a Ray
    cluster's gcs_server, raylet, agents, actors), sampled in a thread every ``every`` s.

    ``cpu()`` is the sum over every process ever seen of its last CPU time (user + system), so
    it only grows: a process that ends keeps what it had used at its last sample. Memory is
    summed per sample; ``peak_pss`` / ``peak_rss`` the largest sums seen since ``reset_peaks``.
    """

    def __init__(self, root: int, every: float = 1.0) -> None:
        import psutil

        self.root = psutil.Process(root)
        self.every = every
        self.seen: dict[tuple[int, float], float] = {}  # (pid, create_time) -> last CPU seconds
        self.names: dict[tuple[int, float], str] = {}
        self.session: str | None = None  # a Ray cluster's session name (from its gcs_server / raylet)
        self.peak_pss = self.peak_rss = self.last_pss = self.last_rss = 0
        self.max_procs = 0
        self._lock = threading.Lock()

    def procs(self) -> list:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except Exception:
            return []

    def sample(self) -> None:
        pss = rss = n = 0
        for p in self.procs():
            try:
                with p.oneshot():
                    key = (p.pid, p.create_time())
                    t = p.cpu_times()
                    r = p.memory_info().rss
                    if key not in self.names:
                        self.names[key] = p.name()
                        if self.session is None:
                            for a in p.cmdline():
                                if a.startswith("--session-name=session_"):
                                    self.session = a.split("=", 1)[1]
                with self._lock:
                    self.seen[key] = max(self.seen.get(key, 0.0), t.user + t.system)
                pss += pss_bytes(p.pid)
                rss += r
                n += 1
            except Exception:  # gone between the listing and the read
                pass
        with self._lock:
            self.last_pss, self.last_rss, self.max_procs = pss, rss, max(self.max_procs, n)
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)

    def cpu(self) -> float:
        self.sample()
        with self._lock:
            return sum(self.seen.values())

    def process_names(self) -> list[str]:
        """The tree's processes now, by name (Ray's actors name theirs ``ray::<Actor>...``)."""
        out = []
        for p in self.procs():
            try:
                name = p.name()
                if name.startswith("ray::"):  # comm is cut at 15 characters; the title is whole
                    name = (p.cmdline() or [name])[0].split(".handle_request")[0][:80]
                out.append(name)
            except Exception:
                pass
        return sorted(out)

    def reset_peaks(self) -> None:
        self.sample()
        with self._lock:
            self.peak_pss, self.peak_rss = self.last_pss, self.last_rss



def leftovers(sampler: TreeSampler) -> list:
    """Processes of the run still alive: every one seen in the tree (same pid and start time),
    and any whose command line names the run's Ray session (a worker the raylet left behind)."""
    import psutil

    out = {}
    for (pid, ct) in list(sampler.seen):
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - ct) < 0.01 and p.status() != psutil.STATUS_ZOMBIE:
                out[pid] = p
        except Exception:
            pass
    # Ray names a session after its driver's pid: a cluster the driver started late (a Serve call
    # on a thread after ray.shutdown starts a new one) has a session of its own
    mine = re.compile(r"session_[0-9_-]+_%d\b" % sampler.root.pid)
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if p.pid not in out and ((sampler.session and sampler.session in cmd) or mine.search(cmd)):
                out[p.pid] = p
        except Exception:
            pass
    return list(out.values())


def stop_server(proc: subprocess.Popen, sampler: TreeSampler, wait_s: float) -> list[str]:
    """SIGTERM to the server only (never its process group: Ray's GCS would die before the
    driver could drain), wait; then end what is left of its tree and its Ray session by PID.
    The names of the processes that had to be ended that way (empty: a clean stop)."""
    import psutil

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    deadline = time.monotonic() + 15
    left = leftovers(sampler)
    while left and time.monotonic() < deadline:  # Ray's own processes exit a little after the driver
        time.sleep(1)
        left = leftovers(sampler)
    named = [f"{p.pid}:{p.name()}" for p in left if p.is_running()]
    alive = left
    for how, wait_s in (("terminate", 10), ("kill", 5)):  # SIGTERM, then SIGKILL what is left
        for p in alive:
            try:
                getattr(p, how)()
            except Exception:
                pass
        _, alive = psutil.wait_procs(alive, timeout=wait_s)
    if alive or leftovers(sampler):
        ours = {p.pid for p in leftovers(sampler)}
        others = [p for p in psutil.process_iter(["name"])
                  if p.info["name"] in ("raylet", "gcs_server") and p.pid not in ours]
        if not others:  # no one else's cluster on the machine: the fallback is safe
            subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        else:
            print(f"  could not end {[p.pid for p in alive]}, and other Ray clusters run here: not running "
                  "`ray stop --force`", file=sys.stderr)
    return named


def error_lines(*paths: Path, limit: int = 8) -> tuple[int, list[str]]:
    """(count, the first few) of the lines that look like errors in these logs."""
    n, first = 0, []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if " ERROR " in line or "Traceback" in line or line.startswith("ERROR") or "Error:" in line:
                n += 1
                if len(first) < limit:
                    first.append(f"{path.name}: {line.strip()[:300]}")
    return n, first


def ray_logs(session: str | None) -> list[Path]:
    """The Serve logs and the workers' stderr of a Ray session (errors in the replicas land there,
    not in the driver's log)."""
    if not session:
        return []
    logs = Path(tempfile.gettempdir()) / "ray" / session / "logs"
    return sorted((logs / "serve").glob("*.log")) + sorted(logs.glob("worker-*.err"))


def settings_file(work: Path, base: Path | None, proxy: str) -> Path:
    """A copy of the settings (``base``, else the shipped config.toml) with ``[ray] proxy``."""
    src = (base or ROOT / "config.toml").read_text()
    out, section, done = [], None, False
    for line in src.splitlines():
        head = line.strip()
        if head.startswith("[") and not head.startswith("[["):
            if section == "ray" and not done:
                out.append(f'proxy = "{proxy}"')
                done = True
            section = head.strip("[]").strip()
        elif head.startswith("[["):
            if section == "ray" and not done:
                out.append(f'proxy = "{proxy}"')
                done = True
            section = None
        if section == "ray" and head.split("=")[0].strip() == "proxy":
            line, done = f'proxy = "{proxy}"', True
        out.append(line)
    if not done:
        out += ([] if section == "ray" else ["", "[ray]"]) + [f'proxy = "{proxy}"']
    text = "\n".join(out) + "\n"
    if tomllib.loads(text).get("ray", {}).get("proxy") != proxy:
        raise SystemExit(f"could not set [ray] proxy = {proxy!r} in a copy of {base or 'config.toml'}")
    path = work / f"config-{proxy}.toml"
    path.write_text(text)
    return path


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

    out: dict[str, float] = {}  # name, or name{label="value",...} for a labelled sample
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


async def run_server(n: int, args, plans: list[tuple[str, list[tuple[int, str]]]], work: Path) -> dict:
    import aiohttp

    ray = args.engine == "ray"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    for k in ("SER_SERVE_TOKEN", "RAY_ADDRESS", "RAY_SERVE_ENABLE_HA_PROXY"):
        env.pop(k, None)  # a local cluster of this machine, the proxy from the settings only
    cmd = [sys.executable, "-m", "streamer.cli.serve", "--host", "127.0.0.1", "--port", str(port),
           "--max-calls", str(max(n, 1)), "--log-dir", str(work / f"logs-{args.engine}-{args.proxy}-{n}")]
    query = ""
    if ray:
        cmd[3:3] = ["--engine", "ray"]
        cmd += ["--config", str(settings_file(work, args.config, args.proxy))]
        if args.proxy == "haproxy":  # the replicas' ports listen on every interface: a token is required
            token = secrets.token_urlsafe(16)
            token_file = work / "token"
            token_file.write_text(token + "\n")
            cmd += ["--token-file", str(token_file)]
            query = f"?token={token}"
    elif args.config:
        cmd += ["--config", str(args.config)]
    log_path = work / f"serve-{args.engine}-{args.proxy if ray else 'local'}-{n}.log"
    log_file = open(log_path, "w")
    launched = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    sampler = TreeSampler(proc.pid, every=args.sample_every).start()
    windows: list[dict] = []
    ends: dict[str, float] = {}
    stops: dict[str, float] = {}
    late: dict[str, float] = {}
    codes: dict[str, int | None] = {}
    sent: dict[str, int] = {}
    idle: dict = {}
    metrics: dict[str, float] = {}
    left: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, base, proc, timeout=args.start_timeout)
            startup_s = time.monotonic() - launched
            cpu_i, t_i = sampler.cpu(), time.monotonic()
            await asyncio.sleep(args.idle_seconds)
            sampler.sample()
            idle = {"idle_s": round(time.monotonic() - t_i, 1),
                    "idle_cpu_cores": round((sampler.cpu() - cpu_i) / (time.monotonic() - t_i), 3),
                    "idle_pss_mb": round(sampler.last_pss / 2**20), "idle_rss_mb": round(sampler.last_rss / 2**20),
                    "idle_processes": len(sampler.procs()), "process_names": sampler.process_names()}
            feed = await session.ws_connect(f"ws://127.0.0.1:{port}/events{query}", max_msg_size=0)

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
            sampler.reset_peaks()
            cpu0, t0 = sampler.cpu(), time.monotonic()

            async def one(i: int, sid: str, messages: list[tuple[int, str]]) -> None:
                await asyncio.sleep(i * args.stagger)
                p = await play_twilio(session, f"ws://127.0.0.1:{port}/twilio{query}", messages)
                stops[sid], late[sid], sent[sid], codes[sid] = p.stopped_at, p.late_s, p.sent, p.close_code

            await asyncio.gather(*(one(i, sid, msgs) for i, (sid, msgs) in enumerate(plans)))
            deadline = time.monotonic() + args.end_timeout
            while len([s for s, _ in plans if s in ends]) < len(plans) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            wall, cpu = time.monotonic() - t0, sampler.cpu() - cpu0
            async with session.get(f"{base}/metrics{query}") as r:
                metrics = scrape(await r.text())
            await feed.close()
            follower.cancel()
    finally:
        sampler.sample()
        left = stop_server(proc, sampler, args.stop_timeout)
        sampler.stop()
        log_file.close()
    errors, first_errors = error_lines(log_path, *ray_logs(sampler.session))
    feed_ms = [w["feed_ms"] for w in windows if w["feed_ms"] is not None]
    pipe_ms = [w["latency_ms"] for w in windows if w["latency_ms"] is not None]
    ended = [s for s, _ in plans if s in ends]
    drops = {"audio_s": round(metrics.get("ser_serve_audio_dropped_seconds_total", 0.0), 2),
             "windows": int(metrics.get("ser_serve_windows_dropped_total", 0)),
             "events": int(metrics.get("ser_serve_events_dropped_total", 0))}
    end_lag = [ends[s] - stops[s] for s in ended if s in stops]
    p95 = percentile(feed_ms, 95)
    cut = sorted(sid for sid, msgs in plans if sent.get(sid, 0) < len(msgs))  # the server closed them early
    keeps_up = (len(ended) == len(plans) and not any(drops.values()) and p95 is not None and not cut
                and p95 < args.p95_target * 1000 and all(c == 1000 for c in codes.values()))
    return {"mode": "server", "engine": args.engine, "proxy": args.proxy if ray else None,
            "calls": n, "tracks": 2 * n, "seconds": args.seconds, "stagger_s": args.stagger,
            "windows": len(feed_ms), "p50_ms": percentile(feed_ms, 50), "p95_ms": p95,
            "max_ms": round(max(feed_ms), 1) if feed_ms else None,
            "pipeline_p50_ms": percentile(pipe_ms, 50), "pipeline_p95_ms": percentile(pipe_ms, 95),
            "timings_p50_ms": {k: percentile([w["timings"][k] for w in windows if k in w["timings"]], 50)
                               for k in sorted({k for w in windows for k in w["timings"]})},
            "timings_p95_ms": {k: percentile([w["timings"][k] for w in windows if k in w["timings"]], 95)
                               for k in sorted({k for w in windows for k in w["timings"]})},
            "drops": drops,
            "cpu_cores": round(cpu / wall, 2), "peak_pss_mb": round(sampler.peak_pss / 2**20),
            "peak_rss_mb": round(sampler.peak_rss / 2**20), "processes": sampler.max_procs, "ray_session": sampler.session,
            "startup_s": round(startup_s, 1), **idle,
            "calls_ended": len(ended), "end_lag_s_max": round(max(end_lag), 2) if end_lag else None,
            "client_late_s_max": round(max(late.values()), 3) if late else None,
            "close_codes": sorted({str(c) for c in codes.values()}), "calls_cut": cut, "keeps_up": bool(keeps_up),
            "left_behind": left, "log_error_lines": errors, "log_errors_first": first_errors}


def run_separate(n: int, args, calls: list[tuple[str, np.ndarray, np.ndarray]], work: Path) -> dict:
    """The same calls as one ``ser-live --file`` process per track (real time)."""
    import soundfile as sf

    from streamer.serve.protocols import mulaw

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
    head = (f"{'mode':<9}{'engine':<13}{'calls':>6}{'windows':>9}{'p50 ms':>9}{'p95 ms':>9}{'drops':>16}{'CPU':>7}"
            f"{'PSS MB':>8}{'RSS MB':>8}{'ends':>6}{'idle CPU':>9}{'idle PSS':>9}  keeps up")
    lines = [head, "-" * len(head)]
    for r in rows:
        d = r.get("drops", {})
        drops = f"{d.get('audio_s', 0):g}s/{d.get('windows', 0)}w/{d.get('events', 0)}e" if d else "-"
        ends = f"{r.get('calls_ended', r['calls'])}"
        engine = r.get("engine") or "-"
        if r.get("proxy"):
            engine += f"/{r['proxy']}"
        lines.append(f"{r['mode']:<9}{engine:<13}{r['calls']:>6}{r['windows']:>9}{str(r['p50_ms']):>9}{str(r['p95_ms']):>9}"
                     f"{drops:>16}{r['cpu_cores']:>7}{str(r.get('peak_pss_mb', '-')):>8}{r['peak_rss_mb']:>8}{ends:>6}"
                     f"{str(r.get('idle_cpu_cores', '-')):>9}{str(r.get('idle_pss_mb', '-')):>9}"
                     f"  {'yes' if r['keeps_up'] else 'NO'}")
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
    ap.add_argument("--engine", choices=("local", "ray"), default="local",
                    help="local: ser-serve in one process; ray: ser-serve --engine ray on a local Ray cluster "
                         "(one CallGateway replica, the models as deployments) (default: local)")
    ap.add_argument("--proxy", choices=("default", "haproxy"), default="default",
                    help="with --engine ray: [ray] proxy, Ray Serve's proxy actor or RAY_SERVE_ENABLE_HA_PROXY=1 "
                         "(then with a token) (default: default)")
    ap.add_argument("--idle-seconds", type=float, default=10.0,
                    help="measure the idle cost this long after /healthz answers, before the calls (default: 10)")
    ap.add_argument("--sample-every", type=float, default=1.0, help="seconds between CPU/memory samples (default: 1)")
    ap.add_argument("--start-timeout", type=float, default=None,
                    help="seconds to wait for /healthz (default: 180 local, 420 ray)")
    ap.add_argument("--stop-timeout", type=float, default=150.0,
                    help="seconds to wait for ser-serve to exit after SIGTERM before ending it (default: 150)")
    ap.add_argument("--work", type=Path, default=None,
                    help="keep the servers' logs, settings and per-call logs here (default: a temporary folder)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "server_bench.json")
    args = ap.parse_args()
    if args.start_timeout is None:
        args.start_timeout = 420.0 if args.engine == "ray" else 180.0

    clips = speech_clips(200, args.seed)
    rng = np.random.default_rng(args.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="server_bench-") as tmp:
        work = Path(tmp)
        if args.work:
            work = args.work.resolve()
            work.mkdir(parents=True, exist_ok=True)
        for n in args.counts:
            calls = [(f"CA{n:02d}{i:04d}{'0' * 26}", *turn_taking_call(args.seconds, clips, rng)) for i in range(n)]
            speaking = np.mean([np.mean(c != 0) for _, c, a in calls] + [np.mean(a != 0) for _, c, a in calls])
            plans = [(sid, prebuilt(c, a, sid)) for sid, c, a in calls]
            print(f"N={n} ({args.engine}{'/' + args.proxy if args.engine == 'ray' else ''}): {n} two-track calls of {args.seconds:g} s (each track speaks {speaking:.0%} of the time)...",
                  file=sys.stderr, flush=True)
            row = asyncio.run(run_server(n, args, plans, work))
            row["speaking_fraction"] = round(float(speaking), 2)
            rows.append(row)
            print(table([row]).splitlines()[-1], file=sys.stderr, flush=True)
            if row.get("left_behind"):
                print(f"  ended by PID after ser-serve exited: {row['left_behind']}", file=sys.stderr, flush=True)
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

"""The soak benchmark's CI smoke run (issue 28 item 5): ``bench/soak.py`` for half a minute with
two calls at a time. Its performance figures (memory growth, p95) are the benchmark's to report
on an idle machine (bench/README.md), not asserted here; what is asserted holds on any machine:
calls are replaced as they end, every call ends with 1000, nothing is dropped at this load, and
the server's fds, threads and event-loop tasks come back to their idle level after the calls."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_soak_smoke(tmp_path):
    out = tmp_path / "soak.json"
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes", "0.5", "--calls", "2",
                          "--period", "10", "--call-seconds", "12", "--stagger", "1", "--json", str(out),
                          "--work", str(tmp_path / "work")],
                         capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert out.is_file(), res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["calls_played"] >= 4 and r["calls_ended"] == r["calls_played"] and r["close_codes"] == ["1000"]
    assert len(r["periods"]) >= 2 and all(p["windows"] > 0 for p in r["periods"][:2])
    assert all(0 < p["rss_median_mb"] <= p["rss_max_mb"] for p in r["periods"])  # sampled through each period
    for p in r["periods"]:  # where the memory is: the parts add up to the process's resident memory
        assert p["parts_mb"]["heap"] > 0 and p["parts_mb"]["file"] > 0
        assert p["c_heap_mb"]["in_use"] > 50 and p["c_heap_mb"]["free"] >= 0  # /metrics' ser_serve_heap_bytes
        assert abs(sum(p["parts_mb"].values()) - p["rss_mb"]) < 0.05 * p["rss_mb"], p
    assert r["idle_before"]["c_heap_mb"]["in_use"] > 50 and r["idle_after"]["c_heap_mb"]["in_use"] > 50
    checks = r["checks"]
    assert checks["fds_return"] and checks["threads_return"] and checks["tasks_return"], (r["idle_before"], r["idle_after"])
    assert checks["every_call_ended"]
    # the report's table is printed, one row per period
    assert res.stdout.count("\n| ") >= len(r["periods"])
    # each call left a parseable log
    logs = sorted((tmp_path / "work" / "logs").rglob("*.ndjson"))
    assert len(logs) >= r["calls_played"]
    for log in logs:
        kinds = [json.loads(line)["type"] for line in log.read_text().splitlines()]
        assert kinds[-1] == "session_end"


@pytest.mark.slow
def test_a_soak_stopped_with_sigterm_stops_its_server(tmp_path):
    """A soak killed (SIGTERM, as ``kill`` or ``timeout`` send) stops the server it started
    instead of leaving it running, also when it was started with SIGINT ignored, as ``nohup ... &``
    from a script starts it (SIGTERM then did nothing)."""
    import signal
    import time

    import psutil

    soak = subprocess.Popen([sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes", "5", "--calls", "1",
                             "--work", str(tmp_path / "work")], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        server = None
        for _ in range(600):  # bounded: 60 s for the server to start
            kids = [c for c in psutil.Process(soak.pid).children() if "streamer.cli.serve" in " ".join(c.cmdline())]
            if kids:
                server = kids[0]
                break
            time.sleep(0.1)
        assert server is not None, "the soak started no server"
        soak.send_signal(signal.SIGTERM)
        soak.wait(timeout=120)
        server.wait(timeout=10)  # psutil: returns once it has exited (it is the soak's child, already reaped)
        assert not server.is_running()
    finally:
        if soak.poll() is None:
            soak.kill()

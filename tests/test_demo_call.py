"""The desk's demo call (README, "The desk": "To try it"): ``ser-call twilio URL --demo`` plays the
shipped angry customer (demo/angry_customer.flac) and calm agent (demo/calm_agent.flac), made by
scripts/make_angry_call.sh, to a real ``ser-serve`` process on 127.0.0.1 (a free port), as Twilio
sends them (8 kHz mu-law, paced in real time), and the desk raises its "angry customer" alert.

The alert must come from the shipped models reading the customer: no rule or model is changed
for the test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf

from streamer.cli import call as call_cli
from tests.serve_util import listening_port

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_the_demo_call_ships_small_16k_mono_and_demo_finds_it():
    customer, agent = call_cli.demo_files()
    assert customer == ROOT / "demo" / "angry_customer.flac" and agent == ROOT / "demo" / "calm_agent.flac"
    for path in (customer, agent):
        info = sf.info(str(path))
        assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1), info
        assert info.duration < 30 and path.stat().st_size < 400_000, (path, info.duration, path.stat().st_size)
    assert sf.info(str(customer)).frames == sf.info(str(agent)).frames  # two tracks of one call
    args = call_cli.parse_args(["twilio", "ws://127.0.0.1:8765/twilio", "--demo"])
    assert (args.customer, args.agent) == (customer, agent)


def test_demo_without_its_files_says_what_to_do(monkeypatch, tmp_path):
    from streamer.core.errors import SerError

    monkeypatch.setattr(call_cli, "data_root", lambda: tmp_path)
    monkeypatch.setattr(call_cli, "checkout", lambda: None)  # an installation whose bundle lost the demo files
    with pytest.raises(SerError, match="this installation lacks.*reinstall ser-live.*--customer and --agent"):
        call_cli.demo_files()


@pytest.mark.parametrize("argv", [["--demo", "--customer", "a.wav"], []])
def test_twilio_takes_demo_or_customer(argv):
    res = subprocess.run([sys.executable, "-m", "streamer.cli.call", "twilio", "ws://127.0.0.1:9/twilio", *argv],
                         capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=60)
    assert res.returncode == 2 and "--demo" in res.stderr and "--customer" in res.stderr, res.stderr


@pytest.mark.slow
def test_demo_call_over_twilio_raises_the_angry_customer_alert(tmp_path):
    logs = tmp_path / "calls"
    proc = subprocess.Popen([sys.executable, "-m", "streamer.cli.serve", "--port", "0", "--log-dir", str(logs)],
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path)
    try:
        port, lines = listening_port(proc, 120)
        # the README's command, from another folder: --demo finds the shipped files itself
        res = subprocess.run([sys.executable, "-m", "streamer.cli.call", "twilio", f"ws://127.0.0.1:{port}/twilio",
                              "--demo", "--call-sid", "CAdemo"], capture_output=True, text=True, env=ENV,
                             cwd=tmp_path, timeout=240)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/alerts", timeout=30) as r:
            alerts = json.loads(r.read())["alerts"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/calls/CAdemo", timeout=30) as r:
            detail = json.loads(r.read())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(res.stdout)
    assert res.returncode == 0, res.stdout + res.stderr
    assert detail["source"] == "twilio" and set(detail["tracks"]) == {"customer", "agent"}
    # the customer's words reach the agent's track no more than the agent's reach the customer's
    said = {t: " ".join(u.get("transcript") or "" for u in detail["utterances"] if u["track"] == t)
            for t in ("customer", "agent")}
    assert "angry" in said["customer"] and "help" in said["agent"], said
    assert "angry" not in said["agent"] and "help" not in said["customer"], said
    # the desk's alert, raised by the customer's windows (the shipped rule: 3 in a row)
    mine = [a for a in alerts if a["call_id"] == "CAdemo"]
    assert [(a["rule"], a["track"]) for a in mine] == [("angry customer", "customer")], alerts
    assert re.fullmatch(r"customer (angry|arousal [+-]\d\.\d\d, valence [+-]\d\.\d\d) in 3 windows in a row, "
                        r"confidence \d\.\d\d", mine[0]["reason"]), mine[0]
    assert f"alert: angry customer at {mine[0]['at_s']:.1f} s: {mine[0]['reason']}" in res.stdout
    # and it is in the call's log
    log = [json.loads(x) for x in Path(detail["log"]).read_text().splitlines()]
    assert [r["rule"] for r in log if r["type"] == "alert"] == ["angry customer"]

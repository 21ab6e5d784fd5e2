"""Helpers for the ser-serve tests: real speech as Twilio would send it, a server on
127.0.0.1 (a free port) over the real models, and a small Twilio Media Streams client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

FRAME = 160  # bytes of mu-law: 20 ms at 8 kHz
SILENCE = b"\xff" * FRAME  # mu-law 0xFF is 0


def espeak_mulaw(folder: Path, name: str, text: str) -> bytes:
    """``text`` spoken by espeak-ng, as G.711 mu-law at 8 kHz made by sox (``-e u-law``)."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed: apt-get install espeak-ng sox")
    raw, out = folder / f"{name}.wav", folder / f"{name}.ul"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw", str(out)], check=True)
    return out.read_bytes()


def frames(data: bytes) -> list[bytes]:
    data = data + SILENCE[: (-len(data)) % FRAME]
    return [data[i:i + FRAME] for i in range(0, len(data), FRAME)]


def server_config(**server):
    from streamer.runtime.config import Config

    cfg = Config.load()
    return replace(cfg, server=replace(cfg.server, host="127.0.0.1", port=0, **server))


@contextlib.asynccontextmanager
async def running_server(models, cfg, log_dir: Path, token: str | None = "t0ken"):
    """(base URL, registry) of a server on 127.0.0.1 and a free port."""
    from streamer.serve.http.app import start
    from streamer.serve.server import build_server

    built = build_server(models, cfg, token, log_dir=log_dir, loop=asyncio.get_running_loop())
    registry = built.registry
    runner, port = await start(built.app, "127.0.0.1", 0, shutdown_timeout=1.0)
    try:
        yield f"http://127.0.0.1:{port}", registry
    finally:
        await runner.cleanup()


def start_message(call_sid: str, tracks=("inbound", "outbound"), token: str | None = "t0ken", **params) -> str:
    custom = dict(params)
    if token is not None:
        custom["token"] = token
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": f"MZ{call_sid}",
                       "start": {"accountSid": "AC1", "streamSid": f"MZ{call_sid}", "callSid": call_sid,
                                 "tracks": list(tracks), "customParameters": custom,
                                 "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})


def media_message(call_sid: str, track: str, chunk: int, frame: bytes) -> str:
    return json.dumps({"event": "media", "sequenceNumber": str(chunk + 2), "streamSid": f"MZ{call_sid}",
                       "media": {"track": track, "chunk": str(chunk), "timestamp": str(chunk * 20),
                                 "payload": base64.b64encode(frame).decode()}})


def stop_message(call_sid: str) -> str:
    return json.dumps({"event": "stop", "streamSid": f"MZ{call_sid}",
                       "stop": {"accountSid": "AC1", "callSid": call_sid}})


async def play_call(ws, call_sid: str, turns: list[tuple[str, bytes]], pace_s: float = 0.004,
                    stop: bool = True, token: str | None = "t0ken") -> None:
    """A two-track Twilio call: each turn is (speaker track, mu-law); while one speaks the
    other track carries silence, both as 20 ms frames, as Twilio's both_tracks does.
    ``pace_s`` per frame pair (0.02 is real time)."""
    await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send_str(start_message(call_sid, token=token))
    chunk = 0
    for speaker, audio in turns:
        other = "outbound" if speaker == "inbound" else "inbound"
        for f in frames(audio) + [SILENCE] * 40:  # 0.8 s of silence after each turn
            chunk += 1
            await ws.send_str(media_message(call_sid, speaker, chunk, f))
            await ws.send_str(media_message(call_sid, other, chunk, SILENCE))
            await asyncio.sleep(pace_s)
    if stop:
        await ws.send_str(stop_message(call_sid))


async def collect(ws, until, timeout: float = 30.0) -> list[dict]:
    """Events from an /events socket until ``until(event)`` is true."""
    out: list[dict] = []

    async def run():
        async for msg in ws:
            ev = json.loads(msg.data)
            out.append(ev)
            if until(ev):
                return

    await asyncio.wait_for(run(), timeout)
    return out


async def closed_with(ws, timeout: float = 15.0) -> tuple[int | None, str]:
    """Read until the server closes; (close code, reason)."""
    import aiohttp

    async def run():
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.CLOSE:
                return int(msg.data), msg.extra or ""
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                return ws.close_code, f"{msg.type.name}: {msg.data}"

    return await asyncio.wait_for(run(), timeout)


def listening_port(proc, timeout_s: float = 120.0, scheme: str = "http") -> tuple[int, list[str]]:
    """The port a ``ser-serve --port 0`` process (its stderr piped, as text) says it listens on,
    and the lines it wrote until then; fails the test with those lines if it never says so."""
    import re
    import time

    port, lines = None, []
    deadline = time.monotonic() + timeout_s
    while port is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(rf"listening on {scheme}://127\.0\.0\.1:(\d+)", line)
        port = int(m.group(1)) if m else None
    assert port, "".join(lines)
    return port, lines

"""SIGKILL (issue 28, item 7): ``ser-serve`` killed with SIGKILL in the middle of four calls,
one per protocol (Twilio, vosk, mod_audio_fork, AudioSocket), leaves every call's log
parseable up to its last complete record, as ser-live's logs are
(tests/test_live_cli.py::test_sigkill_leaves_every_record_parseable): at most a torn last line,
which :func:`read_log` skips and lists; the session_start and every window written before the
kill are there; no session_end (nothing could write it)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import aiohttp
import numpy as np
import pytest

from streamer.live.session_log import read_log
from streamer.serve import client
from tests.serve_util import espeak_mulaw, listening_port

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TOKEN = "t0ken"
SOURCES = {"twilio", "vosk", "audio-fork", "audiosocket"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def windows_in(path) -> int:
    try:
        return path.read_bytes().count(b'"type":"window"')
    except OSError:
        return 0


def test_sigkill_mid_call_leaves_every_call_log_parseable(tmp_path):
    espeak_mulaw(tmp_path, "s", "Hello, I am calling because my parcel never came, and I am not happy about it at all.")
    one = client.load_pcm(tmp_path / "s.wav", 8000)
    speech8 = np.concatenate([one] * 6)  # about 30 s: the calls are cut long before their end
    speech16 = client.load_pcm(tmp_path / "s.wav", 16000)
    speech16 = np.concatenate([speech16] * 6)
    logs = tmp_path / "logs"
    as_port = free_port()
    env = {**os.environ, "SER_SERVE_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "streamer.cli.serve", "--port", "0", "--log-dir", str(logs),
                             "--audiosocket-port", str(as_port)], stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        port, lines = listening_port(proc, 120)
        ws = f"ws://127.0.0.1:{port}"

        async def calls():
            async with aiohttp.ClientSession() as http:
                playing = [
                    asyncio.ensure_future(client.play_twilio(http, f"{ws}/twilio", speech8, speech8[::-1].copy(),
                                                             token=TOKEN, call_sid="CAkill", speed=2)),
                    asyncio.ensure_future(client.play_vosk(http, f"{ws}/vosk", speech16, 16000, token=TOKEN, speed=2)),
                    asyncio.ensure_future(client.play_audiofork(http, f"{ws}/audio-fork", [speech8, speech8], 8000,
                                                                token=TOKEN, call_id="fork-kill", speed=2)),
                    asyncio.ensure_future(client.play_audiosocket("127.0.0.1", as_port, speech8, speed=2)),
                ]
                # every call has logged windows (and is still being written): kill the server now
                t0 = time.monotonic()
                while time.monotonic() - t0 < 60:
                    paths = sorted(logs.glob("*.ndjson"))
                    if len(paths) == 4 and all(windows_in(p) >= 2 for p in paths):
                        break
                    await asyncio.sleep(0.1)
                written = {p.name: windows_in(p) for p in sorted(logs.glob("*.ndjson"))}
                os.killpg(proc.pid, signal.SIGKILL)
                done, pending = await asyncio.wait(playing, timeout=30)
                for task in pending:
                    task.cancel()
                return written, [t.exception() if not t.cancelled() else "hung" for t in done]

        written, _ = asyncio.run(asyncio.wait_for(calls(), 150))
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert len(written) == 4 and all(n >= 2 for n in written.values()), (written, "".join(lines))

    sources = set()
    for path in sorted(logs.glob("*.ndjson")):
        raw = path.read_bytes()
        whole = raw.split(b"\n")[:-1]  # the lines ended by a newline: every one a record
        contents = read_log(path)
        torn = [] if raw.endswith(b"\n") else [len(whole) + 1]
        assert contents.skipped in ([], torn), (path.name, contents.skipped, raw[-200:])
        assert [json.loads(x) for x in whole if x.strip()] == contents.records[:len(whole)]
        first = contents.records[0]
        assert first["type"] == "session_start" and first["call_id"], path.name
        sources.add(first["source"])
        assert len(contents.of_type("window")) >= written[path.name], path.name  # what was seen before the kill
        assert not contents.complete, path.name  # no session_end: the process was killed
        print(f"{path.name}: {len(contents.records)} records, {len(contents.of_type('window'))} windows, "
              f"torn last line: {bool(torn)}")
    assert sources == SOURCES

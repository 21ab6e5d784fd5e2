"""Hostile clients against a running ser-serve (issue 28, item 3): 200 malformed sessions on
all four protocols while one good Twilio call plays in real time.

The bad sessions come from a seeded generator and speak raw WebSocket (a small client here
writes the frames itself, so that it can send what aiohttp's client never would: invalid
UTF-8 in a text frame, a frame header cut short, a length that lies, a 10 MB frame, reserved
bits, an unknown opcode, a continuation with nothing to continue) or raw TCP (AudioSocket).
Each then waits for the server, which must close it with a code and a reason: on a WebSocket
the close frame's, on AudioSocket (a TCP stream has no close frame) the connection's end with
the code and reason in the server's log and in ``ser_serve_connections_closed_total``.

Meanwhile the good call gets every window (as many per track as the same call played alone
before, nothing dropped) with its usual latency, and the server stays up (/healthz). Bounded:
16 bad sessions at a time, each given 10 s, the whole scenario 120 s (about 20 s here: the call twice, 8 s each).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import re
import time
import uuid

import aiohttp
import pytest

from tests.serve_util import espeak_mulaw, media_message, play_call, running_server, server_config, start_message

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SESSIONS, AT_ONCE, SESSION_S, SCENARIO_S = 200, 16, 10.0, 120.0
MAX_MESSAGE = 65536
WS_CODES = {1002, 1003, 1007, 1008, 1009}  # protocol error, wrong type, bad data, policy, too big


# --- a raw WebSocket client: any bytes on the wire -------------------------------------------
OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING = 0x0, 0x1, 0x2, 0x8, 0x9


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, claim: int | None = None) -> bytes:
    """One client frame (masked, as RFC 6455 requires); ``claim``: the length the header states."""
    n = len(payload) if claim is None else claim
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def text(s: str | bytes) -> bytes:
    return frame(OP_TEXT, s.encode("utf-8") if isinstance(s, str) else s)


class RawWS:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, path: str, protocol: str | None = None) -> "RawWS":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        head = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {TOKEN}\r\n"
                + (f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else "") + "\r\n")
        writer.write(head.encode())
        status = await reader.readuntil(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 101"), status[:200]
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            await self.writer.drain()
        except ConnectionError:
            pass  # the server closed already: its close frame may still be in our buffer

    async def closed_with(self) -> tuple[int | None, str]:
        """Read the server's frames until its close: (code, reason); (None, why) without one."""
        try:
            while True:
                b0, b1 = await self.reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(await self.reader.readexactly(2), "big")
                elif n == 127:
                    n = int.from_bytes(await self.reader.readexactly(8), "big")
                payload = await self.reader.readexactly(n)
                if b0 & 0x0F == OP_CLOSE:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                    return code, payload[2:].decode("utf-8", "replace")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            return None, f"no close frame ({type(exc).__name__})"
        finally:
            self.writer.close()


# --- the malformed sessions ------------------------------------------------------------------
GOOD_START = start_message("CA{n}")
FORK_META = json.dumps({"callId": "{n}", "sampleRate": 8000, "channels": 2})


def twilio_sessions(rng: random.Random, n: str) -> dict[str, list[bytes]]:
    start = text(GOOD_START.replace("{n}", n))
    media = media_message(f"CA{n}", "inbound", 1, b"\xff" * 160)
    return {
        "binary frame": [frame(OP_BIN, rng.randbytes(rng.randint(1, 400)))],
        "invalid UTF-8": [text(b'{"event": "connected", "x": "\xff\xfe\xc3("}')],
        "invalid UTF-8 after start": [start, text(b"\xc3\x28" * rng.randint(1, 50))],
        "base64 garbage": [start, text(media.replace('"payload": "', '"payload": "!*%$'))],
        "base64 not ASCII": [start, text(media.replace('"payload": "', '"payload": "\u00e9\u4e2d'))],
        "media before start": [text(media)],
        "stop before start": [text('{"event": "stop"}')],
        "second start": [start, start],
        "connected after start": [start, text('{"event": "connected"}')],
        "unknown event": [text(json.dumps({"event": rng.choice(["hello", "", "START", "Media"])}))],
        "malformed JSON": [text(GOOD_START.replace("{n}", n)[:rng.randint(1, 60)])],
        "deep nesting": [text("[" * 5000 + "]" * 5000)],
        "huge integer": [text('{"event": "start", "start": {"callSid": ' + "9" * 5000 + "}}")],
        "NaN": [text('{"event": "start", "start": {"callSid": NaN}}')],
        "lone surrogate": [start, text('{"event": "mark", "mark": {"name": "\\ud800"}}')],
        "giant frame": [frame(OP_TEXT, b"x" * (MAX_MESSAGE + rng.randint(1, 50_000)))],
        "giant frame claimed": [frame(OP_BIN, b"", claim=10_000_000)],
        "truncated frame header": [frame(OP_TEXT, b'{"event": "connected"}')[:rng.randint(1, 5)]],
        "length that lies": [frame(OP_TEXT, b"{}", claim=1000)],
        "unknown opcode": [frame(rng.choice([0x3, 0x4, 0xB, 0xF]), b"x")],
        "reserved bits": [frame(OP_TEXT, b"{}", rsv=rng.choice([1, 2, 4]))],
        "continuation first": [frame(OP_CONT, b"{}")],
        "wrong media format": [text(GOOD_START.replace("{n}", n).replace('"sampleRate": 8000', '"sampleRate": 16000'))],
        "track unknown": [start, text(media.replace('"track": "inbound"', '"track": ["inbound"]'))],
    }


def vosk_sessions(rng: random.Random, n: str) -> dict[str, list[bytes]]:
    return {
        "bad config": [text(json.dumps({"config": {"sample_rate": rng.choice([44, 1e9, "16000", None, True])}}))],
        "config infinity": [text('{"config": {"sample_rate": Infinity}}')],
        "odd audio": [frame(OP_BIN, rng.randbytes(2 * rng.randint(1, 100) + 1))],
        "unknown message": [text('{"hello": 1}')],
        "not JSON": [text(rng.choice(["eof", "{", "[1, 2", "null"]))],
        "invalid UTF-8": [frame(OP_BIN, bytes(320)), text(b"\xff" * 10)],
        "giant frame": [frame(OP_BIN, bytes(MAX_MESSAGE + 2 * rng.randint(1, 20_000)))],
        "truncated frame header": [frame(OP_BIN, bytes(320))[:rng.randint(1, 5)]],
    }


def fork_sessions(rng: random.Random, n: str) -> dict[str, list[bytes]]:
    meta = text(FORK_META.replace("{n}", f"fork-{n}"))
    return {
        "audio first": [frame(OP_BIN, bytes(640))],
        "bad metadata": [text(json.dumps({"sampleRate": rng.choice([44100, "x", True, []]), "channels": 1}))],
        "bad channels": [text(json.dumps({"channels": rng.choice([0, 3, "²", [2]])}))],
        "metadata not JSON": [text(FORK_META[:rng.randint(1, 30)])],
        "odd stereo frame": [meta, frame(OP_BIN, rng.randbytes(4 * rng.randint(1, 100) + 2))],
        "text not JSON": [meta, text("{nope")],
        "invalid UTF-8": [meta, text(b"\x80abc")],
        "length that lies": [meta, frame(OP_BIN, bytes(64), claim=640)],
    }


def audiosocket_sessions(rng: random.Random, n: str) -> dict[str, bytes]:
    from streamer.serve.protocols import audiosocket as aso

    call = str(uuid.UUID(int=rng.getrandbits(128)))
    hello = aso.uuid_message(call)
    return {
        "audio before UUID": aso.encode(aso.KIND_AUDIO, bytes(320)),
        "short UUID": aso.encode(aso.KIND_UUID, rng.randbytes(rng.randint(0, 15))),
        "second UUID": hello + hello,
        "odd audio": hello + aso.encode(aso.KIND_AUDIO, bytes(2 * rng.randint(0, 50) + 1)),
        "unknown kind": hello + aso.encode(rng.choice([0x02, 0x20, 0x7F, 0xFE]), rng.randbytes(8)),
        "higher-rate kind": hello + aso.encode(rng.choice([0x11, 0x12, 0x13]), bytes(320)),
        "random bytes": bytes([rng.choice([0x02, 0x10, 0x42, 0x99])]) + rng.randbytes(rng.randint(2, 600)),
        "truncated header": hello + aso.encode(aso.KIND_AUDIO, bytes(320))[:rng.randint(1, 2)],
        "length that lies": hello + aso.encode(aso.KIND_AUDIO, bytes(60000))[:rng.randint(3, 500)],
    }


def plan(seed: int = 28) -> list[tuple[str, str, object]]:
    """(protocol, kind, what to send) for each of the SESSIONS sessions: every kind at least
    once, then drawn at random."""
    rng = random.Random(seed)
    makers = {"twilio": twilio_sessions, "vosk": vosk_sessions, "audio-fork": fork_sessions,
              "audiosocket": audiosocket_sessions}
    kinds = [(p, k) for p, make in makers.items() for k in make(rng, "0")]
    chosen = kinds + [rng.choice(kinds) for _ in range(SESSIONS - len(kinds))]
    rng.shuffle(chosen)
    return [(p, k, makers[p](rng, f"{i}")[k]) for i, (p, k) in enumerate(chosen)]


async def bad_ws(port: int, protocol: str, frames: list[bytes]) -> tuple[int | None, str]:
    path = {"twilio": "/twilio", "vosk": "/vosk", "audio-fork": "/audio-fork"}[protocol]
    ws = await RawWS.connect(port, path, "audio.drachtio.org" if protocol == "audio-fork" else None)
    for f in frames:
        await ws.send(f)
    return await ws.closed_with()


async def bad_tcp(port: int, data: bytes) -> tuple[str, bool]:
    """(our address as the server names its peer, whether the server closed the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    peer = str(writer.get_extra_info("sockname"))
    try:
        writer.write(data)
        await writer.drain()
        while await reader.read(65536):
            pass
        return peer, True  # EOF: the server closed it
    except ConnectionError:
        return peer, True
    finally:
        writer.close()


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


# --- the test --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    return {"customer": espeak_mulaw(d, "customer", "Good morning, my order has not arrived yet, where is it?"),
            "agent": espeak_mulaw(d, "agent", "It left the warehouse yesterday, it comes tomorrow.")}


def p95(xs: list[float]) -> float:
    """The nearest-rank 95th percentile (of a few windows: the largest)."""
    xs = sorted(xs)
    return xs[max(0, -(-95 * len(xs) // 100) - 1)] if xs else 0.0


def test_200_malformed_sessions_beside_a_good_call(models, speech, tmp_path):
    from streamer.serve.protocols.audiosocket import serve_audiosocket

    sessions = plan()
    turns = [("inbound", speech["customer"]), ("outbound", speech["agent"])]
    lines, errors = Lines(), Lines()
    errors.setLevel(logging.ERROR)  # aiohttp's "Error handling request", asyncio's "never retrieved"
    logging.getLogger("streamer.serve").addHandler(lines)
    for name in ("aiohttp", "asyncio"):
        logging.getLogger(name).addHandler(errors)
    old_level = logging.getLogger("streamer.serve").level
    logging.getLogger("streamer.serve").setLevel(logging.INFO)

    async def good_call(http, url, sid):
        feed = await http.ws_connect(f"{url}/events?call_id={sid}", headers=AUTH)
        ws = await http.ws_connect(f"{url}/twilio", headers=AUTH)
        t0 = time.monotonic()
        await play_call(ws, sid, turns, pace_s=0.02)  # real time: 20 ms of each track a frame pair
        msg = await ws.receive(timeout=30)
        events = []
        async for m in feed:
            events.append(json.loads(m.data))
            if events[-1]["type"] == "call_end":
                break
        await feed.close()
        return {"close": msg.data, "events": events, "took": time.monotonic() - t0}

    async def scenario():
        cfg = server_config(max_message_bytes=MAX_MESSAGE, idle_timeout_s=1.0, max_calls=64)
        async with running_server(models, cfg, tmp_path, token=TOKEN) as (url, registry), \
                aiohttp.ClientSession() as http:
            port = int(url.rsplit(":", 1)[1])
            tcp = await serve_audiosocket(registry, "127.0.0.1", 0, idle_s=1.0)
            tcp_port = tcp.sockets[0].getsockname()[1]
            alone = await good_call(http, url, "CAalone")  # the yardstick: the same call with nothing else on

            gate = asyncio.Semaphore(AT_ONCE)
            results: list = [None] * len(sessions)

            async def one(i, protocol, data):
                async with gate:
                    t = time.monotonic()
                    coro = bad_tcp(tcp_port, data) if protocol == "audiosocket" else bad_ws(port, protocol, data)
                    try:
                        results[i] = (await asyncio.wait_for(coro, SESSION_S), time.monotonic() - t)
                    except asyncio.TimeoutError:
                        results[i] = ((None, f"no close within {SESSION_S:g} s"), SESSION_S)

            playing = asyncio.ensure_future(good_call(http, url, "CAgood"))
            await asyncio.sleep(0.5)  # the good call is on
            t_fuzz = time.monotonic()
            await asyncio.gather(*(one(i, p, d) for i, (p, _, d) in enumerate(sessions)))
            fuzz_s = time.monotonic() - t_fuzz
            good = await playing
            async with http.get(f"{url}/healthz") as r:
                health = (r.status, await r.json())
            async with http.get(f"{url}/metrics", headers=AUTH) as r:
                metrics = await r.text()
            active = len(registry.active_calls)
            tcp.close()
            print(f"scenario: alone {alone['took']:.1f} s, with the fuzz {good['took']:.1f} s")
            return alone, good, results, fuzz_s, health, metrics, active

    try:
        alone, good, results, fuzz_s, health, metrics, active = asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))
    finally:
        logging.getLogger("streamer.serve").removeHandler(lines)
        for name in ("aiohttp", "asyncio"):
            logging.getLogger(name).removeHandler(errors)
        logging.getLogger("streamer.serve").setLevel(old_level)

    # every bad WebSocket session got a close frame with a code and a reason; every AudioSocket
    # connection was closed by the server, which logged the code and reason and counted it
    codes: dict[str, int] = {}
    for (protocol, kind, _), (got, took) in zip(sessions, results):  # _: what was sent
        if protocol == "audiosocket":
            peer, closed = got
            assert closed, (kind, got)
            names = [peer] + ([f"call {uuid.UUID(bytes=_[3:19])}:"] if _[:3] == b"\x01\x00\x10" else [])
            said = [x for x in lines.lines if any(n in x for n in names) and re.search(r"closing \(10\d\d\): \S", x)]
            assert said, (kind, names)
            continue
        code, reason = got
        assert code in WS_CODES and reason.strip(), (protocol, kind, code, reason)
        codes[f"{code}"] = codes.get(f"{code}", 0) + 1
    n_tcp = sum(1 for p, _, _ in sessions if p == "audiosocket")
    closed_tcp = sum(float(v) for v in re.findall(r'ser_serve_connections_closed_total\{code="10\d\d",source="audiosocket"\} (\S+)',
                                                   metrics))
    assert closed_tcp == n_tcp, (closed_tcp, n_tcp)
    assert not [x for x in lines.lines if "(1011)" in x or "handler failed" in x]  # never our own failure
    assert not errors.lines, errors.lines
    print(f"200 bad sessions in {fuzz_s:.1f} s; WebSocket close codes {codes}; AudioSocket closed {n_tcp}")

    # the server stayed up, and holds no call of theirs
    assert health[0] == 200 and health[1]["status"] == "ok" and active == 0

    # the good call: closed normally, every window of each track as when alone, no drops, its latency
    assert good["close"] == 1000 and alone["close"] == 1000
    def windows(run):
        return [e for e in run["events"] if e["type"] == "window"]

    def per_track(run):
        out: dict[str, int] = {}
        for e in windows(run):
            out[e["track"]] = out.get(e["track"], 0) + 1
        return out

    end = good["events"][-1]
    assert end["type"] == "call_end" and end["error"] is None
    assert per_track(good) == per_track(alone) and sum(per_track(good).values()) >= 2, (per_track(good), per_track(alone))
    assert not [e for e in good["events"] if e["type"] == "error"]
    assert re.search(r"^ser_serve_windows_dropped_total 0\.0$", metrics, re.M)
    assert re.search(r"^ser_serve_audio_dropped_seconds_total 0\.0$", metrics, re.M)
    lat_alone = [e["feed_latency_ms"] / 1e3 for e in windows(alone)]
    lat_good = [e["feed_latency_ms"] / 1e3 for e in windows(good)]
    print(f"good call: windows per track {per_track(good)}; latency p95 {p95(lat_good):.2f} s; "
          f"alone {p95(lat_alone):.2f} s")
    # "normal latency": as when alone, give or take what a shared 2-core machine adds
    assert p95(lat_good) <= max(2 * p95(lat_alone), p95(lat_alone) + 0.75), (lat_good, lat_alone)

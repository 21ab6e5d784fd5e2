"""Clients of ser-serve's protocols, as the telephony platforms would send: Twilio Media
Streams, the vosk-server protocol, FreeSWITCH mod_audio_fork and Asterisk AudioSocket, paced
in real time. ``ser-call`` (``streamer.cli.call``) is their command line; the tests and
``bench/server_bench.py`` use them directly.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
import weakref
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit, parse_qsl

import numpy as np


log = logging.getLogger(__name__)

TWILIO_RATE = 8000
FRAME_S = 0.020  # Twilio, mod_audio_fork and AudioSocket all send 20 ms frames
VOSK_CHUNK_S = 0.25  # what vosk-server's test.py sends (8000 bytes at 16 kHz)
CLOSE_REASONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # socket -> the server's close reason, once read


# --- audio ----------------------------------------------------------------------------------

def load_pcm(path: str | Path, rate: int) -> np.ndarray:
    """Any WAV/FLAC/OGG/MP3 file as int16 mono at ``rate`` Hz."""
    from streamer.audio.io import decode_file, to_int16

    return to_int16(decode_file(path, target_rate=rate).samples)


def frames(x: np.ndarray, n: int) -> list[np.ndarray]:
    """``x`` cut into frames of ``n`` samples, the last padded with silence.

    >>> [len(f) for f in frames(np.zeros(350, np.int16), 160)]
    [160, 160, 160]
    """
    k = -(-len(x) // n)
    padded = np.zeros(k * n, np.int16)
    padded[:len(x)] = x
    return [padded[i * n:(i + 1) * n] for i in range(k)]


def pad_to(x: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, np.int16)
    out[:len(x)] = x[:n]
    return out


class Pacer:
    """Sleeps until frame ``k`` is due (``t0 + k * step / speed``) and notes how late it ran."""

    def __init__(self, step_s: float, speed: float = 1.0) -> None:
        self.step = step_s / speed if speed > 0 else 0.0
        self.t0 = time.monotonic()
        self.late_s = 0.0

    async def wait(self, k: int) -> None:
        if not self.step:
            await asyncio.sleep(0)
            return
        delay = self.t0 + k * self.step - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            self.late_s = max(self.late_s, -delay)


# --- URLs -----------------------------------------------------------------------------------

def with_token(url: str, token: str | None) -> str:
    """``url`` with ``?token=`` added (kept as is without a token).

    >>> with_token("ws://h:1/vosk?x=1", "t t")
    'ws://h:1/vosk?x=1&token=t+t'
    """
    if not token:
        return url
    p = urlsplit(url)
    q = parse_qsl(p.query) + [("token", token)]
    return urlunsplit((p.scheme, p.netloc, p.path, urlencode(q), p.fragment))


def api_base(url: str) -> str:
    """The HTTP root of a server given one of its WebSocket URLs.

    >>> api_base("wss://desk.example:8765/twilio?token=x")
    'https://desk.example:8765'
    """
    p = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(p.scheme, p.scheme)
    return urlunsplit((scheme, p.netloc, "", "", ""))


def tls_client(cafile: str | Path | None = None):
    """The TLS context for wss:// and https:// (None without ``cafile``: the system's CAs, aiohttp's
    default). ``cafile``: PEM certificates to trust instead, the CA that signed the server's
    certificate or a self-signed certificate itself (FileNotFoundError, ssl.SSLError when unusable).

    >>> tls_client() is None
    True
    """
    if cafile is None:
        return None
    import ssl

    return ssl.create_default_context(cafile=str(Path(cafile).expanduser()))


def _headers(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def _close_info(ws, reader: asyncio.Task | None, timeout: float = 60.0) -> dict:
    """Wait for the server's close (it finishes the call's windows first) and report it."""
    if reader is not None:
        try:
            await asyncio.wait_for(asyncio.shield(reader), timeout)
        except asyncio.TimeoutError:
            await ws.close()
    if not ws.closed:
        await ws.close()
    return {"close_code": ws.close_code, "close_reason": _close_reason(ws)}


def _close_reason(ws) -> str:
    # aiohttp keeps the peer's close reason on the CLOSE message only: _drain_close notes it
    ex = ws.exception()
    return CLOSE_REASONS.get(ws, "") or (str(ex) if ex else "")


async def _drain_close(ws, sink: list) -> None:
    from aiohttp import WSMsgType

    while True:
        msg = await ws.receive()
        if msg.type == WSMsgType.TEXT:
            sink.append(msg.data)
        elif msg.type == WSMsgType.CLOSE:
            CLOSE_REASONS[ws] = msg.extra or ""
            break
        elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            break


# --- Twilio Media Streams --------------------------------------------------------------------

def twilio_messages(customer: np.ndarray, agent: np.ndarray | None, call_sid: str, stream_sid: str,
                    params: dict | None = None):
    """The messages of one call, in order, each with the frame index it is due at (20 ms steps)."""
    from streamer.serve.protocols import mulaw

    tracks = {"inbound": customer} if agent is None else {"inbound": customer, "outbound": agent}
    n = max(len(x) for x in tracks.values())
    per = int(TWILIO_RATE * FRAME_S)
    split = {t: frames(pad_to(x, n), per) for t, x in tracks.items()}
    seq = 0

    def nxt() -> str:
        nonlocal seq
        seq += 1
        return str(seq)

    yield 0, {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    yield 0, {"event": "start", "sequenceNumber": nxt(), "streamSid": stream_sid,
              "start": {"accountSid": "AC" + "0" * 32, "streamSid": stream_sid, "callSid": call_sid,
                        "tracks": list(tracks), "customParameters": dict(params or {}),
                        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": TWILIO_RATE, "channels": 1}}}
    for k in range(len(next(iter(split.values())))):
        for t, fs in split.items():
            yield k, {"event": "media", "sequenceNumber": nxt(), "streamSid": stream_sid,
                      "media": {"track": t, "chunk": str(k + 1), "timestamp": str(round(k * FRAME_S * 1000)),
                                "payload": base64.b64encode(mulaw.encode(fs[k])).decode("ascii")}}
    yield len(next(iter(split.values()))), {"event": "stop", "sequenceNumber": nxt(), "streamSid": stream_sid,
                                             "stop": {"accountSid": "AC" + "0" * 32, "callSid": call_sid}}


async def play_twilio(session, url: str, customer: np.ndarray, agent: np.ndarray | None = None, *,
                      token: str | None = None, call_sid: str | None = None, speed: float = 1.0,
                      params: dict | None = None) -> dict:
    """One Twilio Media Streams call (8 kHz int16 per track); returns what happened."""
    call_sid = call_sid or "CA" + uuid.uuid4().hex
    stream_sid = "MZ" + uuid.uuid4().hex
    params = {**(params or {}), **({"token": token} if token else {})}
    got: list[str] = []
    sent = 0
    async with session.ws_connect(url, max_msg_size=0, autoclose=False) as ws:
        reader = asyncio.ensure_future(_drain_close(ws, got))
        pacer = Pacer(FRAME_S, speed)
        try:
            for k, msg in twilio_messages(customer, agent, call_sid, stream_sid, params):
                if reader.done():  # the server closed the call (refused, or bad input)
                    break
                await pacer.wait(k)
                await ws.send_str(json.dumps(msg))
                sent += 1
        except ConnectionResetError:
            pass
        info = await _close_info(ws, reader)
    return {"call_id": call_sid, "sent": sent, "late_s": round(pacer.late_s, 3), "replies": got, **info}


# --- vosk-server -----------------------------------------------------------------------------

async def play_vosk(session, url: str, samples: np.ndarray, rate: int, *, token: str | None = None,
                    chunk_s: float = VOSK_CHUNK_S, speed: float = 1.0, words: bool = True,
                    on_reply=None) -> dict:
    """One vosk-server session: config, audio chunks (one reply each), eof (the final result)."""
    from aiohttp import WSMsgType

    replies: list[dict] = []
    async with session.ws_connect(url, headers=_headers(token), max_msg_size=0, autoclose=False) as ws:
        await ws.send_str(json.dumps({"config": {"sample_rate": rate, "words": words}}))
        pacer = Pacer(chunk_s, speed)
        n = max(1, int(rate * chunk_s))
        chunks = [samples[i:i + n] for i in range(0, len(samples), n)]
        try:
            for k, c in enumerate(chunks):
                await pacer.wait(k)
                await ws.send_bytes(c.astype("<i2").tobytes())
                msg = await ws.receive()
                if msg.type != WSMsgType.TEXT:
                    CLOSE_REASONS[ws] = (msg.extra or "") if msg.type == WSMsgType.CLOSE else ""
                    break
                replies.append(json.loads(msg.data))
                if on_reply:
                    on_reply(replies[-1])
            else:
                await ws.send_str('{"eof" : 1}')
                msg = await ws.receive()
                if msg.type == WSMsgType.TEXT:
                    replies.append(json.loads(msg.data))
                    if on_reply:
                        on_reply(replies[-1])
        except ConnectionResetError:
            pass
        closing = ws in CLOSE_REASONS
        info = await _close_info(ws, None if closing or ws.closed else asyncio.ensure_future(_drain_close(ws, [])))
    return {"replies": replies, "late_s": round(pacer.late_s, 3), **info}


# --- FreeSWITCH mod_audio_fork ---------------------------------------------------------------

async def play_audiofork(session, url: str, channels: list[np.ndarray], rate: int, *, token: str | None = None,
                         call_id: str | None = None, speed: float = 1.0, metadata: dict | None = None) -> dict:
    """One mod_audio_fork stream: metadata, then 20 ms binary L16 frames (interleaved when stereo)."""
    from streamer.serve.protocols.audiofork import SUBPROTOCOL

    call_id = call_id or str(uuid.uuid4())
    n = max(len(c) for c in channels)
    per = int(rate * FRAME_S)
    chans = [frames(pad_to(c, n), per) for c in channels]
    meta = {"callId": call_id, "sampleRate": rate, "channels": len(channels), **(metadata or {})}
    got: list[str] = []
    async with session.ws_connect(url, headers=_headers(token), protocols=(SUBPROTOCOL,), max_msg_size=0,
                                  autoclose=False) as ws:
        reader = asyncio.ensure_future(_drain_close(ws, got))
        await ws.send_str(json.dumps(meta))
        pacer = Pacer(FRAME_S, speed)
        try:
            for k in range(len(chans[0])):
                if reader.done():
                    break
                await pacer.wait(k)
                if len(chans) == 1:
                    data = chans[0][k]
                else:
                    data = np.empty(2 * per, np.int16)
                    data[0::2], data[1::2] = chans[0][k], chans[1][k]
                await ws.send_bytes(data.astype("<i2").tobytes())
            await ws.close()  # mod_audio_fork closes the socket when the fork stops
        except ConnectionResetError:
            pass
        info = await _close_info(ws, reader)
    return {"call_id": call_id, "protocol": ws.protocol, "late_s": round(pacer.late_s, 3), **info}


# --- Asterisk AudioSocket --------------------------------------------------------------------

async def play_audiosocket(host: str, port: int, samples: np.ndarray, *, call_id: str | None = None,
                           speed: float = 1.0, hangup: bool = True) -> dict:
    """One AudioSocket connection: UUID, 20 ms slin frames at 8 kHz, hangup."""
    from streamer.serve.protocols import audiosocket as aso

    call_id = str(uuid.UUID(call_id)) if call_id else str(uuid.uuid4())
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(aso.uuid_message(call_id))
    pacer = Pacer(FRAME_S, speed)
    sent = 0
    try:
        for k, f in enumerate(frames(samples, int(8000 * FRAME_S))):
            await pacer.wait(k)
            writer.write(aso.audio_message(f))
            await writer.drain()
            sent += 1
        if hangup:
            writer.write(aso.encode(aso.KIND_HANGUP))
            await writer.drain()
        closed = await asyncio.wait_for(reader.read(), 60.0) == b""  # the server closes when the call is done
    except (ConnectionError, asyncio.TimeoutError):
        closed = False
    finally:
        writer.close()
    return {"call_id": call_id, "sent": sent, "late_s": round(pacer.late_s, 3), "server_closed": closed}


# --- results --------------------------------------------------------------------------------

async def fetch_call(session, url: str, call_id: str, token: str | None = None) -> dict | None:
    """What the server holds for a call (``GET /api/calls/{id}``); None when it has none."""
    async with session.get(f"{api_base(url)}/api/calls/{call_id}", headers=_headers(token)) as r:
        if r.status != 200:
            return None
        return await r.json()


async def wait_ended(session, url: str, call_id: str, token: str | None = None, timeout: float = 60.0) -> dict | None:
    """The call's results once the server has ended it (it finishes the windows held after the
    stream closes); what it holds so far after ``timeout`` s; None when it has no such call."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        detail = await fetch_call(session, url, call_id, token)
        if detail is None or detail.get("state") == "ended" or loop.time() >= deadline:
            return detail
        await asyncio.sleep(0.2)


def describe(detail: dict) -> list[str]:
    """One line per utterance, in time order; an uncertain one (fused confidence below
    ``[fusion] min_confidence``) shows ``?`` for its emoji, as the dashboard does.

    >>> describe({"utterances": [{"track": "customer", "start_s": 6.4, "end_s": 11.9, "emoji": "😢", "label": "sad",
    ...                           "confidence": 0.43, "uncertain": True, "transcript": "absolutely unacceptable"}]})
    ['  customer    6.4-  11.9s ?  sad      0.43  absolutely unacceptable']
    """
    lines = []
    for u in sorted(detail.get("utterances") or [], key=lambda u: (u.get("start_s") or 0, u.get("track") or "")):
        text = (u.get("transcript") or "").strip()
        mark = "? " if u.get("uncertain") else u.get("emoji", "")
        lines.append(f"  {u.get('track', '?'):>8} {u.get('start_s', 0):6.1f}-{u.get('end_s', 0):6.1f}s "
                     f"{mark} {u.get('label', '?'):<8} {u.get('confidence', 0):.2f}  {text}")
    return lines


# --- the command ----------------------------------------------------------------------------

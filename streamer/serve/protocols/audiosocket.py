"""Asterisk AudioSocket over TCP (``--audiosocket-port``; off by default).

Every message is ``[kind:1][length:2, big-endian][payload]``. What Asterisk sends:

====  ============================================================================
0x01  the connection's UUID (16 bytes), first; it becomes the call's id
0x10  audio: signed linear 16-bit little-endian, 8 kHz mono (``slin``), 20 ms a frame
0x03  a DTMF digit (1 byte, ASCII)
0x00  hangup (length 0)
0xff  an Asterisk-side error (1 byte: 0x01 the caller hung up, 0x02 frame forwarding,
      0x04 memory)
====  ============================================================================

**Higher rates.** Which kinds carry slin at other rates differs between Asterisk versions, and
only ``0x10`` (8 kHz) is the same in all of them. Read in Asterisk's own sources (public copies
of ``include/asterisk/res_audiosocket.h`` and ``res/res_audiosocket.c``):

- Asterisk's ``res_audiosocket.c`` from 2019 on: receives only ``0x10`` (anything else is an error)
  and sends every voice frame as ``0x10`` (the header has no enum yet, or only 0x00/0x01/0x03/0x10/0xff);
- one revision of the header adds ``AST_AUDIOSOCKET_KIND_AUDIO_SLIN16 = 0x11``;
- a later ``res_audiosocket.c`` maps ``slin12``, ``slin16``, ``slin24``, ``slin32``, ``slin44``,
  ``slin48``, ``slin96`` and ``slin192`` to kinds of those names, whose numbers are in a header
  revision that could not be read (code written for it uses 0x11 for 12 kHz and 0x12 for 16 kHz).

So 0x11 means 16 kHz in one version and (very likely) 12 kHz in another. Only ``0x10`` is taken;
any other audio kind ends the connection with a log line that says to keep the channel at 8 kHz
(``Set(CHANNEL(audioreadformat)=slin)`` or the dialplan ``AudioSocket()`` application, which
sends 8 kHz). A deployment that knows its Asterisk can pass ``rates={0x10: 8000, 0x12: 16000}``
to :func:`serve_audiosocket`.

A TCP stream has no close code: on bad input the server logs the reason, ends the call with that
error and closes the connection. It never sends a hangup (0x00): that would hang up the phone call.
AudioSocket carries no token: listen on an address only the PBX can reach.

>>> p = FrameParser()
>>> msg = encode(KIND_UUID, bytes(range(16))) + encode(KIND_AUDIO, b"\\x01\\x00\\xff\\xff")
>>> p.push(msg[:5]), p.pending
([], 5)
>>> [(f.kind, len(f.payload)) for f in p.push(msg[5:] + encode(KIND_HANGUP))]
[(1, 16), (16, 4), (0, 0)]
>>> s = Session()
>>> s.handle(Frame(KIND_UUID, bytes(range(16))))
('uuid', '00010203-0405-0607-0809-0a0b0c0d0e0f')
>>> kind, (rate, x) = s.handle(Frame(KIND_AUDIO, b"\\x01\\x00\\xff\\xff")); kind, rate, x.tolist()
('audio', 8000, [1, -1])
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import NamedTuple

import numpy as np

from streamer.serve.transport import Bad, BaseProtocol, Media, Note, Start, Stop, StreamTransport, serve_call
from streamer.serve.protocols.wire import BAD_DATA, NORMAL, POLICY, UNSUPPORTED, ProtocolError

log = logging.getLogger(__name__)

SOURCE = "audiosocket"
TRACK = "customer"
KIND_HANGUP, KIND_UUID, KIND_DTMF, KIND_AUDIO, KIND_ERROR = 0x00, 0x01, 0x03, 0x10, 0xFF
AUDIO_RATES = {KIND_AUDIO: 8000}  # the only audio kind every Asterisk version agrees on
ERRORS = {0x00: "none", 0x01: "the caller hung up", 0x02: "frame forwarding error", 0x04: "memory error"}
MAX_PAYLOAD = 0xFFFF


class Frame(NamedTuple):
    kind: int
    payload: bytes


def encode(kind: int, payload: bytes = b"") -> bytes:
    """One AudioSocket message."""
    if not 0 <= kind <= 0xFF:
        raise ValueError(f"kind {kind} is not one byte")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"an AudioSocket payload holds at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    return bytes([kind]) + len(payload).to_bytes(2, "big") + payload


def audio_message(samples: np.ndarray) -> bytes:
    """int16 samples as one 0x10 (8 kHz slin) message."""
    return encode(KIND_AUDIO, np.asarray(samples, dtype="<i2").tobytes())


def uuid_message(call_id: str | uuid.UUID) -> bytes:
    return encode(KIND_UUID, uuid.UUID(str(call_id)).bytes)


class FrameParser:
    """Bytes in as they arrive (any split), whole frames out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held of a frame not yet whole."""
        return len(self._buf)

    def push(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        buf = self._buf
        start = 0
        while len(buf) - start >= 3:
            n = int.from_bytes(buf[start + 1:start + 3], "big")
            if len(buf) - start < 3 + n:
                break
            out.append(Frame(buf[start], bytes(buf[start + 3:start + 3 + n])))
            start += 3 + n
        if start:
            del buf[:start]
        return out


class Session:
    """One connection's protocol state: what each frame means.

    ``handle`` returns ``("uuid", call_id)``, ``("audio", (rate, samples))``, ``("dtmf", digit)``,
    ``("hangup", None)`` or ``("error", text)``, and raises :class:`ProtocolError` for frames
    out of order or unknown."""

    def __init__(self, rates: dict[int, int] | None = None) -> None:
        self.rates = dict(AUDIO_RATES if rates is None else rates)
        self.call_id: str | None = None

    def handle(self, frame: Frame):
        kind, payload = frame
        if self.call_id is None:
            if kind == KIND_HANGUP:
                return "hangup", None
            if kind != KIND_UUID:
                raise ProtocolError(POLICY, f"the first message must be the UUID (kind 0x01), not kind 0x{kind:02x}")
        if kind == KIND_UUID:
            if self.call_id is not None:
                raise ProtocolError(POLICY, "a second UUID message on one connection")
            if len(payload) != 16:
                raise ProtocolError(BAD_DATA, f"a UUID message of {len(payload)} bytes: it has 16")
            self.call_id = str(uuid.UUID(bytes=payload))
            return "uuid", self.call_id
        if kind in self.rates:
            if len(payload) % 2:
                raise ProtocolError(BAD_DATA, f"an audio message of {len(payload)} bytes: 16-bit slin has an even length")
            return "audio", (self.rates[kind], np.frombuffer(payload, dtype="<i2").astype(np.int16, copy=False))
        if kind == KIND_DTMF:
            return "dtmf", payload[:1].decode("ascii", "replace")
        if kind == KIND_HANGUP:
            return "hangup", None
        if kind == KIND_ERROR:
            code = payload[0] if payload else 0
            return "error", f"Asterisk reported an error: {ERRORS.get(code, f'code 0x{code:02x}')}"
        if 0x10 <= kind <= 0x1F:
            raise ProtocolError(UNSUPPORTED, f"audio kind 0x{kind:02x} (a higher-rate slin, numbered differently "
                                "between Asterisk versions): keep the channel at 8 kHz slin (kind 0x10)")
        raise ProtocolError(POLICY, f"unknown AudioSocket kind 0x{kind:02x}")


class AudioSocketProtocol(BaseProtocol):
    """AudioSocket's frames as the call loop's events (:mod:`streamer.serve.transport`): bytes in
    any split, whole frames read by :class:`FrameParser` and :class:`Session`."""

    source = SOURCE

    def __init__(self, peer: str, rates: dict[int, int] | None = None) -> None:
        self.peer = peer
        self.parser, self.session = FrameParser(), Session(rates)

    def parse(self, message: str | bytes) -> list:
        data = message.encode("utf-8") if isinstance(message, str) else message
        events: list = []
        for frame in self.parser.push(data):
            try:
                what, value = self.session.handle(frame)
            except ProtocolError as exc:  # after the frames before it
                events.append(Bad(exc))
                break
            if what == "uuid":
                events.append(Start(value, {"peer": self.peer}, (TRACK,)))
            elif what == "audio":
                rate, samples = value
                events.append(Media(TRACK, rate, samples))
            elif what == "dtmf":
                events.append(Note(f"DTMF {value}", logging.INFO))
            elif what == "hangup":
                events.append(Stop(NORMAL, "hangup"))
                break
            else:  # Asterisk's own error
                events.append(Stop(NORMAL, "Asterisk reported an error", error=value))
                break
        return events

    def peer_closed(self) -> str | None:
        if self.parser.pending:
            return f"the connection closed inside a message ({self.parser.pending} bytes of it)"
        return None


async def handle_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, registry, idle_s: float | None = None,
                            rates: dict[int, int] | None = None) -> None:
    """Serve one Asterisk connection: UUID, then audio until hangup or close (``idle_s``:
    ``[server] idle_timeout_s`` unless given)."""
    transport = StreamTransport(reader, writer, registry, SOURCE)
    await serve_call(transport, AudioSocketProtocol(transport.peer, rates), registry, idle_s=idle_s)


async def serve_audiosocket(registry, host: str, port: int, idle_s: float | None = None,
                            rates: dict[int, int] | None = None) -> asyncio.Server:
    """Listen for Asterisk AudioSocket connections (``port`` 0: a free one, in ``sockets``);
    ``idle_s`` defaults to ``[server] idle_timeout_s``. ``close()`` the server to stop listening;
    the registry's shutdown ends the calls."""
    if idle_s is None:
        idle_s = registry.cfg.server.idle_timeout_s

    async def on_connect(reader, writer):
        await handle_connection(reader, writer, registry, idle_s, rates)

    server = await asyncio.start_server(on_connect, host, port)
    addr = server.sockets[0].getsockname()
    log.info("AudioSocket on %s:%d (kinds %s)", addr[0], addr[1],
             ", ".join(f"0x{k:02x} = {r} Hz" for k, r in sorted((AUDIO_RATES if rates is None else rates).items())))
    return server

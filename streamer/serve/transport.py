"""The one loop every call connection runs, whatever protocol it speaks.

A protocol (Twilio, vosk, mod_audio_fork, AudioSocket) is a parser: it turns each message into
events (:class:`Start`, :class:`Media`, :class:`Stop`, :class:`Note`, :class:`Bad`) and holds no socket
code. A transport (a WebSocket, AudioSocket's TCP stream) moves the messages. This module
owns everything else, once for all of them:

- admission: a :class:`Start` opens the call (``Refused``: the server is full, a duplicate
  id), after checking a token that came inside the message (Twilio's ``<Parameter>``);
- idle timeout: nothing received for ``[server] idle_timeout_s`` closes with 1008;
- close codes: bad input (:class:`~streamer.serve.protocols.wire.ProtocolError`) closes at once with
  its code and reason, while the call's held windows are finished; our own failure is 1011;
  the server ending the call (shutdown) is 1001; a normal end is 1000;
- ending the call: :meth:`CallRegistry.end` exactly once, whatever happened (it is idempotent).

Protocol-specific replies (vosk answers every audio message) come from the protocol's
:meth:`CallProtocol.after` and :meth:`CallProtocol.final` hooks.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from streamer.serve.protocols import wire
from streamer.core.messages import SAMPLE_RATE
from streamer.serve.calls.call import CallLogger, Refused
from streamer.serve.calls.pace import Pace
from streamer.serve.protocols.wire import INTERNAL, NORMAL, POLICY, ProtocolError

log = logging.getLogger(__name__)

READ_BYTES = 65536  # a TCP transport's read size


# --- the events a protocol's parser yields ----------------------------------------------------
@dataclass(frozen=True)
class Start:
    """The call begins: its id (None: the server makes one), what to log about it, its tracks.
    ``token``: a token sent inside the message, checked when the handshake had none
    (``token_hint`` says where to send it)."""

    call_id: str | None
    meta: dict
    tracks: tuple[str, ...]
    token: str | None = None
    token_in_message: bool = False
    token_hint: str = ""


@dataclass(frozen=True)
class Media:
    """16-bit PCM of one track at ``rate`` Hz."""

    track: str
    rate: int
    pcm: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Stop:
    """The peer ended the stream: close with ``code`` and ``reason``; ``error`` (the peer's
    own failure, such as Asterisk's error frame) is stored in the call's log."""

    code: int = NORMAL
    reason: str = "end of stream"
    error: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Bad:
    """Bad input after other events of the same message (a stream's frames): the events
    before it are handled, then the connection closes with the error's code and reason."""

    error: ProtocolError


@dataclass(frozen=True)
class Note:
    """Something to log and nothing to analyse (DTMF, a mark, an ignored config)."""

    text: str
    level: int = logging.DEBUG


# --- what the loop needs of a protocol and of a transport ------------------------------------
class CallProtocol(Protocol):
    source: str      # the protocol's name in logs and metrics
    partials: bool   # the protocol sends partial text (its tracks refresh it: a decode a second)
    answers_each_message: bool  # its client waits for an answer to each audio message (vosk): audio
    # beyond the pace is slowed by waiting before the answer, not dropped (streamer.serve.calls.pace)

    def at_connect(self) -> list:
        """Events before any message (vosk opens its call at once)."""

    def parse(self, message: str | bytes) -> list:
        """One message's events; :class:`ProtocolError` for bad input."""

    def peer_closed(self) -> str | None:
        """The peer closed: what is wrong about that here (a half-sent frame), or None."""

    async def opened(self, call) -> None:
        """The call was admitted (vosk follows its results from here)."""

    async def after(self, call, events: list) -> list[str]:
        """Replies to send after a message's events were handled."""

    async def final(self, call) -> list[str]:
        """Replies to send after the call ended normally, before the close."""

    def done(self) -> None:
        """The connection is over (release what :meth:`opened` took)."""


class Transport(Protocol):
    peer: str

    async def receive(self, idle_s: float) -> str | bytes | None: ...
    def peer_error(self) -> str | None: ...
    async def send(self, text: str) -> None: ...
    async def close(self, code: int, reason: str) -> None: ...
    @property
    def closed(self) -> bool: ...


class BaseProtocol:
    """Defaults for the hooks a protocol does not need."""

    source = "?"
    partials = False
    answers_each_message = False

    def at_connect(self) -> list:
        return []

    def peer_closed(self) -> str | None:
        return None

    async def opened(self, call) -> None:
        pass

    async def after(self, call, events: list) -> list[str]:
        return []

    async def final(self, call) -> list[str]:
        return []

    def done(self) -> None:
        pass


class WebSocketTransport:
    """An aiohttp (or ASGI-bridged) WebSocket already prepared by :func:`prepare_ws`."""

    def __init__(self, ws, registry, source: str, peer: str = "?") -> None:
        self.ws, self.registry, self.source, self.peer = ws, registry, source, peer

    async def receive(self, idle_s: float) -> str | bytes | None:
        from aiohttp import WSMsgType

        msg = await wire.receive(self.ws, idle_s)
        if msg is None:
            return None
        return msg.data if msg.type is WSMsgType.TEXT else bytes(msg.data)

    def peer_error(self) -> str | None:
        error = wire.peer_error(self.ws)
        if error:
            self.registry.metrics.closed.labels(source=self.source, code=str(self.ws.close_code)).inc()
        return error

    async def send(self, text: str) -> None:
        await self.ws.send_str(text)

    async def close(self, code: int, reason: str) -> None:
        from streamer.serve.http.websocket import close_ws

        if not self.ws.closed:
            await close_ws(self.ws, code, reason, self.registry, self.source)

    @property
    def closed(self) -> bool:
        return self.ws.closed


class StreamTransport:
    """A TCP stream (AudioSocket): bytes in as they arrive; a close is the connection's end
    (the code is counted in /metrics and logged; the protocol has no close frame)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, registry, source: str) -> None:
        self.reader, self.writer, self.registry, self.source = reader, writer, registry, source
        self.peer = str(writer.get_extra_info("peername"))
        self._closed = False

    async def receive(self, idle_s: float) -> bytes | None:
        try:
            data = await asyncio.wait_for(self.reader.read(READ_BYTES), idle_s)
        except asyncio.TimeoutError:
            raise ProtocolError(POLICY, f"nothing received for {idle_s:g} s ([server] idle_timeout_s)") from None
        return data or None

    def peer_error(self) -> str | None:
        return None

    async def send(self, text: str) -> None:
        self.writer.write(text.encode("utf-8"))
        await self.writer.drain()

    async def close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        if code not in (NORMAL, wire.GOING_AWAY):
            self.registry.metrics.closed.labels(source=self.source, code=str(code)).inc()
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    @property
    def closed(self) -> bool:
        return self._closed


class _Finished(Exception):
    """The stream ended (a Stop, or the server ended the call): leave the loop."""


@dataclass
class Outcome:
    """How a call's connection ended: the error to log (None: fine), the close code and reason."""

    error: str | None = None
    code: int = NORMAL
    reason: str = "end of stream"


async def serve_call(transport: Transport, protocol: CallProtocol, registry, *, authed: bool = True,
                     auth=None, idle_s: float | None = None) -> None:
    """Serve one call connection until it ends; never raises. ``authed``: the handshake carried
    a good token (or none is needed); otherwise a :class:`Start` must carry one (``auth``
    checks it). ``idle_s``: ``[server] idle_timeout_s`` unless given."""
    idle_s = registry.cfg.server.idle_timeout_s if idle_s is None else idle_s
    call = None
    end = Outcome()
    closing: asyncio.Future | None = None  # a close sent at once, awaited once the call has ended
    pacers: dict[str, Pace] = {}  # per track, for a protocol whose client waits for each answer
    plog: logging.Logger | logging.LoggerAdapter = CallLogger(log, {"call_id": f"({protocol.source} from {transport.peer})"})

    async def handle(events: list) -> None:
        nonlocal call, end, plog
        for ev in events:
            if isinstance(ev, Media):
                if call is None:
                    raise ProtocolError(POLICY, "media before start")
                if not call.active:
                    end.code, end.reason = wire.ENDED_BY_SERVER
                    raise _Finished
                rate = call.rates.get(ev.track)
                if rate is not None and rate != ev.rate:
                    raise ProtocolError(wire.BAD_DATA, f"audio changed from {rate} to {ev.rate} Hz mid-call")
                if protocol.answers_each_message and registry.pace_limits.max_speed > 0:
                    # its client waits for each answer: slow it to the pace instead of dropping audio
                    pace = pacers.get(ev.track) or pacers.setdefault(ev.track, Pace(registry.pace_limits))
                    delay = pace.reserve(len(ev.pcm) * SAMPLE_RATE // ev.rate)
                    if delay > 0:
                        await asyncio.sleep(delay)
                call.track(ev.track, ev.rate, partials=protocol.partials,
                           paced=not protocol.answers_each_message).push(ev.pcm)
            elif isinstance(ev, Start):
                if ev.token_in_message and not authed:
                    status = auth.check_value(ev.token)
                    if status not in ("ok", "off"):
                        registry.metrics.refused.labels(reason="unauthorized").inc()
                        raise ProtocolError(POLICY, f"{status} token ({ev.token_hint})")
                try:
                    call = await registry.open(ev.call_id, protocol.source, ev.meta, list(ev.tracks))
                except Refused as exc:
                    plog.warning("refused (%d): %s", exc.code, exc.message)
                    end = Outcome(None, exc.code, exc.message)
                    raise _Finished from None
                plog = call.log
                await protocol.opened(call)
            elif isinstance(ev, Stop):
                if ev.note:
                    plog.info("%s", ev.note)
                end = Outcome(ev.error, ev.code, ev.reason)
                raise _Finished
            elif isinstance(ev, Note):
                plog.log(ev.level, "%s", ev.text)
            elif isinstance(ev, Bad):
                raise ev.error
        for text in await protocol.after(call, events):
            await transport.send(text)

    try:
        await handle(protocol.at_connect())
        while True:
            message = await transport.receive(idle_s)
            if message is None:  # the peer closed (or aiohttp refused a message: too big, 1009)
                end.error = transport.peer_error() or protocol.peer_closed()
                if end.error is None and call is not None and call.active and registry.accepting:
                    plog.info("the stream closed without a stop message")
                break
            if call is not None and not call.active:
                end.code, end.reason = wire.ENDED_BY_SERVER
                break
            await handle(protocol.parse(message))
    except _Finished:
        pass
    except ProtocolError as exc:
        end = Outcome(exc.reason, exc.code, exc.reason)
        plog.warning("closing (%d): %s", exc.code, exc.reason)
        closing = asyncio.ensure_future(transport.close(exc.code, exc.reason))  # at once, while the call ends
    except ConnectionError as exc:  # the peer went away while we sent
        end = Outcome(f"the connection failed: {exc}", INTERNAL, "connection failed")
    except Exception as exc:  # our fault: say so, end this call only
        plog.exception("handler failed")
        end = Outcome(f"internal error: {exc}", INTERNAL, "internal server error (see the server's log)")
        closing = asyncio.ensure_future(transport.close(end.code, end.reason))
    finally:
        try:
            if call is not None:
                await registry.end(call, error=end.error)
                if end.error is None and closing is None and not transport.closed:
                    try:
                        for text in await protocol.final(call):
                            await transport.send(text)
                    except ConnectionError:
                        pass
        finally:
            protocol.done()
    if closing is not None:
        await closing
    if not transport.closed:
        if end.code == NORMAL and end.error is None and not registry.accepting:
            end.code, end.reason = wire.GOING_AWAY, "server shutting down"
        await transport.close(end.code, end.reason)

"""``WS /twilio``: Twilio Media Streams (``<Start><Stream track="both_tracks">``).

Twilio sends JSON text messages: ``connected``; ``start`` (``streamSid``, ``callSid``,
``tracks``, ``customParameters``, ``mediaFormat`` audio/x-mulaw 8000 mono); ``media``
(``track`` inbound|outbound, ``chunk``, ``timestamp`` ms, base64 ``payload``: 20 ms of
G.711 mu-law); ``dtmf``; ``mark``; ``stop``. The call's id is ``callSid``.

Tracks: Twilio's ``inbound`` is the caller, the **customer**; ``outbound`` is the
**agent**. Results name the track ``customer`` or ``agent`` (:data:`TRACK_NAMES`).

The token: ``Authorization: Bearer`` or ``?token=`` at the handshake, or (a ``<Stream>`` URL
takes no query string) a ``<Parameter name="token">`` that arrives as
``customParameters.token``; it is not logged. With ``[server] twilio_auth_token`` set, the
handshake's ``X-Twilio-Signature`` must be Twilio's (403 otherwise).

Bad input closes this connection, with a code and a reason, and ends this call only
(:mod:`streamer.serve.protocols.wire`): malformed JSON, bad base64 (1007); a binary frame (1003);
``media`` before ``start``, unknown events or tracks, a wrong token, a second ``start``,
silence over ``[server] idle_timeout_s`` (1008); an unsupported media format (1003); a
message over ``[server] max_message_bytes`` (1009); the server full (1013).
"""

from __future__ import annotations

import base64
import binascii
import logging

from aiohttp import web

from streamer.serve.protocols import wire
from streamer.serve.transport import BaseProtocol, Media, Note, Start, Stop, WebSocketTransport, serve_call
from streamer.serve.http.websocket import AUTH, AUTHED, REGISTRY, prepare_ws

log = logging.getLogger(__name__)

TRACK_NAMES = {"inbound": "customer", "outbound": "agent"}
RATE = 8000
EVENTS = frozenset({"connected", "start", "media", "dtmf", "mark", "stop"})
SOURCE = "twilio"


def parse(text: str) -> dict:
    """One Twilio message: a JSON object with an ``event`` (ProtocolError otherwise).

    >>> parse('{"event": "stop", "streamSid": "MZ1"}')["event"]
    'stop'
    >>> parse('{"event": ').__class__
    Traceback (most recent call last):
    ...
    streamer.serve.protocols.wire.ProtocolError: malformed JSON (Expecting value at char 10)
    """
    msg = wire.loads(text, "malformed JSON")
    if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
        raise wire.ProtocolError(wire.BAD_DATA, "a Twilio message is a JSON object with an \"event\"")
    if msg["event"] not in EVENTS:
        raise wire.ProtocolError(wire.POLICY, f"unknown event {msg['event'][:40]!r} (known: {', '.join(sorted(EVENTS))})")
    return msg


def parse_start(msg: dict) -> dict:
    """The fields of a ``start`` message that matter (ProtocolError when unusable).

    >>> s = parse_start({"event": "start", "start": {"callSid": "CA1", "streamSid": "MZ1",
    ...     "tracks": ["inbound", "outbound"], "mediaFormat": {"encoding": "audio/x-mulaw",
    ...     "sampleRate": 8000, "channels": 1}, "customParameters": {"token": "t", "desk": "3"}}})
    >>> s["call_id"], s["tracks"], s["token"], s["params"]
    ('CA1', ['inbound', 'outbound'], 't', {'desk': '3'})
    """
    start = msg.get("start")
    if not isinstance(start, dict):
        raise wire.ProtocolError(wire.BAD_DATA, "start message without a \"start\" object")
    fmt = start.get("mediaFormat") or {}
    if not isinstance(fmt, dict):
        raise wire.ProtocolError(wire.BAD_DATA, "start.mediaFormat must be an object")
    encoding, rate, channels = fmt.get("encoding", "audio/x-mulaw"), fmt.get("sampleRate", RATE), fmt.get("channels", 1)
    if encoding != "audio/x-mulaw" or rate != RATE or channels != 1:
        raise wire.ProtocolError(wire.UNSUPPORTED, f"unsupported media format {encoding} {rate} Hz {channels} channel(s): "
                                 "Twilio streams audio/x-mulaw 8000 Hz mono")
    tracks = start.get("tracks", ["inbound"])
    if not isinstance(tracks, list) or not tracks or any(not isinstance(t, str) or t not in TRACK_NAMES for t in tracks):
        raise wire.ProtocolError(wire.POLICY, f"start.tracks {str(tracks)[:40]} : each must be inbound or outbound")
    params = start.get("customParameters") or {}
    if not isinstance(params, dict):
        raise wire.ProtocolError(wire.BAD_DATA, "start.customParameters must be an object")
    params = dict(params)
    token = params.pop("token", None)
    call_sid = start.get("callSid") or msg.get("callSid")
    stream_sid = start.get("streamSid") or msg.get("streamSid")
    return {"call_id": str(call_sid) if call_sid else None, "stream_sid": stream_sid, "tracks": list(dict.fromkeys(tracks)),
            "token": token if isinstance(token, str) else None, "params": params,
            "account_sid": start.get("accountSid")}


def payload_pcm(msg: dict, tracks: list[str]):
    """(track name, int16 PCM) of a ``media`` message (ProtocolError when bad)."""
    from streamer.serve.protocols.mulaw import decode

    media = msg.get("media")
    if not isinstance(media, dict):
        raise wire.ProtocolError(wire.BAD_DATA, "media message without a \"media\" object")
    track = media.get("track", "inbound")
    if not isinstance(track, str) or track not in TRACK_NAMES or track not in tracks:
        raise wire.ProtocolError(wire.POLICY, f"unknown track {str(track)[:40]!r} (this stream has {', '.join(tracks)})")
    payload = media.get("payload")
    if not isinstance(payload, str):
        raise wire.ProtocolError(wire.BAD_DATA, "media.payload must be a base64 string")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise wire.ProtocolError(wire.BAD_DATA, "media.payload is not valid base64") from None
    return TRACK_NAMES[track], decode(raw)


class TwilioProtocol(BaseProtocol):
    """Twilio's messages as the call loop's events (:mod:`streamer.serve.transport`)."""

    source = SOURCE

    def __init__(self) -> None:
        self.tracks: list[str] | None = None  # set by start

    def parse(self, message: str | bytes) -> list:
        if isinstance(message, bytes):
            raise wire.ProtocolError(wire.UNSUPPORTED, "a binary frame: Twilio sends JSON text messages")
        m = parse(message)
        event = m["event"]
        if event == "media":
            if self.tracks is None:
                raise wire.ProtocolError(wire.POLICY, "media before start")
            name, pcm = payload_pcm(m, self.tracks)
            return [Media(name, RATE, pcm)]
        if event == "start":
            if self.tracks is not None:
                raise wire.ProtocolError(wire.POLICY, "a second start message")
            s = parse_start(m)
            self.tracks = s["tracks"]
            meta = {"streamSid": s["stream_sid"], "accountSid": s["account_sid"], "customParameters": s["params"],
                    "twilio_tracks": self.tracks}
            return [Start(s["call_id"], meta, tuple(TRACK_NAMES[t] for t in self.tracks), s["token"], True,
                          "send it as <Parameter name=\"token\">, Authorization: Bearer or ?token=")]
        if event == "stop":
            if self.tracks is None:
                raise wire.ProtocolError(wire.POLICY, "stop before start")
            return [Stop(wire.NORMAL, "stream stopped", note="stop")]
        if event == "connected":
            if self.tracks is not None:
                raise wire.ProtocolError(wire.POLICY, "connected after start")
            return []
        return [Note(f"{event} {m.get(event)}")]  # dtmf, mark: nothing to analyse


async def twilio_handler(request: web.Request) -> web.WebSocketResponse:
    registry, auth = request.app[REGISTRY], request.app[AUTH]
    if not auth.twilio_signature_ok(request.headers, request.scheme, request.host, request.path_qs):
        registry.metrics.refused.labels(reason="twilio_signature").inc()
        log.warning("/twilio from %s: X-Twilio-Signature missing or wrong", request.remote)
        raise web.HTTPForbidden(text="X-Twilio-Signature missing or not Twilio's ([server] twilio_auth_token)\n")
    ws = await prepare_ws(request)
    authed = bool(request.get(AUTHED, not auth.required))
    await serve_call(WebSocketTransport(ws, registry, SOURCE, str(request.remote)), TwilioProtocol(), registry,
                     authed=authed, auth=auth)
    return ws

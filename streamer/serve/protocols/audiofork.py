"""``WS /audio-fork``: FreeSWITCH mod_audio_fork (WebSocket subprotocol ``audio.drachtio.org``).

``uuid_audio_fork <uuid> start <ws-url> <mix-type> <rate> <metadata>`` connects, sends the
metadata JSON as the first (text) frame, then binary L16: 16-bit little-endian PCM (the host's
order, as FreeSWITCH hands it over), 20 ms a frame. The metadata is the dialplan's own JSON, so
what it carries is agreed with whoever writes the dialplan; this server reads:

- ``sampleRate``: 8000 or 16000 (also ``"8k"``/``"16k"``), default 8000;
- ``channels``: 1 or 2, default 1 (``mixType: "stereo"`` also means 2);
- ``callId`` (else ``callSid``, as jambonz sends it): the call's id; none: a generated one.

Stereo is the caller on the left and the callee on the right: tracks ``customer`` and
``agent``. Mono is ``customer`` (mod_audio_fork's ``mono`` is the caller only), or ``mixed``
when ``mixType`` says so. Text frames after the metadata must be JSON and are ignored.

>>> f = parse_metadata('{"callId": "abc", "sampleRate": 16000, "channels": 2}')
>>> f.call_id, f.rate, f.tracks
('abc', 16000, ('customer', 'agent'))
>>> parse_metadata('{}').rate, parse_metadata('{}').tracks, parse_metadata('{}').call_id
(8000, ('customer',), None)
>>> import numpy as np
>>> left, right = split(np.array([1, -1, 2, -2], "<i2").tobytes(), 2)
>>> left.tolist(), right.tolist()
([1, 2], [-1, -2])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from aiohttp import web

from streamer.serve.transport import BaseProtocol, Media, Start, WebSocketTransport, serve_call
from streamer.serve.protocols.wire import BAD_DATA, UNSUPPORTED, ProtocolError, json_object, loads

log = logging.getLogger(__name__)

SOURCE = "audio-fork"
SUBPROTOCOL = "audio.drachtio.org"
RATES = (8000, 16000)
STEREO_TRACKS = ("customer", "agent")  # caller left, callee right


@dataclass(frozen=True)
class ForkFormat:
    rate: int = 8000
    channels: int = 1
    call_id: str | None = None
    tracks: tuple[str, ...] = ("customer",)
    meta: dict = field(default_factory=dict)


def _rate(value) -> int:
    if isinstance(value, str):
        v = value.strip().lower()
        value = {"8k": 8000, "16k": 16000}.get(v, v)
        try:
            value = int(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in RATES:
        raise ProtocolError(BAD_DATA, f"metadata sampleRate {value!r}: mod_audio_fork sends 8000 or 16000")
    return int(value)


def parse_metadata(text: str) -> ForkFormat:
    """The first frame's metadata JSON -> the stream's format and call id."""
    meta = json_object(text, "the metadata")
    rate = _rate(meta["sampleRate"]) if "sampleRate" in meta else 8000
    mix = str(meta.get("mixType", "")).lower()
    channels = meta.get("channels", 2 if mix == "stereo" else 1)
    if isinstance(channels, str) and channels.strip() in ("1", "2"):
        channels = int(channels)
    if isinstance(channels, bool) or channels not in (1, 2):
        raise ProtocolError(BAD_DATA, f"metadata channels {channels!r}: 1 (mono) or 2 (caller left, callee right)")
    call_id = meta.get("callId") or meta.get("callSid")
    tracks = STEREO_TRACKS if channels == 2 else (("mixed",) if mix == "mixed" else ("customer",))
    return ForkFormat(rate, int(channels), str(call_id) if call_id else None, tracks, meta)


def split(data: bytes, channels: int) -> list[np.ndarray]:
    """A binary L16 frame -> one int16 array per channel (interleaved when stereo)."""
    if len(data) % (2 * channels):
        raise ProtocolError(BAD_DATA, f"an audio frame of {len(data)} bytes is not whole 16-bit "
                            f"{'stereo' if channels == 2 else 'mono'} samples")
    x = np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)
    if channels == 1:
        return [x]
    return [x[0::2], x[1::2]]


class AudioForkProtocol(BaseProtocol):
    """mod_audio_fork's frames as the call loop's events (:mod:`streamer.serve.transport`)."""

    source = SOURCE

    def __init__(self) -> None:
        self.fmt: ForkFormat | None = None  # from the metadata, the first frame

    def parse(self, message: str | bytes) -> list:
        if self.fmt is None:
            if not isinstance(message, str):
                raise ProtocolError(UNSUPPORTED, "the first message must be the metadata JSON (text), then binary L16")
            self.fmt = parse_metadata(message)
            return [Start(self.fmt.call_id, self.fmt.meta, tuple(self.fmt.tracks))]
        if isinstance(message, str):
            loads(message, "a text frame that is not JSON")
            return []
        return [Media(t, self.fmt.rate, x) for t, x in zip(self.fmt.tracks, split(message, self.fmt.channels))]


async def audiofork_handler(request: web.Request) -> web.WebSocketResponse:
    """``GET /audio-fork`` (the token was checked by the app's middleware)."""
    from streamer.serve.http.websocket import REGISTRY, prepare_ws

    registry = request.app[REGISTRY]
    ws = await prepare_ws(request, protocols=(SUBPROTOCOL,))
    await serve_call(WebSocketTransport(ws, registry, SOURCE, str(request.remote)), AudioForkProtocol(), registry)
    return ws


routes = [web.get("/audio-fork", audiofork_handler)]

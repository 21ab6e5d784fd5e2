"""``WS /vosk``: the vosk-server WebSocket protocol, so that its existing clients work unchanged.

What alphacep/vosk-server's ``websocket/asr_server.py`` does, and so what this does:

- an optional text ``{"config": {"sample_rate": N, "words": bool, ...}}`` gets no reply; the
  rate defaults to 8000 (``VOSK_SAMPLE_RATE``) and words to true (``VOSK_SHOW_WORDS``); the other
  keys (``phrase_list``, ``max_alternatives``) are accepted and have no effect here;
- binary messages are 16-bit little-endian mono PCM at that rate; every one gets exactly one JSON
  reply: ``{"partial": "..."}``, or ``{"result": [{"word", "start", "end", "conf"}], "text": "..."}``
  when an utterance has closed (``result`` only with words on), in seconds from the first audio;
- ``{"eof" : 1}`` gets the final result (everything still held is finished first), then a close;
- ``{"reset" : 1}`` gets the final result of what came so far, and the recogniser starts afresh
  (here: a new track of the same call, ``speaker``, ``speaker-2``, ...).

Results also carry ``"emotion"``: the utterance's ``label``, ``emoji``, ``confidence``,
``uncertain``, fused ``probs`` and ``dims`` (arousal/valence per branch). A final result that
closes several utterances at once joins their words and text; ``emotion`` is the last one's and
``utterances`` lists each (start, end, text, emotion). With ``[live] log_transcript = false`` the
text is withheld here too (``text`` is empty).

A config that comes after audio is ignored (the recogniser exists), as vosk-server does.

>>> opts = parse_command('{"config": {"sample_rate": 16000, "words": false}}', VoskOptions())
>>> opts
('config', VoskOptions(sample_rate=16000, words=False))
>>> parse_command('{"eof" : 1}', VoskOptions())[0], parse_command('{"reset" : 1}', VoskOptions())[0]
('eof', 'reset')
>>> r = Replies(words=True)
>>> r.next("hello wor")
{'partial': 'hello wor'}
>>> r.add({"type": "utterance", "track": "speaker", "transcript": "hello world", "label": "happy",
...        "emoji": ":)", "confidence": 0.8, "uncertain": False, "probs": {"fused": {"happy": 0.8, "sad": 0.2}},
...        "dims": {}, "start_s": 0.5, "end_s": 1.5,
...        "words": [{"word": "hello", "start_s": 0.5, "end_s": 0.9, "conf": 0.9},
...                  {"word": "world", "start_s": 0.9, "end_s": 1.5, "conf": 0.8}]})
>>> msg = r.next("")
>>> msg["text"], [w["word"] for w in msg["result"]], msg["result"][1]["start"], msg["emotion"]["label"]
('hello world', ['hello', 'world'], 0.9, 'happy')
>>> r.final()
{'result': [], 'text': ''}
"""

from __future__ import annotations

import json
import logging
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from aiohttp import web

from streamer.serve.transport import BaseProtocol, Media, Note, Start, Stop, WebSocketTransport, serve_call
from streamer.serve.protocols.wire import BAD_DATA, NORMAL, POLICY, ProtocolError, json_object

log = logging.getLogger(__name__)

SOURCE = "vosk"
TRACK = "speaker"
DEFAULT_RATE = 8000  # vosk-server's VOSK_SAMPLE_RATE default
MIN_RATE, MAX_RATE = 8000, 48000


@dataclass(frozen=True)
class VoskOptions:
    sample_rate: int = DEFAULT_RATE
    words: bool = True


def parse_command(text: str, current: VoskOptions) -> tuple[str, VoskOptions]:
    """A text message: ``("config", new options)``, ``("eof", current)`` or ``("reset", current)``."""
    obj = json_object(text, "a text message", ": config, eof or reset")
    if "config" in obj:
        return "config", parse_config(obj["config"], current)
    if obj.get("eof") == 1:
        return "eof", current
    if obj.get("reset") == 1:
        return "reset", current
    raise ProtocolError(POLICY, f"unknown message {sorted(obj)[:3]}: send config, eof or reset (or binary audio)")


def parse_config(cfg, current: VoskOptions) -> VoskOptions:
    if not isinstance(cfg, dict):
        raise ProtocolError(BAD_DATA, "config must be an object, e.g. {\"config\": {\"sample_rate\": 16000}}")
    opts = current
    if "sample_rate" in cfg:
        rate = cfg["sample_rate"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not MIN_RATE <= rate <= MAX_RATE \
                or rate != int(rate):  # the range first: int() of NaN or infinity raises
            raise ProtocolError(BAD_DATA, f"config sample_rate {rate!r}: give whole Hz between {MIN_RATE} and {MAX_RATE}")
        opts = replace(opts, sample_rate=int(rate))
    if "words" in cfg:
        opts = replace(opts, words=bool(cfg["words"]))
    return opts


def pcm(data: bytes) -> np.ndarray:
    """A binary message as int16 samples (little-endian, as vosk's clients send)."""
    if len(data) % 2:
        raise ProtocolError(BAD_DATA, f"an audio message of {len(data)} bytes: 16-bit PCM has an even length")
    return np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)


def emotion(record: dict) -> dict:
    """The ``emotion`` object of a reply, from an utterance record."""
    probs = record.get("probs") or {}
    return {"label": record.get("label"), "emoji": record.get("emoji"), "confidence": record.get("confidence"),
            "uncertain": record.get("uncertain"), "probs": probs.get("fused", probs), "dims": record.get("dims") or {}}


def result_message(records: list[dict], words: bool) -> dict:
    """vosk's result object for closed utterances (none: the empty result)."""
    ws = [w for r in records for w in (r.get("words") or [])]
    text = " ".join(t for r in records if (t := (r.get("transcript") or "").strip()))
    msg: dict = {}
    if words:
        msg["result"] = [{"word": w["word"], "start": w["start_s"], "end": w["end_s"], "conf": w["conf"]} for w in ws]
    msg["text"] = text
    if records:
        msg["emotion"] = emotion(records[-1])
    if len(records) > 1:
        msg["utterances"] = [{"start": r.get("start_s"), "end": r.get("end_s"), "text": r.get("transcript") or "",
                              "emotion": emotion(r)} for r in records]
    return msg


class Replies:
    """The utterances closed but not yet told, and the reply to the next audio message."""

    def __init__(self, words: bool = True) -> None:
        self.words = words
        self.pending: deque[dict] = deque()

    def add(self, record: dict) -> None:
        self.pending.append(record)

    def next(self, partial: str) -> dict:
        if self.pending:
            return result_message([self.pending.popleft()], self.words)
        return {"partial": partial}

    def final(self) -> dict:
        records = list(self.pending)
        self.pending.clear()
        return result_message(records, self.words)


# --- the protocol over the call loop ---------------------------------------------------------

class Reset:
    """Event: ``{"reset" : 1}``: what came so far is final; the next audio starts a new track."""


class VoskProtocol(BaseProtocol):
    """vosk-server's messages as the call loop's events (:mod:`streamer.serve.transport`), and
    its replies: one per audio message, the final result on ``eof`` and ``reset``."""

    source = SOURCE
    partials = True  # every audio message gets the partial text
    answers_each_message = True  # a client sending a file fast is slowed to the pace, never cut

    def __init__(self, registry, meta: dict | None = None, call_id: str | None = None) -> None:
        self.registry = registry
        self.meta, self.call_id = meta or {}, call_id
        self.opts = VoskOptions()
        self.replies = Replies(self.opts.words)
        self.track, self.resets, self.audio = TRACK, 0, False
        self.sub = None

    def at_connect(self) -> list:
        return [Start(self.call_id, self.meta, (TRACK,))]

    async def opened(self, call) -> None:
        self.sub = self.registry.subscribe(call.id)

    def parse(self, message: str | bytes) -> list:
        if isinstance(message, bytes):
            self.audio = True
            return [Media(self.track, self.opts.sample_rate, pcm(message))]
        kind, new = parse_command(message, self.opts)
        if kind == "config":
            if self.audio:
                return [Note("vosk: a config after audio is ignored, as vosk-server does", logging.INFO)]
            self.opts = new
            self.replies.words = new.words
            return []
        if kind == "eof":
            return [Stop(NORMAL, "eof")]
        return [Reset()]

    def _collect(self) -> None:
        for ev in self.sub.pending():
            if ev.get("type") == "utterance" and ev.get("track") == self.track:
                self.replies.add(ev)

    async def after(self, call, events: list) -> list[str]:
        if any(isinstance(e, Media) for e in events):
            self._collect()
            return [json.dumps(self.replies.next(call.partial(self.track)))]
        if any(isinstance(e, Reset) for e in events):
            runner = call.runners.get(self.track)
            if runner is not None:  # finish the track's held audio: its utterances close
                await self.registry.in_thread(runner.close)
            self._collect()
            final = self.replies.final()
            self.resets += 1
            self.track, self.audio = f"{TRACK}-{self.resets + 1}", False
            return [json.dumps(final)]
        return []

    async def final(self, call) -> list[str]:
        self._collect()
        return [json.dumps(self.replies.final())]

    def done(self) -> None:
        if self.sub is not None:
            self.registry.unsubscribe(self.sub)
            self.sub = None


async def vosk_handler(request: web.Request) -> web.WebSocketResponse:
    """``GET /vosk`` (the token was checked by the app's middleware)."""
    from streamer.serve.http.websocket import REGISTRY, prepare_ws

    registry = request.app[REGISTRY]
    ws = await prepare_ws(request)
    await serve_call(WebSocketTransport(ws, registry, SOURCE, str(request.remote)),
                     VoskProtocol(registry, {"peer": request.remote}), registry)
    return ws


routes = [web.get("/vosk", vosk_handler)]

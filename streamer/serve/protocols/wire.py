"""What the WebSocket protocol handlers share: close codes, the error that closes a call, and a
WebSocket response whose every close carries a reason.

A handler raises :class:`ProtocolError` (code and reason) for bad input; the loop around it
closes the socket with that code and reason, and the call ends with that error. Close codes
(RFC 6455, section 7.4.1), as the handlers use them:

====  ==================  ===========================================================
1000  NORMAL              the stream ended (``stop``, ``{"eof" : 1}``, hangup)
1001  GOING_AWAY          the server is shutting down
1003  UNSUPPORTED         a binary frame where text is expected, or the reverse
1007  BAD_DATA            malformed JSON, bad base64, bad metadata, a bad audio length
1008  POLICY              wrong or missing token, unknown events or tracks, out of order
1009  TOO_BIG             a message over ``[server] max_message_bytes``
1011  INTERNAL            the server failed (its log says why)
1013  TRY_LATER           the server is full (``[server] max_calls``)
====  ==================  ===========================================================

>>> close_reason("x" * 200).__len__() <= 123
True
>>> ProtocolError(BAD_DATA, "not JSON").code
1007
"""

from __future__ import annotations

import asyncio
import json
import re

from aiohttp import WSMsgType, web

NORMAL, GOING_AWAY, UNSUPPORTED, BAD_DATA, POLICY, TOO_BIG, INTERNAL, TRY_LATER = (
    1000, 1001, 1003, 1007, 1008, 1009, 1011, 1013)

_MAX_REASON = 123  # bytes: a close frame's payload is at most 125, two of them the code


class ProtocolError(Exception):
    """Bad input from the platform: close the socket with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def _finite(text: str) -> float:
    x = float(text)
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:20]} is out of range")
    return x


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _unpaired_surrogate(obj) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def loads(text: str, what: str):
    """``text`` as JSON, or :class:`ProtocolError` (1007: ``what`` and why): malformed JSON, and
    also what Python's decoder takes but a log cannot keep or the decoder cannot finish: NaN
    and infinities (``NaN``, ``1e999``), an integer of more than 4300 digits, nesting deeper
    than the interpreter recurses, an escaped lone surrogate (``"\\ud800"``, not UTF-8).

    >>> loads('{"a": [1, 2.5]}', "x")
    {'a': [1, 2.5]}
    >>> for bad in ('{"a": ', '[NaN]', '1e999', '"\\\\ud800"'):
    ...     try:
    ...         loads(bad, "the metadata is not JSON")
    ...     except ProtocolError as exc:
    ...         print(exc.code, exc.reason)
    1007 the metadata is not JSON (Expecting value at char 6)
    1007 the metadata is not JSON (NaN is not JSON)
    1007 the metadata is not JSON (the number 1e999 is out of range)
    1007 the metadata is not JSON (a lone surrogate escape is not UTF-8)

    Deep nesting is refused too: "nested too deeply", or, where something in the process raised
    the recursion limit, the unfinished value it leaves:

    >>> try:
    ...     loads('[' * 5000, "x")
    ... except ProtocolError as exc:
    ...     print(exc.code)
    1007
    """
    try:
        obj = json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ProtocolError(BAD_DATA, f"{what} ({exc.msg} at char {exc.pos})") from None
    except ValueError as exc:  # a hook's, or an integer over sys.get_int_max_str_digits()
        raise ProtocolError(BAD_DATA, f"{what} ({str(exc)[:60]})") from None
    except RecursionError:
        raise ProtocolError(BAD_DATA, f"{what} (nested too deeply)") from None
    if _SURROGATE_ESCAPE.search(text) and _unpaired_surrogate(obj):  # a pair is one character: fine
        raise ProtocolError(BAD_DATA, f"{what} (a lone surrogate escape is not UTF-8)")
    return obj


def json_object(text: str, what: str, expected: str = "") -> dict:
    """``text`` as a JSON object (``what`` names it in the error; ``expected`` says which).

    >>> json_object('{"a": 1}', "the metadata")
    {'a': 1}
    >>> json_object('[1]', "a text message", ": config, eof or reset")
    Traceback (most recent call last):
    ...
    streamer.serve.protocols.wire.ProtocolError: a text message must be a JSON object: config, eof or reset
    """
    obj = loads(text, f"{what} is not JSON")
    if not isinstance(obj, dict):
        raise ProtocolError(BAD_DATA, f"{what} must be a JSON object{expected}")
    return obj


def close_reason(text: str) -> bytes:
    """``text`` as a close frame's reason: UTF-8, cut to 123 bytes on a character boundary."""
    raw = text.encode("utf-8")
    if len(raw) <= _MAX_REASON:
        return raw
    return raw[:_MAX_REASON].decode("utf-8", "ignore").encode("utf-8")


class ReasonedWebSocket(web.WebSocketResponse):
    """aiohttp closes a socket itself when a message is too big or a frame is malformed, and
    then gives no reason: this one names it."""

    def __init__(self, *args, max_msg_size: int = 1_048_576, **kwargs) -> None:
        super().__init__(*args, max_msg_size=max_msg_size, **kwargs)
        self._limit = max_msg_size

    async def close(self, *, code: int = NORMAL, message: bytes = b"", drain: bool = True) -> bool:
        if not message and code == TOO_BIG:
            message = close_reason(f"a message over {self._limit} bytes ([server] max_message_bytes)")
        elif not message and code not in (NORMAL, GOING_AWAY):
            # aiohttp's frame reader refused a frame (a text frame not UTF-8, a bad opcode, reserved
            # bits): it closes with the code alone and keeps its error to itself, so say what the code means
            error = self.exception()
            message = close_reason(str(error) if error else _FRAME_ERRORS.get(code, "bad WebSocket frame"))
        return await super().close(code=code, message=message, drain=drain)


_FRAME_ERRORS = {1002: "WebSocket protocol error (a bad opcode, reserved bits or a bad control frame)",
                 1007: "a text frame that is not UTF-8"}


async def receive(ws: web.WebSocketResponse, idle_s: float):
    """The next data message (TEXT or BINARY); None when the peer closed or the socket failed.
    Raises :class:`ProtocolError` when nothing came for ``idle_s`` seconds."""
    try:
        msg = await ws.receive(timeout=idle_s)
    except asyncio.TimeoutError:
        raise ProtocolError(POLICY, f"nothing received for {idle_s:g} s ([server] idle_timeout_s)") from None
    if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
        return msg
    return None  # CLOSE, CLOSING, CLOSED or ERROR (aiohttp has closed it, with a reason above)


async def close(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    if not ws.closed:
        await ws.close(code=code, message=close_reason(reason))


def peer_error(ws: web.WebSocketResponse) -> str | None:
    """After :func:`receive` gave None: what went wrong if the close was not a normal one."""
    if ws.close_code not in (None, NORMAL, GOING_AWAY):
        return f"connection closed with {ws.close_code}: {ws.exception() or 'no reason'}"
    return None


ENDED_BY_SERVER = (GOING_AWAY, "the call was ended by the server (shutting down)")

"""ser-serve's aiohttp application behind an ASGI server (the Ray Serve gateway's FastAPI ingress).

The endpoints stay written once, as aiohttp handlers (:mod:`streamer.serve.http.app`, the protocol
modules, :mod:`streamer.serve.desk.routes`). :class:`Bridge` serves an ASGI connection with them:
it resolves the path on the aiohttp app's own router, runs the app's middlewares (the token
check, the desk's cookie) around the handler, and hands the handler a :class:`Request` that
offers the parts of ``aiohttp.web.Request`` they use. A WebSocket handler's
:func:`~streamer.serve.http.websocket.prepare_ws` then gets a :class:`WebSocket`, which offers the parts
of ``aiohttp.web.WebSocketResponse`` they use over the ASGI socket (Starlette's), so each
call's socket is served where it was accepted, with no hop in between.

An HTTP response (``web.Response``, an ``HTTPException``, a file) becomes a Starlette one.
A refusal before a WebSocket is accepted (a wrong token: 401) is sent as an HTTP response
where the server offers ASGI's ``websocket.http.response`` extension, else the handshake
is closed with 1008 and the reason.

>>> _cut_headers({"Content-Length": "3", "X-A": "1", "Transfer-Encoding": "chunked"})
[('X-A', '1')]
"""

from __future__ import annotations

import asyncio
import logging
from collections import namedtuple
from functools import partial
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from yarl import URL

from streamer.serve.protocols import wire

log = logging.getLogger(__name__)

Message = namedtuple("Message", "type data extra")  # aiohttp's WSMessage, as the handlers read it
_CLOSED = Message(WSMsgType.CLOSED, None, None)
_HOP = frozenset({"content-length", "transfer-encoding", "connection"})


def _cut_headers(headers) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers.items() if k.lower() not in _HOP]


class Request:
    """The parts of ``aiohttp.web.Request`` ser-serve's handlers use, over an ASGI connection
    (a Starlette ``Request`` or ``WebSocket``)."""

    def __init__(self, app: web.Application, conn, body: bytes = b"", headers=None) -> None:
        self.app = app
        self._conn = conn
        scope = conn.scope
        self.method = scope.get("method", "GET")
        self.path = scope.get("path", "/")
        query = scope.get("query_string", b"").decode("latin-1")
        self.rel_url = URL.build(path=self.path, query_string=query, encoded=False)
        self.path_qs = self.path + (f"?{query}" if query else "")
        self.query = MultiDictProxy(MultiDict(parse_qsl(query, keep_blank_values=True)))
        self.headers = headers if headers is not None else CIMultiDictProxy(CIMultiDict(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", [])))
        client = scope.get("client")
        self.remote = client[0] if client else None
        self.scheme = {"wss": "https", "ws": "http"}.get(scope.get("scheme", "http"), scope.get("scheme", "http"))
        self.secure = self.scheme == "https"
        self.host = self.headers.get("Host", "")
        self.match_info: web.UrlMappingMatchInfo | None = None
        self._body = body
        self._state: dict = {}
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie", ""))
        except Exception:  # a malformed Cookie header: none
            pass
        self.cookies = MultiDictProxy(MultiDict({k: m.value for k, m in cookie.items()}))
        self.websocket: WebSocket | None = None

    # the request's own state (aiohttp's request is a mapping: request[AUTHED])
    def __getitem__(self, key):
        return self._state[key]

    def __setitem__(self, key, value) -> None:
        self._state[key] = value

    def get(self, key, default=None):
        return self._state.get(key, default)

    def clone(self, *, headers=None) -> "Request":
        other = Request(self.app, self._conn, self._body,
                        None if headers is None else CIMultiDictProxy(CIMultiDict(headers)))
        other.match_info, other._state, other.websocket = self.match_info, self._state, self.websocket
        return other

    async def post(self) -> MultiDictProxy:
        """The form of an ``application/x-www-form-urlencoded`` body (the desk's sign-in)."""
        return MultiDictProxy(MultiDict(parse_qsl(self._body.decode("utf-8", "replace"), keep_blank_values=True)))

    async def read(self) -> bytes:
        return self._body

    async def accept_websocket(self, *, max_msg_size: int = 1_048_576, timeout: float = 2.0,
                               protocols: tuple[str, ...] = ()) -> "WebSocket":
        """What :func:`~streamer.serve.http.websocket.prepare_ws` does for an ASGI socket."""
        if self.websocket is None:
            raise web.HTTPBadRequest(text="this path takes a WebSocket\n")
        asked = self._conn.scope.get("subprotocols") or []
        chosen = next((p for p in protocols if p in asked), None)
        await self._conn.accept(subprotocol=chosen)
        self.websocket.accepted, self.websocket.limit = True, max_msg_size
        return self.websocket


class WebSocket:
    """The parts of ``aiohttp.web.WebSocketResponse`` the protocol handlers use, over an ASGI
    socket: ``receive(timeout)``, ``async for``, ``send_str``, ``close(code, message)``,
    ``closed``, ``close_code`` and ``exception()``. A message over ``limit`` bytes closes
    the socket with 1009, naming the limit, as aiohttp does."""

    def __init__(self, conn) -> None:
        self._conn = conn
        self.accepted = False
        self.limit = 1_048_576
        self.closed = False
        self.close_code: int | None = None
        self._exc: Exception | None = None

    def exception(self) -> Exception | None:
        return self._exc

    async def receive(self, timeout: float | None = None) -> Message:
        if self.closed:
            return _CLOSED
        try:
            msg = await asyncio.wait_for(self._conn.receive(), timeout)  # TimeoutError: the caller's
        except asyncio.TimeoutError:
            raise
        except Exception as exc:  # the connection failed under us
            self.closed, self.close_code, self._exc = True, 1006, exc
            return _CLOSED
        kind = msg.get("type")
        if kind == "websocket.disconnect":
            self.closed, self.close_code = True, int(msg.get("code") or 1005)
            reason = msg.get("reason")
            if reason:
                self._exc = ConnectionError(reason)
            return Message(WSMsgType.CLOSE, self.close_code, reason)
        text, data = msg.get("text"), msg.get("bytes")
        size = len(text.encode("utf-8")) if text is not None else len(data or b"")
        if self.limit and size > self.limit:
            self._exc = ValueError(f"a message of {size} bytes, over {self.limit}")
            await self.close(code=wire.TOO_BIG,
                             message=wire.close_reason(f"a message over {self.limit} bytes ([server] max_message_bytes)"))
            return Message(WSMsgType.CLOSE, wire.TOO_BIG, None)
        if text is not None:
            return Message(WSMsgType.TEXT, text, None)
        return Message(WSMsgType.BINARY, data or b"", None)

    def __aiter__(self):
        return self

    async def __anext__(self) -> Message:
        msg = await self.receive()
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            raise StopAsyncIteration
        return msg

    async def send_str(self, data: str) -> None:
        if self.closed:
            raise ConnectionResetError("the WebSocket is closed")
        try:
            await self._conn.send_text(data)
        except Exception as exc:  # the peer went away (Starlette raises its own errors)
            self.closed, self.close_code = True, self.close_code or 1006
            raise ConnectionResetError(str(exc) or "the peer went away") from exc

    async def close(self, *, code: int = wire.NORMAL, message: bytes = b"") -> bool:
        if self.closed:
            return False
        self.closed, self.close_code = True, code
        try:
            await self._conn.close(code=code, reason=message.decode("utf-8", "replace") if message else None)
        except Exception:  # gone already
            pass
        return True


def _to_asgi(resp: web.StreamResponse):
    """A Starlette response for the handler's aiohttp one."""
    from starlette.responses import FileResponse, Response

    headers = _cut_headers(resp.headers)
    cookies = [("Set-Cookie", m.OutputString()) for m in resp.cookies.values()]
    path = getattr(resp, "path_on_disk", None)  # set by the desk's file responses
    if path is not None:
        out = FileResponse(Path(path), status_code=resp.status)
    elif isinstance(resp, web.Response) and isinstance(resp.body, (bytes, bytearray, type(None))):
        out = Response(bytes(resp.body or b""), status_code=resp.status)
    else:  # a streamed response: ser-serve's handlers make none
        raise TypeError(f"the ASGI bridge cannot send a {type(resp).__name__} (give desk.file_response a path)")
    out.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                       for k, v in [*_without(out.raw_headers, headers), *headers, *cookies]]
    return out


def _without(raw: list[tuple[bytes, bytes]], ours: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Starlette's own headers (length, type) that the handler did not set itself."""
    names = {k.lower() for k, _ in ours}
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw if k.decode("latin-1") not in names]


class Bridge:
    """Serve ASGI connections with an aiohttp application's routes and middlewares.
    ``start()`` runs the app's startup signals (the desk's alert runner); ``stop()`` its
    shutdown (every call finished and logged) and cleanup."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._started = False
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            if not self._started:
                self.app.freeze()
                await self.app.startup()
                self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self.app.shutdown()
            await self.app.cleanup()

    async def _dispatch(self, request: Request) -> web.StreamResponse:
        await self.start()
        match = await self.app.router.resolve(request)
        request.match_info = match
        handler = match.handler
        for mw in reversed(self.app.middlewares):
            handler = partial(mw, handler=handler)
        try:
            return await handler(request)
        except web.HTTPException as exc:
            return exc

    async def http(self, conn) -> object:
        """An HTTP request (a Starlette ``Request``) -> a Starlette response."""
        body = await conn.body()
        resp = await self._dispatch(Request(self.app, conn, body))
        return _to_asgi(resp)

    async def websocket(self, conn) -> None:
        """A WebSocket connection (a Starlette ``WebSocket``), served by the app's handler for its path."""
        from streamer.serve.http.websocket import SOCKETS

        request = Request(self.app, conn)
        request.websocket = ws = WebSocket(conn)
        self.app[SOCKETS].add(ws)
        try:
            resp = await self._dispatch(request)
        except Exception:
            log.exception("%s: the handler failed", request.path)
            if not ws.accepted:
                await conn.close(code=wire.INTERNAL)
            elif not ws.closed:
                await ws.close(code=wire.INTERNAL, message=b"internal server error (see the server's log)")
            return
        if not ws.accepted:  # refused before the handshake: 401, 403, 404 ...
            await self._refuse(conn, resp)

    async def _refuse(self, conn, resp: web.StreamResponse) -> None:
        text = (getattr(resp, "text", None) or resp.reason or "refused").strip()
        if "websocket.http.response" in (conn.scope.get("extensions") or {}):
            await conn.send_denial_response(_to_asgi(resp))
            return
        await conn.close(code=wire.POLICY, reason=wire.close_reason(f"{resp.status}: {text}").decode("utf-8"))

"""What the server's application and every protocol handler share: the application's keys (the
call registry, the token checker, the open sockets), JSON as the feeds write it, and the
WebSocket a handler opens (:func:`prepare_ws`) and closes with a code and a reason
(:func:`close_ws`)."""

from __future__ import annotations

import json
import weakref

from aiohttp import web

from streamer.serve.protocols import wire
from streamer.serve.http.auth import Auth
from streamer.serve.calls.registry import CallRegistry

REGISTRY = web.AppKey("registry", CallRegistry)
AUTH = web.AppKey("auth", Auth)
SOCKETS = web.AppKey("sockets", weakref.WeakSet)
AUTHED = web.RequestKey("authed", bool)  # the handshake carried a good token (or none is needed)


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)


async def prepare_ws(request: web.Request, **kwargs) -> web.WebSocketResponse:
    """A WebSocket for a protocol handler: messages over ``[server] max_message_bytes`` are
    refused by aiohttp (close 1009); the socket is closed (1001) when the server shuts down."""
    registry = request.app[REGISTRY]
    kwargs.setdefault("max_msg_size", registry.cfg.server.max_message_bytes)
    kwargs.setdefault("timeout", 2.0)  # a peer that does not answer our close frame is cut after this
    if hasattr(request, "accept_websocket"):  # served through the ASGI bridge (a Ray Serve gateway)
        return await request.accept_websocket(**kwargs)
    ws = wire.ReasonedWebSocket(**kwargs)  # a too-big message's close (1009) names the limit
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    return ws


async def close_ws(ws: web.WebSocketResponse, code: int, reason: str, registry: CallRegistry | None = None,
                   source: str = "") -> None:
    """Close with ``code`` and ``reason`` (cut to the 123 bytes a close frame holds); counted."""
    if registry is not None and code not in (1000, 1001):
        registry.metrics.closed.labels(source=source, code=str(code)).inc()
    data = reason.encode("utf-8")[:123]
    try:
        await ws.close(code=code, message=data)
    except Exception:  # the peer is gone already
        pass

"""ser-serve's HTTP and WebSocket endpoints, all on one port (aiohttp).

- ``GET /healthz`` (no token): ``{"status": "ok" | "degraded" | "shutting_down", "bus": {...}, ...}``.
- ``GET /metrics``: Prometheus text (:mod:`streamer.serve.http.metrics`).
- ``GET /api/calls``: active calls and those that ended in the last ``[server] keep_ended_min``
  minutes; ``GET /api/calls/{id}``: one call's windows and utterances so far.
- ``WS /events``: every call's ``call_start``, ``window``, ``utterance``, ``call_end`` and
  ``error`` events, one JSON text message each (``?call_id=ID`` follows one call). An event
  is the call log's record plus ``call_id`` and ``track``; window events also carry
  ``feed_latency_ms`` (the window's close to this event, which the log cannot know).
- ``WS /twilio``: Twilio Media Streams (:mod:`streamer.serve.protocols.twilio`).
- Protocol modules that define ``routes`` (a list of ``aiohttp.web.RouteDef``) are mounted too:
  :data:`PROTOCOL_MODULES` (``/vosk``, ``/audio-fork``). Their handlers reach the registry as
  ``request.app[REGISTRY]`` and open their WebSocket with
:func:`streamer.serve.http.websocket.prepare_ws`.

The token (:mod:`streamer.serve.http.auth`) is checked by a middleware for every path but
``/healthz``: a wrong token is 401; a missing one is 401 too, except on ``/twilio`` whose
start message may carry it (``request[AUTHED]`` says whether the handshake had it).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import weakref

from aiohttp import WSCloseCode, web

from streamer.serve.http.auth import Auth
from streamer.serve.bus import BusError
from streamer.serve.calls.feed import stalled, too_slow
from streamer.serve.calls.registry import CallRegistry
from streamer.serve.http.metrics import CONTENT_TYPE
from streamer.serve.http.websocket import AUTH, AUTHED, REGISTRY, SOCKETS, close_ws, dumps, prepare_ws
from streamer.serve.protocols.wire import POLICY

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz"})
TOKEN_IN_MESSAGE = frozenset({"/twilio"})  # a missing handshake token may come in the first message
PROTOCOL_MODULES = ("streamer.serve.protocols.vosk", "streamer.serve.protocols.audiofork")


def make_auth_middleware(auth: Auth):
    @web.middleware
    async def check_token(request: web.Request, handler):
        if request.path in OPEN_PATHS:
            return await handler(request)
        status = auth.check(request.headers, request.query)
        if status == "wrong" or (status == "missing" and request.path not in TOKEN_IN_MESSAGE):
            registry = request.app[REGISTRY]
            registry.metrics.unauthorized.labels(path=request.path if request.match_info.route.resource else "other").inc()
            log.warning("%s %s from %s: %s token", request.method, request.path, request.remote, status)
            raise web.HTTPUnauthorized(text=f"{status} token: send Authorization: Bearer TOKEN or ?token=TOKEN\n",
                                       headers={"WWW-Authenticate": 'Bearer realm="ser-serve"'})
        request[AUTHED] = status in ("ok", "off")
        return await handler(request)

    return check_token


# --- handlers ---------------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    """200 while the server answers, whatever the bus: ``status`` is ``ok``, ``degraded`` (the
    results bus is down or catching up: the calls go on and are logged, new calls are refused
    until Redis is back, the desk is behind; ``bus`` says how) or ``shutting_down``. Not 503:
    a liveness probe must not restart a server whose calls are fine because Redis went away
    (it would cut every call); a readiness check reads ``status``."""
    registry = request.app[REGISTRY]
    bus = registry.bus.health()
    status = "shutting_down" if not registry.accepting else ("ok" if bus["state"] == "up" else "degraded")
    return web.json_response({"status": status, "bus": bus,
                              "active_calls": len(registry.active_calls), "max_calls": registry.cfg.server.max_calls,
                              "models": registry.models.names}, dumps=dumps)


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    return web.Response(body=registry.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def list_calls(request: web.Request) -> web.Response:
    """Every call on the bus: this process's own, and with Redis every replica's."""
    registry = request.app[REGISTRY]
    try:
        rows = await registry.bus_listing()
    except BusError as exc:
        raise web.HTTPServiceUnavailable(text=f"the results bus is unavailable: {exc}\n") from None
    active = len(registry.active_calls)
    if registry.bus.kind != "local":  # every replica's
        active = sum(1 for r in rows if r.get("state") in ("active", "ending"))
    return web.json_response({"calls": rows, "active": active, "here": len(registry.active_calls), "max_calls": registry.cfg.server.max_calls,
                              "bus": registry.bus.kind, "keep_ended_min": registry.cfg.server.keep_ended_min},
                             dumps=dumps)


async def get_call(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    call = registry.get(request.match_info["id"])
    if call is None and registry.bus.kind != "local":  # held by another replica: its row from the bus
        try:
            row = await registry.bus.row(request.match_info["id"])
        except BusError as exc:
            raise web.HTTPServiceUnavailable(text=f"the results bus is unavailable: {exc}\n") from None
        if row is not None:
            return web.json_response({**row, "windows": None, "utterances": None,
                                      "note": f"held by replica {row.get('owner')}: the bus keeps its row, "
                                              "not its windows"}, dumps=dumps)
    if call is None:
        raise web.HTTPNotFound(text=f"no call {request.match_info['id']!r} (active, or ended in the last "
                                    f"{registry.cfg.server.keep_ended_min:g} minutes)\n")
    return web.json_response(call.detail(), dumps=dumps)


async def events(request: web.Request) -> web.WebSocketResponse:
    """The live feed; a slow reader loses its own oldest events (counted), nobody else's,
    and past the bounds of ``registry.feed_limits`` (events lost, a send waiting, bytes
    unread in its socket) it is closed with 1008 and a reason that begins "too slow".
    With Redis it follows the desk's stream (every replica's calls); ``?since=<bus_id>``
    resumes after an event already seen. With ``[server] feed_max_s`` the socket is closed
    (1001) after that long, so that a gateway replica being scaled down is held by its calls only."""
    registry = request.app[REGISTRY]
    limits = registry.feed_limits
    ws = await prepare_ws(request)
    remote = registry.bus.kind != "local"
    call_id, since = request.query.get("call_id") or None, request.query.get("since") or None
    if not remote:
        sub = registry.subscribe(call_id, maxsize=limits.queue)
    else:  # from an event seen (its own reader), or from now (the process's one shared reader)
        try:
            sub = registry.bus.follow(call_id, since=since) if since else await registry.bus.subscribe(call_id)
        except BusError as exc:
            log.warning("/events: %s", exc)
            await close_ws(ws, WSCloseCode.INTERNAL_ERROR, f"results bus unavailable: {exc}")
            return ws

    async def reader() -> None:  # the client sends nothing we need; notice when it goes
        async for _ in ws:
            pass
        sub.close()

    task = asyncio.ensure_future(reader())
    loop = asyncio.get_running_loop()
    max_s = registry.cfg.server.feed_max_s
    until = loop.time() + max_s if max_s else None
    try:
        while not ws.closed:
            event = await sub.get(timeout=None if until is None else max(0.0, until - loop.time()))
            if event is None:
                if until is not None and loop.time() >= until and not sub.closed:
                    await close_ws(ws, WSCloseCode.GOING_AWAY, f"this feed is rotated every {max_s:g} s "
                                   "([server] feed_max_s): reconnect with ?since=<the last bus_id>")
                break
            why = too_slow(sub.dropped, _buffered(request), limits)
            if why is None:
                # not cancelled when it stalls: aiohttp's writer would keep a cancelled wait for the
                # socket to drain, and the close frame could not go out after it
                send = asyncio.ensure_future(ws.send_str(dumps(event)))
                done, _ = await asyncio.wait({send}, timeout=limits.send_timeout_s)
                if send in done:
                    send.result()
                else:
                    send.add_done_callback(_quiet)
                    why = stalled(limits)
            if why is not None:
                await _close_slow(request, ws, why)
                break
    except BusError as exc:
        log.warning("/events: %s", exc)
        await close_ws(ws, WSCloseCode.INTERNAL_ERROR, f"results bus unavailable: {exc}")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        if remote:
            sub.close()
        else:
            registry.unsubscribe(sub)
        task.cancel()
        if not ws.closed:
            await close_ws(ws, 1001, "server shutting down")
    return ws


def _quiet(task: asyncio.Future) -> None:
    """A stalled send's end, whatever it was (the socket was closed or cut): retrieved, not raised."""
    if not task.cancelled():
        task.exception()


def _buffered(request: web.Request) -> int:
    """Bytes waiting in the connection's write buffer (0 once it is gone, or through the ASGI
    bridge of a Ray gateway, whose server keeps its own)."""
    transport = getattr(request, "transport", None)
    return transport.get_write_buffer_size() if transport is not None else 0


async def _close_slow(request: web.Request, ws: web.WebSocketResponse, why: str) -> None:
    """Close a reader that fell too far behind (1008, ``why``); counted and logged. The close
    frame waits behind what the socket holds: if it is not out within ``close_grace_s`` the
    connection is cut."""
    registry = request.app[REGISTRY]
    registry.metrics.slow_closed.inc()
    log.warning("/events client %s closed: %s", request.remote, why)
    try:
        await asyncio.wait_for(close_ws(ws, POLICY, why, registry, "events"), registry.feed_limits.close_grace_s)
    except asyncio.TimeoutError:
        transport = getattr(request, "transport", None)  # none through the ASGI bridge
        if transport is not None:
            transport.abort()


# --- the application --------------------------------------------------------------------
def protocol_routes() -> list[web.RouteDef]:
    """The routes of the protocol modules that exist (each module's ``routes`` list)."""
    out: list[web.RouteDef] = []
    for name in PROTOCOL_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        out.extend(getattr(module, "routes", []))
    return out


def make_app(registry: CallRegistry, auth: Auth, extra_routes: list[web.RouteDef] | None = None) -> web.Application:
    from streamer.serve.protocols.twilio import twilio_handler

    app = web.Application(middlewares=[make_auth_middleware(auth)],
                          client_max_size=registry.cfg.server.max_message_bytes)
    app[REGISTRY] = registry
    app[AUTH] = auth
    registry.metrics.watch_bus(registry.bus.health)
    app[SOCKETS] = weakref.WeakSet()
    app.add_routes([web.get("/healthz", healthz), web.get("/metrics", metrics), web.get("/api/calls", list_calls),
                    web.get("/api/calls/{id}", get_call), web.get("/events", events),
                    web.get("/twilio", twilio_handler)])
    app.add_routes(protocol_routes() if extra_routes is None else extra_routes)
    app.on_shutdown.append(_on_shutdown)
    return app


async def _on_shutdown(app: web.Application) -> None:
    """Stop taking calls, finish and log every call, then close the sockets still open."""
    registry = app[REGISTRY]
    # shutdown_s in all: the calls, then the sockets' closes (2 s at most, all at once), then
    # aiohttp's wait for the handlers (the runner's shutdown_timeout, 1 s in ser-serve)
    await registry.shutdown(max(1.0, registry.cfg.server.shutdown_s - 3.0))
    await asyncio.gather(*(close_ws(ws, WSCloseCode.GOING_AWAY, "server shutting down")
                           for ws in list(app[SOCKETS]) if not ws.closed))


async def start(app: web.Application, host: str, port: int, shutdown_timeout: float = 5.0,
                ssl_context=None) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on host:port (0: a free port), over TLS with ``ssl_context`` (https://,
    wss://; :func:`streamer.serve.server.tls_context`); returns the runner (``await
    runner.cleanup()`` to stop) and the port it got."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=shutdown_timeout, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    got = runner.addresses[0][1] if runner.addresses else port  # (host, port, ...) of each bound socket
    return runner, int(got)

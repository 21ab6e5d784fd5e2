"""The desk: a supervisor's live web page on ser-serve, and the alert rules run on every call.

:func:`install` adds to a ser-serve app (after :func:`streamer.serve.http.app.make_app`):

- ``GET /``: the page (``static/desk.html``, ``desk.css``, ``desk.js``: plain files, no build
  step, nothing fetched from elsewhere). ``GET /?token=T`` logs in: the token is checked, kept
  in an HttpOnly cookie (a keyed hash of it, never the token itself) and the browser is sent
  to ``/``. Without a token or cookie ``/`` is the login form (401); ``POST /login`` takes the
  form's token; ``GET /logout`` forgets the cookie.
- The cookie counts as the token everywhere (``/events``, the APIs): a middleware placed
  before the token check turns it into ``Authorization: Bearer``; a wrong one is no token.
- ``GET /api/desk``: what the page needs to draw (and catch up after a dropped feed): the
  rows of ``/api/calls`` plus each call's parameters, last utterance per track and age, the
  ended calls kept ``[desk] keep_ended_min`` minutes, and the alerts.
- ``GET /api/alerts`` (``?open=1``: not acknowledged) and ``POST /api/alerts/{id}/ack``.
- ``GET /desk/report/{id}``: the ``ser-report`` HTML of an ended call's log, made on demand
  (in a thread) and kept next to the log.

The alert runner (:class:`Desk`) follows the registry's feed, runs one
:class:`streamer.core.alerts.Alerts` per call over ``[[alerts]]`` (``cfg.alerts``), ticks the
dead-air rules about once a second, and for every alert raised: keeps it, counts it
(``ser_serve_alerts_total{rule}`` on ``/metrics``), writes it into the call's log (an
``alert`` record; ``alert_ack`` when acknowledged) and publishes it on the feed as an
``alert`` event (``id``, ``rule``, ``call_id``, ``track``, ``reason``, ``at_s``, ``time``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict

from streamer.runtime.config import Config
from streamer.serve.http.websocket import AUTH, REGISTRY, dumps
from streamer.serve.http.auth import Auth, request_token, same
from streamer.serve.bus import BusError
from streamer.serve.calls.registry import CallRegistry
from streamer.serve.desk.runner import TICK_S, Desk

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"desk.css": "text/css", "desk.js": "text/javascript", "desk.html": "text/html"}
COOKIE = "ser_desk"
COOKIE_MAX_AGE_S = 24 * 3600  # one shift


def cookie_value(token: str) -> str:
    """What the desk's cookie holds: a keyed hash of the token, so the cookie is not the token.

    >>> len(cookie_value("t0ken")), cookie_value("t0ken") == cookie_value("t0ken"), cookie_value("a") == cookie_value("b")
    (64, True, False)
    """
    return hmac.new(token.encode("utf-8"), b"ser-serve desk cookie v1", hashlib.sha256).hexdigest()


DESK = web.AppKey("desk", Desk)


# --- access -------------------------------------------------------------------------------
LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>ser-serve desk: sign in</title><link rel="stylesheet" href="/desk/static/desk.css"></head>
<body class="login"><main class="login-box">
<h1>Call desk</h1>
<p>{message}</p>
<form method="post" action="/login">
<label for="token">Server token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form>
<p class="hint">The token of this ser-serve ($SER_SERVE_TOKEN or --token-file). Opening <code>/?token=T</code> signs in too.</p>
</main></body></html>
"""


def login_page(message: str, status: int = 401) -> web.Response:
    import html

    return web.Response(text=LOGIN_PAGE.format(message=html.escape(message)), status=status,
                        content_type="text/html", headers={"Cache-Control": "no-store"})


def see_other(to: str) -> web.Response:
    """A 303 redirect to ``to``, returned (aiohttp deprecates returning its HTTPSeeOther)."""
    return web.Response(status=303, headers={"Location": to})


def _signed_in(request: web.Request, auth: Auth, to: str = "/") -> web.Response:
    resp = see_other(to)
    # Lax, not Strict: a /?token=T link followed from elsewhere must still land signed in;
    # Lax keeps the cookie off other sites' POSTs and WebSocket handshakes
    secure = request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"
    resp.set_cookie(COOKIE, cookie_value(auth.token or ""), max_age=COOKIE_MAX_AGE_S, path="/", httponly=True,
                    samesite="Lax", secure=secure)
    return resp


async def _login(request: web.Request) -> web.StreamResponse:
    auth = request.app[AUTH]
    if request.method != "POST":
        if not auth.required:
            raise web.HTTPSeeOther("/")
        return login_page("This desk needs the server's token.", status=200)
    try:
        form = await request.post()
    except (ValueError, LookupError, AssertionError, HttpProcessingError) as exc:  # bad UTF-8, an unknown charset,
        # broken multipart (a bad header inside it)
        log.warning("desk login from %s: a body that is not a form (%s)", request.remote, exc)
        raise web.HTTPBadRequest(text="the sign-in body must be a form with the token "
                                      "(application/x-www-form-urlencoded, UTF-8): token=TOKEN\n") from None
    token = form.get("token")
    token = token if isinstance(token, str) else ""
    status = auth.check_value(token)
    if status == "off":
        raise web.HTTPSeeOther("/")
    if status != "ok":
        request.app[REGISTRY].metrics.unauthorized.labels(path="/login").inc()
        log.warning("desk login from %s: %s token", request.remote, status)
        return login_page(f"{status.capitalize()} token: try again.", status=401)
    log.info("desk: signed in from %s", request.remote)
    return _signed_in(request, auth)


def file_response(path: Path, headers: dict[str, str]) -> web.FileResponse:
    """A file's response; ``path_on_disk`` names the file for the ASGI bridge (:mod:`streamer.serve.cluster.asgi`)."""
    resp = web.FileResponse(path, headers=headers)
    resp.path_on_disk = Path(path)
    return resp


def _static(name: str) -> web.StreamResponse:
    if name not in STATIC_FILES or name == "desk.html":
        raise web.HTTPNotFound(text=f"no desk file {name!r}\n")
    return file_response(STATIC / name, {"Content-Type": STATIC_FILES[name] + "; charset=utf-8",
                                         "Cache-Control": "no-cache"})


@web.middleware
async def desk_access(request: web.Request, handler):
    """Before the token check: the page's own files and the login form need no token; the
    cookie stands for the token; a refused ``GET /`` shows the login form (still 401)."""
    path = request.path
    if path.startswith("/desk/static/"):
        return _static(path.rsplit("/", 1)[-1])
    if path == "/login":
        return await _login(request)
    auth = request.app[AUTH]
    if auth.required and request_token(request.headers, request.query) is None:
        cookie = request.cookies.get(COOKIE)
        if cookie and same(cookie, cookie_value(auth.token)):
            headers = CIMultiDict(request.headers)
            headers["Authorization"] = f"Bearer {auth.token}"
            request = request.clone(headers=headers)
    try:
        return await handler(request)
    except web.HTTPUnauthorized:
        if path == "/" and request.method == "GET":
            wrong = request_token(request.headers, request.query) is not None or COOKIE in request.cookies
            return login_page("Wrong token: try again." if wrong else "This desk needs the server's token.")
        raise


# --- handlers -----------------------------------------------------------------------------
async def page(request: web.Request) -> web.StreamResponse:
    auth = request.app[AUTH]
    if auth.required and request.query.get("token"):  # the token check passed: keep it in the cookie
        return _signed_in(request, auth)
    return file_response(STATIC / "desk.html", {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"})


async def logout(request: web.Request) -> web.StreamResponse:
    resp = see_other("/login")
    resp.del_cookie(COOKIE, path="/")
    return resp


async def desk_state(request: web.Request) -> web.Response:
    desk = request.app[DESK]
    remote = None
    if desk.registry.bus.kind != "local":  # the calls of the other replicas too
        try:
            remote = await desk.registry.bus.listing()
        except BusError as exc:
            raise web.HTTPServiceUnavailable(text=f"the results bus is unavailable: {exc}\n") from None
    return web.json_response(desk.state(remote), dumps=dumps)


async def list_alerts(request: web.Request) -> web.Response:
    desk = request.app[DESK]
    only_open = request.query.get("open") in ("1", "true", "yes")
    alerts = [a for a in desk.alerts.values() if not only_open or a["acked"] is None]
    return web.json_response({"alerts": alerts}, dumps=dumps)


async def ack_alert(request: web.Request) -> web.Response:
    desk = request.app[DESK]
    alert_id = request.match_info["id"]
    try:
        alert = desk.ack(alert_id, by=str(request.remote or ""))
    except KeyError:
        raise web.HTTPNotFound(text=f"no alert {alert_id!r}\n") from None
    return web.json_response(alert, dumps=dumps)


async def call_report(request: web.Request) -> web.StreamResponse:
    desk = request.app[DESK]
    call_id = request.match_info["id"]
    try:
        html = await desk.report(call_id)
    except FileNotFoundError:
        raise web.HTTPNotFound(text=f"no ended call {call_id!r} with a log (ended calls are kept "
                                    f"{desk.cfg.desk.keep_ended_min:g} minutes)\n") from None
    return file_response(html, {"Content-Type": "text/html; charset=utf-8"})


routes = [web.get("/", page), web.get("/logout", logout), web.get("/api/desk", desk_state),
          web.get("/api/alerts", list_alerts), web.post("/api/alerts/{id}/ack", ack_alert),
          web.get("/desk/report/{id}", call_report)]


def install(app: web.Application, registry: CallRegistry | None = None, cfg: Config | None = None,
            tick_s: float = TICK_S, clock=None) -> Desk:
    """Add the desk to a ser-serve app made by ``make_app``, before it starts: its routes,
    the cookie/login middleware (ahead of the token check) and the alert runner (started
    with the app, stopped at its cleanup). ``clock``: the alert rules' seconds (a test's fake)."""
    if DESK in app:  # installed already (by make_app, say)
        return app[DESK]
    registry = registry or app[REGISTRY]
    desk = Desk(registry, cfg, tick_s=tick_s) if clock is None else Desk(registry, cfg, tick_s=tick_s, clock=clock)
    app[DESK] = desk
    app.middlewares.insert(0, desk_access)
    app.add_routes(routes)

    async def on_startup(_app: web.Application) -> None:
        await desk.start()

    async def on_cleanup(_app: web.Application) -> None:
        await desk.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return desk

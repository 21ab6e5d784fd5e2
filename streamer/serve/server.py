"""One server, assembled once: the results bus, the call registry, the aiohttp application
(the protocols' endpoints, the API, /events, /metrics) and the desk. ``ser-serve``, each Ray
gateway replica and the tests build it with :func:`build_server`; none repeats the wiring."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from streamer.runtime.config import Config
from streamer.runtime.models import Models
from streamer.serve.bus import Bus
from streamer.serve.calls.registry import CallRegistry
from streamer.serve.desk.routes import install
from streamer.serve.desk.runner import TICK_S, Desk
from streamer.serve.http.app import make_app
from streamer.serve.http.auth import Auth


@dataclass
class Server:
    registry: CallRegistry
    app: web.Application
    desk: Desk


def build_server(models: Models, cfg: Config, token: str | None, *, bus: Bus | None = None,
                 log_dir: str | Path | None = None, loop=None, desk_tick_s: float = TICK_S, clock=None) -> Server:
    """The registry over ``models`` (results on ``bus``: in-process when None), the application
    checking ``token`` (None: no token) and the desk with its alert rules (``clock``: theirs).
    Serve ``server.app`` with :func:`streamer.serve.http.app.start`, or behind the ASGI bridge."""
    registry = CallRegistry(models, cfg, log_dir, loop=loop, bus=bus)
    app = make_app(registry, Auth(token, cfg.server.twilio_auth_token))
    desk = install(app, registry, tick_s=desk_tick_s, clock=clock)
    return Server(registry, app, desk)

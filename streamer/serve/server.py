"""One server, assembled once: the results bus, the call registry, the aiohttp application
(the protocols' endpoints, the API, /events, /metrics) and the desk. ``ser-serve``, each Ray
gateway replica and the tests build it with :func:`build_server`; none repeats the wiring.

:func:`tls_context` is ``ser-serve --tls-cert FILE --tls-key FILE``: the files checked (each
problem one :class:`SerError` naming the flag) and loaded, before the models load."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from streamer.core.errors import SerError
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


def _pem(path: str | Path, flag: str, marker: str, what: str) -> Path:
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        raise SerError(f"{flag} {path}: no such file; give {what}") from None
    except OSError as exc:
        raise SerError(f"{flag} {path}: cannot read it ({exc.strerror or exc}); give {what}") from None
    if marker not in text:
        raise SerError(f"{flag} {path}: not {what} (no '{marker}' line)") from None
    return path


def tls_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """The server's TLS context (https:// and wss://) from a PEM certificate (chain) and its
    private key, without a passphrase. Each problem is one :class:`SerError` that names the flag:
    a missing or unreadable file, a file that is not PEM, an encrypted key, a key that is not
    the certificate's.

    >>> tls_context("/nonexistent/cert.pem", "key.pem")
    Traceback (most recent call last):
    ...
    streamer.core.errors.SerError: --tls-cert /nonexistent/cert.pem: no such file; give the server's certificate (PEM, its chain after it)
    """
    cert = _pem(cert, "--tls-cert", "-----BEGIN CERTIFICATE-----", "the server's certificate (PEM, its chain after it)")
    key = _pem(key, "--tls-key", "PRIVATE KEY-----", "the certificate's private key (PEM)")
    if "ENCRYPTED" in key.read_text(encoding="ascii", errors="replace"):
        raise SerError(f"--tls-key {key}: the key is encrypted with a passphrase; give an unencrypted copy "
                       f"(openssl pkey -in {key.name} -out plain.key), readable by this user only")

    def no_passphrase():  # never prompt on the terminal
        raise SerError(f"--tls-key {key}: the key wants a passphrase; give an unencrypted copy")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key, password=no_passphrase)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise SerError(f"--tls-key {key} is not the private key of --tls-cert {cert}: give the pair made "
                           "together") from None
        raise SerError(f"--tls-cert {cert} / --tls-key {key}: cannot load them ({exc.reason or exc}): give a PEM "
                       "certificate and its unencrypted PEM private key") from None
    return ctx

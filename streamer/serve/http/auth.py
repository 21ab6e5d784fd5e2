"""Who may use ser-serve: one shared token, and Twilio's request signature.

The token comes from ``--token-file PATH`` or ``$SER_SERVE_TOKEN``. Without one the server
listens on loopback only (anyone on the machine may use it); on any other address it
refuses to start. Every endpoint but ``/healthz`` takes ``Authorization: Bearer T`` or
``?token=T``; ``/twilio`` may instead carry it in the start message's
``customParameters.token`` (a Twilio ``<Stream>`` URL takes no query string). Tokens are
compared in constant time.

Twilio signs the WebSocket handshake of a Media Stream with ``X-Twilio-Signature``: the
base64 HMAC-SHA1, keyed with the account's auth token, of the full URL Twilio requested
(``wss://host/path``; a handshake is a GET, so no POST parameters are appended), as in
Twilio's "Webhooks security" page and its ``RequestValidator``.

Twilio's documented example (its helper libraries' validation page) gives its signature:

>>> compute_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2",
...                   {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
...                    "From": "+14158675309", "To": "+18005551212"})
'RSOYDt4T1cUTdK1PDd93/VVr8B8='
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import re
from pathlib import Path

from streamer.core.errors import SerError

TOKEN_ENV = "SER_SERVE_TOKEN"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def load_token(token_file: str | Path | None = None, env: dict | None = None) -> str | None:
    """The token from the file (first line, stripped) or ``$SER_SERVE_TOKEN``; None when neither.

    >>> load_token(None, {"SER_SERVE_TOKEN": " s3cret "})
    's3cret'
    >>> load_token(None, {}) is None
    True
    """
    env = os.environ if env is None else env
    if token_file:
        path = Path(token_file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SerError(f"--token-file {path}: cannot read it ({exc.strerror or exc}); "
                           "give a file holding the token on its first line") from exc
        token = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not token:
            raise SerError(f"--token-file {path} is empty; put the token on its first line")
        return token
    token = (env.get(TOKEN_ENV) or "").strip()
    return token or None


def is_loopback(host: str) -> bool:
    """
    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.1.2.3")]
    [True, True, True, False, False]
    """
    host = host.strip().strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(host: str, token: str | None) -> str | None:
    """Refuse a non-loopback address without a token (SerError: exit 2); the note to print
    when serving without one, else None."""
    if token:
        return None
    if not is_loopback(host):
        raise SerError(f"refusing to serve on {host} without a token: anyone who reaches it could listen to "
                       f"calls; set ${TOKEN_ENV} or pass --token-file PATH (or serve on --host 127.0.0.1)")
    return (f"no token set: serving on loopback ({host}) only, without authentication "
            f"(set ${TOKEN_ENV} or --token-file to require one)")


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two tokens. A header's bytes that are not UTF-8 arrive as
    lone surrogates (aiohttp decodes with ``surrogateescape``): they compare, never raise.

    >>> same("t0ken", "t0ken"), same("\\udcff\\udcfe", "t0ken")
    (True, False)
    """
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def request_token(headers, query) -> str | None:
    """The token a request carries: ``Authorization: Bearer T`` first, then ``?token=T``."""
    value = headers.get("Authorization", "")
    if value[:7].lower() == "bearer ":
        return value[7:].strip()
    t = query.get("token")
    return t if t else None


class Auth:
    """``check`` -> "off" (no token configured), "ok", "missing" or "wrong"."""

    def __init__(self, token: str | None, twilio_auth_token: str = "") -> None:
        self.token = token or None
        self.twilio_auth_token = twilio_auth_token or ""

    @property
    def required(self) -> bool:
        return self.token is not None

    def check_value(self, candidate: str | None) -> str:
        if self.token is None:
            return "off"
        if not candidate:
            return "missing"
        return "ok" if same(candidate, self.token) else "wrong"

    def check(self, headers, query) -> str:
        return self.check_value(request_token(headers, query))

    def twilio_signature_ok(self, headers, scheme: str, host: str, path_qs: str) -> bool:
        """True when no Twilio auth token is configured, or the handshake's signature is Twilio's."""
        if not self.twilio_auth_token:
            return True
        signature = headers.get("X-Twilio-Signature", "")
        if not signature:
            return False
        return any(same(compute_signature(self.twilio_auth_token, url), signature)
                   for url in candidate_urls(headers, scheme, host, path_qs))


def compute_signature(auth_token: str, url: str, params: dict[str, str] | None = None) -> str:
    """Twilio's request signature: base64(HMAC-SHA1(auth_token, url + sorted key+value pairs))."""
    s = url + "".join(k + v for k, v in sorted((params or {}).items()))
    return base64.b64encode(hmac.new(auth_token.encode("utf-8"), s.encode("utf-8", "surrogatepass"),  # a Host not UTF-8
                                     hashlib.sha1).digest()).decode()


def candidate_urls(headers, scheme: str, host: str, path_qs: str) -> list[str]:
    """The URLs Twilio may have signed: behind a TLS proxy the server sees ws/http while
    Twilio called wss (only wss is allowed for Media Streams), with or without the port.

    >>> candidate_urls({}, "http", "calls.example.com:443", "/twilio")
    ['wss://calls.example.com:443/twilio', 'wss://calls.example.com/twilio', 'ws://calls.example.com:443/twilio', 'ws://calls.example.com/twilio']
    """
    host = headers.get("X-Forwarded-Host", host) or host
    seen = ["wss", "ws" if scheme in ("http", "ws") else "wss"]
    proto = headers.get("X-Forwarded-Proto", "")
    if proto:
        seen.insert(0, {"https": "wss", "http": "ws"}.get(proto, proto))
    bare = re.sub(r":\d+$", "", host)  # "[::1]:8765" -> "[::1]"; a bare IPv6 address never comes as a Host
    out: list[str] = []
    for s in dict.fromkeys(seen):
        for h in dict.fromkeys([host, bare]):
            out.append(f"{s}://{h}{path_qs}")
    return out

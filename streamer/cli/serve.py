"""ser-serve: many phone calls at once in one process (Twilio Media Streams, the vosk-server
protocol, FreeSWITCH mod_audio_fork, Asterisk AudioSocket), the models shared across calls;
results on a live WebSocket feed (/events), a JSON API and one NDJSON log per call."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import replace
from pathlib import Path

from streamer.cli import run_main
from streamer.core.errors import SerError

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ser-serve", description=__doc__)
    ap.add_argument("--host", default=None, help="address to listen on (default: [server] host, 127.0.0.1; any other "
                    "address needs a token)")
    ap.add_argument("--port", type=int, default=None, help="port for every HTTP/WebSocket endpoint (default: [server] "
                    "port, 8765; 0: a free port, printed)")
    ap.add_argument("--config", type=Path, default=None, help="settings file (default: the shipped config.toml; flags "
                    "override it)")
    ap.add_argument("--max-calls", type=int, default=None, help="calls at once; more are refused with close 1013 "
                    "(default: [server] max_calls, 16)")
    ap.add_argument("--log-dir", type=Path, default=None, help="folder of the per-call NDJSON logs (default: [server] "
                    "log_dir, else ~/.local/share/ser-live/calls)")
    ap.add_argument("--token-file", type=Path, default=None, help="file whose first line is the token clients must send "
                    "(default: $SER_SERVE_TOKEN; none: loopback only)")
    ap.add_argument("--audiosocket-port", type=int, default=None, help="also take Asterisk AudioSocket calls over TCP on "
                    "this port (default: [server] audiosocket_port, 0: off)")
    ap.add_argument("--redis", default=None, metavar="URL", help="publish every call's events to Redis Streams "
                    "(redis://HOST:PORT/DB), so that one desk sees the calls of every server sharing it; /events and "
                    "/api/calls then read from Redis (default: none, this process only)")
    ap.add_argument("--desk", default="default", help="with --redis: the desk's name (one stream per desk; default: "
                    "default)")
    ap.add_argument("--engine", choices=("local", "ray"), default="local", help="local: this process holds every "
                    "call; ray: CallGateway replicas on a Ray Serve cluster hold them, the models run as their own "
                    "deployments ($RAY_ADDRESS joins a running cluster, else a local one is started; see [ray] in "
                    "config.toml) (default: local)")
    ap.add_argument("--gateways", type=int, default=None, help="with --engine ray: CallGateway replicas (more than one "
                    "needs --redis; default: [ray] gateways, 1)")
    ap.add_argument("--tls-cert", type=Path, default=None, metavar="FILE", help="serve https:// and wss:// with this "
                    "certificate (PEM, its chain after it); with --tls-key. AudioSocket stays plain TCP (default: "
                    "none: http:// and ws://, for a reverse proxy that terminates TLS or for loopback)")
    ap.add_argument("--tls-key", type=Path, default=None, metavar="FILE", help="the certificate's private key (PEM, "
                    "without a passphrase); with --tls-cert")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every call's start and end (default: warnings only)")
    return ap


def settings(args):
    """The Config with the flags applied (ConfigError when out of range)."""
    from streamer.core.errors import ConfigError, SerError
    from streamer.runtime.config import Config

    cfg = Config.load(args.config)
    flags = {"host": args.host, "port": args.port, "max_calls": args.max_calls,
             "log_dir": str(args.log_dir) if args.log_dir else None, "audiosocket_port": args.audiosocket_port}
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        server = replace(cfg.server, **given)  # ranges checked again
    except ConfigError as exc:  # a flag's value: name the flag, not the config file
        for key, value in given.items():
            prefix = f"config [server] {key}: "
            if str(exc).startswith(prefix):
                raise SerError(f"--{key.replace('_', '-')} {value}: {str(exc)[len(prefix):]}") from None
        raise
    ray_cfg = cfg.ray
    if getattr(args, "gateways", None) is not None:
        n = args.gateways
        ray_cfg = replace(ray_cfg, gateways=n, min_gateways=min(ray_cfg.min_gateways, n),
                          max_gateways=max(ray_cfg.max_gateways, n))
    return replace(cfg, server=server, ray=ray_cfg)


def desk_line(host: str, port: int, rules: int, token: str | None, scheme: str = "http") -> str:
    """The start-up line that tells where the desk is and how to get in.

    >>> desk_line("127.0.0.1", 8765, 3, None)
    'ser-serve: call desk at http://127.0.0.1:8765/ (3 alert rules; no token set: anyone who can reach this address can open it)'
    >>> desk_line("127.0.0.1", 8765, 3, "t", "https").startswith("ser-serve: call desk at https://127.0.0.1:8765/")
    True
    >>> desk_line("127.0.0.1", 8765, 3, "t").endswith("sign in with the token, or open /?token=TOKEN once)")
    True
    """
    access = "sign in with the token, or open /?token=TOKEN once" if token else \
        "no token set: anyone who can reach this address can open it"
    return f"ser-serve: call desk at {scheme}://{host}:{port}/ ({rules} alert rules; {access})"


def check_tls(args):
    """The TLS context of --tls-cert and --tls-key (both or neither), None without them; checked
    and loaded now, before the models load."""
    if args.tls_cert is None and args.tls_key is None:
        return None
    if args.tls_cert is None or args.tls_key is None:
        given, missing = ("--tls-cert", "--tls-key") if args.tls_cert is not None else ("--tls-key", "--tls-cert")
        raise SerError(f"{given} needs {missing} too: TLS takes the certificate and its private key")
    if args.engine == "ray":
        raise SerError("--tls-cert goes with --engine local: with --engine ray, terminate TLS at a reverse proxy in "
                       "front of Ray Serve's HTTP port (or Ray Serve's own TLS settings)")
    from streamer.serve.server import tls_context

    return tls_context(args.tls_cert, args.tls_key)


def check_free(host: str, port: int, flag: str) -> None:
    """A port another program holds is an error now, before the models load (seconds), not after."""
    import socket

    if not port:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise SerError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another {flag} "
                           "(0: any free one)" + (" or --host" if flag == "--port" else "")) from None


def check_redis(url: str) -> None:
    """An unreachable Redis is an error now, before the models load."""
    try:
        import redis
    except ImportError as exc:
        raise SerError('--redis needs redis-py: pip install "ser-live[cluster]"') from exc
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except (redis.RedisError, ValueError, OSError) as exc:
        raise SerError(f"--redis {url}: cannot reach Redis ({exc}); start redis-server there, or leave --redis out "
                       "for one process") from None


def main() -> int:
    args = build_parser().parse_args()
    if args.verbose:
        logging.getLogger("streamer").setLevel(logging.INFO)
    from streamer.serve.http.auth import check_listen, load_token

    cfg = settings(args)
    token = load_token(args.token_file)
    note = check_listen(cfg.server.host, token)  # off loopback without a token: SerError, exit 2
    if note:
        print(f"ser-serve: {note}", file=sys.stderr, flush=True)
    tls = check_tls(args)
    if args.engine != "ray":  # checked before the models load: a mistake costs no wait
        check_free(cfg.server.host, cfg.server.port, "--port")
        check_free(cfg.server.host, cfg.server.audiosocket_port, "--audiosocket-port")
    if args.redis and args.engine != "ray":  # the Ray driver checks its arguments and Ray first, then Redis
        check_redis(args.redis)
    if args.engine == "ray":
        from streamer.serve.cluster.driver import run

        return run(cfg, token, args.redis, args.desk, str(args.config) if args.config else None,
                   reload=lambda: settings(args))
    if args.gateways is not None:
        from streamer.core.errors import SerError

        raise SerError("--gateways goes with --engine ray")
    print("ser-serve: loading models (once, shared by every call)...", file=sys.stderr, flush=True)
    from streamer.runtime.models import limit_threads, load_models, warm_up

    from streamer.runtime.config import for_server

    models = load_models(for_server(cfg))
    limit_threads(cfg.audio.threads)
    warm_up(models)
    print(f"ser-serve: models: {', '.join(f'{k} {v}' for k, v in models.names.items())}", file=sys.stderr, flush=True)
    return asyncio.run(serve(models, cfg, token, redis_url=args.redis, desk=args.desk, tls=tls))


async def serve(models, cfg, token: str | None, redis_url: str | None = None, desk: str = "default",
                tls=None) -> int:
    """Serve until SIGTERM or SIGINT; ``tls``: an ``ssl.SSLContext`` (https:// and wss://)."""
    from streamer.serve.bus import BusError, BusOptions, make_bus
    from streamer.serve.http.app import start
    from streamer.serve.server import build_server

    loop = asyncio.get_running_loop()
    try:
        bus = make_bus(BusOptions(url=redis_url or "", desk=desk, keep_ended_s=cfg.server.keep_ended_min * 60))
        await bus.start()
    except (BusError, ValueError) as exc:
        from streamer.core.errors import SerError

        raise SerError(f"--redis {redis_url}: {exc}") from exc
    if redis_url:
        print(f"ser-serve: results bus: Redis {redis_url}, desk {desk!r} (stream {bus.opts.stream}), replica "
              f"{bus.replica}", file=sys.stderr, flush=True)
    server = build_server(models, cfg, token, bus=bus, loop=loop)  # the registry, the app, the desk (GET /)
    registry, app = server.registry, server.app
    try:
        runner, port = await start(app, cfg.server.host, cfg.server.port, shutdown_timeout=1.0, ssl_context=tls)
    except OSError as exc:
        from streamer.core.errors import SerError

        raise SerError(f"cannot listen on {cfg.server.host}:{cfg.server.port} ({exc.strerror or exc}); "
                       "pass another --port (0: any free one) or --host") from exc
    audiosocket = None
    if cfg.server.audiosocket_port:
        try:
            from streamer.serve.protocols.audiosocket import serve_audiosocket
        except ImportError as exc:
            await runner.cleanup()
            from streamer.core.errors import SerError

            raise SerError(f"--audiosocket-port: AudioSocket support is not available ({exc})") from exc
        try:
            audiosocket = await serve_audiosocket(registry, cfg.server.host, cfg.server.audiosocket_port)
        except OSError as exc:
            await runner.cleanup()
            from streamer.core.errors import SerError

            raise SerError(f"cannot listen for AudioSocket on {cfg.server.host}:{cfg.server.audiosocket_port} "
                           f"({exc.strerror or exc}); pass another --audiosocket-port") from exc
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host = f"[{cfg.server.host}]" if ":" in cfg.server.host else cfg.server.host
    scheme = "https" if tls else "http"
    print(f"ser-serve: listening on {scheme}://{host}:{port} (/twilio /vosk /audio-fork /events /api/calls /metrics "
          f"/healthz{'; wss:// for the WebSockets' if tls else ''}); logs in {registry.log_dir}"
          + (f"; AudioSocket on port {cfg.server.audiosocket_port}" + (" (plain TCP: AudioSocket has no TLS)" if tls else "")
             if audiosocket else ""), file=sys.stderr, flush=True)
    print(desk_line(host, port, len(cfg.alerts), token, scheme), file=sys.stderr, flush=True)
    await stop.wait()
    print(f"ser-serve: stopping: finishing {len(registry.active_calls)} call(s)...", file=sys.stderr, flush=True)
    registry.accepting = False
    if audiosocket is not None:
        audiosocket.close()
    try:
        # on_shutdown ends every call (session_end written) within shutdown_s
        await asyncio.wait_for(runner.cleanup(), cfg.server.shutdown_s + 2.0)
    except asyncio.TimeoutError:
        print("ser-serve: shutdown took too long; some connections were cut", file=sys.stderr, flush=True)
    ended = sum(1 for c in registry.calls.values() if c.state == "ended")
    print(f"ser-serve: stopped ({registry.total} calls served, {ended} logged as ended)", file=sys.stderr, flush=True)
    registry.calls.clear()
    import gc

    gc.collect()  # the tracks' native resamplers go now, not in the interpreter's teardown
    return 0


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()

"""``ser-serve --engine ray``: start (or join, with ``$RAY_ADDRESS``) a Ray cluster, deploy the
model deployments and the ``CallGateway`` application on it, and keep them up until SIGTERM or
Ctrl-C; then every gateway ends and logs its calls, and what this run deployed is deleted.

- Without ``$RAY_ADDRESS`` a local cluster of this machine's CPUs is started (and stopped at
  the end); with it, this process joins that cluster (``ray start --head`` on one node,
  ``ray start --address=HEAD:6379`` on the others) and leaves it running.
- ``[ray] proxy = "haproxy"`` sets ``RAY_SERVE_ENABLE_HA_PROXY=1`` for a local cluster (HAProxy
  in front of the replicas' own HTTP servers, which then listen on every interface: a token is
  needed); ``"default"`` uses Ray Serve's proxy actor. ``bench/server_bench.py --engine ray``
  measures both.
- SIGHUP re-reads the settings and redeploys the gateways with their ``[ray]`` gateways and
  autoscaling: a replica that Ray stops then finishes its calls before it goes (``drain_s``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import replace

from streamer.core.errors import SerError
from streamer.serve.cluster.gateway import GatewayOptions, bound

log = logging.getLogger(__name__)


def say(text: str) -> None:
    print(f"ser-serve: {text}", file=sys.stderr, flush=True)


def model_options(cfg):
    from streamer.serve.cluster.models import DeployOptions, ModelDeploymentOptions

    r = cfg.ray
    one = ModelDeploymentOptions(num_replicas=r.model_replicas, num_cpus=r.model_cpus, max_batch_size=r.max_batch_size,
                                 batch_wait_timeout_s=r.batch_wait_timeout_s,
                                 max_ongoing_requests=max(32, r.max_batch_size))
    whisper = replace(one, num_replicas=r.whisper_replicas, num_gpus=r.whisper_gpus) if r.whisper else None
    return DeployOptions(audio=one, text=one, whisper=whisper)


def free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def proxy_kind(cfg, token: str | None) -> str:
    """The HTTP front ``[ray] proxy`` asks for: ``auto`` is HAProxy (the cheaper one) when
    clients need a token, and Ray Serve's proxy actor when they do not (HAProxy's replicas
    listen on every interface).

    >>> from streamer.runtime.config import Config
    >>> proxy_kind(Config(), "t"), proxy_kind(Config(), None)
    ('haproxy', 'default')
    """
    if cfg.ray.proxy != "auto":
        return cfg.ray.proxy
    return "haproxy" if token else "default"


def start_cluster(cfg, address: str | None = None, proxy: str = "default") -> tuple[bool, int]:
    """ray.init: join ``address`` / ``$RAY_ADDRESS``, or start a local cluster; then Serve's
    HTTP front on ``[server] host``/``port`` (0: a free one). (whether we started the cluster, the port)"""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise SerError('ser-serve --engine ray needs Ray Serve: pip install "ray[serve]"') from exc
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    local = address is None
    if local and proxy == "haproxy":
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    try:
        if local:
            ray.init(num_cpus=cfg.ray.num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SerError(f"cannot join the Ray cluster at {address}: {exc}; start one with `ray start --head` "
                       "or unset RAY_ADDRESS for a local one") from exc
    port = cfg.server.port or free_port(cfg.server.host)
    serve.start(http_options={"host": cfg.server.host, "port": port}, logging_config={"enable_access_log": False})
    return local, port


def deploy_all(cfg, opts: GatewayOptions, config_path: str | None = None) -> list[str]:
    """The model deployments (``[ray] models = "deployments"``), then the gateway; the
    applications' names (to delete them at the end)."""
    from ray import serve

    from streamer.serve.cluster.models import deploy

    apps: list[str] = []
    if cfg.ray.models == "deployments":
        mo = replace(model_options(cfg), config_path=config_path)
        t0 = time.monotonic()
        deploy(mo)
        apps += [mo.app_name, f"{mo.app_name}-text"] + ([f"{mo.app_name}-whisper"] if cfg.ray.whisper else [])
        say(f"model deployments up in {time.monotonic() - t0:.0f} s: audio, text"
            + (", whisper" if cfg.ray.whisper else "") + f" ({cfg.ray.model_replicas} replica(s) each)")
    t0 = time.monotonic()
    serve.run(bound(opts, cfg), name=cfg.ray.app_name, route_prefix="/")
    apps.insert(0, cfg.ray.app_name)
    say(f"{cfg.ray.gateways} CallGateway replica(s) up in {time.monotonic() - t0:.0f} s "
        f"(max {cfg.server.max_calls} calls each)")
    return apps


def drain(cfg, timeout_s: float) -> None:
    """Every gateway replica ends and logs its calls (their sockets close, so the replicas'
    requests finish and deleting the application does not wait ``drain_s``)."""
    from ray import serve

    from streamer.serve.cluster.gateway import DEPLOYMENT

    try:
        handle = serve.get_deployment_handle(DEPLOYMENT, app_name=cfg.ray.app_name)
        handle.broadcast("drain").results(timeout_s=timeout_s)
    except Exception as exc:  # a replica gone already: its calls are lost, the others' were ended
        log.warning("draining the gateways: %s", exc)


def resize(cfg, opts: GatewayOptions, reload) -> object:
    """SIGHUP: the settings again (``reload()``), and the gateway application redeployed with
    their ``[ray]`` gateways and autoscaling; a replica Ray stops finishes its calls first
    (``graceful_shutdown_timeout_s`` = ``drain_s``). The running settings when the new ones fail."""
    from ray import serve

    try:
        new = reload()
        if max(new.ray.gateways, new.ray.max_gateways) > 1 and not opts.redis_url:
            raise SerError(f"[ray] gateways {new.ray.gateways} / max_gateways {new.ray.max_gateways} needs --redis")
        serve.run(bound(opts, new), name=cfg.ray.app_name, route_prefix="/")
    except Exception as exc:  # a bad edit: say so, keep serving as before
        say(f"SIGHUP: not resized ({exc})")
        return cfg
    say(f"SIGHUP: {new.ray.gateways} CallGateway replica(s) (autoscaling {new.ray.min_gateways}-"
        f"{new.ray.max_gateways}); replicas that stop finish their calls first (up to {new.ray.drain_s:g} s)")
    return new


def run(cfg, token: str | None, redis_url: str | None, desk: str, config_path: str | None, reload=None) -> int:
    if cfg.server.audiosocket_port:
        raise SerError("--audiosocket-port is not served through Ray Serve (its proxy takes HTTP and WebSockets "
                       "only): run AudioSocket calls on a single-process ser-serve (--engine local)")
    if max(cfg.ray.gateways, cfg.ray.max_gateways) > 1 and not redis_url:
        raise SerError(f"--gateways {cfg.ray.gateways} (or [ray] max_gateways {cfg.ray.max_gateways}) needs --redis URL: "
                       "without a shared results bus each replica's desk and /events would show only its own calls")
    opts = GatewayOptions(config_path=config_path, redis_url=redis_url or "", desk=desk, token=token,
                          log_dir=cfg.server.log_dir or None, max_calls=cfg.server.max_calls)
    proxy = proxy_kind(cfg, token)
    if proxy == "haproxy" and not token:
        raise SerError('[ray] proxy = "haproxy" opens the replicas\' own ports on every interface: give a token '
                       "(--token-file or $SER_SERVE_TOKEN), or use proxy = \"default\"")
    if cfg.ray.proxy == "auto" and proxy == "default" and not os.environ.get("RAY_ADDRESS"):
        say("no token: Ray Serve's own proxy (loopback); with a token the cheaper HAProxy front is used")
    local, port = start_cluster(cfg, proxy=proxy)
    apps: list[str] = []
    stop = {"now": False, "hup": False}

    def on_signal(*_):
        stop["now"] = True

    def on_hup(*_):
        stop["hup"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    if reload is not None:
        old[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hup)
    try:
        apps = deploy_all(cfg, opts, config_path)
        host = f"[{cfg.server.host}]" if ":" in cfg.server.host else cfg.server.host
        say(f"listening on http://{host}:{port} through Ray Serve (/twilio /vosk /audio-fork /events "
            f"/api/calls /metrics /healthz, the desk at /); results bus: {'Redis ' + redis_url if redis_url else 'none'}")
        while not stop["now"]:
            time.sleep(0.2)
            if stop["hup"]:
                stop["hup"] = False
                cfg = resize(cfg, opts, reload)
        say("stopping: every gateway ends and logs its calls...")
        if not bounded(lambda: drain(cfg, cfg.server.shutdown_s + 5.0), cfg.server.shutdown_s + 10.0):
            say("the gateways did not answer in time; their calls' logs may lack session_end")
        return 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if not bounded(lambda: _teardown(apps, local), 60.0):
            say("the cluster did not stop in time (`ray stop --force` ends what is left)")
        say("stopped")


def _teardown(apps: list[str], local: bool) -> None:
    import ray
    from ray import serve

    # Every application at once: under HAProxy each replica stays reachable for
    # RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S (30 s) before it stops, so deleting the
    # four applications one by one took over 2 minutes, past the 60 s bound.
    for app in apps:
        if not ray.is_initialized():  # past the bound: a Serve call now would start a new local cluster
            return
        try:
            serve.delete(app, _blocking=False)
        except Exception as exc:
            log.warning("deleting %s: %s", app, exc)
    deadline = time.monotonic() + 55.0
    while ray.is_initialized() and time.monotonic() < deadline:
        try:
            if not set(apps) & set(serve.status().applications):
                break
        except Exception as exc:
            log.warning("waiting for the applications to go: %s", exc)
            break
        time.sleep(0.5)
    if local and ray.is_initialized():
        serve.shutdown()
        ray.shutdown()


def bounded(fn, timeout_s: float) -> bool:
    """Run ``fn`` on a thread for at most ``timeout_s`` (a cluster whose processes a terminal's
    Ctrl-C reached too can hang a call forever); True when it finished."""
    import threading

    t = threading.Thread(target=fn, name="ser-serve stop", daemon=True)
    t.start()
    t.join(timeout_s)
    return not t.is_alive()

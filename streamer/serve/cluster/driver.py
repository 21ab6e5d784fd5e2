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
- Honest replicas: before deploying, what does not fit the cluster's free CPUs (or GPUs) is
  said in one line with what to set (:mod:`~streamer.serve.cluster.capacity`); ser-serve then
  waits (``[ray] replicas_wait_s``) for the replicas that fit and reports the count running,
  and says each later change (a replica killed, replaced, scaled) as it happens
  (:mod:`~streamer.serve.cluster.status`).
- With ``--redis`` this process also watches the bus for lapsed heartbeats
  (:mod:`~streamer.serve.cluster.watch`): a dead gateway's calls get ``call_lost`` about 6 s
  later even when it was the only gateway running.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import replace

from streamer.core.errors import SerError
from streamer.serve.cluster.capacity import GATEWAY, ceiling_line, expected, plan_of, running_line, shortfall
from streamer.serve.cluster.gateway import DEPLOYMENT, GatewayOptions, bound
from streamer.serve.cluster.status import ReplicaMonitor, wait_running
from streamer.serve.cluster.watch import LostCallWatch, WatchOptions

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


def cluster_free() -> tuple[float, float]:
    """The cluster's free Ray CPUs and GPUs (before this run deploys anything)."""
    import ray

    free = ray.available_resources()
    return float(free.get("CPU", 0.0)), float(free.get("GPU", 0.0))


def check_fit(cfg, local: bool, free: tuple[float, float]) -> dict[str, int]:
    """Say, in one line each, what does not fit the cluster (the replicas at start; autoscaling's
    ceiling); the replicas of each deployment that can run. A local cluster (its size fixed)
    where some deployment would get no replica at all is an error: ``serve.run`` would wait for
    it for ever. A joined cluster may grow (Ray's autoscaler): there it is said only."""
    plan = plan_of(cfg.ray, local)
    short = shortfall(plan, *free)
    fits = expected(plan, *free)
    if short and local and not all(fits.values()):
        raise SerError(short)
    if short:
        say(short)
    ceiling = ceiling_line(plan, *free)
    if ceiling and not short:
        say(ceiling)
    return fits


def wait_replicas(cfg, wants: dict[tuple[str, str], int], t0: float) -> dict[tuple[str, str], dict[str, int]]:
    """Wait (``[ray] replicas_wait_s`` at most) for the replicas that fit; the states last read."""
    up, states = wait_running(wants, max(0.0, cfg.ray.replicas_wait_s - (time.monotonic() - t0)))
    if not up:
        late = [f"{running_line(dep, states.get((app, dep), {}), n)}" for (app, dep), n in wants.items()
                if states.get((app, dep), {}).get("RUNNING", 0) < n]
        say(f"still starting after {time.monotonic() - t0:.0f} s ([ray] replicas_wait_s): {'; '.join(late)}")
    return states


def run_app(target, name: str, route_prefix: str | None, wait: bool):
    """``serve.run``, or (``wait`` False) the same without waiting for every replica: Ray
    Serve's own wait never ends while a replica cannot be placed."""
    from ray import serve

    if wait:
        return serve.run(target, name=name, route_prefix=route_prefix)
    return serve.run_many([serve.RunTarget(target, name=name, route_prefix=route_prefix)],
                          wait_for_applications_running=False)[0]


def deploy_all(cfg, opts: GatewayOptions, config_path: str | None = None,
               fits: dict[str, int] | None = None) -> tuple[list[str], int]:
    """The model deployments (``[ray] models = "deployments"``), then the gateway, each waited
    for until the replicas that fit (``fits``, from :func:`check_fit`; None: all asked) run.
    (the applications' names, to delete them at the end; the gateway replicas running)"""
    from streamer.serve.cluster.models import deploy, model_apps

    apps: list[str] = []
    r = cfg.ray
    fits = fits or {}
    if r.models == "deployments":
        mo = replace(model_options(cfg), config_path=config_path)
        named = {k: (app, dep, m) for k, (app, dep, m) in model_apps(mo).items() if m is not None}
        t0 = time.monotonic()
        deploy(mo, wait=all(fits.get(k, m.num_replicas) >= m.num_replicas for k, (_, _, m) in named.items()))
        apps += [app for app, _, _ in named.values()]
        states = wait_replicas(cfg, {(app, dep): fits.get(k, m.num_replicas) for k, (app, dep, m) in named.items()}, t0)
        each = ", ".join(f"{k} {states.get((app, dep), {}).get('RUNNING', 0)}/{m.num_replicas}"
                         for k, (app, dep, m) in named.items())
        say(f"model deployments up in {time.monotonic() - t0:.0f} s (replicas running/asked: {each})")
    t0 = time.monotonic()
    run_app(bound(opts, cfg), r.app_name, "/", wait=fits.get(GATEWAY, r.gateways) >= r.gateways)
    apps.insert(0, r.app_name)
    key = (r.app_name, DEPLOYMENT)
    states = wait_replicas(cfg, {key: fits.get(GATEWAY, r.gateways)}, t0).get(key, {})
    say(f"{running_line(DEPLOYMENT, states, r.gateways)} after {time.monotonic() - t0:.0f} s "
        f"(max {cfg.server.max_calls} calls each)")
    return apps, int(states.get("RUNNING", 0))


def drain(cfg, timeout_s: float) -> None:
    """Every gateway replica ends and logs its calls (their sockets close, so the replicas'
    requests finish and deleting the application does not wait ``drain_s``)."""
    from ray import serve

    try:
        handle = serve.get_deployment_handle(DEPLOYMENT, app_name=cfg.ray.app_name)
        handle.broadcast("drain").results(timeout_s=timeout_s)
    except Exception as exc:  # a replica gone already: its calls are lost, the others' were ended
        log.warning("draining the gateways: %s", exc)


def autoscaled(ray_cfg) -> bool:
    """Whether the gateways autoscale (as :func:`~streamer.serve.cluster.gateway.bound` deploys them)."""
    return ray_cfg.max_gateways > ray_cfg.gateways or ray_cfg.min_gateways < ray_cfg.gateways


def resize(cfg, opts: GatewayOptions, reload, local: bool = True, running: int | None = None) -> object:
    """SIGHUP: the settings again (``reload()``), and the gateway application redeployed with
    their ``[ray]`` gateways and autoscaling; a replica Ray stops finishes its calls first
    (``graceful_shutdown_timeout_s`` = ``drain_s``). The running settings when the new ones fail.
    What the new count cannot place is said first (``running``: the gateways running now,
    whose CPUs the new ones may use), and then it is not waited for."""
    try:
        new = reload()
        fits = {GATEWAY: new.ray.gateways}
        if max(new.ray.gateways, new.ray.max_gateways) > 1 and not opts.redis_url:
            raise SerError(f"[ray] gateways {new.ray.gateways} / max_gateways {new.ray.max_gateways} needs --redis")
        try:
            cpus, gpus = cluster_free()
        except Exception as exc:  # a busy controller: resize unchecked
            log.warning("SIGHUP: reading the cluster's free CPUs: %s", exc)
        else:
            held = plan_of(cfg.ray, local).model_cpus + (cfg.ray.gateways if running is None else running) \
                * cfg.ray.gateway_cpus  # what this run holds now, free to the new plan
            fits = check_fit(new, local, (cpus + held, gpus))  # SerError: nothing of it would run
        run_app(bound(opts, new), cfg.ray.app_name, "/", wait=fits.get(GATEWAY, 0) >= new.ray.gateways)
    except Exception as exc:  # a bad edit: say so, keep serving as before
        say(f"SIGHUP: not resized ({exc})")
        return cfg
    say(f"SIGHUP: {new.ray.gateways} CallGateway replica(s) asked (autoscaling {new.ray.min_gateways}-"
        f"{new.ray.max_gateways}); replicas that stop finish their calls first (up to {new.ray.drain_s:g} s); "
        "each change of the replicas running is said as it happens")
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
    watch = monitor = None

    def on_signal(*_):
        stop["now"] = True

    def on_hup(*_):
        stop["hup"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    if reload is not None:
        old[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hup)
    try:
        fits = check_fit(cfg, local, cluster_free())
        if redis_url:  # a dead gateway's calls get call_lost even when no other gateway is left to see it
            watch = LostCallWatch(WatchOptions(url=redis_url, desk=desk,
                                               keep_ended_s=cfg.server.keep_ended_min * 60)).start()
        apps, running = deploy_all(cfg, opts, config_path, fits)
        monitor = ReplicaMonitor((cfg.ray.app_name, DEPLOYMENT), say, None if autoscaled(cfg.ray) else cfg.ray.gateways,
                                 running=running).start()
        host = f"[{cfg.server.host}]" if ":" in cfg.server.host else cfg.server.host
        say(f"listening on http://{host}:{port} through Ray Serve (/twilio /vosk /audio-fork /events "
            f"/api/calls /metrics /healthz, the desk at /); results bus: {'Redis ' + redis_url if redis_url else 'none'}"
            + ("; lost calls are watched here too" if watch else ""))
        while not stop["now"]:
            time.sleep(0.2)
            if stop["hup"]:
                stop["hup"] = False
                cfg = resize(cfg, opts, reload, local, monitor.running)
                monitor.asked = None if autoscaled(cfg.ray) else cfg.ray.gateways
        monitor.stop(5.0)
        say("stopping: every gateway ends and logs its calls...")
        if not bounded(lambda: drain(cfg, cfg.server.shutdown_s + 5.0), cfg.server.shutdown_s + 10.0):
            say("the gateways did not answer in time; their calls' logs may lack session_end")
        return 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for part in (monitor, watch):
            if part is not None and not part.stop(5.0):
                log.warning("%s did not stop in 5 s", type(part).__name__)
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

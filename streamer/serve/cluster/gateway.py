"""``CallGateway``: ser-serve's endpoints as a Ray Serve deployment (``ser-serve --engine ray``).

Each replica is one ser-serve: a :class:`~streamer.serve.calls.registry.CallRegistry` holding the calls
whose sockets it accepted, the desk and its alert rules for those calls, and every endpoint of
the single-process server (``/twilio``, ``/vosk``, ``/audio-fork``, ``/events``, ``/api/calls``,
``/metrics``, ``/healthz``, the desk), served by a FastAPI ingress through
:class:`~streamer.serve.cluster.asgi.Bridge`. A call's socket stays on the replica that accepted it, for
its whole life: one ongoing request, so ``max_ongoing_requests`` is the calls a replica holds
(``[server] max_calls``; Ray's default of 5 would hold the sixth call back with no error).

- **Models.** ``[ray] models = "deployments"``: the audio, text and Whisper deployments of
  :mod:`streamer.serve.cluster.models`, reached through DeploymentHandles (windows as PCM bytes);
  ``"local"``: each replica loads them.
- **Results.** Every event goes to the results bus: with ``redis_url``, one Redis Stream per
  desk, so ``/events``, ``/api/calls`` and the desk of any replica show every replica's calls,
  and a replica's lost calls (heartbeats expired) become ``call_lost``. Without Redis each
  replica shows its own calls only (one gateway).
- **Scaling.** ``autoscaling_config`` on ongoing requests (``[ray] target_calls`` per replica,
  between ``min_gateways`` and ``max_gateways``); ``graceful_shutdown_timeout_s`` (``[ray]
  drain_s``) lets a replica that is scaled down finish its calls; ``__del__`` then ends and
  logs whatever is left.

:func:`gateway_app` is the application builder for a ``serve deploy`` config
(``import_path: streamer.serve.cluster.gateway:gateway_app``); :func:`bound` is what ``ser-serve
--engine ray`` runs.

>>> GatewayOptions(redis_url="redis://127.0.0.1:6379").desk
'default'
>>> GatewayOptions.from_args({"redis_url": "redis://h:1", "max_calls": "8", "token": "t"}).max_calls
8
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from streamer.core.errors import SerError

log = logging.getLogger(__name__)

DEPLOYMENT = "CallGateway"
_FORWARD_PREFIXES = ("SER_", "HF_", "TRANSFORMERS_", "OMP_", "OPENBLAS_", "MKL_", "XDG_")


@dataclass(frozen=True)
class GatewayOptions:
    """What every gateway replica is built with (the rest comes from the config file)."""

    config_path: str | None = None  # the ser config (None: the shipped config.toml)
    redis_url: str = ""  # the results bus shared by every replica ("": each replica its own)
    desk: str = "default"  # the desk's stream on Redis
    token: str | None = None  # clients' token (None: none asked; loopback-only is the driver's check)
    log_dir: str | None = None  # the calls' NDJSON logs (None: [server] log_dir)
    max_calls: int | None = None  # calls per replica (None: [server] max_calls)

    def __post_init__(self) -> None:
        if self.max_calls is not None and not 1 <= self.max_calls <= 10_000:
            raise SerError("max_calls must be between 1 and 10000 (calls per gateway replica)")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SerError(f"redis_url {self.redis_url!r}: give redis://HOST:PORT[/DB]")

    @classmethod
    def from_args(cls, args: dict | None) -> "GatewayOptions":
        """A serve config's ``args`` (strings are fine). The token: ``token_file``, else
        ``$SER_SERVE_TOKEN`` in the replicas' environment; a cluster's proxy listens beyond
        loopback, so none at all is refused unless ``allow_no_token: true`` says so.

        >>> GatewayOptions.from_args({"max_calls": "lots", "allow_no_token": True})
        Traceback (most recent call last):
        ...
        streamer.core.errors.SerError: CallGateway args: max_calls 'lots' is not a whole number
        """
        from streamer.serve.http.auth import load_token

        args = dict(args or {})
        known = {f.name for f in fields(cls)} | {"token_file", "allow_no_token"}
        unknown = set(args) - known
        if unknown:
            raise SerError(f"CallGateway: unknown args {sorted(unknown)} (known: {', '.join(sorted(known))})")
        open_ok = str(args.pop("allow_no_token", False)).lower() in ("true", "1", "yes")
        token_file = args.pop("token_file", None)
        if not args.get("token"):
            args["token"] = load_token(Path(token_file) if token_file else None)
        if not args["token"] and not open_ok:
            raise SerError("CallGateway args: no token (give token_file, or SER_SERVE_TOKEN in the runtime_env's "
                           "env_vars); a cluster's proxy is reachable beyond loopback. allow_no_token: true opts out")
        if args.get("max_calls") is not None:
            try:
                args["max_calls"] = int(args["max_calls"])
            except (TypeError, ValueError):
                raise SerError(f"CallGateway args: max_calls {args['max_calls']!r} is not a whole number") from None
        return cls(**args)


def settings(opts: GatewayOptions):
    """The Config a replica runs with: the file, then the options."""
    from streamer.runtime.config import Config

    cfg = Config.load(opts.config_path)
    server = cfg.server
    if opts.max_calls is not None:
        server = replace(server, max_calls=opts.max_calls)
    if opts.log_dir:
        server = replace(server, log_dir=str(opts.log_dir))
    if not server.feed_max_s:
        server = replace(server, feed_max_s=cfg.ray.feed_max_s)
    return replace(cfg, server=server)


def gateway_models(cfg):
    """The replica's models: handles to the model deployments, or its own (``[ray] models``)."""
    from streamer.runtime.models import Models, asr_factory, load_models, warm_up

    if cfg.ray.models == "local":
        from streamer.runtime.config import for_server

        models = load_models(for_server(cfg))
        warm_up(models)
        return models
    from streamer.serve.cluster.models import DeployOptions, ModelDeploymentOptions, connect

    one = ModelDeploymentOptions()
    svc = connect(DeployOptions(audio=one, text=one, whisper=one if cfg.ray.whisper else None))
    factory = asr_factory(cfg, whisper=svc.asr_factory(cfg) if cfg.ray.whisper else None)
    asr = factory().name  # Vosk (a model on this node) or Whisper (its deployment, or this replica's)
    remote = " (ray deployment)"
    names = {"asr": asr + (remote if cfg.ray.whisper and asr.startswith("whisper") else ""),
             "audio": cfg.audio.model_path.name + remote, "text": cfg.text.model + remote}
    return Models(None, None, factory, names, services=svc)


class Gateway:
    """One replica's ser-serve: the registry, the aiohttp app and desk behind the ASGI bridge."""

    def __init__(self, opts: GatewayOptions, models=None, replica: str = "") -> None:
        from streamer.serve.bus import BusOptions, make_bus
        from streamer.serve.cluster.asgi import Bridge
        from streamer.serve.server import build_server

        self.opts = opts
        self.cfg = settings(opts)
        self.models = models if models is not None else gateway_models(self.cfg)
        bus = make_bus(BusOptions(url=opts.redis_url, desk=opts.desk, keep_ended_s=self.cfg.server.keep_ended_min * 60,
                                  replica=replica))
        server = build_server(self.models, self.cfg, opts.token, bus=bus)
        self.registry, self.app, self.desk = server.registry, server.app, server.desk
        self.bridge = Bridge(self.app)
        self._stopped = False

    async def start(self) -> None:
        self.registry.loop = asyncio.get_running_loop()
        await self.registry.bus.start()
        await self.bridge.start()

    async def stop(self) -> None:
        """Stop taking calls; end and log every call left (the app's shutdown), close the bus."""
        if self._stopped:
            return
        self._stopped = True
        self.registry.accepting = False
        await self.bridge.stop()
        await self.registry.bus.close()


def deployment():
    """The ``CallGateway`` deployment class (built on first use: imports Ray Serve and FastAPI)."""
    try:
        from streamer.serve.cluster.ingress import call_gateway
    except ImportError as exc:
        raise SerError('ser-serve --engine ray needs Ray Serve: pip install "ray[serve]" (or the cluster extra: '
                       'pip install "ser-live[cluster]")') from exc
    return call_gateway(Gateway, DEPLOYMENT)


def bound(opts: GatewayOptions, cfg=None):
    """The CallGateway application, sized by ``[ray]`` and ``[server] max_calls``."""
    cfg = cfg or settings(opts)
    ray_cfg = cfg.ray
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARD_PREFIXES)}
    options = dict(max_ongoing_requests=cfg.server.max_calls + 8,  # the calls, and a few desk feeds / API requests
                   graceful_shutdown_timeout_s=ray_cfg.drain_s, graceful_shutdown_wait_loop_s=2.0,
                   ray_actor_options={"num_cpus": ray_cfg.gateway_cpus, "runtime_env": {"env_vars": env}})
    if ray_cfg.max_gateways > ray_cfg.gateways or ray_cfg.min_gateways < ray_cfg.gateways:
        options["autoscaling_config"] = {"min_replicas": ray_cfg.min_gateways, "initial_replicas": ray_cfg.gateways,
                                         "max_replicas": ray_cfg.max_gateways,
                                         "target_ongoing_requests": ray_cfg.target_calls,
                                         "upscale_delay_s": ray_cfg.upscale_delay_s,
                                         "downscale_delay_s": ray_cfg.downscale_delay_s}
    else:
        options["num_replicas"] = ray_cfg.gateways
    return deployment().options(**options).bind(opts)


def gateway_app(args: dict | None = None):
    """The application builder for a ``serve deploy`` config::

        - name: ser-gateway
          route_prefix: /
          import_path: streamer.serve.cluster.gateway:gateway_app
          args: {redis_url: "redis://10.0.0.5:6379", desk: main, token_file: /etc/ser/token}
          deployments: [{name: CallGateway, max_ongoing_requests: 24, autoscaling_config: {...}}]
    """
    return bound(GatewayOptions.from_args(args))

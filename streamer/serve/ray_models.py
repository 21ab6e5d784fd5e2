"""The stateless models as Ray Serve deployments (issue 20): the two emotion models and,
optionally, Whisper; and the
:class:`RayServices` a :class:`~streamer.core.session.StreamSession` uses in place of the
process's own :class:`~streamer.core.services.Services`.

- :class:`AudioEmotionDeployment` takes a window as raw PCM bytes (int16 little-endian,
  ``SAMPLE_RATE`` Hz, mono) and returns the 7-label probability dict;
- :class:`TextEmotionDeployment` takes a string and returns the dict, or None (no words).

Each replica loads its model once (``torch.set_num_threads(1)``) and batches the requests it
holds with ``@serve.batch``; the batch runs on a thread so that the replica's event loop keeps
taking the next batch's requests meanwhile. ``batch_stats`` reports the batch sizes seen.

:func:`deploy` starts them on a running cluster (``serve.run``, one application per model, so
each has its own replica count) and returns a :class:`RayServices` over their DeploymentHandles;
:func:`connect` finds running ones (a gateway's side), and ``audio_app`` / ``text_app`` /
``whisper_app`` are the application builders for a ``serve deploy`` config. Its ``audio.submit(samples)`` takes the
float32 samples the session makes (int16 / 32768, so the int16 round trip is exact) and returns
a ``concurrent.futures.Future``; ``text(text)`` blocks for the dict.

:class:`WhisperDeployment` (optional: ``DeployOptions.whisper``) follows the same pattern for
speech recognition: its batched ``decode`` takes (utterance PCM bytes, ``WhisperAsrConfig``,
timestamps) and returns the decoded words, through ``streamer.asr.decode.decode_batch`` (one
batch per setting). The recogniser stays in the session (it keeps the stream's utterance and
its partials): :meth:`RayServices.asr_factory` builds today's ``WhisperEngine`` over a
:class:`RemoteWhisperHandle`, whose decodes go through the deployment's handle. On a cluster,
``ray_actor_options={"num_gpus": 1}`` (and a CUDA build of CTranslate2) puts it on a GPU node.

>>> pcm_bytes(np.array([0.0, 0.5, -1.0], dtype=np.float32))
b'\\x00\\x00\\x00@\\x00\\x80'
>>> pcm_samples(pcm_bytes(np.array([0.25, -0.5], dtype=np.float32))).tolist()
[0.25, -0.5]
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from streamer.audio import SAMPLE_RATE
from streamer.errors import SerError

log = logging.getLogger(__name__)

APP_NAME = "ser-models"
_FORWARD_PREFIXES = ("SER_", "HF_", "TRANSFORMERS_", "ONEDNN_")  # as streamer.batch_ray: what model loading reads


def pcm_bytes(samples: ArrayLike) -> bytes:
    """float samples in [-1, 1) as int16 little-endian bytes (the window's wire form)."""
    x = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32768.0), -32768, 32767)
    return x.astype("<i2").tobytes()


def pcm_samples(data: bytes) -> NDArray[np.float32]:
    """int16 little-endian bytes as float32 samples, as the session gives its model."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


@dataclass(frozen=True)
class ModelDeploymentOptions:
    """One model deployment's placement and batching."""

    num_replicas: int = 1
    num_cpus: float = 0.5  # per replica: a fraction, so replicas and gateways share a node's CPUs
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.005
    max_ongoing_requests: int = 32  # at least max_batch_size, or batches never fill

    def __post_init__(self) -> None:
        if self.num_replicas < 1:
            raise SerError("num_replicas must be at least 1")
        if not 0 < self.num_cpus:
            raise SerError("num_cpus must be above 0 (a fraction is fine)")
        if self.max_batch_size < 1 or self.batch_wait_timeout_s < 0:
            raise SerError("max_batch_size must be at least 1 and batch_wait_timeout_s 0 or more")
        if self.max_ongoing_requests < self.max_batch_size:
            raise SerError("max_ongoing_requests must be at least max_batch_size (batches would never fill)")


@dataclass(frozen=True)
class DeployOptions:
    audio: ModelDeploymentOptions = field(default_factory=ModelDeploymentOptions)
    text: ModelDeploymentOptions | None = field(default_factory=ModelDeploymentOptions)  # None: no text branch
    whisper: ModelDeploymentOptions | None = None  # a Whisper deployment too (None: each gateway decodes locally)
    config_path: str | None = None  # the ser config the replicas load the models from (None: the default)
    app_name: str = APP_NAME
    client_threads: int = 16  # the driver's threads waiting on audio responses


def _config(config_path: str | None):
    from streamer.config import Config

    return Config.load(config_path)


class _Stats:
    def __init__(self) -> None:
        self.sizes: Counter[int] = Counter()

    def add(self, n: int) -> None:
        self.sizes[n] += 1

    def report(self) -> dict:
        batches = sum(self.sizes.values())
        items = sum(k * v for k, v in self.sizes.items())
        return {"pid": os.getpid(), "batches": batches, "items": items, "largest": max(self.sizes, default=0),
                "sizes": dict(self.sizes)}


class _AudioModel:
    """The audio deployment's body (plain class: Ray Serve wraps it in :func:`deployments`)."""

    def __init__(self, config_path: str | None, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        import torch

        torch.set_num_threads(1)
        from streamer.audio.emotion import AudioEmotion
        from streamer.audio.encoder import EMBEDDED
        from streamer.live.factory import whisper_handle

        cfg = _config(config_path)
        self.model = AudioEmotion.load(cfg.audio.model_path, whisper_handle(cfg, EMBEDDED))
        self.stats = _Stats()
        self.predict.set_max_batch_size(max_batch_size)
        self.predict.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def _run(self, windows: list[bytes]) -> list[dict[str, float]]:
        self.stats.add(len(windows))
        return self.model.predict_batch([pcm_samples(w) for w in windows], SAMPLE_RATE)

    async def predict(self, windows: list[bytes]) -> list[dict[str, float]]:
        return await asyncio.to_thread(self._run, windows)

    def batch_stats(self) -> dict:
        return self.stats.report()


class _TextModel:
    def __init__(self, config_path: str | None, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        import torch

        torch.set_num_threads(1)
        from streamer.text.emotion import load_text_emotion

        self.model = load_text_emotion(_config(config_path).text.model)
        self.stats = _Stats()
        self.predict.set_max_batch_size(max_batch_size)
        self.predict.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def _run(self, texts: list[str]) -> list[dict[str, float] | None]:
        self.stats.add(len(texts))
        return self.model.predict_batch(texts)

    async def predict(self, texts: list[str]) -> list[dict[str, float] | None]:
        return await asyncio.to_thread(self._run, texts)

    def batch_stats(self) -> dict:
        return self.stats.report()


class _WhisperModel:
    def __init__(self, config_path: str | None, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        import torch

        torch.set_num_threads(1)
        from streamer.live.factory import whisper_handle

        cfg = _config(config_path)
        self.handle = whisper_handle(cfg, cfg.whisper.model)
        self.stats = _Stats()
        self.decode.set_max_batch_size(max_batch_size)
        self.decode.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def _run(self, items: list[tuple[bytes, object, bool]]) -> list[list[tuple[str, float, float, float]]]:
        from streamer.asr.decode import decode_batch

        self.stats.add(len(items))
        out: list = [None] * len(items)
        for cfg in dict.fromkeys(c for _, c, _ in items):  # one decode_batch per setting, in arrival order
            idx = [k for k, (_, c, _) in enumerate(items) if c == cfg]
            words = decode_batch(self.handle, [(pcm_samples(items[k][0]), items[k][2]) for k in idx], cfg)
            for k, w in zip(idx, words):
                out[k] = [tuple(x) for x in w]
        return out

    async def decode(self, items: list[tuple[bytes, object, bool]]) -> list[list[tuple[str, float, float, float]]]:
        return await asyncio.to_thread(self._run, items)

    def batch_stats(self) -> dict:
        return self.stats.report()


_built: dict[str, object] = {}


def deployments() -> tuple[object, object]:
    """(AudioEmotionDeployment, TextEmotionDeployment), built on first use (imports Ray Serve)."""
    if not _built:
        try:
            from ray import serve
        except ImportError as exc:
            raise SerError('Ray Serve model deployments need Ray: pip install "ray[serve]"') from exc
        for name, body, method in (("AudioEmotionDeployment", _AudioModel, "predict"),
                                   ("TextEmotionDeployment", _TextModel, "predict"),
                                   ("WhisperDeployment", _WhisperModel, "decode")):
            batched = serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)(getattr(body, method))
            cls = type(name, (body,), {method: batched, "__doc__": body.__doc__, "__module__": __name__})
            _built[name] = serve.deployment(name=name, logging_config={"enable_access_log": False})(cls)
    return _built["AudioEmotionDeployment"], _built["TextEmotionDeployment"]


def whisper_deployment():
    deployments()
    return _built["WhisperDeployment"]


# --- the session's side ----------------------------------------------------------------------
class RemoteAudio:
    """The audio service over a DeploymentHandle: ``submit`` sends the window's PCM bytes and
    returns a Future, resolved by one of the driver's waiting threads."""

    name = "audio"

    def __init__(self, handle, threads: int = 16, timeout_s: float = 60.0) -> None:
        self.handle = handle
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="ray-audio")
        self._lock = threading.Lock()
        self._waiting = 0
        self.items = 0

    def _wait(self, response) -> dict[str, float]:
        try:
            return response.result(timeout_s=self.timeout_s)
        finally:
            with self._lock:
                self._waiting -= 1

    def submit(self, samples: ArrayLike) -> "Future[dict[str, float]]":
        response = self.handle.predict.remote(pcm_bytes(samples))
        with self._lock:
            self._waiting += 1
            self.items += 1
        return self._pool.submit(self._wait, response)

    def __call__(self, samples: ArrayLike) -> dict[str, float]:
        return self.submit(samples).result()

    @property
    def depth(self) -> int:
        """Requests sent and not yet answered (for /metrics)."""
        with self._lock:
            return self._waiting

    def attach(self) -> None:  # the deployment batches on its own: nothing to count here
        pass

    def detach(self) -> None:
        pass

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class RemoteText:
    name = "text"

    def __init__(self, handle, timeout_s: float = 60.0) -> None:
        self.handle = handle
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._waiting = 0

    def __call__(self, text: str) -> dict[str, float] | None:
        with self._lock:
            self._waiting += 1
        try:
            return self.handle.predict.remote(text).result(timeout_s=self.timeout_s)
        finally:
            with self._lock:
                self._waiting -= 1

    @property
    def depth(self) -> int:
        with self._lock:
            return self._waiting

    def attach(self) -> None:
        pass

    def detach(self) -> None:
        pass

    def close(self) -> None:
        pass


class RemoteDecoder:
    """Stands for ``streamer.asr.decode.Batcher`` on a :class:`RemoteWhisperHandle`: each decode
    goes to the Whisper deployment (which batches across every gateway's streams)."""

    def __init__(self, handle, timeout_s: float = 60.0) -> None:
        self.handle = handle
        self.timeout_s = timeout_s
        self.windows = 0

    def decode(self, x: np.ndarray, cfg, timestamps: bool) -> list[tuple[str, float, float, float]]:
        self.windows += 1
        words = self.handle.decode.remote((pcm_bytes(x), cfg, timestamps)).result(timeout_s=self.timeout_s)
        return [tuple(w) for w in words]


class RemoteWhisperHandle:
    """What ``streamer.asr.whisper.WhisperEngine`` needs of a ``WhisperHandle``: its options
    (for the name) and its decoder (``decode`` looks up ``handle._batcher``)."""

    def __init__(self, handle, options) -> None:
        self.options = options
        self._batcher = RemoteDecoder(handle)


@dataclass
class RayServices:
    """A :class:`~streamer.core.services.Services` look-alike over the model deployments
    (``whisper``: the Whisper deployment's handle, when it was deployed)."""

    audio: RemoteAudio
    text: RemoteText | None
    whisper: object | None = None

    def asr_factory(self, cfg):
        """() -> a WhisperEngine per stream whose decodes go to the Whisper deployment."""
        if self.whisper is None:
            raise SerError("no Whisper deployment: deploy with DeployOptions(whisper=ModelDeploymentOptions(...))")
        from streamer.asr.whisper import WhisperEngine
        from streamer.audio.encoder import WhisperOptions

        remote = RemoteWhisperHandle(self.whisper, WhisperOptions(cfg.whisper.model, cfg.whisper.compute_type,
                                                                  cfg.whisper.cpu_threads))
        return lambda: WhisperEngine(remote, cfg.asr.whisper, cfg.audio.window_samples, cfg.live.utterance_max_samples)

    def attach(self) -> None:
        pass

    def detach(self) -> None:
        pass

    def batch_stats(self) -> dict[str, list[dict]]:
        """Each replica's batch sizes, per model (``broadcast`` to every replica)."""
        out = {}
        for name, handle in (("audio", self.audio.handle), ("text", self.text and self.text.handle),
                             ("whisper", self.whisper)):
            if handle is not None:
                out[name] = list(handle.broadcast("batch_stats").results())
        return out

    def close(self) -> None:
        for svc in (self.audio, self.text):
            if svc is not None:
                svc.close()


def _bound(deployment, opts: ModelDeploymentOptions, config_path: str | None):
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARD_PREFIXES)}
    return deployment.options(num_replicas=opts.num_replicas, max_ongoing_requests=opts.max_ongoing_requests,
                              ray_actor_options={"num_cpus": opts.num_cpus, "runtime_env": {"env_vars": env}}
                              ).bind(config_path, opts.max_batch_size, opts.batch_wait_timeout_s)


_BATCH_ARGS = ("max_batch_size", "batch_wait_timeout_s")


def _from_args(args: dict | None) -> tuple[ModelDeploymentOptions, str | None]:
    """A serve config's ``args`` (``config_path``, ``max_batch_size``, ``batch_wait_timeout_s``):
    the replica counts and CPUs come from its ``deployments`` section instead.

    >>> _from_args({"max_batch_size": "4", "config_path": "/etc/ser.toml"})[0].max_batch_size
    4
    """
    args = dict(args or {})
    unknown = set(args) - {"config_path", *_BATCH_ARGS}
    if unknown:
        raise SerError(f"unknown args {sorted(unknown)} (known: config_path, {', '.join(_BATCH_ARGS)})")
    size = int(args.get("max_batch_size", ModelDeploymentOptions.max_batch_size))
    wait = float(args.get("batch_wait_timeout_s", ModelDeploymentOptions.batch_wait_timeout_s))
    return ModelDeploymentOptions(max_batch_size=size, batch_wait_timeout_s=wait,
                                  max_ongoing_requests=max(size, ModelDeploymentOptions.max_ongoing_requests)), \
        args.get("config_path")


# Application builders for a Ray Serve config (``serve deploy``), one application per model:
#   applications:
#     - name: ser-models
#       import_path: streamer.serve.ray_models:audio_app
#       args: {max_batch_size: 8, batch_wait_timeout_s: 0.005}
#       deployments: [{name: AudioEmotionDeployment, num_replicas: 4, ray_actor_options: {num_cpus: 0.5}}]
#     - name: ser-models-text    (streamer.serve.ray_models:text_app, TextEmotionDeployment)
#     - name: ser-models-whisper (streamer.serve.ray_models:whisper_app, WhisperDeployment; num_gpus: 1 on a GPU node)
# Gateways then join them with connect().
def audio_app(args: dict | None = None):
    opts, path = _from_args(args)
    return _bound(deployments()[0], opts, path)


def text_app(args: dict | None = None):
    opts, path = _from_args(args)
    return _bound(deployments()[1], opts, path)


def whisper_app(args: dict | None = None):
    opts, path = _from_args(args)
    return _bound(whisper_deployment(), opts, path)


def _services(opts: DeployOptions, handles: dict) -> RayServices:
    text = handles.get("text")
    return RayServices(RemoteAudio(handles["audio"], opts.client_threads), None if text is None else RemoteText(text),
                       handles.get("whisper"))


def _apps(opts: DeployOptions) -> dict[str, tuple[str, str, ModelDeploymentOptions | None]]:
    return {"audio": (opts.app_name, "AudioEmotionDeployment", opts.audio),
            "text": (f"{opts.app_name}-text", "TextEmotionDeployment", opts.text),
            "whisper": (f"{opts.app_name}-whisper", "WhisperDeployment", opts.whisper)}


def deploy(opts: DeployOptions = DeployOptions()) -> RayServices:
    """Start the model deployments on the running Ray cluster (``ray.init`` first) as the
    applications ``<app>``, ``<app>-text`` and ``<app>-whisper`` (when asked for), each with its
    own handle and replica count, and return the services over their handles."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        raise SerError("deploy() needs a running Ray cluster: call ray.init() (or set $RAY_ADDRESS) first")
    config_path = os.path.abspath(opts.config_path) if opts.config_path else None
    audio_d, text_d = deployments()
    built = {"audio": audio_d, "text": text_d, "whisper": whisper_deployment()}
    handles = {}
    for key, (app, _, model) in _apps(opts).items():
        if model is not None:
            handles[key] = serve.run(_bound(built[key], model, config_path), name=app, route_prefix=None)
    log.info("model deployments up: %s", ", ".join(f"{k} x{m.num_replicas}" for k, (_, _, m) in _apps(opts).items()
                                                   if m is not None))
    return _services(opts, handles)


def connect(opts: DeployOptions = DeployOptions()) -> RayServices:
    """The services over deployments already running (started by :func:`deploy` or a serve
    config), from a gateway or any other process of the cluster. ``opts.text`` / ``opts.whisper``
    None: not used."""
    from ray import serve

    handles = {}
    for key, (app, name, model) in _apps(opts).items():
        if model is not None or key == "audio":
            try:
                handles[key] = serve.get_deployment_handle(name, app_name=app)
            except Exception as exc:
                raise SerError(f"no {name} in the Ray Serve application {app!r} ({exc}); start it with "
                               "streamer.serve.ray_models.deploy() or the serve config") from exc
    return _services(opts, handles)


def undeploy(opts: DeployOptions = DeployOptions()) -> None:
    """Delete the applications :func:`deploy` started."""
    from ray import serve

    for key, (app, _, model) in _apps(opts).items():
        if model is not None:
            serve.delete(app)


# --- a measurement: python -m streamer.serve.ray_models [--windows N] [--max-batch B] [FILE] ---
def _measure(argv: list[str] | None = None) -> dict:
    """Time the audio model on the same windows: local, through the handle one at a time, and
    through the handle all at once (batched); a local 2-CPU cluster unless $RAY_ADDRESS is set."""
    import argparse
    import socket
    import time

    import ray
    import torch
    from ray import serve

    from streamer.audio.io import load_audio
    from streamer.config import Config
    from streamer.paths import CHECKOUT

    p = argparse.ArgumentParser(prog="python -m streamer.serve.ray_models", description=_measure.__doc__)
    p.add_argument("file", nargs="?", default=str(CHECKOUT / "demo" / "demo.flac"))
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--wait-ms", type=float, default=5.0)
    a = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    from streamer.audio.emotion import AudioEmotion
    from streamer.audio.encoder import EMBEDDED
    from streamer.live.factory import whisper_handle

    cfg = Config.load()
    size = cfg.audio.window_samples
    x = pcm_samples(pcm_bytes(load_audio(a.file)))
    step = max(1, (len(x) - size) // max(1, a.windows - 1))
    wins = [x[i * step:i * step + size] for i in range(a.windows)]
    model = AudioEmotion.load(cfg.audio.model_path, whisper_handle(cfg, EMBEDDED))
    model.predict(wins[0])
    t0 = time.perf_counter()
    want = [model.predict(w) for w in wins]
    local_ms = (time.perf_counter() - t0) * 1e3 / len(wins)
    del model
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
    else:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    svc = None
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"enable_access_log": False})
        t0 = time.perf_counter()
        opts = ModelDeploymentOptions(max_batch_size=a.max_batch, batch_wait_timeout_s=a.wait_ms / 1e3)
        svc = deploy(DeployOptions(audio=opts, text=None))
        deploy_s = time.perf_counter() - t0
        svc.audio(wins[0])
        t0 = time.perf_counter()
        serial = [svc.audio(w) for w in wins]
        serial_ms = (time.perf_counter() - t0) * 1e3 / len(wins)
        t0 = time.perf_counter()
        futures = [svc.audio.submit(w) for w in wins]
        together = [f.result() for f in futures]
        together_ms = (time.perf_counter() - t0) * 1e3 / len(wins)
        diff = max(abs(g[k] - w[k]) for got in (serial, together) for g, w in zip(got, want) for k in w)
        return {"windows": len(wins), "window_s": size / SAMPLE_RATE, "local_ms_per_window": round(local_ms, 1),
                "handle_serial_ms_per_window": round(serial_ms, 1),
                "handle_concurrent_ms_per_window": round(together_ms, 1), "max_abs_diff": diff,
                "deploy_s": round(deploy_s, 1), "batches": svc.batch_stats()["audio"]}
    finally:
        if svc is not None:
            svc.close()
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    import json as _json

    print(_json.dumps(_measure(), indent=1))

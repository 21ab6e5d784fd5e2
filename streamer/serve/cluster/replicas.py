"""The replicas of the model deployments (see :mod:`streamer.serve.cluster.models`): the options,
the PCM wire format, one class per model that loads it once and batches with ``@serve.batch``,
and the application builders a ``serve deploy`` config names.

>>> pcm_bytes(np.array([0.0, 0.5, -1.0], dtype=np.float32))
b'\\x00\\x00\\x00@\\x00\\x80'
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from streamer.core.messages import SAMPLE_RATE
from streamer.core.errors import SerError


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
    num_gpus: float = 0.0  # per replica (Whisper on a GPU node: 1)

    def __post_init__(self) -> None:
        if self.num_replicas < 1:
            raise SerError("num_replicas must be at least 1")
        if not 0 < self.num_cpus:
            raise SerError("num_cpus must be above 0 (a fraction is fine)")
        if self.num_gpus < 0:
            raise SerError("num_gpus must be 0 or more")
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
    from streamer.runtime.config import Config

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
        from streamer.audio.encoder import EMBEDDED
        from streamer.audio.load import load_audio_model
        from streamer.runtime.models import limit_threads, whisper_handle

        cfg = _config(config_path)
        self.model = load_audio_model(cfg.audio.model_path, whisper_handle(cfg, EMBEDDED))
        limit_threads(1)
        self.stats = _Stats()
        self.predict.set_max_batch_size(max_batch_size)
        self.predict.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def _run(self, windows: list[bytes]) -> list:
        """Each window's PCM bytes -> the model's score of it (stateless: the stream's
        statistics stay with the gateway's session)."""
        self.stats.add(len(windows))
        return self.model.score_batch([pcm_samples(w) for w in windows], SAMPLE_RATE)

    async def predict(self, windows: list[bytes]) -> list:
        return await asyncio.to_thread(self._run, windows)

    def stream_factory(self):
        """What a gateway needs to keep a stream's side of the model (small, no encoders)."""
        return self.model.stream_factory()

    def batch_stats(self) -> dict:
        return self.stats.report()


class _TextModel:
    def __init__(self, config_path: str | None, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        from streamer.runtime.models import limit_threads
        from streamer.text.load import load_text_emotion

        self.model = load_text_emotion(_config(config_path).text.model)
        limit_threads(1)
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
        from streamer.runtime.models import whisper_handle

        cfg = _config(config_path)
        import ray

        if ray.get_gpu_ids():  # the deployment was given a GPU (ray_actor_options num_gpus): decode on it
            from dataclasses import replace

            cfg = replace(cfg, whisper=replace(cfg.whisper, device="cuda"))
        self.handle = whisper_handle(cfg, cfg.whisper.model)
        self.stats = _Stats()
        self.decode.set_max_batch_size(max_batch_size)
        self.decode.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def _run(self, items: list[tuple[bytes, object, bool]]) -> list[list[tuple[str, float, float, float]]]:
        from streamer.asr.decode import Decoding, decode_batch

        self.stats.add(len(items))
        out: list = [None] * len(items)
        for cfg in dict.fromkeys(c for _, c, _ in items):  # one decode_batch per setting, in arrival order
            idx = [k for k, (_, c, _) in enumerate(items) if c == cfg]
            words = decode_batch(self.handle, [(pcm_samples(items[k][0]), items[k][2]) for k in idx], cfg)
            for k, w in zip(idx, words):
                out[k] = Decoding([tuple(x) for x in w], w.evidence if isinstance(w, Decoding) else None)  # the text gate's evidence travels
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


def bound_deployment(deployment, opts: ModelDeploymentOptions, config_path: str | None):
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARD_PREFIXES)}
    return deployment.options(num_replicas=opts.num_replicas, max_ongoing_requests=opts.max_ongoing_requests,
                              ray_actor_options={"num_cpus": opts.num_cpus, "num_gpus": opts.num_gpus,
                                                 "runtime_env": {"env_vars": env}}
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
    try:
        size = int(args.get("max_batch_size", ModelDeploymentOptions.max_batch_size))
        wait = float(args.get("batch_wait_timeout_s", ModelDeploymentOptions.batch_wait_timeout_s))
    except (TypeError, ValueError):
        raise SerError(f"args max_batch_size {args.get('max_batch_size')!r} / batch_wait_timeout_s "
                       f"{args.get('batch_wait_timeout_s')!r}: give a whole number and seconds") from None
    return ModelDeploymentOptions(max_batch_size=size, batch_wait_timeout_s=wait,
                                  max_ongoing_requests=max(size, ModelDeploymentOptions.max_ongoing_requests)), \
        args.get("config_path")


# Application builders for a Ray Serve config (``serve deploy``), one application per model:
#   applications:
#     - name: ser-models
#       import_path: streamer.serve.cluster.models:audio_app
#       args: {max_batch_size: 8, batch_wait_timeout_s: 0.005}
#       deployments: [{name: AudioEmotionDeployment, num_replicas: 4, ray_actor_options: {num_cpus: 0.5}}]
#     - name: ser-models-text    (streamer.serve.cluster.models:text_app, TextEmotionDeployment)
#     - name: ser-models-whisper (streamer.serve.cluster.models:whisper_app, WhisperDeployment; num_gpus: 1 on a GPU node)
# Gateways then join them with connect().
def audio_app(args: dict | None = None):
    opts, path = _from_args(args)
    return bound_deployment(deployments()[0], opts, path)


def text_app(args: dict | None = None):
    opts, path = _from_args(args)
    return bound_deployment(deployments()[1], opts, path)


def whisper_app(args: dict | None = None):
    opts, path = _from_args(args)
    return bound_deployment(whisper_deployment(), opts, path)

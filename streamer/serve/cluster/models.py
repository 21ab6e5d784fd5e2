"""The stateless models as Ray Serve deployments (issue 20): the two emotion models and,
optionally, Whisper; and the
:class:`RayServices` a :class:`~streamer.core.session.StreamSession` uses in place of the
process's own :class:`~streamer.core.services.Services`.

- :class:`AudioEmotionDeployment` takes a window as raw PCM bytes (int16 little-endian,
  ``SAMPLE_RATE`` Hz, mono) and returns the model's stateless score of it (the pooled model's
  rows; the network's probabilities). The stream's side (its running statistics) stays in
  the gateway's session, fed in window order (:meth:`RayServices.audio_stream`), so a call's
  answers are the same on any replica, batch or arrival order;
- :class:`TextEmotionDeployment` takes a string and returns the dict, or None (no words).

Each replica loads its model once (one thread a request) and batches the requests it
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

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from streamer.core.messages import SAMPLE_RATE
from streamer.core.errors import SerError
from streamer.core.services import TimedFuture
from streamer.serve.cluster.replicas import (APP_NAME, DeployOptions, ModelDeploymentOptions, bound_deployment,
                                         audio_app, deployments, pcm_bytes, pcm_samples, text_app, whisper_app,
                                         whisper_deployment)

if TYPE_CHECKING:
    from streamer.asr.decode import Decoding

__all__ = ["APP_NAME", "DeployOptions", "ModelDeploymentOptions", "RayServices", "RemoteAudio", "RemoteDecoder",
           "RemoteText", "RemoteWhisperHandle", "audio_app", "connect", "deploy", "pcm_bytes", "pcm_samples",
           "text_app", "undeploy", "whisper_app"]

log = logging.getLogger(__name__)

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
        self._stream_factory = None
        self._factory_lock = threading.Lock()

    def _wait(self, response, out: TimedFuture, t0: float) -> None:
        try:
            got = response.result(timeout_s=self.timeout_s)
        except BaseException as exc:
            out.set_exception(exc)
        else:
            out.compute_ms = (time.perf_counter() - t0) * 1e3  # the round trip, for the window's timings
            out.set_result(got)
        finally:
            with self._lock:
                self._waiting -= 1

    def submit(self, samples: ArrayLike, stream=None) -> TimedFuture:
        """A window's float32 samples -> a future of the model's score of it (``stream``: the
        replica batches what reaches it in order, whichever stream it is for)."""
        t0 = time.perf_counter()
        response = self.handle.predict.remote(pcm_bytes(samples))
        with self._lock:
            self._waiting += 1
            self.items += 1
        out = TimedFuture()
        self._pool.submit(self._wait, response, out, t0)
        return out

    def __call__(self, samples: ArrayLike):
        return self.submit(samples).result()

    def stream_factory(self):
        """The deployment's ``() -> stream`` (its head, fetched once per gateway)."""
        with self._factory_lock:
            if self._stream_factory is None:
                # on the client pool's thread: a caller may be on an event loop, where Ray's
                # blocking result() is refused
                fetch = self._pool.submit(lambda: self.handle.stream_factory.remote().result(timeout_s=self.timeout_s))
                self._stream_factory = fetch.result()
            return self._stream_factory

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

    def decode(self, x: np.ndarray, cfg, timestamps: bool, urgent: bool = True) -> "Decoding":
        """``urgent`` is the local Batcher's; the deployment serves its batches in order."""
        self.windows += 1
        from streamer.asr.decode import Decoding

        words = self.handle.decode.remote((pcm_bytes(x), cfg, timestamps)).result(timeout_s=self.timeout_s)
        return Decoding([tuple(w) for w in words], words.evidence if isinstance(words, Decoding) else None)  # keeps the text gate's evidence


class RemoteWhisperHandle:
    """What ``streamer.asr.whisper.WhisperEngine`` needs of a ``WhisperHandle``: its options
    (for the name) and its ``decoder`` (``streamer.asr.decode.Batcher.of`` uses it)."""

    def __init__(self, handle, options) -> None:
        self.options = options
        self.decoder = RemoteDecoder(handle)


@dataclass
class RayServices:
    """The cluster's :class:`~streamer.core.services.InferenceServices`: the model deployments
    (``whisper``: the Whisper deployment's handle, when it was deployed)."""

    audio: RemoteAudio
    text: RemoteText | None
    whisper: object | None = None

    def audio_stream(self):
        """A new stream's side of the audio model, as :class:`~streamer.core.services.Services` gives."""
        return self.audio.stream_factory()()

    def asr_factory(self, cfg):
        """() -> a WhisperEngine per stream whose decodes go to the Whisper deployment."""
        if self.whisper is None:
            raise SerError("no Whisper deployment: deploy with DeployOptions(whisper=ModelDeploymentOptions(...))")
        from streamer.asr.whisper import WhisperEngine
        from streamer.audio.encoder import WhisperOptions

        remote = RemoteWhisperHandle(self.whisper, WhisperOptions(cfg.whisper.model, cfg.whisper.compute_type,
                                                                  cfg.whisper.cpu_threads, device=cfg.whisper.device))
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


def _services(opts: DeployOptions, handles: dict) -> RayServices:
    text = handles.get("text")
    return RayServices(RemoteAudio(handles["audio"], opts.client_threads), None if text is None else RemoteText(text),
                       handles.get("whisper"))


def model_apps(opts: DeployOptions) -> dict[str, tuple[str, str, ModelDeploymentOptions | None]]:
    return {"audio": (opts.app_name, "AudioEmotionDeployment", opts.audio),
            "text": (f"{opts.app_name}-text", "TextEmotionDeployment", opts.text),
            "whisper": (f"{opts.app_name}-whisper", "WhisperDeployment", opts.whisper)}


def deploy(opts: DeployOptions = DeployOptions(), wait: bool = True) -> RayServices:
    """Start the model deployments on the running Ray cluster (``ray.init`` first) as the
    applications ``<app>``, ``<app>-text`` and ``<app>-whisper`` (when asked for), each with its
    own handle and replica count, and return the services over their handles. ``wait``: until
    every replica runs (``serve.run``); False returns at once, for a caller that waits for the
    replicas the cluster can hold (``serve.run`` would wait for ever for one that does not fit)."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        raise SerError("deploy() needs a running Ray cluster: call ray.init() (or set $RAY_ADDRESS) first")
    config_path = os.path.abspath(opts.config_path) if opts.config_path else None
    audio_d, text_d = deployments()
    built = {"audio": audio_d, "text": text_d, "whisper": whisper_deployment()}
    handles = {}
    for key, (app, _, model) in model_apps(opts).items():
        if model is not None:
            target = bound_deployment(built[key], model, config_path)
            handles[key] = serve.run(target, name=app, route_prefix=None) if wait else serve.run_many(
                [serve.RunTarget(target, name=app, route_prefix=None)], wait_for_applications_running=False)[0]
    log.info("model deployments %s: %s", "up" if wait else "deployed",
             ", ".join(f"{k} x{m.num_replicas}" for k, (_, _, m) in model_apps(opts).items() if m is not None))
    return _services(opts, handles)


def connect(opts: DeployOptions = DeployOptions()) -> RayServices:
    """The services over deployments already running (started by :func:`deploy` or a serve
    config), from a gateway or any other process of the cluster. ``opts.text`` / ``opts.whisper``
    None: not used."""
    from ray import serve

    handles = {}
    for key, (app, name, model) in model_apps(opts).items():
        if model is not None or key == "audio":
            try:
                handles[key] = serve.get_deployment_handle(name, app_name=app)
            except Exception as exc:
                raise SerError(f"no {name} in the Ray Serve application {app!r} ({exc}); start it with "
                               "streamer.serve.cluster.models.deploy() or the serve config") from exc
    return _services(opts, handles)


def undeploy(opts: DeployOptions = DeployOptions()) -> None:
    """Delete the applications :func:`deploy` started."""
    from ray import serve

    for key, (app, _, model) in model_apps(opts).items():
        if model is not None:
            serve.delete(app)


# --- a measurement: python -m streamer.serve.cluster.models [--windows N] [--max-batch B] [FILE] ---
def _measure(argv: list[str] | None = None) -> dict:
    """Time the audio model on the same windows: local, through the handle one at a time, and
    through the handle all at once (batched); a local 2-CPU cluster unless $RAY_ADDRESS is set."""
    import argparse
    import socket

    import ray
    from ray import serve

    from streamer.audio.io import load_audio
    from streamer.runtime.config import Config
    from streamer.core.paths import CHECKOUT

    p = argparse.ArgumentParser(prog="python -m streamer.serve.cluster.models", description=_measure.__doc__)
    p.add_argument("file", nargs="?", default=str(CHECKOUT / "demo" / "demo.flac"))
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--wait-ms", type=float, default=5.0)
    a = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from streamer.audio.load import load_audio_model
    from streamer.audio.encoder import EMBEDDED
    from streamer.runtime.models import whisper_handle

    cfg = Config.load()
    size = cfg.audio.window_samples
    x = pcm_samples(pcm_bytes(load_audio(a.file)))
    step = max(1, (len(x) - size) // max(1, a.windows - 1))
    wins = [x[i * step:i * step + size] for i in range(a.windows)]
    model = load_audio_model(cfg.audio.model_path, whisper_handle(cfg, EMBEDDED))
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
        # each window as the first of a fresh stream: the training prior, as model.predict
        serial, together = ([svc.audio_stream().probs(s) for s in got] for got in (serial, together))
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

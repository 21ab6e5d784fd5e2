"""The emotion models as Ray Serve deployments (issue 20), on a real local cluster of 2 CPUs
(``@serve.batch`` does not run under ``_local_testing_mode``): concurrent windows are batched
and give the local model's results; a Pipeline over RayServices gives the same windows and
labels as over the process's own services."""

import os
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from streamer.core.messages import SAMPLE_RATE
from streamer.serve.cluster.models import pcm_bytes

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

SENTENCES = (("good morning, this is the billing department, how may I help you", "en-us"),
             ("my parcel never arrived and I want my money back right now, this is a disgrace", "en-us+m3"))
TEXTS = ("I am so happy with this", "this is terrible and I am furious", "my parcel never arrived",
         "", "thank you so much", "why does nobody ever answer", "okay", "I am scared it will happen again")


def espeak(text, voice, path):
    raw = path.with_name(path.stem + ".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path), "pad", "0.3", "0.5"], check=True)
    raw.unlink()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ENV = {"RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    d = tmp_path_factory.mktemp("speech")
    paths = []
    for k, (text, voice) in enumerate(SENTENCES):
        espeak(text, voice, d / f"s{k}.wav")
        paths.append(d / f"s{k}.wav")
    both = d / "call.wav"
    subprocess.run(["sox", *map(str, paths), str(both)], check=True)
    return both


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Whisper for the words, as in test_batch_ray (no Vosk model found), and the replicas get it too."""
    saved = {k: os.environ.get(k) for k in (*ENV, "SER_MODELS_DIR", "SER_VOSK_MODEL")}
    os.environ.update(ENV, SER_MODELS_DIR=str(tmp_path_factory.mktemp("nomodels")))
    os.environ.pop("SER_VOSK_MODEL", None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def local(env):
    import torch

    from streamer.runtime.config import Config
    from streamer.runtime.models import load_models

    torch.set_num_threads(1)
    cfg = Config.load()
    return cfg, load_models(cfg)


@pytest.fixture(scope="module")
def services(env):
    from ray import serve

    from streamer.serve.cluster.models import DeployOptions, ModelDeploymentOptions, deploy

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    svc = None
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()},
                    logging_config={"enable_access_log": False})
        model = ModelDeploymentOptions(num_replicas=1, num_cpus=0.5, max_batch_size=8, batch_wait_timeout_s=0.1)
        svc = deploy(DeployOptions(audio=model, text=model, whisper=model))
        yield svc
    finally:
        if svc is not None:
            svc.close()
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def windows_of(path, n, size):
    from streamer.audio.io import load_audio

    x = load_audio(path)
    x = (np.round(x * 32768).clip(-32768, 32767) / 32768).astype(np.float32)  # what the session sends: int16 / 32768
    step = max(1, (len(x) - size) // max(1, n - 1))
    return [x[i * step:i * step + size] for i in range(n)]


def close(a, b, tol=1e-5):
    if a is None or b is None:
        return a is b
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= tol for k in a)


def test_pcm_round_trip_is_exact():
    from streamer.serve.cluster.models import pcm_bytes, pcm_samples

    x = (np.arange(-32768, 32768, 7, dtype=np.int32) / 32768).astype(np.float32)
    assert np.array_equal(pcm_samples(pcm_bytes(x)), x)
    assert pcm_bytes(np.array([2.0, -2.0])) == np.array([32767, -32768], "<i2").tobytes()  # clipped, not wrapped


def test_concurrent_windows_are_batched_and_equal_the_local_model(speech, local, services):
    cfg, models = local
    wins = windows_of(speech, 12, cfg.audio.window_samples)
    local_stream, remote_stream = models.audio.stream(), services.audio_stream()
    want = [local_stream.probs(s) for s in models.audio.score_batch(wins)]
    before = services.batch_stats()
    futures = [services.audio.submit(w) for w in wins]  # all at once: the replica batches them
    got = [remote_stream.probs(f.result(timeout=60)) for f in futures]  # the stream's side stays here
    assert all(close(g, w) for g, w in zip(got, want)), (got[0], want[0])
    assert services.audio.depth == 0
    assert all(f.compute_ms > 0 for f in futures)  # each window's round trip, for its timings
    with ThreadPoolExecutor(len(TEXTS)) as pool:
        texts = list(pool.map(services.text, TEXTS))
    assert all(close(g, models.text.predict(t)) for g, t in zip(texts, TEXTS))
    assert texts[TEXTS.index("")] is None and texts[0] is not None
    after = services.batch_stats()
    for name, n in (("audio", len(wins)), ("text", len(TEXTS))):
        (b,), (a,) = before[name], after[name]  # one replica each
        assert a["items"] - b["items"] == n, (name, a, b)
        assert a["batches"] - b["batches"] < n and a["largest"] > 1, (name, a, b)  # batches, not one by one


def run_pipeline(cfg, models, path, services=None, asr_factory=None):
    from streamer.core.messages import WindowResult
    from streamer.runtime.streams import open_stream
    from streamer.live.sources import FileSource

    from dataclasses import replace

    out = []
    source = FileSource(path, fast=True)
    if services is not None:
        models = replace(models, services=services)
    pipe = open_stream(cfg, models, source, [lambda r: out.append(r) if isinstance(r, WindowResult) else None],
                       block_when_full=True, asr=asr_factory)
    t0 = time.perf_counter()
    summary = pipe.run(threading.Event())
    assert not pipe.error, pipe.error
    return out, summary, time.perf_counter() - t0


def test_pipeline_over_ray_services_equals_local(speech, local, services):
    cfg, models = local
    ref, _, _ = run_pipeline(cfg, models, speech)
    stats = services.batch_stats()
    got, summary, _ = run_pipeline(cfg, models, speech, services)
    now = services.batch_stats()
    assert now["audio"][0]["items"] - stats["audio"][0]["items"] == len(got)  # every window went through Ray
    assert now["text"][0]["items"] > stats["text"][0]["items"]
    assert len(ref) >= 3 and summary["windows"] == len(ref)
    key = lambda w: (w.index, w.start, w.end, w.label, " ".join(x.word for x in w.words))  # noqa: E731
    assert [key(w) for w in got] == [key(w) for w in ref]
    assert all(close(g.audio, r.audio) and close(g.text, r.text) and close(g.fused, r.fused, 1e-4)
               for g, r in zip(got, ref))
    assert any(w.text is not None for w in got)  # the text branch ran through its deployment
    before = services.batch_stats()["whisper"][0]["items"]
    remote, _, _ = run_pipeline(cfg, models, speech, services, services.asr_factory(cfg))  # Whisper on Ray too
    assert [key(w) for w in remote] == [key(w) for w in ref]
    assert services.batch_stats()["whisper"][0]["items"] > before  # the words came from the deployment


def test_whisper_deployment_batches_and_equals_local_decode(speech, local, services):
    from streamer.asr.decode import decode
    from streamer.audio.io import load_audio
    from streamer.serve.cluster.models import RemoteDecoder

    cfg, models = local
    x = (np.round(load_audio(speech) * 32768).clip(-32768, 32767) / 32768).astype(np.float32)
    n = len(x) // 2
    parts = [x[:n], x[n:], x[: n // 2], x[n // 2: n]]
    engine = models.asr_factory()
    want = [decode(engine.handle, p, cfg.asr.whisper, True) for p in parts]
    assert all(want)  # real words in each part
    remote = RemoteDecoder(services.whisper)
    before = services.batch_stats()["whisper"][0]
    with ThreadPoolExecutor(len(parts)) as pool:
        got = list(pool.map(lambda p: remote.decode(p, cfg.asr.whisper, True), parts))
    after = services.batch_stats()["whisper"][0]
    assert [[w[0] for w in g] for g in got] == [[w[0] for w in ws] for ws in want]
    assert all(abs(a[1] - b[1]) < 0.05 and abs(a[2] - b[2]) < 0.05 for g, ws in zip(got, want) for a, b in zip(g, ws))
    assert after["items"] - before["items"] == len(parts) and after["largest"] > 1, (before, after)


def test_connect_and_the_serve_config_builder(speech, local, services):
    from ray import serve

    from streamer.core.errors import SerError
    from streamer.serve.cluster.models import DeployOptions, audio_app, connect

    cfg, models = local
    wins = windows_of(speech, 3, cfg.audio.window_samples)
    joined = connect(DeployOptions(text=None))  # the running deployments, as a gateway finds them
    try:
        assert joined.text is None  # a fresh stream's first window: the training prior, as predict()
        assert close(joined.audio_stream().probs(joined.audio(wins[0])), models.audio.predict(wins[0]))
    finally:
        joined.close()
    with pytest.raises(SerError, match="no AudioEmotionDeployment in the Ray Serve application 'nowhere'"):
        connect(DeployOptions(app_name="nowhere", text=None))
    handle = serve.run(audio_app({"max_batch_size": "2", "batch_wait_timeout_s": "0.2"}), name="built",
                       route_prefix=None)  # what `serve deploy` does with the config's import_path and args
    try:
        with ThreadPoolExecutor(3) as pool:
            got = list(pool.map(lambda w: handle.predict.remote(pcm_bytes(w)).result(timeout_s=60), wins))
        assert all(close(models.audio.stream().probs(g), models.audio.predict(w)) for g, w in zip(got, wins))
        (stats,) = handle.broadcast("batch_stats").results()
        assert stats["largest"] == 2 and stats["items"] == 3  # its max_batch_size came from the args
    finally:
        serve.delete("built")

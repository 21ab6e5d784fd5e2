"""Building the pipeline's parts from a :class:`Config`: models loaded once per process, and
the settings the pipeline needs. Used by ``ser-live``, the benchmarks and batch analysis."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from streamer.core.messages import SAMPLE_RATE
from streamer.runtime.config import Config
from streamer.core.errors import ModelError
from streamer.core.recognizer import AsrEngine
from streamer.core.services import AudioModel, InferenceServices, TextModel


@dataclass
class Models:
    """What a process loaded: the models, a factory of recognisers (one per stream, over shared
    models), the names the logs record, and the services every stream goes through."""

    audio: AudioModel  # streamer.audio: PooledEmotion (the default) or AudioEmotion (the network)
    text: TextModel | None  # streamer.text's TextEmotion; None: no text branch
    asr_factory: Callable[[], AsrEngine | None]
    names: dict[str, str]
    services: InferenceServices | None = None  # the shared model services (None: this process's, made from audio and text)

    def shared_services(self):
        """What every stream's windows and texts go through: ``services`` (the Ray Serve
        deployments' handles, say), else this process's batching services of the models."""
        if self.services is not None:
            return self.services
        from streamer.core.services import services_for

        return services_for(self.audio, self.text)


def whisper_handle(cfg: Config, model: str):
    from streamer.audio.encoder import WhisperHandle, WhisperOptions

    return WhisperHandle.shared(WhisperOptions(model, cfg.whisper.compute_type, cfg.whisper.cpu_threads,
                                               device=cfg.whisper.device))


def asr_factory(cfg: Config, whisper=None):
    """A factory of recognisers: Vosk when asked for or (auto) when a model is found, else
    Whisper (``whisper``: a factory of Whisper recognisers to use instead of this process's own
    model, such as ``RayServices.asr_factory``'s)."""
    from streamer.asr.vosk import HOW_TO_GET, VoskEngine, find_vosk_model, shared_model
    from streamer.asr.whisper import WhisperEngine

    engine = cfg.asr.engine
    vosk_path = find_vosk_model(None, cfg.asr.vosk_model or None) if engine != "whisper" else None
    if engine == "vosk" or (engine == "auto" and vosk_path is not None):
        if vosk_path is None:
            raise ModelError(f"--asr vosk needs a Vosk model and none was found; {HOW_TO_GET}")
        if not vosk_path.exists():
            raise ModelError(f"Vosk model {vosk_path} does not exist; {HOW_TO_GET}")
        shared_model(vosk_path)  # load (and check) once, now
        return lambda: VoskEngine(vosk_path, cfg.asr.whisper.text_gate)
    if whisper is not None:
        return whisper
    handle = whisper_handle(cfg, cfg.whisper.model)
    return lambda: WhisperEngine(handle, cfg.asr.whisper, cfg.audio.window_samples, cfg.live.utterance_max_samples)


def load_models(cfg: Config, with_asr: bool = True) -> Models:
    from streamer.runtime.heap import tune_allocator

    tune_allocator()  # before the threads start: few arenas (heap.py)
    from streamer.audio.load import load_audio_model
    from streamer.audio.encoder import EMBEDDED
    from streamer.text.load import load_text_emotion

    from streamer.core.fusion import Fuser

    Fuser(cfg.fusion)  # a missing or corrupt fusion model fails now, not at the first window
    # The models a user names (a hub name that may be offline, a folder) load first, so a
    # mistake fails in seconds, before the shipped models take theirs.
    text = load_text_emotion(cfg.text.model)
    factory = asr_factory(cfg) if with_asr else (lambda: None)
    audio = load_audio_model(cfg.audio.model_path, whisper_handle(cfg, EMBEDDED))
    probe = factory()
    names = {"asr": probe.name if probe is not None else "none",
             "audio": f"{cfg.audio.model_path.name} ({audio.digest})",
             "text": text.name}
    return Models(audio, text, factory, names)


def pipeline_settings(cfg: Config, block_when_full: bool, channel: str | None = None):
    from streamer.core.session import SessionSettings

    return SessionSettings(cfg.audio.window_samples, cfg.audio.min_window_samples, cfg.live.utterance_max_samples,
                            cfg.vad, cfg.fusion,
                            cfg.live.queue_windows, cfg.live.queue_chunks, cfg.live.words_timeout_s,
                            cfg.live.join_timeout_s, block_when_full=block_when_full, channel=channel,
                            max_lag_s=cfg.live.max_lag_s)


def warm_up(models: Models) -> None:
    """First calls compile and allocate (CTranslate2, TorchScript's optimised graphs for a few
    sentence lengths): do them before the stream starts so that the first window's latency
    is real and memory after warm-up is what the session keeps. Then hand the loading's
    freed heap back to the system."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = (0.1 * np.sin(2 * np.pi * 180 * np.arange(24000) / SAMPLE_RATE) + rng.normal(0, 0.01, 24000)).astype(np.float32)
    models.audio.predict(x)
    if models.text is not None:
        for n in (1, 2, 5, 12, 30):
            models.text.predict(" ".join(["warming up"] * n))
    from streamer.runtime.heap import release_free_memory

    release_free_memory()


def limit_threads(n: int) -> None:
    """Each model request on ``n`` threads: torch's setting where something loaded torch (a Hugging
    Face text model, a network without its ONNX export); onnxruntime sessions and CTranslate2 take
    theirs when they are made. Never imports torch itself (it is not needed to run)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(max(1, int(n)))

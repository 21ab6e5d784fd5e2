"""A Whisper encoder on onnxruntime: the audio model's second encoder (Whisper base) without
loading the whole CTranslate2 model (decoder included) for it.

``models/whisper-base-encoder/encoder.onnx`` is Whisper base's encoder alone, exported by
``python -m streamer.train.export whisper-base models/whisper-base-encoder`` from the same
CTranslate2 weights the embedded Whisper base ships, with 8-bit MatMul weights
(:mod:`streamer.train.export_whisper`). :class:`OnnxEncoder` keeps the contract of
:meth:`streamer.audio.encoder.WhisperHandle.encode`: (T, D) frames of 16 kHz mono float32,
one per 20 ms, unpadded; the log-mel is faster-whisper's own (numpy).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamer.core.errors import ModelError

log = logging.getLogger(__name__)

ENCODER_DIR = "whisper-base-encoder"  # under models/
ENCODER_FILE = "encoder.onnx"
ENCODER_META = "encoder.onnx.json"
MAX_SAMPLES = 30 * 16000  # Whisper's positions cover 30 s


class OnnxEncoder:
    """One exported Whisper encoder; ``encode`` is safe to call from several threads."""

    _lock = threading.Lock()
    _cache: dict[tuple[str, int], "OnnxEncoder"] = {}

    def __init__(self, folder: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort
        from faster_whisper.feature_extractor import FeatureExtractor

        folder = Path(folder)
        try:
            self.meta = json.loads((folder / ENCODER_META).read_text())
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            self.session = ort.InferenceSession(str(folder / ENCODER_FILE), opts, providers=["CPUExecutionProvider"])
        except FileNotFoundError as exc:
            raise ModelError(f"encoder folder {folder} is incomplete ({exc.filename} missing); make it with "
                             f"python -m streamer.train.export whisper-base {folder}") from exc
        except Exception as exc:  # onnxruntime raises its own types for a damaged graph
            raise ModelError(f"cannot load the encoder in {folder} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                             f"export it again: python -m streamer.train.export whisper-base {folder}") from exc
        self.features = FeatureExtractor(feature_size=int(self.meta["n_mels"]))
        self.dim = int(self.meta["dim"])
        self.name = f"{self.meta.get('source', folder.name)} (onnx)"
        log.info("Whisper encoder loaded from %s (onnxruntime)", folder)

    @classmethod
    def shared(cls, folder: str | Path, threads: int = 1) -> "OnnxEncoder":
        """The process-wide encoder of ``folder``, loaded on first use."""
        key = (str(Path(folder).resolve()), threads)
        with cls._lock:
            if key not in cls._cache:
                cls._cache[key] = cls(folder, threads)
            return cls._cache[key]

    def encode(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """(T, D) encoder frames of ``x``; T = 1 + len(x) // 320, as CTranslate2's encoder gives."""
        x = np.ascontiguousarray(x[:MAX_SAMPLES], dtype=np.float32)
        mel = self.features(x, padding=160)
        return self.session.run(None, {"mel": np.ascontiguousarray(mel[None], dtype=np.float32)})[0][0]

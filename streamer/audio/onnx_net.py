"""The audio network (``models/audio-emotion-network``) on onnxruntime: no torch at run time.

``python -m streamer.train.export audio FOLDER`` writes ``model.onnx`` beside the torch
weights; :class:`OnnxAudioEmotion` then gives what ``streamer.audio.emotion.AudioEmotion``
gives (the same windows, linear-head blend, temperature and pooling), checked against it in
``tests/test_onnx.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from streamer.audio.encoder import WhisperHandle, WhisperOptions
from streamer.audio.features import split_windows
from streamer.audio.linear import LinearHead, pooled_stats
from streamer.audio.pooling import pool_windows, softmax_t
from streamer.audio.prepare import prepare_input
from streamer.audio.windows import FrameInputs, blend_logits, encode_window, pad_inputs
from streamer.core.errors import MissingDependency, ModelError
from streamer.core.labels import LABELS
from streamer.core.messages import SAMPLE_RATE
from streamer.core.services import PlainStream

ONNX_FILE = "model.onnx"
ONNX_META = "model.onnx.json"
ONNX_FORMAT = 1


class OnnxAudioNet:
    """The exported network: (B, Dw, T) encoder frames, (B, Dp, T) prosody frames, (B,) lengths
    -> (B, 7) logits."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependency("onnxruntime", "the audio network") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own error types
            raise ModelError(f"{path} cannot be loaded ({str(exc).splitlines()[0]}); export it again: "
                             f"python -m streamer.train.export audio {Path(path).parent}") from exc

    def __call__(self, whisper: NDArray, prosody: NDArray, lengths: NDArray) -> NDArray[np.float32]:
        return self.session.run(None, {"whisper": np.ascontiguousarray(whisper, np.float32),
                                       "prosody": np.ascontiguousarray(prosody, np.float32),
                                       "lengths": np.asarray(lengths, np.int64)})[0]


class OnnxAudioEmotion:
    """Audio emotion from the exported network, the shared Whisper encoder and the linear head."""

    def __init__(self, net: OnnxAudioNet, meta: dict, whisper: WhisperHandle, linear: LinearHead | None,
                 linear_weight: float) -> None:
        self.net = net
        self.config = meta["net"]
        self.use_whisper = self.config.get("inputs", "both") in ("both", "whisper")
        self.temperature = float(meta.get("temperature", 1.0))
        self.window_samples = int(meta["window_samples"])
        self.min_window_samples = int(meta["min_window_samples"])
        self.tail_samples = int(meta.get("tail_samples", 0))
        self.whisper = whisper
        self.linear = linear
        self.linear_weight = float(linear_weight) if linear is not None else 0.0
        self.labels = LABELS

    @classmethod
    def load(cls, folder: str | Path, whisper: WhisperHandle | None = None) -> "OnnxAudioEmotion":
        folder = Path(folder)
        try:
            meta = json.loads((folder / "config.json").read_text())
            labels = json.loads((folder / "labels.json").read_text())
        except FileNotFoundError as exc:
            raise ModelError(f"audio model folder {folder} is incomplete ({Path(exc.filename).name} missing)") from exc
        except json.JSONDecodeError as exc:
            raise ModelError(f"audio model folder {folder}: {exc}") from exc
        if tuple(labels) != LABELS:
            raise ModelError(f"{folder}/labels.json lists {labels}, expected {list(LABELS)}")
        linear, weight = None, 0.0
        if meta.get("blend"):
            try:
                linear = LinearHead.load(folder / meta["blend"]["linear"])
            except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
                raise ModelError(f"audio model folder {folder}: unreadable linear head ({exc})") from exc
            weight = float(meta["blend"]["weight"])
        whisper = whisper or WhisperHandle.shared(WhisperOptions(model=meta.get("whisper_model", WhisperOptions().model)))
        return cls(OnnxAudioNet(folder / ONNX_FILE), meta, whisper, linear, weight)

    def window_inputs(self, x: NDArray[np.float32]) -> list[FrameInputs]:
        whisper = self.whisper if self.use_whisper else None
        dim = int(self.config.get("whisper_dim", 384))
        return [encode_window(whisper, x[a:b], self.tail_samples, dim)
                for a, b in split_windows(x.size, self.window_samples, self.min_window_samples)]

    def window_logits(self, items: Sequence[FrameInputs]) -> NDArray[np.float32]:
        z = self.net(*pad_inputs(items))
        if self.linear is None or self.linear_weight == 0:
            return z
        lin = self.linear.logits(pooled_stats([i.whisper for i in items], [i.prosody for i in items]))
        return blend_logits(z, lin, self.linear_weight)

    def window_probs(self, items: Sequence[FrameInputs]) -> NDArray[np.float32]:
        return softmax_t(self.window_logits(items), self.temperature).astype(np.float32)

    def predict_proba_batch(self, audios: Sequence[ArrayLike], sample_rate: int = SAMPLE_RATE) -> NDArray[np.float32]:
        items: list[FrameInputs] = []
        owners: list[int] = []
        for k, audio in enumerate(audios):
            windows = self.window_inputs(prepare_input(audio, sample_rate))
            items.extend(windows)
            owners.extend([k] * len(windows))
        return pool_windows(self.window_logits(items), owners, [len(i) for i in items], len(audios), self.temperature)

    def predict_proba(self, audio: ArrayLike, sample_rate: int = SAMPLE_RATE) -> NDArray[np.float32]:
        return self.predict_proba_batch([audio], sample_rate)[0]

    def predict(self, audio: ArrayLike, sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
        return dict(zip(LABELS, map(float, self.predict_proba(audio, sample_rate))))

    def predict_batch(self, audios: Sequence[ArrayLike], sample_rate: int = SAMPLE_RATE) -> list[dict[str, float]]:
        return [dict(zip(LABELS, map(float, row))) for row in self.predict_proba_batch(audios, sample_rate)]

    score_batch = predict_batch  # no per-stream state: a window's score is its probabilities

    def stream_factory(self):
        return PlainStream

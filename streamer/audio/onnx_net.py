"""The audio network (``models/audio-emotion-network``) on onnxruntime: no torch at run time.

``python -m streamer.train.export audio FOLDER`` writes ``model.onnx`` beside the torch
weights; :class:`OnnxAudioEmotion` then gives what ``streamer.audio.emotion.AudioEmotion``
gives (the same windows, linear-head blend, temperature and pooling), checked against it in
``tests/test_onnx.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamer.audio.encoder import WhisperHandle
from streamer.audio.linear import LinearHead
from streamer.audio.windowed import WindowedEmotion, file_digest, read_network_folder, shared_whisper
from streamer.core.errors import MissingDependency, ModelError

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


class OnnxAudioEmotion(WindowedEmotion):
    """Audio emotion from the exported network, the shared Whisper encoder and the linear head;
    the rest of the prediction is :class:`streamer.audio.windowed.WindowedEmotion`'s, as for
    the torch model."""

    def __init__(self, net: OnnxAudioNet, meta: dict, whisper: WhisperHandle, linear: LinearHead | None,
                 linear_weight: float) -> None:
        self.net = net
        config = meta["net"]
        self.uses_whisper = config.get("inputs", "both") in ("both", "whisper")
        self.whisper_dim = int(config.get("whisper_dim", 384))
        self.temperature = float(meta.get("temperature", 1.0))
        self.window_samples = int(meta["window_samples"])
        self.min_window_samples = int(meta["min_window_samples"])
        self.tail_samples = int(meta.get("tail_samples", 0))
        self.whisper = whisper
        self.linear = linear
        self.linear_weight = float(linear_weight) if linear is not None else 0.0

    @classmethod
    def load(cls, folder: str | Path, whisper: WhisperHandle | None = None) -> "OnnxAudioEmotion":
        folder = Path(folder)
        meta, linear, weight = read_network_folder(folder)
        model = cls(OnnxAudioNet(folder / ONNX_FILE), meta, shared_whisper(meta, whisper), linear, weight)
        model.digest = file_digest(folder / "model.pt")  # the trained weights the export was made from
        return model

    def network_logits(self, whisper: NDArray, prosody: NDArray, lengths: NDArray) -> NDArray[np.float32]:
        return self.net(whisper, prosody, lengths)

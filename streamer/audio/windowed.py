"""What a network audio model does besides running its network, shared by the torch model
(``streamer.audio.emotion.AudioEmotion``) and its ONNX export
(``streamer.audio.onnx_net.OnnxAudioEmotion``): reading the model folder's settings and linear
head, cutting prepared speech into windows and their inputs, blending the network's logits with
the linear head's, calibrating and pooling. A subclass gives :meth:`WindowedEmotion.network_logits`.
"""

from __future__ import annotations

import hashlib
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
from streamer.core.errors import ModelError
from streamer.core.labels import LABELS
from streamer.core.messages import SAMPLE_RATE
from streamer.core.services import PlainStream


def model_kind(folder: Path) -> str:
    """``pooled`` or ``network`` (what a folder's config.json says; unreadable: network, whose
    loader then names what is wrong)."""
    try:
        return json.loads((Path(folder) / "config.json").read_text()).get("kind", "network")
    except (OSError, json.JSONDecodeError, AttributeError):
        return "network"


def file_digest(path: Path) -> str:
    """The first 12 hex digits of a file's SHA-256, "?" when there is no such file (which
    model a log's ``session_start`` names)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else "?"


def read_network_folder(folder: Path) -> tuple[dict, LinearHead | None, float]:
    """A network model folder's ``config.json``, its linear head and the blend weight (None, 0:
    no head); a missing or corrupt file is a ModelError saying how to get a good one."""
    try:
        meta = json.loads((folder / "config.json").read_text())
        labels = json.loads((folder / "labels.json").read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"audio model folder {folder} is incomplete ({exc.filename} missing); "
                         "train one with ser-train or point --audio-model at models/audio-emotion") from exc
    except json.JSONDecodeError as exc:
        raise ModelError(f"audio model folder {folder} is corrupt ({exc}); retrain it with ser-train") from exc
    if tuple(labels) != LABELS:
        raise ModelError(f"{folder}/labels.json lists {labels}, expected {list(LABELS)}")
    linear, weight = None, 0.0
    if meta.get("blend"):
        try:
            linear = LinearHead.load(folder / meta["blend"]["linear"])
        except FileNotFoundError as exc:
            raise ModelError(f"audio model folder {folder} is incomplete ({exc.filename} missing, named by "
                             "config.json's blend); retrain it with ser-train") from exc
        except (ValueError, KeyError, OSError) as exc:
            raise ModelError(f"audio model folder {folder}: unreadable linear head ({exc}); retrain it with ser-train") from exc
        weight = float(meta["blend"]["weight"])
    return meta, linear, weight


def shared_whisper(meta: dict, whisper: WhisperHandle | None) -> WhisperHandle:
    """``whisper``, else the process's shared handle of the encoder the folder names."""
    return whisper or WhisperHandle.shared(WhisperOptions(model=meta.get("whisper_model", WhisperOptions().model)))


class WindowedEmotion:
    """Set by a subclass: ``temperature``, ``whisper``, ``window_samples``,
    ``min_window_samples``, ``tail_samples``, ``linear``, ``linear_weight``, ``uses_whisper``
    and ``whisper_dim``; by its loader: ``digest`` (of the weights, :func:`file_digest`)."""

    labels = LABELS
    max_batch = 8  # the network takes a batch's windows at once (the audio service's batches)
    temperature: float
    whisper: WhisperHandle
    window_samples: int
    min_window_samples: int
    tail_samples: int
    linear: LinearHead | None
    linear_weight: float
    uses_whisper: bool
    whisper_dim: int
    digest: str = "?"

    def network_logits(self, whisper: NDArray, prosody: NDArray, lengths: NDArray) -> NDArray[np.float32]:
        """(B, 7) logits of padded inputs: (B, Dw, T), (B, Dp, T), (B,) lengths."""
        raise NotImplementedError

    # --- inputs ---------------------------------------------------------------------------
    def prepare_audio(self, audio: ArrayLike, sample_rate: int) -> NDArray[np.float32]:
        """Mono 16 kHz, checked for emptiness and silence, trimmed and level-normalised."""
        return prepare_input(audio, sample_rate)

    def window_inputs(self, x: NDArray[np.float32]) -> list[FrameInputs]:
        """Inputs of each window of prepared speech ``x``."""
        whisper = self.whisper if self.uses_whisper else None
        return [encode_window(whisper, x[a:b], self.tail_samples, self.whisper_dim)
                for a, b in split_windows(x.size, self.window_samples, self.min_window_samples)]

    # --- prediction -----------------------------------------------------------------------
    def blended_logits(self, items: Sequence[FrameInputs]) -> NDArray[np.float32]:
        """Uncalibrated logits (N, 7) of model inputs, one row per window (network and linear head blended)."""
        z = self.network_logits(*pad_inputs(items))
        if self.linear is None or self.linear_weight == 0:
            return z
        lin = self.linear.logits(pooled_stats([i.whisper for i in items], [i.prosody for i in items]))
        return blend_logits(z, lin, self.linear_weight)

    def window_probs(self, items: Sequence[FrameInputs]) -> NDArray[np.float32]:
        """Calibrated probabilities (N, 7) of model inputs, one row per window."""
        return softmax_t(self.blended_logits(items), self.temperature).astype(np.float32)

    def predict_proba(self, audio: ArrayLike, sample_rate: int = SAMPLE_RATE) -> NDArray[np.float32]:
        """(7,) probabilities of one stretch of audio (windows averaged by length)."""
        return self.predict_proba_batch([audio], sample_rate)[0]

    def predict_proba_batch(self, audios: Sequence[ArrayLike], sample_rate: int = SAMPLE_RATE) -> NDArray[np.float32]:
        """(N, 7) probabilities; all windows of all inputs go through the network as one batch."""
        items: list[FrameInputs] = []
        owners: list[int] = []
        for k, audio in enumerate(audios):
            windows = self.window_inputs(self.prepare_audio(audio, sample_rate))
            items.extend(windows)
            owners.extend([k] * len(windows))
        return pool_windows(self.blended_logits(items), owners, [len(i) for i in items], len(audios), self.temperature)

    def predict(self, audio: ArrayLike, sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
        """Probabilities over the 7 labels for one stretch of audio."""
        return dict(zip(LABELS, map(float, self.predict_proba(audio, sample_rate))))

    def predict_batch(self, audios: Sequence[ArrayLike], sample_rate: int = SAMPLE_RATE) -> list[dict[str, float]]:
        """Probabilities of each input; all their windows go through the network as one batch."""
        return [dict(zip(LABELS, map(float, row))) for row in self.predict_proba_batch(audios, sample_rate)]

    # the audio service's two parts (see streamer.core.services): no per-stream state, so a
    # window's score is its probabilities
    score_batch = predict_batch

    def stream_factory(self):
        return PlainStream

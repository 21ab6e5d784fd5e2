"""AudioEmotion: the audio branch's inference API. Load once, predict windows.

A window is cut the way the live pipeline cuts speech: silence trimmed at both ends, level
normalised on the active speech, then split into windows of ``window_samples`` (2.5 s) with
a shorter last window of at least ``min_window_samples``; the probabilities of the windows
are averaged, weighted by their length. Wrong sample rates are resampled and multichannel
audio is downmixed; empty, silent or NaN input raises :class:`AudioInputError`.

A model folder may add a linear head over pooled window statistics (``linear.npz``, see
:mod:`streamer.audio.linear`); ``config.json``'s ``blend`` says with what weight its logits
join the network's before the temperature: ``(1 - weight) * network + weight * linear``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from streamer.core.messages import SAMPLE_RATE
from streamer.audio.encoder import WhisperHandle, WhisperOptions
from streamer.audio.features import split_windows
from streamer.audio.linear import LINEAR_FILE, LinearHead, pooled_stats
from streamer.audio.pooling import pool_windows
from streamer.audio.windows import (MIN_WINDOW_SAMPLES, TAIL_SAMPLES, WINDOW_SAMPLES, FrameInputs, blend_logits,
                                    encode_window, pad_inputs)
from streamer.audio.prepare import prepare_input
from streamer.core.services import PlainStream
from streamer.audio.model import AudioEmotionNet, NetConfig
from streamer.core.errors import ModelError
from streamer.core.labels import LABELS
from streamer.core.paths import model_dir

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = model_dir("audio-emotion")
def collate(items: Sequence[FrameInputs]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`streamer.audio.windows.pad_inputs` as torch tensors."""
    w, p, n = pad_inputs(items)
    return torch.from_numpy(w), torch.from_numpy(p), torch.from_numpy(n)


def _traced(net: AudioEmotionNet) -> torch.nn.Module:
    """The network traced with TorchScript: the same outputs for any batch size and length
    (checked in the tests), at half the per-window cost of eager mode on one thread. Torch
    marks tracing deprecated; where it is gone, the eager network serves."""
    import warnings

    c = net.config
    example = (torch.zeros(1, c.whisper_dim, 50), torch.zeros(1, c.prosody_dim, 50), torch.tensor([50]))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.trace(net, example, check_trace=False)
    except (AttributeError, RuntimeError) as exc:
        log.info("TorchScript tracing unavailable (%s); running the network eagerly", exc)
        return net


def save_model(net: AudioEmotionNet, folder: Path, temperature: float, linear: LinearHead | None = None,
               linear_weight: float = 0.0) -> None:
    """Write the weights, the network shape, the temperature, the label map and the linear head."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / "model.pt")
    if linear is not None:
        linear.save(folder / LINEAR_FILE)
    elif (folder / LINEAR_FILE).exists():
        (folder / LINEAR_FILE).unlink()
    meta = {
        "net": net.config.to_dict(),
        "temperature": float(temperature),
        "whisper_model": WhisperOptions().model,
        "window_samples": WINDOW_SAMPLES,
        "min_window_samples": MIN_WINDOW_SAMPLES,
        "tail_samples": TAIL_SAMPLES,
    }
    if linear is not None:
        meta["blend"] = {"linear": LINEAR_FILE, "weight": float(linear_weight),
                         "rule": "logits = (1 - weight) * network + weight * linear; probs = softmax(logits / temperature)"}
    (folder / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    (folder / "labels.json").write_text(json.dumps(list(LABELS)) + "\n")


class AudioEmotion:
    """Audio emotion classifier: network, temperature and the shared Whisper encoder."""

    def __init__(self, net: AudioEmotionNet, temperature: float, whisper: WhisperHandle,
                 window_samples: int = WINDOW_SAMPLES, min_window_samples: int = MIN_WINDOW_SAMPLES,
                 tail_samples: int = TAIL_SAMPLES, linear: LinearHead | None = None, linear_weight: float = 0.0) -> None:
        if linear is not None and linear.dim != 2 * (net.config.whisper_dim + net.config.prosody_dim):
            raise ModelError(f"linear head expects {linear.dim} statistics, the network's inputs give "
                             f"{2 * (net.config.whisper_dim + net.config.prosody_dim)}")
        if not 0.0 <= linear_weight <= 1.0:
            raise ModelError(f"blend weight must lie in [0, 1], not {linear_weight}")
        self.net = net.eval()
        self.linear = linear
        self.linear_weight = float(linear_weight) if linear is not None else 0.0
        self._forward = _traced(self.net)
        self.temperature = float(temperature)
        self.whisper = whisper
        self.window_samples = window_samples
        self.min_window_samples = min_window_samples
        self.tail_samples = tail_samples
        self.labels = LABELS

    @classmethod
    def load(cls, folder: str | Path = DEFAULT_MODEL_DIR, whisper: WhisperHandle | None = None) -> "AudioEmotion":
        """Load a model folder written by ``ser-train`` (the shipped one by default): a network
        folder gives an AudioEmotion, a pooled-statistics folder (``config.json`` ``kind =
        "pooled"``) a :class:`streamer.audio.pooled.PooledEmotion`."""
        folder = Path(folder)
        try:
            kind = json.loads((folder / "config.json").read_text()).get("kind", "network")
        except (OSError, json.JSONDecodeError, AttributeError):
            kind = "network"  # reported below with the rest of the folder
        if kind == "pooled":
            from streamer.audio.pooled import PooledEmotion

            return PooledEmotion.load(folder, whisper)
        try:
            meta = json.loads((folder / "config.json").read_text())
            labels = json.loads((folder / "labels.json").read_text())
            state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
        except FileNotFoundError as exc:
            raise ModelError(f"audio model folder {folder} is incomplete ({exc.filename} missing); "
                             "train one with ser-train or point --audio-model at models/audio-emotion") from exc
        except (json.JSONDecodeError, RuntimeError) as exc:
            raise ModelError(f"audio model folder {folder} is corrupt ({exc}); retrain it with ser-train") from exc
        if tuple(labels) != LABELS:
            raise ModelError(f"{folder}/labels.json lists {labels}, expected {list(LABELS)}")
        net = AudioEmotionNet(NetConfig(**meta["net"]))
        net.load_state_dict(state)
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
        whisper = whisper or WhisperHandle.shared(WhisperOptions(model=meta.get("whisper_model", WhisperOptions().model)))
        return cls(net, meta.get("temperature", 1.0), whisper, meta["window_samples"], meta["min_window_samples"],
                   meta.get("tail_samples", 0), linear, weight)

    # --- inputs ---------------------------------------------------------------------------
    def prepare_audio(self, audio: ArrayLike, sample_rate: int) -> NDArray[np.float32]:
        """Mono 16 kHz, checked for emptiness and silence, trimmed and level-normalised."""
        return prepare_input(audio, sample_rate)

    def window_inputs(self, x: NDArray[np.float32]) -> list[FrameInputs]:
        """Inputs of each window of prepared speech ``x``."""
        whisper = self.whisper if self.net.use_whisper else None
        return [encode_window(whisper, x[a:b], self.tail_samples, self.net.config.whisper_dim)
                for a, b in split_windows(x.size, self.window_samples, self.min_window_samples)]

    # --- prediction -----------------------------------------------------------------------
    @torch.inference_mode()
    def window_logits(self, items: Sequence[FrameInputs]) -> torch.Tensor:
        """Uncalibrated logits (N, 7) of model inputs, one row per window (network and linear head blended)."""
        z = self._forward(*collate(items))
        if self.linear is None or self.linear_weight == 0:
            return z
        lin = self.linear.logits(pooled_stats([i.whisper for i in items], [i.prosody for i in items]))
        return torch.from_numpy(blend_logits(z.numpy(), lin, self.linear_weight))

    def window_probs(self, items: Sequence[FrameInputs]) -> NDArray[np.float32]:
        """Calibrated probabilities (N, 7) of model inputs, one row per window."""
        return torch.softmax(self.window_logits(items) / self.temperature, dim=1).numpy()

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
        logits = self.window_logits(items).numpy()
        return pool_windows(logits, owners, [len(i) for i in items], len(audios), self.temperature)

    def predict(self, audio: ArrayLike, sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
        """Probabilities over the 7 labels for one window of audio."""
        return dict(zip(LABELS, map(float, self.predict_proba(audio, sample_rate))))

    def predict_batch(self, audios: Sequence[ArrayLike], sample_rate: int = SAMPLE_RATE) -> list[dict[str, float]]:
        """Probabilities of each window; all of them go through the network as one batch."""
        return [dict(zip(LABELS, map(float, row))) for row in self.predict_proba_batch(audios, sample_rate)]

    # the audio service's two parts (see streamer.core.services): this model keeps no
    # per-stream state, so a window's score is its probabilities
    score_batch = predict_batch

    def stream_factory(self):
        return PlainStream

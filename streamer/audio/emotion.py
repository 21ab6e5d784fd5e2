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
from numpy.typing import NDArray

from streamer.audio.encoder import WhisperHandle, WhisperOptions
from streamer.audio.linear import LINEAR_FILE, LinearHead
from streamer.audio.model import AudioEmotionNet, NetConfig
from streamer.audio.windowed import WindowedEmotion, file_digest, model_kind, read_network_folder, shared_whisper
from streamer.audio.windows import MIN_WINDOW_SAMPLES, TAIL_SAMPLES, WINDOW_SAMPLES, FrameInputs, pad_inputs
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


class AudioEmotion(WindowedEmotion):
    """Audio emotion classifier: network (torch), temperature and the shared Whisper encoder; the
    rest of the prediction is :class:`streamer.audio.windowed.WindowedEmotion`'s."""

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
        self.uses_whisper = net.use_whisper
        self.whisper_dim = net.config.whisper_dim

    @classmethod
    def load(cls, folder: str | Path = DEFAULT_MODEL_DIR, whisper: WhisperHandle | None = None) -> "AudioEmotion":
        """Load a model folder written by ``ser-train`` (the shipped one by default): a network
        folder gives an AudioEmotion, a pooled-statistics folder (``config.json`` ``kind =
        "pooled"``) a :class:`streamer.audio.pooled.PooledEmotion`."""
        folder = Path(folder)
        if model_kind(folder) == "pooled":
            from streamer.audio.pooled import PooledEmotion

            return PooledEmotion.load(folder, whisper)
        meta, linear, weight = read_network_folder(folder)
        try:
            state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
        except FileNotFoundError as exc:
            raise ModelError(f"audio model folder {folder} is incomplete ({exc.filename} missing); "
                             "train one with ser-train or point --audio-model at models/audio-emotion") from exc
        except RuntimeError as exc:
            raise ModelError(f"audio model folder {folder} is corrupt ({exc}); retrain it with ser-train") from exc
        net = AudioEmotionNet(NetConfig(**meta["net"]))
        net.load_state_dict(state)
        model = cls(net, meta.get("temperature", 1.0), shared_whisper(meta, whisper), meta["window_samples"],
                    meta["min_window_samples"], meta.get("tail_samples", 0), linear, weight)
        model.digest = file_digest(folder / "model.pt")
        return model

    def network_logits(self, whisper: NDArray, prosody: NDArray, lengths: NDArray) -> NDArray[np.float32]:
        with torch.inference_mode():
            return self._forward(torch.from_numpy(whisper), torch.from_numpy(prosody), torch.from_numpy(lengths)).numpy()

    def window_logits(self, items: Sequence[FrameInputs]) -> torch.Tensor:
        """:meth:`blended_logits` as a torch tensor (what training and ``ser-eval`` read)."""
        return torch.from_numpy(self.blended_logits(items))

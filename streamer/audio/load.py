"""Loading an audio emotion model folder written by ``ser-train``, whichever kind it is:

- ``config.json`` ``kind = "pooled"`` (the shipped default): :class:`streamer.audio.pooled.PooledEmotion`,
  numpy over the Whisper encoder's frames;
- a network with its ONNX export (``model.onnx``): :class:`streamer.audio.onnx_net.OnnxAudioEmotion`
  on onnxruntime;
- a network without one: the torch model (``streamer.audio.emotion.AudioEmotion``), which needs
  the ``train`` extra.

None of them needs torch but the last.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from streamer.audio.encoder import WhisperHandle
from streamer.audio.windowed import model_kind
from streamer.core.errors import MissingDependency
from streamer.core.paths import model_dir

DEFAULT_MODEL_DIR = model_dir("audio-emotion")


def load_audio_model(folder: str | Path = DEFAULT_MODEL_DIR, whisper: WhisperHandle | None = None):
    """The model in ``folder`` (the shipped one by default), on the process's shared Whisper
    encoder ``whisper`` (None: its own)."""
    folder = Path(folder)
    if model_kind(folder) == "pooled":
        from streamer.audio.pooled import PooledEmotion

        return PooledEmotion.load(folder, whisper)
    from streamer.audio.onnx_net import ONNX_FILE, OnnxAudioEmotion

    if (folder / ONNX_FILE).is_file():
        return OnnxAudioEmotion.load(folder, whisper)
    if importlib.util.find_spec("torch") is None:
        raise MissingDependency("torch", f"the audio network in {folder}, which has no ONNX export "
                                f"(python -m streamer.train.export audio {folder} makes one),",
                                install='"ser-live[train]"')
    from streamer.audio.emotion import AudioEmotion

    return AudioEmotion.load(folder, whisper)

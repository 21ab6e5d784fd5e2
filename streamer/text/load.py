"""Loading a text model by what the user names: the shipped model, a folder of ours (on
onnxruntime when it was exported, else torch), or a Hugging Face model (torch and transformers)."""

from __future__ import annotations

import json
from pathlib import Path

from streamer.core.errors import MissingDependency, ModelError
from streamer.text.emotion import DEFAULT_MODEL_DIR, MARKER, TextEmotion
from streamer.text.torch_text import EmbeddedTextEmotion, HFTextEmotion
from streamer.text.onnx_text import ONNX_FILE, OnnxTextEmotion


def load_own(folder: Path) -> TextEmotion:
    """A model folder of ours: its ONNX export on onnxruntime when it has one (no torch), else
    the torch network (the ``train`` extra)."""
    if (Path(folder) / ONNX_FILE).is_file():
        return OnnxTextEmotion.load(folder)
    need_torch(f"the text model in {folder}, which has no ONNX export "
               f"(python -m streamer.train.export text {folder} makes one),")
    return EmbeddedTextEmotion.load(folder)


def need_torch(what: str) -> None:
    """One clear line when torch or transformers is missing: they come with the train extra."""
    import importlib.util

    for package in ("torch", "transformers"):
        if importlib.util.find_spec(package) is None:
            raise MissingDependency(package, what, install='"ser-live[train]" (torch and transformers)')


def load_text_emotion(spec: str | Path | None = None) -> TextEmotion:
    """``None`` or ``"embedded"``: the shipped model; a folder of ours (config.json with the
    marker): that model; anything else: a Hugging Face model name or folder."""
    if spec is None or str(spec) == "embedded":
        return load_own(DEFAULT_MODEL_DIR)
    path = Path(spec)
    cfg = path / "config.json"
    if cfg.is_file():
        try:
            ours = MARKER in json.loads(cfg.read_text())
        except json.JSONDecodeError as exc:
            raise ModelError(f"{cfg} is not valid JSON") from exc
        if ours:
            return load_own(path)
    elif str(spec).startswith((".", "/", "~")) and not path.exists():
        raise ModelError(f"text model folder {spec} does not exist")
    need_torch(f"the Hugging Face text model {spec}")
    return HFTextEmotion(str(spec))

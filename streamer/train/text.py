"""Fine-tuning the text branch: all-MiniLM-L6-v2 + mean pooling + a linear head.

The recipe (``models/text-emotion/train.toml``) trains on GoEmotions train (Ekman labels;
a row with several labels spreads its target evenly over them), MELD train and XED train
(film subtitles), all normalised the way a recogniser writes (:func:`asr_style`).
Checkpoints are chosen on the dev splits named by ``dev_sets`` (single-label rows): the
*mean* of their macro-F1 (:func:`selection_score`: three domains, so that no one corpus's
style decides), and the temperature is fitted there too, each dev set weighing the same;
test splits are only read after the model is saved.

``encoder = "lora"`` trains a LoRA adapter (a few MB); ``"full"`` fine-tunes the encoder
(with ``freeze_word_embeddings`` all but the word embeddings, half its weights) and saves only
the tensors it trained, in fp16, over the base encoder (``encoder.safetensors``); ``"head"``
trains the head alone. ``dev_sets`` names the dev splits that choose the checkpoint and fit
the temperature; a dev split left out of it stays a clean transfer proxy.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from streamer.runtime.config import read_toml
from streamer.core.errors import ConfigError
from streamer.core.labels import LABELS
from streamer.text.emotion import ENCODER_DELTA, MARKER, base_folder
from streamer.text.torch_text import EmbeddedTextEmotion, encode_texts, import_transformers, build_classifier
from streamer.text.normalize import asr_style
from streamer.train.textdata import TextRows, concat, read_goemotions, read_tsv, read_xed

log = logging.getLogger(__name__)

ENCODERS = ("lora", "full", "head")
CORPORA = ("goemotions", "meld", "xed")  # the labelled text corpora a recipe can train and select on


def selection_score(scores: dict[str, float]) -> float:
    """What chooses checkpoints (and recipes): the mean macro-F1 over the dev sets, one vote
    per domain, however many rows each has.

    >>> selection_score({"goemotions-dev": 0.63, "meld-dev": 0.30, "xed-dev": 0.36})
    0.43
    """
    if not scores:
        raise ValueError("no dev scores")
    return round(float(np.mean(list(scores.values()))), 10)


@dataclass(frozen=True)
class TextTrainConfig:
    base: str = "embedded:all-MiniLM-L6-v2"
    goemotions: str = "../shared/data/text/goemotions"
    meld: str = "../shared/data/text/meld"
    xed: str = "../shared/data/text/xed"
    emobank: str = "../shared/data/text/emobank"  # the dims head's data ("" : no dims head)
    train_sets: tuple[str, ...] = ("goemotions", "meld")
    seed: int = 1234
    encoder: str = "lora"
    epochs: int = 2
    lr: float = 5e-4
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: float = 0.06
    batch_size: int = 32
    max_length: int = 64
    evals_per_epoch: int = 2
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: tuple[str, ...] = ("query", "key", "value", "dense")
    freeze_word_embeddings: bool = False  # full: keep the base's word embeddings (half the weights)
    dev_sets: tuple[str, ...] = ("goemotions", "meld")  # dev splits that choose the checkpoint and temperature
    meld_repeat: int = 1  # MELD train rows appear this many times per epoch (its share of the training rows)
    xed_repeat: int = 1  # the same for XED train
    max_rows: int = 0  # 0: every row; a small number for quick runs (tests)

    def __post_init__(self) -> None:
        checks = {"encoder": self.encoder in ENCODERS, "epochs": self.epochs >= 1, "lr": self.lr > 0,
                  "head_lr": self.head_lr > 0, "batch_size": self.batch_size >= 2, "max_length": 8 <= self.max_length <= 512,
                  "warmup": 0 <= self.warmup < 1, "evals_per_epoch": self.evals_per_epoch >= 1, "lora_r": self.lora_r >= 1, "meld_repeat": self.meld_repeat >= 1,
                  "xed_repeat": self.xed_repeat >= 1,
                  "max_rows": self.max_rows >= 0,
                  "train_sets": bool(self.train_sets) and set(self.train_sets) <= set(CORPORA),
                  "dev_sets": bool(self.dev_sets) and set(self.dev_sets) <= set(CORPORA)}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"text training config: out-of-range value for {', '.join(bad)}")
        object.__setattr__(self, "train_sets", tuple(self.train_sets))
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        object.__setattr__(self, "dev_sets", tuple(self.dev_sets))

    @classmethod
    def load(cls, path: str | Path) -> "TextTrainConfig":
        from streamer.runtime.config import build

        return build(cls, read_toml(Path(path), "text training config"), what="text training config")


class Reporter(Protocol):
    def task(self, name: str, total: int) -> Callable[[int], None]: ...
    def message(self, text: str) -> None: ...


@dataclass
class Splits:
    train: TextRows
    dev: dict[str, TextRows]


def load_splits(cfg: TextTrainConfig) -> Splits:
    parts = []
    if "goemotions" in cfg.train_sets:
        parts.append(read_goemotions(cfg.goemotions, "train"))
    if "meld" in cfg.train_sets:
        parts += [read_tsv(Path(cfg.meld) / "train.tsv", "meld-train")] * cfg.meld_repeat
    if "xed" in cfg.train_sets:
        parts += [read_xed(cfg.xed, "train")] * cfg.xed_repeat
    train = concat(parts, "+".join(cfg.train_sets))
    if cfg.max_rows:
        train = train.head(cfg.max_rows)
    dev = {}
    if "goemotions" in cfg.dev_sets:
        dev["goemotions-dev"] = read_goemotions(cfg.goemotions, "dev").single()
    if "meld" in cfg.dev_sets:
        dev["meld-dev"] = read_tsv(Path(cfg.meld) / "dev.tsv", "meld-dev")
    if "xed" in cfg.dev_sets:
        dev["xed-dev"] = read_xed(cfg.xed, "dev")
    if cfg.max_rows:
        dev = {k: v.head(max(200, cfg.max_rows // 4)) for k, v in dev.items()}
    return Splits(train, dev)


def _asr_rows(rows: TextRows) -> tuple[list[str], np.ndarray]:
    texts = [asr_style(t) for t in rows.texts]
    keep = [i for i, t in enumerate(texts) if t]
    return [texts[i] for i in keep], rows.targets[keep]


def _build(cfg: TextTrainConfig):
    import torch

    tf = import_transformers()
    base = base_folder(cfg.base)
    tokenizer = tf.AutoTokenizer.from_pretrained(base)
    encoder = tf.AutoModel.from_pretrained(base)
    if cfg.encoder == "lora":
        from peft import LoraConfig, get_peft_model

        encoder = get_peft_model(encoder, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                     target_modules=list(cfg.lora_targets)))
    elif cfg.encoder == "head":
        for p in encoder.parameters():
            p.requires_grad_(False)
    elif cfg.freeze_word_embeddings:
        encoder.get_input_embeddings().weight.requires_grad_(False)
    net = build_classifier(encoder)
    enc_params = [p for p in net.encoder.parameters() if p.requires_grad]
    groups = [{"params": list(net.head.parameters()), "lr": cfg.head_lr}]
    if enc_params:
        groups.append({"params": enc_params, "lr": cfg.lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    return tokenizer, net, opt


def _dev_logits(net, tokenizer, texts: list[str], max_length: int, batch: int = 64) -> np.ndarray:
    import torch

    net.eval()
    order = np.argsort([len(t) for t in texts])
    out = np.zeros((len(texts), len(LABELS)), np.float32)
    with torch.inference_mode():
        for s in range(0, len(order), batch):
            idx = order[s: s + batch]
            enc = encode_texts(tokenizer, [texts[i] for i in idx], max_length)
            out[idx] = net(enc["input_ids"], enc["attention_mask"]).numpy()
    return out


def _macro_f1(logits: np.ndarray, y: np.ndarray) -> float:
    from streamer.train.metrics import confusion, macro_f1

    return macro_f1(confusion(y, logits.argmax(axis=1)))


def fit_temperature(logits: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Temperature minimising the (row-weighted) NLL of ``logits`` against labels ``y``."""
    w = np.ones(len(y)) if weights is None else np.asarray(weights, float)

    def nll(t: float) -> float:
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        return float(np.average(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y], weights=w))

    grid = np.exp(np.linspace(np.log(0.3), np.log(5.0), 57))
    return float(min(grid, key=nll))


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool: int = 50) -> list[np.ndarray]:
    """Shuffled batches of similar lengths (less padding: about twice as fast here): shuffle,
    sort within pools of ``pool`` batches by length, cut into batches, shuffle the batches.

    >>> bs = bucketed_batches(np.arange(100), 10, np.random.default_rng(0), pool=5)
    >>> sorted(np.concatenate(bs).tolist()) == list(range(100)), max(len(b) for b in bs)
    (True, 10)
    """
    order = rng.permutation(len(lengths))
    size = batch_size * pool
    batches = []
    for s in range(0, len(order), size):
        chunk = order[s: s + size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[k: k + batch_size] for k in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _trainable_state(net) -> dict:
    names = {n for n, p in net.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in net.state_dict().items() if k in names}


def train(cfg: TextTrainConfig, out: Path, reporter: Reporter) -> dict:
    """Fine-tune, select on dev, calibrate on dev, save to ``out``; returns the training record."""
    import torch

    started = time.time()
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    splits = load_splits(cfg)
    texts, targets = _asr_rows(splits.train)
    dev = {k: _asr_rows(v) for k, v in splits.dev.items()}
    dev_y = {k: t.argmax(axis=1) for k, (_, t) in dev.items()}
    reporter.message(f"training rows {len(texts)} ({splits.train.source}), dev "
                     + ", ".join(f"{k} {len(v[0])}" for k, v in dev.items()))
    tokenizer, net, opt = _build(cfg)
    lengths = np.array([len(t) for t in texts])
    steps_per_epoch = len(bucketed_batches(lengths, cfg.batch_size, np.random.default_rng(0)))  # count only
    total = cfg.epochs * steps_per_epoch
    warm = max(1, int(cfg.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    eval_at = {int(round(steps_per_epoch * (k + 1) / cfg.evals_per_epoch)) for k in range(cfg.evals_per_epoch)}
    best = {"score": -1.0}
    history = []
    tick = reporter.task(f"text {cfg.encoder} fine-tuning", total)
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        batches = bucketed_batches(lengths, cfg.batch_size, rng)
        for b, idx in enumerate(batches):
            net.train()
            enc = encode_texts(tokenizer, [texts[i] for i in idx], cfg.max_length)
            logits = net(enc["input_ids"], enc["attention_mask"])
            loss = -(torch.from_numpy(targets[idx]) * torch.log_softmax(logits, dim=-1)).sum(dim=1).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            tick(1)
            if b + 1 in eval_at:
                scores = {k: _macro_f1(_dev_logits(net, tokenizer, t, cfg.max_length), dev_y[k]) for k, (t, _) in dev.items()}
                score = selection_score(scores)
                history.append({"epoch": epoch, "step": step, "loss": float(loss.detach()), "dev_macro_f1": scores, "score": score})
                reporter.message(f"step {step}/{total}: dev macro-F1 " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
                if score > best["score"]:
                    best = {"score": score, "step": step, "state": _trainable_state(net)}
    net.load_state_dict(best["state"], strict=False)
    dev_logits = np.concatenate([_dev_logits(net, tokenizer, t, cfg.max_length) for t, _ in dev.values()])
    weights = np.concatenate([np.full(len(y), 1.0 / len(y)) for y in dev_y.values()])  # each dev set weighs the same
    temperature = fit_temperature(dev_logits, np.concatenate(list(dev_y.values())), weights)
    save(net, out, cfg, temperature)
    return {"config": asdict(cfg), "rows": {"train": len(texts), **{k: len(v[0]) for k, v in dev.items()}},
            "train_counts": splits.train.counts(), "multi_label_share": float((splits.train.targets.max(axis=1) < 0.999).mean()),
            "best_step": best["step"], "dev_score": best["score"],
            "temperature": temperature, "history": history, "seconds": round(time.time() - started, 1),
            "threads": torch.get_num_threads()}


def save(net, out: Path, cfg: TextTrainConfig, temperature: float) -> None:
    """Write only what training changed: the adapter (or the whole encoder) and the head."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    if cfg.encoder == "lora":
        net.encoder.save_pretrained(str(out / "adapter"))
        _tidy_adapter(out / "adapter", cfg.base)
    elif cfg.encoder == "full":
        save_encoder_delta(net.encoder, out / ENCODER_DELTA)
    torch.save(net.head.state_dict(), out / "head.pt")
    config = {MARKER: 1, "base": cfg.base, "encoder": cfg.encoder, "labels": list(LABELS),
              "temperature": round(temperature, 4), "max_length": cfg.max_length, "input": "asr_style"}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "labels.json").write_text(json.dumps(list(LABELS)) + "\n")


def save_encoder_delta(encoder, path: Path) -> int:
    """The encoder tensors training changed (those with gradients), in fp16; returns their count
    of values. :meth:`EmbeddedTextEmotion.load` lays them over the base encoder."""
    import torch
    from safetensors.torch import save_file

    tensors = {n: p.detach().to(torch.float16).contiguous() for n, p in encoder.named_parameters() if p.requires_grad}
    if not tensors:
        raise ValueError("no trained encoder tensors to save")
    save_file(tensors, str(path), metadata={"format": "pt", "dtype": "float16", "kind": "ser-encoder-delta"})
    return sum(t.numel() for t in tensors.values())


def _tidy_adapter(folder: Path, base: str) -> None:
    """peft writes the base model's local path and a template README: keep neither."""
    cfg_path = folder / "adapter_config.json"
    adapter = json.loads(cfg_path.read_text())
    adapter["base_model_name_or_path"] = base
    cfg_path.write_text(json.dumps(adapter, indent=2) + "\n")
    (folder / "README.md").unlink(missing_ok=True)


def evaluate_saved(out: Path, cfg: TextTrainConfig, extra: dict[str, Path], max_rows: int = 0) -> dict:
    """Load the saved model as the product does and score the test and dev sets (and, with a
    dims head, arousal/valence on EmoBank test under ``emobank-test``)."""
    from streamer.train.textdata import read_emobank
    from streamer.train.texteval import evaluate_dims, evaluate_rows

    model = EmbeddedTextEmotion.load(out)
    sets = {"goemotions-test": read_goemotions(cfg.goemotions, "test"),
            "meld-dev": read_tsv(Path(cfg.meld) / "dev.tsv", "meld-dev")}
    if Path(cfg.xed).is_dir():
        sets.update({"xed-dev": read_xed(cfg.xed, "dev"), "xed-test": read_xed(cfg.xed, "test")})
    sets.update({name: read_tsv(path, name) for name, path in extra.items() if path.is_file()})
    report = {name: evaluate_rows(model, rows.head(max_rows or None)) for name, rows in sets.items()}
    if cfg.emobank and Path(cfg.emobank).is_dir():
        report["emobank-test"] = evaluate_dims(model, read_emobank(cfg.emobank, "test"))
    return report

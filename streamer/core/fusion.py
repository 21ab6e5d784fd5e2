"""Late fusion of the audio and text opinions, and the rolling emotion (pure functions).

- ``learned`` (default): fitted by ``ser-train-fusion`` on out-of-fold predictions of both
  branches (weights in ``[fusion] model_dir``, by default ``models/fusion``; see its
  MODEL_CARD.md). A gate (a logistic regression over both branches' distributions) decides
  per window how much of the answer is the audio's and how much the text's
  (:class:`LearnedFusion`): on acted speech with emotionally empty words ("kids are talking
  by the door"), which the text model reads as confidently neutral, it follows the voice;
  for emotional words in a flat voice, the words. Neutral words are absence of evidence.
  A window with no words (text ``None``) is the audio's. Pure numpy, tens of microseconds.
- ``weighted``: the seed's fixed weighted average (default audio 0.4, text 0.6).
- ``confidence``: each modality's weight is scaled by its confidence, one minus its
  normalised entropy (0 for a uniform distribution, 1 for a certain one), so an unsure branch
  counts less.
A window with no words uses the audio alone in ``weighted`` and ``confidence``.

A fused top probability below ``min_confidence`` marks the result uncertain (:class:`Fuser`).

The rolling emotion is an exponential moving average of the fused distributions whose
weight halves every ``half_life_s`` seconds of stream time.

>>> a = {"angry": 0.7, "disgust": 0.0, "fear": 0.0, "happy": 0.1, "neutral": 0.2, "sad": 0.0, "surprise": 0.0}
>>> fuse(a, None, FusionConfig(mode="confidence"))["angry"]
0.7
>>> t = {"angry": 0.0, "disgust": 0.0, "fear": 0.0, "happy": 1.0, "neutral": 0.0, "sad": 0.0, "surprise": 0.0}
>>> round(fuse(a, t, FusionConfig(mode="weighted"))["happy"], 2)
0.64
>>> features(np.full(7, 1 / 7), None).shape, gate_features(np.full(7, 1 / 7), np.full(7, 1 / 7)).shape
((8,), (81,))
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamer.core.errors import ConfigError, ModelError
from streamer.core.paths import data_path
from streamer.core.labels import EMOJI, LABELS

log = logging.getLogger(__name__)

Probs = dict[str, float]
EPS = 1e-4  # probabilities are clipped here before their logarithm
FEATURES = "gate81/v1"  # the feature layout a params.json was fitted on
HOW_TO_FIT = "fit one with `ser-train-fusion` (see models/fusion/MODEL_CARD.md) or set [fusion] mode = \"confidence\""


MODES = ("learned", "confidence", "weighted")  # [fusion] mode


@dataclass(frozen=True)
class FusionConfig:
    """``[fusion]`` in config.toml."""

    mode: str = "learned"
    model_dir: str = "models/fusion"  # learned mode: relative to the shipped data (streamer.core.paths), or absolute
    audio_weight: float = 0.4
    text_weight: float = 0.6
    half_life_s: float = 5.0
    min_confidence: float = 0.44  # a fused top probability below this is "uncertain" (chosen by ser-train-fusion)
    uncertain_weight: float = 0.3  # how much an uncertain result moves the rolling emotion

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"config [fusion] mode: must be one of {', '.join(MODES)}")
        if not isinstance(self.model_dir, str) or (self.mode == "learned" and not self.model_dir.strip()):
            raise ConfigError("config [fusion] model_dir: must be a folder written by ser-train-fusion")
        if self.audio_weight < 0 or self.text_weight < 0 or self.audio_weight + self.text_weight <= 0:
            raise ConfigError("config [fusion] audio_weight, text_weight: must be >= 0 with a positive sum")
        if not 0 < self.half_life_s <= 3600:
            raise ConfigError("config [fusion] half_life_s: must be in (0, 3600]")
        if not 0 <= self.min_confidence < 1:
            raise ConfigError("config [fusion] min_confidence: must be in [0, 1)")
        if not 0 <= self.uncertain_weight <= 1:
            raise ConfigError("config [fusion] uncertain_weight: must be in [0, 1]")

    @property
    def model_path(self) -> Path:
        return data_path(self.model_dir)


def as_vector(p: Probs) -> np.ndarray:
    v = np.array([float(p.get(k, 0.0)) for k in LABELS])
    if not np.all(np.isfinite(v)) or v.min() < 0 or v.sum() <= 0:
        raise ValueError(f"not a distribution: {p}")
    return v / v.sum()


def as_probs(v: np.ndarray) -> Probs:
    v = np.asarray(v, float)
    v = v / v.sum()
    return {k: float(x) for k, x in zip(LABELS, v)}


def confidence(p: Probs) -> float:
    """One minus the normalised entropy: 0 for uniform, 1 for one-hot.

    >>> confidence({k: 1 / 7 for k in LABELS}) < 1e-9, confidence({"happy": 1.0})
    (True, 1.0)
    """
    v = as_vector(p)
    nz = v[v > 0]
    return float(1.0 + (nz * np.log(nz)).sum() / math.log(len(LABELS)))


# --- the learned fusion ---------------------------------------------------------------------
def branch_features(v: NDArray) -> NDArray[np.float64]:
    """(..., 7) probabilities -> (..., 8): centred log-probabilities (clipped at EPS) and the
    normalised entropy."""
    v = np.clip(np.asarray(v, float), EPS, None)
    v = v / v.sum(axis=-1, keepdims=True)
    lv = np.log(v)
    clr = lv - lv.mean(axis=-1, keepdims=True)
    ent = -(v * lv).sum(axis=-1, keepdims=True) / math.log(len(LABELS))
    return np.concatenate([clr, ent], axis=-1)


def features(audio: NDArray, text: NDArray | None) -> NDArray[np.float64]:
    """Both branches' features side by side (audio first; audio alone without text).
    Works on one row (7,) or a batch (N, 7)."""
    fa = branch_features(audio)
    return fa if text is None else np.concatenate([fa, branch_features(text)], axis=-1)


def softmax(z: NDArray) -> NDArray[np.float64]:
    z = np.asarray(z, float)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def gate_features(audio: NDArray, text: NDArray) -> NDArray[np.float64]:
    """What the gate reads (81 numbers): both branches' features, their squares, each
    branch's top probability and the products of the two branches' centred log-probabilities.
    Works on one row (7,) or a batch (N, 7)."""
    n = len(LABELS)
    fa, ft = branch_features(audio), branch_features(text)
    ca, ct = fa[..., :n], ft[..., :n]
    outer = (ca[..., :, None] * ct[..., None, :]).reshape(*ca.shape[:-1], n * n)
    tops = [np.asarray(audio, float).max(axis=-1, keepdims=True), np.asarray(text, float).max(axis=-1, keepdims=True)]
    return np.concatenate([fa, ft, ca ** 2, ct ** 2, *tops, outer], axis=-1)


GATE_FEATURES = 2 * (len(LABELS) + 1) + 2 * len(LABELS) + 2 + len(LABELS) ** 2  # 81


@dataclass(frozen=True)
class LearnedFusion:
    """Weights of the learned fusion (``params.json``): a gate that decides, per window,
    which branch carries the emotion.

    ``fused = g * audio + (1 - g) * text`` with ``g = sigmoid(w . z + b)``, ``z`` the
    standardised :func:`gate_features`. The gate is a logistic regression fitted to tell
    the cases where the voice carries the emotion (emotional speech with emotionally empty
    words) from those where the words do (emotional words in a flat or neutral voice). Each
    branch's own distribution is kept as it is, so where the gate is sure the fused answer is
    that branch's answer. Without words (text ``None``) the fused result is the audio's."""

    gate_w: NDArray[np.float64]  # (81,)
    gate_b: float
    mean: NDArray[np.float64]  # (81,) standardisation of the gate features
    scale: NDArray[np.float64]  # (81,)
    min_confidence: float = 0.0  # chosen on the fitting data (informative; [fusion] min_confidence decides)

    def __post_init__(self) -> None:
        for name in ("gate_w", "mean", "scale"):
            v = getattr(self, name)
            if np.shape(v) != (GATE_FEATURES,) or not np.all(np.isfinite(v)):
                raise ValueError(f"{name}: expected {GATE_FEATURES} finite values, got shape {np.shape(v)}")
        if not np.isfinite(self.gate_b) or np.any(np.asarray(self.scale) <= 0):
            raise ValueError("gate_b must be finite and scale positive")

    def logit(self, audio: NDArray, text: NDArray) -> NDArray[np.float64]:
        z = (gate_features(audio, text) - self.mean) / self.scale
        return z @ self.gate_w + self.gate_b

    def gate(self, audio: NDArray, text: NDArray) -> NDArray[np.float64]:
        """The audio's share g in [0, 1] (one value per row)."""
        return 1.0 / (1.0 + np.exp(-np.clip(self.logit(audio, text), -50, 50)))

    def proba(self, audio: NDArray, text: NDArray | None) -> NDArray[np.float64]:
        """Fused probabilities of one row (7,) or a batch (N, 7) of branch probabilities."""
        a = np.asarray(audio, float)
        a = a / a.sum(axis=-1, keepdims=True)
        if text is None:
            return a
        t = np.asarray(text, float)
        t = t / t.sum(axis=-1, keepdims=True)
        g = self.gate(a, t)[..., None]
        return g * a + (1 - g) * t

    def to_json(self, **extra) -> dict:
        return {"format": "ser-fusion", "features": FEATURES, "labels": list(LABELS),
                "gate_w": np.round(self.gate_w, 6).tolist(), "gate_b": round(float(self.gate_b), 6),
                "mean": np.round(self.mean, 6).tolist(), "scale": np.round(self.scale, 6).tolist(),
                "min_confidence": self.min_confidence, **extra}

    @classmethod
    def from_json(cls, raw: dict) -> "LearnedFusion":
        if raw.get("format") != "ser-fusion" or raw.get("features") != FEATURES:
            raise ValueError(f"not a {FEATURES} fusion model (format {raw.get('format')!r}, features {raw.get('features')!r})")
        if tuple(raw.get("labels", ())) != LABELS:
            raise ValueError(f"labels {raw.get('labels')} differ from {list(LABELS)}")
        return cls(np.asarray(raw["gate_w"], float), float(raw["gate_b"]), np.asarray(raw["mean"], float),
                   np.asarray(raw["scale"], float), float(raw.get("min_confidence", 0.0)))

    @classmethod
    def load(cls, folder: str | Path) -> "LearnedFusion":
        """Read ``folder/params.json``; a missing or corrupt folder is one ModelError naming the fix."""
        return _load_learned(str(Path(folder).resolve()))


@lru_cache(maxsize=8)
def _load_learned(folder: str) -> LearnedFusion:
    path = Path(folder) / "params.json"
    if not path.is_file():
        what = "does not exist" if not Path(folder).is_dir() else "has no params.json"
        raise ModelError(f"fusion model folder {folder} {what}; {HOW_TO_FIT}")
    try:
        model = LearnedFusion.from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"fusion model {path} is corrupt ({exc}); refit it with `ser-train-fusion` "
                         "or set [fusion] mode = \"confidence\"") from exc
    log.info("fusion model %s loaded", path)
    return model


def fuse(audio: Probs, text: Probs | None, cfg: FusionConfig) -> Probs:
    a = as_vector(audio)
    t = None if text is None else as_vector(text)
    if cfg.mode == "learned":
        return as_probs(LearnedFusion.load(cfg.model_path).proba(a, t))
    if t is None:
        return as_probs(a)
    wa, wt = cfg.audio_weight, cfg.text_weight
    if cfg.mode == "confidence":
        wa, wt = wa * confidence(audio), wt * confidence(text)
        if wa + wt <= 1e-12:
            wa, wt = cfg.audio_weight, cfg.text_weight
    return as_probs((wa * a + wt * t) / (wa + wt))


class Fuser:
    """Fusion as the pipeline uses it: ``fuse(audio, text)`` and ``is_uncertain(fused)``.
    Built once per process from ``[fusion]``; in learned mode the weights are read (and
    checked) here, so a missing model folder fails at start-up with a ModelError."""

    def __init__(self, cfg: FusionConfig) -> None:
        self.cfg = cfg
        self.model = LearnedFusion.load(cfg.model_path) if cfg.mode == "learned" else None

    @classmethod
    def load(cls, cfg: FusionConfig) -> "Fuser":
        return cls(cfg)

    def fuse(self, audio: Probs, text: Probs | None) -> Probs:
        if self.model is None:
            return fuse(audio, text, self.cfg)
        return as_probs(self.model.proba(as_vector(audio), None if text is None else as_vector(text)))

    def is_uncertain(self, fused: Probs) -> bool:
        return max(fused.values()) < self.cfg.min_confidence


def top(p: Probs) -> tuple[str, str, float]:
    """Label, emoji and probability of the most likely label."""
    label = max(LABELS, key=lambda k: p.get(k, 0.0))
    return label, EMOJI[label], float(p[label])


class Rolling:
    """Exponential moving average of fused distributions over stream time.

    >>> r = Rolling(half_life_s=5.0)
    >>> r.update({"happy": 1.0}, at_s=0.0)["happy"]
    1.0
    >>> round(r.update({"sad": 1.0}, at_s=5.0)["sad"], 3)
    0.5
    """

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s
        self.reset()

    def reset(self) -> None:
        self._v: np.ndarray | None = None
        self._t = 0.0

    def update(self, p: Probs, at_s: float, weight: float = 1.0) -> Probs:
        """Move toward ``p``; ``weight`` < 1 moves less (an uncertain result)."""
        v = as_vector(p)
        if self._v is None:
            self._v = v
        else:
            step = (1 - 0.5 ** (max(0.0, at_s - self._t) / self.half_life_s)) * weight
            self._v = (1 - step) * self._v + step * v
        self._t = max(self._t, at_s)
        return as_probs(self._v)

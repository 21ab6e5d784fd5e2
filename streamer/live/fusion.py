"""Late fusion of the audio and text opinions, and the rolling emotion (pure functions).

- ``weighted``: the seed's fixed weighted average (default audio 0.4, text 0.6).
- ``confidence`` (default): each modality's weight is scaled by its confidence, one minus its
  normalised entropy (0 for a uniform distribution, 1 for a certain one), so an unsure branch
  counts less.
A window with no words (text is ``None``: no opinion) uses the audio alone in both modes.

The rolling emotion is an exponential moving average of the fused distributions whose
weight halves every ``half_life_s`` seconds of stream time.

>>> a = {"angry": 0.7, "disgust": 0.0, "fear": 0.0, "happy": 0.1, "neutral": 0.2, "sad": 0.0, "surprise": 0.0}
>>> fuse(a, None, FusionConfig())["angry"]
0.7
>>> t = {"angry": 0.0, "disgust": 0.0, "fear": 0.0, "happy": 1.0, "neutral": 0.0, "sad": 0.0, "surprise": 0.0}
>>> round(fuse(a, t, FusionConfig(mode="weighted"))["happy"], 2)
0.64
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamer.errors import ConfigError
from streamer.labels import EMOJI, LABELS

Probs = dict[str, float]
MODES = ("confidence", "weighted")


@dataclass(frozen=True)
class FusionConfig:
    """``[fusion]`` in config.toml."""

    mode: str = "confidence"
    audio_weight: float = 0.4
    text_weight: float = 0.6
    half_life_s: float = 5.0
    min_confidence: float = 0.0  # a fused top probability below this is "uncertain"
    uncertain_weight: float = 0.3  # how much an uncertain result moves the rolling emotion

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"config [fusion] mode: must be one of {', '.join(MODES)}")
        if self.audio_weight < 0 or self.text_weight < 0 or self.audio_weight + self.text_weight <= 0:
            raise ConfigError("config [fusion] audio_weight, text_weight: must be >= 0 with a positive sum")
        if not 0 < self.half_life_s <= 3600:
            raise ConfigError("config [fusion] half_life_s: must be in (0, 3600]")
        if not 0 <= self.min_confidence < 1:
            raise ConfigError("config [fusion] min_confidence: must be in [0, 1)")
        if not 0 <= self.uncertain_weight <= 1:
            raise ConfigError("config [fusion] uncertain_weight: must be in [0, 1]")


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


def fuse(audio: Probs, text: Probs | None, cfg: FusionConfig) -> Probs:
    a = as_vector(audio)
    if text is None:
        return as_probs(a)
    t = as_vector(text)
    wa, wt = cfg.audio_weight, cfg.text_weight
    if cfg.mode == "confidence":
        wa, wt = wa * confidence(audio), wt * confidence(text)
        if wa + wt <= 1e-12:
            wa, wt = cfg.audio_weight, cfg.text_weight
    return as_probs((wa * a + wt * t) / (wa + wt))


class Fuser:
    """Fusion as the pipeline uses it: ``fuse(audio, text)`` and ``is_uncertain(fused)``.
    Built once per process from ``[fusion]``."""

    def __init__(self, cfg: FusionConfig) -> None:
        self.cfg = cfg

    def fuse(self, audio: Probs, text: Probs | None) -> Probs:
        return fuse(audio, text, self.cfg)

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

    @property
    def value(self) -> Probs | None:
        return None if self._v is None else as_probs(self._v)

"""Feature statistics of the traffic a model sees: standardising each stream by its own.

Cross-corpus speech emotion recognition loses most of its accuracy to the recording
set-up, the language and the speakers: pooled encoder statistics of one corpus sit
elsewhere than another's. Standardising each corpus by its own mean and spread (no labels
needed) recovers much of it (``models/audio-emotion/MODEL_CARD.md``). Live, the "corpus" is
the stream: :class:`RunningNorm` keeps a running mean and variance of the stream's window
rows, starting from the training statistics (``prior`` windows' worth of weight), so the
first windows are standardised as in training and the stream's own statistics take over
as it goes on. Old windows fade with a ``horizon`` (exponential forgetting), so a long call
follows a change of line or speaker, and memory stays constant.

A stream that holds one emotion throughout moves its mean towards that emotion; the prior
weight keeps that in check (the card measures a speaker who stays in one emotion).

>>> prior = Moments.of(np.array([[0.0, 10.0], [2.0, 30.0]]))
>>> prior.mean.tolist(), prior.std.tolist()
([[1.0, 20.0]], [[1.0, 10.0]])
>>> norm = RunningNorm(prior, prior_windows=2, horizon=100)
>>> norm.standardise(np.array([[1.0, 20.0]])).tolist()
[[0.0, 0.0]]
>>> for _ in range(50): norm.update(np.array([[5.0, 20.0]]))
>>> round(float(norm.moments().mean[0, 0]), 2)   # the stream's own mean has taken over
4.81
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

EPS = 1e-3


@dataclass(frozen=True)
class AdaptOptions:
    """``[audio] adapt_*`` in config.toml: how a stream's own statistics take over."""

    enabled: bool = True
    prior_windows: float = 20.0  # weight of the training statistics, in windows
    horizon: float = 300.0  # windows; older windows fade (exponential forgetting)

    def __post_init__(self) -> None:
        from streamer.core.errors import check

        check("audio", "adapt_prior_windows", 0 < self.prior_windows <= 10_000, "between 0 (excluded) and 10000")
        check("audio", "adapt_horizon", 10 <= self.horizon <= 1_000_000, "between 10 and 1000000 windows")


@dataclass(frozen=True)
class Moments:
    """Mean and variance of some rows, each (1, D), and their weight."""

    mean: NDArray[np.float64]
    var: NDArray[np.float64]
    weight: float

    @classmethod
    def of(cls, x: NDArray) -> "Moments":
        x = np.asarray(x, np.float64)
        return cls(x.mean(0, keepdims=True), x.var(0, keepdims=True), float(len(x)))

    @property
    def std(self) -> NDArray[np.float64]:
        return np.sqrt(self.var)

    def standardise(self, x: NDArray) -> NDArray[np.float32]:
        """``(x - mean) / (std + EPS)``, rows of x (N, D)."""
        return ((np.asarray(x, np.float64) - self.mean) / (self.std + EPS)).astype(np.float32)


class RunningNorm:
    """One stream's standardisation: the training prior blended with the stream's rows."""

    def __init__(self, prior: Moments, prior_windows: float = AdaptOptions.prior_windows,
                 horizon: float = AdaptOptions.horizon) -> None:
        self.prior = prior
        self.prior_windows = float(prior_windows)
        self.decay = 1.0 - 1.0 / float(horizon)
        self.reset()

    def reset(self) -> None:
        d = self.prior.mean.shape[1]
        self.w = 0.0
        self.s1 = np.zeros((1, d))
        self.s2 = np.zeros((1, d))

    def moments(self) -> Moments:
        """The prior (its mean and variance, weight ``prior_windows``) pooled with the stream's rows."""
        w = self.prior_windows + self.w
        mean = (self.prior_windows * self.prior.mean + self.s1) / w
        second = (self.prior_windows * (self.prior.var + self.prior.mean ** 2) + self.s2) / w
        return Moments(mean, np.maximum(second - mean ** 2, 0.0), w)

    def standardise(self, x: NDArray) -> NDArray[np.float32]:
        return self.moments().standardise(x)

    def update(self, x: NDArray) -> None:
        """Add window rows (N, D) to the stream's statistics, fading the older ones."""
        for row in np.atleast_2d(np.asarray(x, np.float64)):
            self.w = self.w * self.decay + 1.0
            self.s1 = self.s1 * self.decay + row
            self.s2 = self.s2 * self.decay + row ** 2

"""A linear head over pooled window statistics, blended with the network's logits.

The statistics of a window are the mean and standard deviation over time of its Whisper
encoder frames and of its prosody frames (2 * (384 + 18) = 804 numbers for tiny.en). A
multinomial logistic regression with a strong L2 penalty over them transfers to other
corpora better than the network does (it has too few degrees of freedom to learn a corpus),
so :class:`streamer.audio.emotion.AudioEmotion` adds its logits to the network's:
``(1 - w) * network + w * linear``, which is a weighted mean of log-probabilities up to a
constant per window (softmax removes it).

>>> rng = np.random.default_rng(0)
>>> items = [(rng.normal(size=(30, 4)).astype(np.float32), rng.normal(size=(30, 2)).astype(np.float32)) for _ in range(3)]
>>> pooled_stats([w for w, _ in items], [p for _, p in items]).shape
(3, 12)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

LINEAR_FILE = "linear.npz"


def stats_row(frames: Sequence[NDArray]) -> NDArray[np.float32]:
    """Mean then std over time of each (T, D) frame array (in float32), concatenated in order.

    >>> stats_row([np.ones((4, 2)), np.zeros((6, 2))]).tolist()
    [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    parts = [np.asarray(f, np.float32) for f in frames]
    return np.concatenate([np.concatenate([f.mean(0), f.std(0)]) for f in parts]).astype(np.float32)


def pooled_stats(whisper: Sequence[NDArray], prosody: Sequence[NDArray]) -> NDArray[np.float32]:
    """(N, 2*Dw + 2*Dp): per window mean and std over frames of both inputs."""
    return np.stack([stats_row([w, p]) for w, p in zip(whisper, prosody)]).astype(np.float32)


@dataclass(frozen=True)
class LinearHead:
    """Standardise pooled statistics, then ``x @ coef.T + intercept`` (logits, one per label)."""

    mean: NDArray[np.float32]
    scale: NDArray[np.float32]
    coef: NDArray[np.float32]       # (K, D)
    intercept: NDArray[np.float32]  # (K,)

    def logits(self, stats: NDArray) -> NDArray[np.float32]:
        z = (np.asarray(stats, np.float32) - self.mean) / self.scale
        return (z @ self.coef.T + self.intercept).astype(np.float32)

    @property
    def dim(self) -> int:
        return int(self.coef.shape[1])

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, scale=self.scale, coef=self.coef, intercept=self.intercept)

    @classmethod
    def load(cls, path: Path) -> "LinearHead":
        with np.load(path) as z:
            head = cls(*(z[k].astype(np.float32) for k in ("mean", "scale", "coef", "intercept")))
        if head.coef.shape != (len(head.intercept), len(head.mean)) or head.scale.shape != head.mean.shape:
            raise ValueError(f"{path}: inconsistent shapes {head.coef.shape}, {head.mean.shape}, {head.intercept.shape}")
        return head

"""Window logits to clip probabilities: softmax at a temperature, and the length-weighted
mean of a clip's windows. Numpy only, shared by both audio models and their training.

>>> softmax_t(np.array([[0.0, np.log(3.0)]]), 1.0).round(2).tolist()
[[0.25, 0.75]]
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def softmax_t(logits: ArrayLike, t: float) -> NDArray[np.float64]:
    """Row-wise softmax of ``logits / t``."""
    z = np.asarray(logits, np.float64) / t
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def pool_windows(logits: ArrayLike, owner: ArrayLike, frames: ArrayLike, n_clips: int, temperature: float) -> NDArray[np.float32]:
    """Length-weighted mean of window probabilities at ``temperature``, one row per clip.

    >>> logits = np.log([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    >>> pool_windows(logits, [0, 0, 1], [10, 30, 5], 2, 1.0).astype(float).round(2).tolist()
    [[0.6, 0.4], [0.2, 0.8]]
    """
    p = softmax_t(logits, temperature)
    out = np.zeros((n_clips, p.shape[1]))
    np.add.at(out, np.asarray(owner), p * np.asarray(frames, np.float64)[:, None])
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def pool_clip(logits: ArrayLike, frames: ArrayLike, temperature: float) -> NDArray[np.float32]:
    """:func:`pool_windows` of one clip's windows: its (K,) probabilities.

    >>> pool_clip(np.array([[0.0, 0.0], [np.log(3), 0.0]]), np.array([1, 1]), 1.0).round(3).tolist()
    [0.625, 0.375]
    """
    frames = np.asarray(frames)
    return pool_windows(logits, np.zeros(len(frames), np.int64), frames, 1, temperature)[0]

"""Window logits of held-out clips, the blend weight and the temperature chosen from them.

:class:`HeldOut` keeps, for a set of clips, the network's and the linear head's logits of
every live window, so any blend weight and temperature can be scored without another
forward pass. The temperature that ships is fitted on the pooled leave-one-corpus-out
(LOCO) predictions: a new corpus is the shift a user brings. Its calibration is reported
cross-fitted: each LOCO direction is scored at the temperature fitted on the other ones.

>>> h = HeldOut(np.log([[0.7, 0.3], [0.2, 0.8]]), np.zeros((2, 2)), np.array([0, 1]), np.ones(2), [0, 1])
>>> h.probs(0.0, 1.0).astype(float).round(2).tolist()
[[0.7, 0.3], [0.2, 0.8]]
>>> h.probs(1.0, 1.0).astype(float).round(2).tolist()
[[0.5, 0.5], [0.5, 0.5]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from streamer.audio.windows import blend_logits
from streamer.audio.pooling import pool_windows
from streamer.train.metrics import expected_calibration_error, summary


@dataclass
class HeldOut:
    """Window logits of held-out clips: network (N, K), linear head (N, K), owning clip (N,),
    frames (N,), and the clips' labels (one per clip)."""

    net: NDArray
    linear: NDArray
    owner: NDArray
    frames: NDArray
    y: Sequence[int]

    @property
    def n_clips(self) -> int:
        return len(self.y)

    def logits(self, weight: float) -> NDArray:
        return blend_logits(self.net, self.linear, weight)

    def probs(self, weight: float, temperature: float) -> NDArray[np.float32]:
        """Clip probabilities: window logits blended, at ``temperature``, pooled by length."""
        return pool_windows(self.logits(weight), self.owner, self.frames, self.n_clips, temperature)

    def report(self, weight: float, temperature: float) -> dict:
        return summary(self.probs(weight, temperature), self.y)


def concat(parts: Sequence[HeldOut]) -> HeldOut:
    """One set from several (clip indexes shifted)."""
    shift = np.cumsum([0] + [p.n_clips for p in parts])[:-1]
    return HeldOut(np.concatenate([p.net for p in parts]), np.concatenate([p.linear for p in parts]),
                   np.concatenate([p.owner + s for p, s in zip(parts, shift)]), np.concatenate([p.frames for p in parts]),
                   [y for p in parts for y in p.y])


def nll(held: HeldOut, weight: float, temperature: float) -> float:
    pr = held.probs(weight, temperature)
    return float(-np.mean(np.log(pr[np.arange(held.n_clips), np.asarray(held.y)] + 1e-9)))


def fit_temperature(held: HeldOut, weight: float) -> float:
    """Temperature minimising the clip NLL of ``held`` (grid over log T, then refined).

    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 400)
    >>> z = rng.normal(0, 1, (400, 3)); z[np.arange(400), y] += 1.0
    >>> t = fit_temperature(HeldOut(4 * z, z, np.arange(400), np.ones(400), list(y)), 0.0)
    >>> 3.0 < t < 5.5  # logits made 4x too sharp: T near 4
    True
    """
    grid = np.exp(np.linspace(np.log(0.3), np.log(10.0), 49))
    best = min(grid, key=lambda t: nll(held, weight, t))
    fine = best * np.exp(np.linspace(-0.08, 0.08, 17))
    return float(min(fine, key=lambda t: nll(held, weight, t)))


def cross_fitted(sets: dict[str, HeldOut], weight: float) -> dict:
    """Each set scored at the temperature fitted on all the others; ECE of all of them pooled."""
    out: dict = {"per_set": {}}
    probs, ys = [], []
    for name, held in sets.items():
        others = concat([h for k, h in sets.items() if k != name])
        t = fit_temperature(others, weight)
        pr = held.probs(weight, t)
        out["per_set"][name] = {"temperature_from_others": t, "ece": expected_calibration_error(pr, held.y)}
        probs.append(pr)
        ys += list(held.y)
    out["pooled_ece"] = expected_calibration_error(np.concatenate(probs), ys)
    return out

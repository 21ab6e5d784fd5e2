"""Training of the linear head (:mod:`streamer.audio.linear`) over pooled window statistics.

Every cached window of every copy (clean and augmented) of a training clip is one row;
rows are weighted so each corpus and each class within it gets its share (the draw weights
of the network, spread over the clip's rows), and the multinomial logistic regression is
fitted by full-batch L-BFGS with an L2 penalty ``l2`` on the weights of standardised inputs.

>>> rng = np.random.default_rng(0)
>>> x = np.concatenate([rng.normal(-1, 1, (50, 3)), rng.normal(1, 1, (50, 3))]).astype(np.float32)
>>> y = np.array([0] * 50 + [1] * 50)
>>> head = fit_linear(x, y, np.ones(100), n_classes=2, l2=1e-2)
>>> float((head.logits(x).argmax(1) == y).mean()) > 0.9
True
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray

from streamer.audio.linear import LinearHead, pooled_stats
from streamer.train.audio import ClipData, sample_weights

log = logging.getLogger(__name__)


def fit_linear(x: NDArray, y: Sequence[int], weights: NDArray, n_classes: int, l2: float,
               iters: int = 100, cols: NDArray | None = None) -> LinearHead:
    """Weighted multinomial logistic regression; ``l2`` multiplies the sum of squared weights
    (the loss is the weighted mean cross-entropy). With ``cols`` only those inputs are used
    (the others get zero weight, so the head still reads every statistic)."""
    x = np.asarray(x, np.float32)
    if cols is not None:
        part = fit_linear(x[:, cols], y, weights, n_classes, l2, iters)
        d = x.shape[1]
        mean, scale, coef = np.zeros(d, np.float32), np.ones(d, np.float32), np.zeros((n_classes, d), np.float32)
        mean[cols], scale[cols], coef[:, cols] = part.mean, part.scale, part.coef
        return LinearHead(mean, scale, coef, part.intercept)
    mean = x.mean(0)
    scale = x.std(0) + 1e-3
    z = torch.from_numpy((x - mean) / scale)
    t = torch.as_tensor(np.asarray(y), dtype=torch.long)
    w = torch.as_tensor(np.asarray(weights, np.float64) / np.sum(weights), dtype=torch.float32)
    coef = torch.zeros(n_classes, x.shape[1], requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([coef, bias], lr=1.0, max_iter=iters, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logp = torch.log_softmax(z @ coef.T + bias, dim=1)
        loss = -(w * logp[torch.arange(len(t)), t]).sum() + l2 * coef.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LinearHead(mean.astype(np.float32), scale.astype(np.float32), coef.detach().numpy().copy(),
                      bias.detach().numpy().copy())


_STATS: dict[int, tuple[object, NDArray]] = {}  # id(window list) -> (the list, its statistics): folds share clips


def _copy_stats(windows: list) -> NDArray:
    hit = _STATS.get(id(windows))
    if hit is None or hit[0] is not windows:
        hit = (windows, pooled_stats([w.whisper for w in windows], [w.prosody for w in windows]))
        _STATS[id(windows)] = hit
    return hit[1]


def clip_rows(items: Sequence[ClipData], copies: Sequence[int] | None = None) -> tuple[NDArray, NDArray, NDArray]:
    """Pooled statistics of every window of the chosen copies (all by default) of each clip:
    (rows, D) statistics, (rows,) clip index, (rows,) share of the clip's weight."""
    stats, owner, share = [], [], []
    for k, c in enumerate(items):
        use = range(len(c.copies)) if copies is None else copies
        windows = [w for i in use for w in c.copies[i]]
        stats.append(np.concatenate([_copy_stats(c.copies[i]) for i in use]))
        owner += [k] * len(windows)
        share += [1.0 / len(windows)] * len(windows)
    return np.concatenate(stats), np.array(owner), np.array(share)


def parse_candidate(text: str) -> tuple[str, float]:
    """``"whisper:0.01"`` -> (inputs, l2); inputs ``whisper`` (encoder statistics only) or ``both``.

    >>> parse_candidate("both:0.03")
    ('both', 0.03)
    """
    inputs, _, l2 = text.partition(":")
    if inputs not in ("whisper", "both") or not l2:
        raise ValueError(f"linear candidate {text!r}: expected 'whisper:<l2>' or 'both:<l2>'")
    return inputs, float(l2)


def train_linear(items: Sequence[ClipData], eval_corpus: str, share: float, candidate: str,
                 n_classes: int, copies: Sequence[int] | None = None,
                 rows: tuple[NDArray, NDArray, NDArray] | None = None) -> LinearHead:
    """The linear head of one training set (every copy of every clip, balanced as the network's
    draws); ``rows`` reuses :func:`clip_rows` computed once for several candidates."""
    inputs, l2 = parse_candidate(candidate)
    x, owner, row_share = rows if rows is not None else clip_rows(items, copies)
    clip_w = sample_weights(items, eval_corpus, share)
    y = np.array([items[k].label for k in owner])
    dw = items[0].copies[0][0].whisper.shape[1]
    cols = np.arange(2 * dw) if inputs == "whisper" else None
    return fit_linear(x, y, clip_w[owner] * row_share, n_classes, l2, cols=cols)

"""Classification metrics over the label set: UA, WA, macro-F1, ECE, confusion.

>>> m = confusion([0, 0, 1, 1], [0, 1, 1, 1], 2)
>>> m.tolist()
[[1, 1], [0, 2]]
>>> unweighted_accuracy(m), weighted_accuracy(m), round(macro_f1(m), 4)
(0.75, 0.75, 0.7333)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from streamer.core.labels import LABELS


def confusion(y_true: Sequence[int], y_pred: Sequence[int], n: int = len(LABELS)) -> NDArray[np.int64]:
    """Rows are true labels, columns predicted."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return m


def per_class_recall(m: NDArray) -> NDArray[np.float64]:
    """Recall of each class; NaN for a class with no examples."""
    support = m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(m) / np.maximum(support, 1), np.nan)


def unweighted_accuracy(m: NDArray) -> float:
    """UA: mean recall over the classes present."""
    r = per_class_recall(m)
    return float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")


def weighted_accuracy(m: NDArray) -> float:
    """WA: plain accuracy."""
    total = m.sum()
    return float(np.trace(m) / total) if total else float("nan")


def macro_f1(m: NDArray) -> float:
    """Mean F1 over the classes present (true or predicted)."""
    tp = np.diag(m).astype(float)
    support, predicted = m.sum(axis=1), m.sum(axis=0)
    present = (support + predicted) > 0
    f1 = 2 * tp / np.maximum(support + predicted, 1)
    return float(f1[present].mean()) if present.any() else float("nan")


def expected_calibration_error(probs: NDArray, y_true: Sequence[int], bins: int = 15) -> float:
    """ECE of the top-class confidence, equal-width bins.

    >>> round(expected_calibration_error(np.array([[0.9, 0.1], [0.6, 0.4]]), [0, 1]), 3)
    0.35
    """
    probs = np.asarray(probs, dtype=float)
    if len(probs) == 0:
        return float("nan")
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def present_argmax(probs: NDArray, y_true: Sequence[int]) -> NDArray[np.int64]:
    """Predicted labels when only the labels present in ``y_true`` may be chosen (the argmax
    over those columns): how cross-corpus papers score a corpus with fewer labels.

    >>> present_argmax(np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]]), [1, 2]).tolist()
    [1, 2]
    """
    probs = np.asarray(probs, dtype=float)
    present = np.unique(np.asarray(list(y_true), int))
    if len(probs) == 0 or len(present) == 0:
        return np.zeros(len(probs), int)
    return present[probs[:, present].argmax(axis=1)]


def ua_present(probs: NDArray, y_true: Sequence[int]) -> float:
    """UA with the argmax restricted to the labels the set has (:func:`present_argmax`).

    >>> ua_present(np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]]), [1, 2])
    1.0
    """
    y = list(y_true)
    n = np.asarray(probs).shape[1] if np.asarray(probs).ndim == 2 else len(LABELS)
    return unweighted_accuracy(confusion(y, present_argmax(probs, y), n))


def dims_correlation(probs: NDArray, y_true: Sequence[int]) -> dict[str, float | None]:
    """Pearson r between the predicted arousal / valence (:func:`streamer.core.dims.dims` of each
    row) and the circumplex position of each clip's true label (``streamer.core.dims.COORDS``);
    None where the labels present do not vary along that axis.

    >>> p = np.eye(len(LABELS))
    >>> {k: round(v, 3) for k, v in dims_correlation(p, range(len(LABELS))).items()}
    {'arousal': 1.0, 'valence': 1.0}
    """
    from streamer.core.dims import COORDS, dims

    probs = np.asarray(probs, dtype=float).reshape(-1, len(LABELS))
    y = np.asarray(list(y_true), int)
    out: dict[str, float | None] = {}
    for axis, name in enumerate(("arousal", "valence")):
        truth = np.array([COORDS[LABELS[k]][axis] for k in y])
        pred = np.array([dims(dict(zip(LABELS, row)))[name] for row in probs])
        ok = len(y) > 2 and truth.std() > 0 and pred.std() > 0
        out[name] = float(np.corrcoef(truth, pred)[0, 1]) if ok else None
    return out


def summary(probs: NDArray, y_true: Sequence[int], skipped: int = 0) -> dict:
    """The report of one evaluation: the keys of ``ser-eval``'s JSON."""
    probs = np.asarray(probs, dtype=float).reshape(-1, len(LABELS))
    y_pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, int)
    m = confusion(y_true, y_pred)
    recall = per_class_recall(m)
    return {
        "ua": unweighted_accuracy(m),
        "ua_present": ua_present(probs, y_true) if len(probs) else float("nan"),
        "labels_present": [LABELS[k] for k in sorted(set(int(v) for v in y_true))],
        "wa": weighted_accuracy(m),
        "macro_f1": macro_f1(m),
        "ece": expected_calibration_error(probs, y_true),
        "n": int(len(probs)),
        "skipped": int(skipped),
        "per_class_recall": {lab: (None if np.isnan(r) else float(r)) for lab, r in zip(LABELS, recall)},
        "confusion": {"labels": list(LABELS), "matrix": m.tolist()},
        "dims": dims_correlation(probs, y_true) if len(probs) else {"arousal": None, "valence": None},
    }


def confusion_text(m: NDArray) -> str:
    """The confusion matrix as a fixed-width table (rows true, columns predicted)."""
    head = "true\\pred " + " ".join(f"{lab:>8}" for lab in LABELS)
    rows = [f"{lab:<10}" + " ".join(f"{v:>8d}" for v in row) for lab, row in zip(LABELS, np.asarray(m))]
    return "\n".join([head, *rows])


def confusion_png(m: NDArray, path: str, title: str = "") -> None:
    """Row-normalised confusion matrix as a PNG (counts in the cells)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(m)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=100)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(LABELS)), LABELS, rotation=45, ha="right")
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(LABELS)):
        for j in range(len(LABELS)):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title or "confusion (row-normalised colour, counts in cells)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


AROUSED: tuple[str, ...] = ("angry", "happy")
CALM: tuple[str, ...] = ("neutral", "sad")


def arousal_bacc(probs: NDArray, y_true: Sequence[int]) -> float | None:
    """Balanced accuracy of the sign of arousal: angry/happy clips (true positive side)
    against neutral/sad clips (negative side); arousal is ``streamer.core.dims.dims`` of each
    row's probabilities, predicted positive when > 0. Other labels are ignored; None when
    either side has no clip.

    >>> p = np.eye(len(LABELS))  # one-hot rows: angry, disgust, fear, happy, neutral, sad, surprise
    >>> arousal_bacc(p, range(len(LABELS)))
    1.0
    >>> arousal_bacc(p[[0, 0, 4, 6]], [0, 3, 4, 5])  # both aroused right; a sad clip read as surprise
    0.75
    >>> arousal_bacc(p[[0, 3]], [0, 3]) is None   # no neutral/sad clip
    True
    """
    from streamer.core.dims import dims

    probs = np.asarray(probs, dtype=float).reshape(-1, len(LABELS))
    y = np.asarray(list(y_true), int)
    pos = np.isin(y, [LABELS.index(k) for k in AROUSED])
    neg = np.isin(y, [LABELS.index(k) for k in CALM])
    if not pos.any() or not neg.any():
        return None
    aroused = np.array([dims(dict(zip(LABELS, row)))["arousal"] > 0 for row in probs], bool)
    return float((aroused[pos].mean() + (~aroused[neg]).mean()) / 2)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation (nan when either side is constant).

    >>> round(pearson(np.array([1.0, 2, 3]), np.array([2.0, 4, 7])), 3)
    0.993
    """
    a, b = np.asarray(a, float) - np.mean(a), np.asarray(b, float) - np.mean(b)
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else float("nan")

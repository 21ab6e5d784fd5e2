"""Fitting the learned fusion: stacking on out-of-fold predictions of both branches.

The fusion (:class:`streamer.core.fusion.LearnedFusion`) is a gate, a logistic regression
with an L2 penalty over :func:`streamer.core.fusion.gate_features`, that says how much of the
fused distribution is the audio's and how much the text's. It is fitted on
*examples*, pairs of branch probabilities with the label a listener would give, from four
parts that together cover both one-sided cases:

- ``voice+script``: RAVDESS clips, audio = the out-of-fold probabilities of the audio model's
  leave-actors-out folds, text = the text model on the clip's script (sometimes cut at the
  start or end, as a recogniser's window cuts it); label = the voice's.
- ``voice+neutral-words``: the same clips with a neutral sentence of the text corpora's dev
  splits as their words; label = the voice's.
- ``flat-voice+words``: dev-split sentences spoken by espeak-ng, audio = the audio model on
  the speech (and a copy flattened toward uniform: a voice that says even less), text = the
  text model on the sentence; label = the sentence's.
- ``neutral-voice+words``: neutral (and calm) RAVDESS clips with an emotional dev sentence as
  their words; label = the sentence's.

The gate's target is which branch carries the emotion in the example's part (the voice in
the first two, the words in the last two). Examples are weighted so that each part has a
fixed share and, within a part, each label the same weight. Every example belongs to one of five
groups: a RAVDESS clip to its actor's fold (actors 01-04, 05-08, ...; a sentence paired with
it is drawn from the same group), a spoken sentence to a fixed random fold. The penalty is
and the gate's sharpness are chosen by cross-validation over the groups, and the uncertainty threshold
(``min_confidence``) on the cross-validated fused predictions. Fitting never sees a speaker
or sentence of a reported figure when the caller leaves them out (``exclude_actors``, and
evaluation sentences come from test splits).

>>> x = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
>>> w, b = fit_logistic(x, y, np.ones(4), 1e-3, n_classes=2)
>>> bool((softmax(x @ w.T + b).argmax(axis=1) == y).all())
True
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize

from streamer.core.labels import INDEX, LABELS
from streamer.core.fusion import LearnedFusion, confidence, gate_features, softmax

log = logging.getLogger(__name__)

N = len(LABELS)
PART_SHARES = {"voice+script": 1.0, "flat-voice+words": 1.0, "voice+neutral-words": 0.5, "neutral-voice+words": 0.5}
PENALTIES = (1e-4, 1e-3, 1e-2)
SHARPNESS = (1.0, 2.0, 4.0, 8.0)  # factors on the gate's logit
FOLDS = 5


def actor_fold(actor: int) -> int:
    """The audio model's leave-actors-out fold of a RAVDESS actor (01-04 -> 0, ...)."""
    return (int(actor) - 1) // 4 % FOLDS


@dataclass
class Examples:
    """Branch probabilities with labels: ``text`` rows are NaN where there are no words."""

    audio: NDArray[np.float64]  # (N, 7)
    text: NDArray[np.float64]  # (N, 7)
    y: NDArray[np.int64]
    group: NDArray[np.int64]  # cross-validation fold
    part: NDArray[np.str_]
    key: list[str] = field(default_factory=list)  # clip / sentence ids (for leaving them out)

    def __len__(self) -> int:
        return len(self.y)

    def take(self, mask: NDArray[np.bool_]) -> "Examples":
        idx = np.flatnonzero(mask)
        return Examples(self.audio[idx], self.text[idx], self.y[idx], self.group[idx], self.part[idx],
                        [self.key[i] for i in idx] if self.key else [])

    @staticmethod
    def concat(parts: list["Examples"]) -> "Examples":
        return Examples(np.concatenate([p.audio for p in parts]), np.concatenate([p.text for p in parts]),
                        np.concatenate([p.y for p in parts]), np.concatenate([p.group for p in parts]),
                        np.concatenate([p.part for p in parts]), sum((p.key for p in parts), []))

    @staticmethod
    def make(audio, text, y, group, part: str, key: list[str] | None = None) -> "Examples":
        audio = np.asarray(audio, float).reshape(-1, N)
        text = np.asarray(text, float).reshape(-1, N)
        n = len(audio)
        return Examples(audio, text, np.asarray(y, np.int64).reshape(n), np.asarray(group, np.int64).reshape(n),
                        np.array([part] * n), list(key) if key is not None else [""] * n)

    def weights(self, shares: dict[str, float] | None = None) -> NDArray[np.float64]:
        """Each part its share, each label within a part the same weight; mean weight 1."""
        shares = shares or PART_SHARES
        w = np.zeros(len(self))
        for part in np.unique(self.part):
            m = self.part == part
            labels = np.unique(self.y[m])
            for k in labels:
                mk = m & (self.y == k)
                w[mk] = shares.get(str(part), 1.0) / len(labels) / mk.sum()
        return w * len(w) / w.sum()


def fit_logistic(x: NDArray, y: NDArray, w: NDArray, penalty: float, n_classes: int = N
                 ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Weighted multinomial logistic regression, L2 penalty on the weights (not the biases),
    by L-BFGS. Returns W (classes, features) and b (classes,)."""
    x = np.asarray(x, float)
    n, f = x.shape
    onehot = np.eye(n_classes)[y]
    w = np.asarray(w, float) / np.sum(w)

    def loss(theta: NDArray) -> tuple[float, NDArray]:
        W = theta[: n_classes * f].reshape(n_classes, f)
        b = theta[n_classes * f:]
        z = x @ W.T + b
        z -= z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        nll = -(w * ((z * onehot).sum(axis=1) - lse)).sum()
        p = np.exp(z - lse[:, None])
        g = (p - onehot) * w[:, None]
        gw = g.T @ x + penalty * W
        return nll + 0.5 * penalty * (W ** 2).sum(), np.concatenate([gw.ravel(), g.sum(axis=0)])

    res = minimize(loss, np.zeros(n_classes * (f + 1)), jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    theta = res.x
    return theta[: n_classes * f].reshape(n_classes, f), theta[n_classes * f:]


# Which branch carries the emotion in each part: 1 the voice, 0 the words.
VOICE_CARRIES = {"voice+script": 1, "voice+neutral-words": 1, "flat-voice+words": 0, "neutral-voice+words": 0}


def fit_fusion(ex: Examples, penalty: float, shares: dict[str, float] | None = None) -> LearnedFusion:
    """The gate: a weighted logistic regression of "the voice carries the emotion" (by part,
    :data:`VOICE_CARRIES`) on the standardised gate features of the rows with words."""
    has = ~np.isnan(ex.text).any(axis=1)
    both = ex.take(has)
    z = gate_features(both.audio, both.text)
    mean, scale = z.mean(axis=0), z.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    target = np.array([VOICE_CARRIES[str(p)] for p in both.part])
    w, b = fit_logistic((z - mean) / scale, target, both.weights(shares), penalty, n_classes=2)
    return LearnedFusion(w[1] - w[0], float(b[1] - b[0]), mean, scale)


def fused_proba(model: LearnedFusion, ex: Examples) -> NDArray[np.float64]:
    has = ~np.isnan(ex.text).any(axis=1)
    out = np.empty((len(ex), N))
    if has.any():
        out[has] = model.proba(ex.audio[has], ex.text[has])
    if (~has).any():
        out[~has] = model.proba(ex.audio[~has], None)
    return out


def cross_validated(ex: Examples, penalty: float, shares: dict[str, float] | None = None) -> NDArray[np.float64]:
    """Fused probabilities of every example from a fit that left its group out."""
    out = np.empty((len(ex), N))
    for g in np.unique(ex.group):
        test = ex.group == g
        model = fit_fusion(ex.take(~test), penalty, shares=shares)
        out[test] = fused_proba(model, ex.take(test))
    return out


# --- the rules it is compared with --------------------------------------------------------
def baseline(ex: Examples, rule: str) -> NDArray[np.float64]:
    """Probabilities of a fixed rule: ``audio``, ``text`` (uniform where no words),
    ``weighted`` (0.4 audio / 0.6 text), ``confidence`` (weights times confidence)."""
    a, t = ex.audio, ex.text
    has = ~np.isnan(t).any(axis=1)
    if rule == "audio":
        return a
    tt = np.where(has[:, None], t, 1.0 / N)
    if rule == "text":
        return tt
    wa = np.full(len(a), 0.4)
    wt = np.where(has, 0.6, 0.0)
    if rule == "confidence":
        ca = np.array([confidence(dict(zip(LABELS, r))) for r in a])
        ct = np.array([confidence(dict(zip(LABELS, r))) if h else 0.0 for r, h in zip(tt, has)])
        wa2, wt2 = wa * ca, wt * ct
        degenerate = wa2 + wt2 <= 1e-12
        wa, wt = np.where(degenerate, wa, wa2), np.where(degenerate, wt, wt2)
    elif rule != "weighted":
        raise ValueError(f"unknown rule {rule}")
    return (wa[:, None] * a + wt[:, None] * tt) / (wa + wt)[:, None]


def ua(probs: NDArray, y: NDArray) -> float:
    """Unweighted accuracy (mean recall over the labels present)."""
    pred = np.asarray(probs).argmax(axis=1)
    labels = np.unique(y)
    return float(np.mean([(pred[y == k] == k).mean() for k in labels])) if len(labels) else float("nan")


def part_table(ex: Examples, fused: NDArray) -> dict[str, dict[str, float]]:
    """UA per part for the fused prediction and every fixed rule."""
    rules = {"fused": fused, **{r: baseline(ex, r) for r in ("audio", "text", "weighted", "confidence")}}
    out = {}
    for part in sorted(set(ex.part.tolist())):
        m = ex.part == part
        out[part] = {"n": int(m.sum()), **{r: round(ua(p[m], ex.y[m]), 4) for r, p in rules.items()}}
    return out


MAIN_PARTS = ("voice+script", "flat-voice+words")


def score(ex: Examples, fused: NDArray, shares: dict[str, float] | None = None) -> float:
    """What the penalty is chosen by: the worst margin of the fused UA over the better
    branch's UA among the two main parts (the one-sided cases the evaluation measures), plus
    a thousandth of the share-weighted mean UA over all parts to break ties."""
    shares = shares or PART_SHARES
    parts = sorted(set(ex.part.tolist()))
    margins = []
    for p in parts:
        m = ex.part == p
        if p in MAIN_PARTS:
            best = max(ua(ex.audio[m], ex.y[m]), ua(baseline(ex.take(m), "text"), ex.y[m]))
            margins.append(ua(fused[m], ex.y[m]) - best)
    total = sum(shares.get(p, 1.0) for p in parts)
    mean = sum(shares.get(p, 1.0) * ua(fused[ex.part == p], ex.y[ex.part == p]) for p in parts) / total
    return (min(margins) if margins else 0.0) + 1e-3 * mean


# --- the uncertain threshold --------------------------------------------------------------
def isotonic(x: NDArray, y: NDArray, w: NDArray) -> tuple[NDArray, NDArray]:
    """Weighted isotonic (non-decreasing) regression of y on x by pooling adjacent
    violators: the sorted x and the fitted values.

    >>> isotonic(np.array([1, 2, 3, 4]), np.array([0, 1, 0, 1]), np.ones(4))[1].tolist()
    [0.0, 0.5, 0.5, 1.0]
    """
    order = np.argsort(x, kind="stable")
    xs, ys, ws = np.asarray(x, float)[order], np.asarray(y, float)[order], np.asarray(w, float)[order]
    blocks: list[list[float]] = []  # [mean, weight, count]
    for v, wt in zip(ys, ws):
        blocks.append([v, wt, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return xs, np.concatenate([np.full(int(c), m) for m, _, c in blocks])


def choose_min_confidence(probs: NDArray, y: NDArray, w: NDArray, max_share: float = 0.3) -> dict:
    """The fused top probability below which a result is more likely wrong than right: the
    smallest top probability whose estimated accuracy (isotonic regression of right/wrong on
    the top probability, weighted) reaches 0.5, rounded down to 0.01; lowered if needed so
    that at most ``max_share`` of the weight is flagged.

    >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.45, 0.55], [0.52, 0.48], [0.7, 0.3], [0.4, 0.6]])
    >>> choose_min_confidence(p, np.array([0, 0, 0, 1, 0, 1]), np.ones(6), max_share=0.5)["min_confidence"]
    0.6
    """
    top = np.asarray(probs).max(axis=1)
    right = (np.asarray(probs).argmax(axis=1) == y).astype(float)
    w = np.asarray(w, float) / np.sum(w)
    xs, fit = isotonic(top, right, w)
    reach = np.flatnonzero(fit >= 0.5)
    t = float(xs[reach[0]]) if len(reach) else float(xs[-1])
    t = float(np.floor(t * 100) / 100)
    capped = False
    while t > 0 and w[top < t].sum() > max_share:
        t, capped = round(t - 0.01, 2), True
    low = top < t
    share = float(w[low].sum())
    return {"min_confidence": t, "flagged_share": round(share, 4), "capped": capped,
            "accuracy_flagged": round(float((w[low] * right[low]).sum() / share), 4) if share else None,
            "accuracy_kept": round(float((w[~low] * right[~low]).sum() / max(1e-12, 1 - share)), 4),
            "rule": "smallest fused top probability whose isotonic-estimated accuracy reaches 0.5 "
                    f"(cross-validated fits, weighted), at most {max_share:.0%} flagged"}


def cross_validated_logits(ex: Examples, penalty: float, shares: dict[str, float] | None = None) -> NDArray[np.float64]:
    """The gate's logit for every example (NaN without words) from a fit that left its group out."""
    out = np.full(len(ex), np.nan)
    has = ~np.isnan(ex.text).any(axis=1)
    for g in np.unique(ex.group):
        test = (ex.group == g) & has
        if test.any():
            out[test] = fit_fusion(ex.take((ex.group != g)), penalty, shares).logit(ex.audio[test], ex.text[test])
    return out


def mix(ex: Examples, logits: NDArray) -> NDArray[np.float64]:
    """Fused probabilities for gate logits (the audio where there are no words)."""
    g = 1.0 / (1.0 + np.exp(-np.clip(np.nan_to_num(logits, nan=50.0), -50, 50)))[:, None]
    text = np.where(np.isnan(ex.text), 0.0, ex.text)
    return g * ex.audio + (1 - g) * text


def fit_and_report(ex: Examples, penalties=PENALTIES, shares: dict[str, float] | None = None,
                   sharpness=SHARPNESS) -> tuple[LearnedFusion, dict]:
    """Choose the penalty and the gate's sharpness (a factor on its logit: how decidedly it
    hands the answer to one branch) by grouped cross-validation, refit on everything, choose
    the uncertain threshold on the cross-validated predictions; returns the model and a report."""
    cv: dict[tuple[float, float], float] = {}
    logits = {}
    for pen in penalties:
        logits[pen] = cross_validated_logits(ex, pen, shares)
        for k in sharpness:
            cv[(pen, k)] = score(ex, mix(ex, k * logits[pen]), shares)
            log.info("penalty %g, sharpness %g: cross-validated score %.4f", pen, k, cv[(pen, k)])
    # ties: the larger penalty, then the gentler gate
    pen, k = max(cv, key=lambda pk: (round(cv[pk], 4), pk[0], -pk[1]))
    oof = mix(ex, k * logits[pen])
    thr = choose_min_confidence(oof, ex.y, ex.weights(shares))
    model = fit_fusion(ex, pen, shares=shares)
    model = LearnedFusion(k * model.gate_w, k * model.gate_b, model.mean, model.scale, thr["min_confidence"])
    gate = 1.0 / (1.0 + np.exp(-np.clip(k * logits[pen], -50, 50)))
    report = {
        "penalty": pen, "sharpness": k,
        "cv_score": {f"penalty {a:g}, sharpness {b:g}": round(v, 4) for (a, b), v in cv.items()},
        "cross_validated": part_table(ex, oof),
        "cross_validated_gate": {p: {"mean_audio_share": round(float(np.nanmean(gate[ex.part == p])), 4),
                                     "gate_right": round(float(((gate[ex.part == p] > 0.5) == VOICE_CARRIES.get(p, 1)).mean()), 4)}
                                 for p in sorted(set(ex.part.tolist()))},
        "uncertain": thr,
        "examples": {p: int((ex.part == p).sum()) for p in sorted(set(ex.part.tolist()))},
        "labels": {p: {LABELS[k]: int(((ex.part == p) & (ex.y == k)).sum()) for k in range(N)}
                   for p in sorted(set(ex.part.tolist()))},
    }
    return model, report


def label_ids(names) -> NDArray[np.int64]:
    return np.array([INDEX[n] for n in names], dtype=np.int64)

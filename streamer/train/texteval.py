"""Scoring a text model on labelled rows, as written and as a recogniser would write them.

A row the model has no opinion on (no words after normalisation) counts as ``neutral``, what
the dashboard shows when only the audio speaks; ``no_opinion`` says how many there were.
"""

from __future__ import annotations

import numpy as np

from streamer.core.labels import INDEX, LABELS
from streamer.text.emotion import TextEmotion
from streamer.text.normalize import asr_style
from streamer.train.metrics import confusion, expected_calibration_error, macro_f1, per_class_recall
from streamer.train.textdata import DimRows, TextRows


def score(model: TextEmotion, texts: list[str], y: np.ndarray) -> dict:
    probs, has = model.predict_proba(texts)
    pred = np.where(has, probs.argmax(axis=1), INDEX["neutral"])
    m = confusion(y, pred)
    recall = per_class_recall(m)
    return {
        "accuracy": float(np.trace(m) / max(1, m.sum())),
        "macro_f1": macro_f1(m),
        "n": int(len(y)),
        "no_opinion": int((~has).sum()),
        "ece": expected_calibration_error(probs[has], y[has]) if has.any() else float("nan"),
        "per_class_recall": {LABELS[k]: (None if np.isnan(r) else float(r)) for k, r in enumerate(recall)},
        "confusion": {"labels": list(LABELS), "matrix": m.tolist()},
    }


def evaluate_rows(model: TextEmotion, rows: TextRows) -> dict:
    """``raw``: the rows as written; ``asr``: the same rows lowercased, unpunctuated, numbers
    as words. Single-label rows only."""
    rows = rows.single()
    y = rows.labels()
    return {"source": rows.source, "raw": score(model, list(rows.texts), y),
            "asr": score(model, [asr_style(t) for t in rows.texts], y)}


def evaluate_dims(model: TextEmotion, rows: DimRows) -> dict:
    """Pearson r of arousal and valence against ``rows`` (EmoBank), for both mappings: the
    model's dims head (``head``, when it has one) and the circumplex mapping of its 7
    probabilities (``circumplex``, :func:`streamer.core.dims.dims`). Rows without an opinion are
    left out."""
    from streamer.core.dims import dims as circumplex
    from streamer.train.metrics import pearson

    texts = [asr_style(t) for t in rows.texts]
    probs, has, head = model.predict_full(texts)
    y = np.stack([rows.arousal, rows.valence], axis=1)[has]
    out = {"source": rows.source, "n": int(has.sum()), "no_opinion": int((~has).sum())}
    c = np.array([[d["arousal"], d["valence"]] for d in (circumplex(dict(zip(LABELS, p))) for p in probs[has])])
    out["circumplex"] = {"arousal_r": pearson(c[:, 0], y[:, 0]), "valence_r": pearson(c[:, 1], y[:, 1])}
    if head is not None:
        h = head[has]
        out["head"] = {"arousal_r": pearson(h[:, 0], y[:, 0]), "valence_r": pearson(h[:, 1], y[:, 1])}
    return out

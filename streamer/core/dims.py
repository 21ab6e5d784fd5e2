"""Arousal and valence from label probabilities: the expected circumplex position.

Each label sits at a point (arousal, valence) of Russell's circumplex of affect (Russell
1980), scaled to [-1, 1]. A distribution's dimensions are the probability-weighted mean of
its labels' points, so they stay in [-1, 1] and follow the calibrated probabilities.

Neutral sits below the middle of the arousal axis: in speech, neutral delivery is calm,
low-activation speech (RAVDESS counts "calm" as neutral), between sad and the aroused
labels; valence 0. Surprise is aroused and mildly positive; disgust is the least aroused
of the negative labels.

>>> dims({"angry": 1.0})
{'arousal': 0.8, 'valence': -0.6}
>>> d = dims({"happy": 0.5, "sad": 0.5})
>>> round(d["arousal"], 3), round(d["valence"], 3)
(0.0, 0.1)
>>> dims(None) is None
True

The text branch may read arousal and valence from the words themselves (a regression head
fitted on EmoBank, which the circumplex mapping of its 7 probabilities correlates with less):
its probabilities then carry a ``dims`` attribute, which :func:`all_dims` uses for ``text``.
"""

from __future__ import annotations

from collections.abc import Mapping

from streamer.core.labels import LABELS

# (arousal, valence) per label, in [-1, 1].
COORDS: dict[str, tuple[float, float]] = {
    "angry": (0.8, -0.6),
    "disgust": (0.3, -0.7),
    "fear": (0.7, -0.6),
    "happy": (0.6, 0.8),
    "neutral": (-0.3, 0.0),
    "sad": (-0.6, -0.6),
    "surprise": (0.7, 0.4),
}
assert set(COORDS) == set(LABELS)


def dims(p: Mapping[str, float] | None) -> dict[str, float] | None:
    """Expected arousal and valence of a distribution over the labels (None stays None)."""
    if p is None:
        return None
    total = sum(max(0.0, float(p.get(k, 0.0))) for k in LABELS)
    if total <= 0:
        raise ValueError(f"not a distribution: {dict(p)}")
    a = sum(max(0.0, float(p.get(k, 0.0))) * COORDS[k][0] for k in LABELS) / total
    v = sum(max(0.0, float(p.get(k, 0.0))) * COORDS[k][1] for k in LABELS) / total
    return {"arousal": round(a, 6), "valence": round(v, 6)}


class TextProbs(dict):
    """The 7 label probabilities (a plain dict to every reader) and, from a model with a dims
    head, ``dims``: ``{"arousal": a, "valence": v}`` read from the text itself (else None).

    >>> p = TextProbs({"happy": 1.0}, {"arousal": 0.2, "valence": 0.7})
    >>> p["happy"], p.dims["valence"], dict(p) == {"happy": 1.0}
    (1.0, 0.7, True)
    >>> import pickle; pickle.loads(pickle.dumps(p)).dims
    {'arousal': 0.2, 'valence': 0.7}
    """

    def __init__(self, probs=(), dims: dict[str, float] | None = None) -> None:
        super().__init__(probs)
        self.dims = dims


def text_dims(text: Mapping[str, float] | None) -> dict[str, float] | None:
    """The text branch's arousal and valence: those its model read (:class:`TextProbs` from a
    model with a dims head) when present, else the circumplex mapping.

    >>> text_dims(TextProbs({"happy": 1.0}, {"arousal": 0.1, "valence": -0.5}))
    {'arousal': 0.1, 'valence': -0.5}
    >>> text_dims({"happy": 1.0})
    {'arousal': 0.6, 'valence': 0.8}
    """
    if text is None:
        return None
    own = text.dims if isinstance(text, TextProbs) else None
    if own:
        return {k: round(float(own[k]), 6) for k in ("arousal", "valence")}
    return dims(text)


def all_dims(audio: Mapping[str, float], text: Mapping[str, float] | None, fused: Mapping[str, float]) -> dict:
    """The ``dims`` field of a window or utterance record (text: :func:`text_dims`)."""
    return {"audio": dims(audio), "text": text_dims(text), "fused": dims(fused)}

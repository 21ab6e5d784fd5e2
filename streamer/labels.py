"""The one label set of ser-live, its emoji, and every mapping onto it.

>>> LABELS
('angry', 'disgust', 'fear', 'happy', 'neutral', 'sad', 'surprise')
>>> to_label("calm"), to_label("ps"), to_label("anger"), to_label("boredom") is None
('neutral', 'surprise', 'angry', True)
"""

from __future__ import annotations

LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
INDEX: dict[str, int] = {name: i for i, name in enumerate(LABELS)}

EMOJI: dict[str, str] = {
    "angry": "😠",
    "disgust": "🤢",
    "fear": "😨",
    "happy": "😄",
    "neutral": "😐",
    "sad": "😢",
    "surprise": "😮",
}

# Every name a corpus or model uses for one of the seven labels. Names not here are
# outside the label set (EmoDB boredom, for example) and are skipped by callers.
SYNONYMS: dict[str, str] = {
    **{name: name for name in LABELS},
    "anger": "angry",
    "ang": "angry",
    "disgusted": "disgust",
    "dis": "disgust",
    "fearful": "fear",
    "fea": "fear",
    "joy": "happy",
    "happiness": "happy",
    "hap": "happy",
    "calm": "neutral",
    "neu": "neutral",
    "sadness": "sad",
    "surprised": "surprise",
    "sur": "surprise",
    "ps": "surprise",
    "pleasant_surprise": "surprise",
    "pleasant surprise": "surprise",
}


def to_label(name: str) -> str | None:
    """Map a corpus or model label name onto the label set; None when it has no place there."""
    return SYNONYMS.get(name.strip().lower())

"""The one label set of ser-live, its emoji, and every mapping onto it.

>>> LABELS
('angry', 'disgust', 'fear', 'happy', 'neutral', 'sad', 'surprise')
>>> to_label("calm"), to_label("ps"), to_label("anger"), to_label("boredom") is None
('neutral', 'surprise', 'angry', True)
>>> text_model_label("LABEL_0") is None, text_model_label("admiration"), text_model_label("Joy")
(True, 'happy', 'happy')
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


# Text-classification models label their outputs in their own words. Besides the synonyms
# above, the 27 GoEmotions emotions map onto Ekman's six as the dataset's authors map them
# (ekman_mapping.json), so a GoEmotions model's outputs can be summed onto the label set.
GOEMOTIONS_EKMAN: dict[str, str] = {
    **dict.fromkeys(("anger", "annoyance", "disapproval"), "angry"),
    "disgust": "disgust",
    **dict.fromkeys(("fear", "nervousness"), "fear"),
    **dict.fromkeys(("joy", "amusement", "approval", "excitement", "gratitude", "love", "optimism",
                     "relief", "pride", "admiration", "desire", "caring"), "happy"),
    **dict.fromkeys(("sadness", "disappointment", "embarrassment", "grief", "remorse"), "sad"),
    **dict.fromkeys(("surprise", "realization", "confusion", "curiosity"), "surprise"),
    "neutral": "neutral",
}


def text_model_label(name: str) -> str | None:
    """Map an output label of a text-classification model onto the label set (None: unknown)."""
    key = name.strip().lower()
    return SYNONYMS.get(key) or GOEMOTIONS_EKMAN.get(key)

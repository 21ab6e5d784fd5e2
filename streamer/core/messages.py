"""The data that flows between the live stages, one type per boundary.

Time is an integer sample index (16 kHz) from the start of the stream; seconds appear only
when a record is written for people (``to_record``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


Probs = dict[str, float]


SAMPLE_RATE = 16_000  # every Chunk, Window and sample index is at this rate (mono)

def seconds(sample: int) -> float:
    return round(sample / SAMPLE_RATE, 3)


@dataclass(frozen=True)
class Chunk:
    """int16 mono samples at 16 kHz and the index of the first one."""

    start: int
    samples: NDArray[np.int16]

    @property
    def end(self) -> int:
        return self.start + len(self.samples)


@dataclass(frozen=True)
class Window:
    """A window of speech: ``samples`` cover [start, end) of the stream."""

    index: int
    start: int
    end: int
    samples: NDArray[np.int16]
    final: bool = False  # the last window of an utterance
    utterance: int = 0  # index of the utterance the window belongs to

    def __post_init__(self) -> None:
        if self.end - self.start != len(self.samples):
            raise ValueError("window samples do not match its span")


@dataclass(frozen=True)
class Word:
    word: str
    start: int
    end: int
    conf: float

    def to_record(self) -> dict:
        return {"word": self.word, "start_s": seconds(self.start), "end_s": seconds(self.end), "conf": round(self.conf, 3)}


@dataclass(frozen=True)
class WindowResult:
    """Everything known about one window; the session log's ``window`` record.

    ``label``, ``emoji`` and ``confidence`` are the window's own fused result (``label`` is
    the argmax of ``fused``); the rolling emotion is ``rolling`` and ``rolling_*``.
    ``dims`` holds arousal/valence per branch (``streamer.core.dims``); ``uncertain`` is true when
    the fused confidence is below ``[fusion] min_confidence``. ``text_skipped`` says why the
    text branch gave no opinion on words the recogniser heard (``streamer.asr.reliability``:
    ``language``, ``low_confidence``, ``no_speech``, ``repetitive``), None when it read them.
    """

    index: int
    start: int
    end: int
    words: tuple[Word, ...]
    audio: Probs
    text: Probs | None
    fused: Probs
    rolling: Probs
    label: str
    emoji: str
    confidence: float
    latency_ms: float
    channel: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    rolling_label: str = ""
    rolling_emoji: str = ""
    rolling_confidence: float = 0.0
    uncertain: bool = False
    dims: dict = field(default_factory=dict)
    utterance: int = 0
    text_skipped: str | None = None

    @property
    def transcript(self) -> str:
        return " ".join(w.word for w in self.words)

    def to_record(self, transcript: bool = True) -> dict:
        rec = {"type": "window", "index": self.index, "utterance": self.utterance,
               "start_s": seconds(self.start), "end_s": seconds(self.end),
               "transcript": self.transcript if transcript else None,
               "words": [w.to_record() for w in self.words] if transcript else None,
               "probs": {"audio": _round(self.audio), "text": _round(self.text) if self.text else None,
                         "fused": _round(self.fused), "rolling": _round(self.rolling)},
               "label": self.label, "emoji": self.emoji, "confidence": round(self.confidence, 4),
               "uncertain": self.uncertain, "dims": _round_dims(self.dims),
               "rolling_label": self.rolling_label, "rolling_emoji": self.rolling_emoji,
               "rolling_confidence": round(self.rolling_confidence, 4),
               "latency_ms": round(self.latency_ms, 1), "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
               "text_skipped": self.text_skipped}
        if self.channel is not None:
            rec["channel"] = self.channel
        return rec


@dataclass(frozen=True)
class UtteranceResult:
    """One utterance (VAD speech segment, closed at least every ``[live] utterance_max_s``):
    the session log's ``utterance`` record. The text branch reads the whole utterance; the
    audio opinion is the length-weighted mean of its windows'. ``text_skipped``: as for a
    window, for the utterance's words."""

    index: int
    start: int
    end: int
    windows: tuple[int, ...]
    words: tuple[Word, ...]
    audio: Probs
    text: Probs | None
    fused: Probs
    label: str
    emoji: str
    confidence: float
    uncertain: bool
    dims: dict
    channel: str | None = None
    text_skipped: str | None = None

    @property
    def transcript(self) -> str:
        return " ".join(w.word for w in self.words)

    def to_record(self, transcript: bool = True) -> dict:
        rec = {"type": "utterance", "index": self.index, "start_s": seconds(self.start), "end_s": seconds(self.end),
               "windows": list(self.windows),
               "transcript": self.transcript if transcript else None,
               "words": [w.to_record() for w in self.words] if transcript else None,
               "probs": {"audio": _round(self.audio), "text": _round(self.text) if self.text else None,
                         "fused": _round(self.fused)},
               "label": self.label, "emoji": self.emoji, "confidence": round(self.confidence, 4),
               "uncertain": self.uncertain, "dims": _round_dims(self.dims), "text_skipped": self.text_skipped}
        if self.channel is not None:
            rec["channel"] = self.channel
        return rec


def _round(p: Probs) -> Probs:
    """Rounded for the log, still summing to 1 (the largest absorbs the rounding)."""
    r = {k: round(float(v), 5) for k, v in p.items()}
    top = max(r, key=r.get)
    r[top] = round(r[top] + 1.0 - sum(r.values()), 5)
    return r


def _round_dims(d: dict) -> dict:
    return {k: ({a: round(float(x), 4) for a, x in v.items()} if v is not None else None) for k, v in d.items()}

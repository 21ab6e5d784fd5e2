"""The data that flows between the live stages, one type per boundary.

Time is an integer sample index (16 kHz) from the start of the stream; seconds appear only
when a record is written for people (``to_record``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from streamer.audio import SAMPLE_RATE

Probs = dict[str, float]


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
    """Everything known about one window; the session log's ``window`` record."""

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

    @property
    def transcript(self) -> str:
        return " ".join(w.word for w in self.words)

    def to_record(self, transcript: bool = True) -> dict:
        rec = {"type": "window", "index": self.index, "start_s": seconds(self.start), "end_s": seconds(self.end),
               "transcript": self.transcript if transcript else None,
               "words": [w.to_record() for w in self.words] if transcript else None,
               "probs": {"audio": _round(self.audio), "text": _round(self.text) if self.text else None,
                         "fused": _round(self.fused), "rolling": _round(self.rolling)},
               "label": self.label, "emoji": self.emoji, "confidence": round(self.confidence, 4),
               "latency_ms": round(self.latency_ms, 1), "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()}}
        if self.channel is not None:
            rec["channel"] = self.channel
        return rec


def _round(p: Probs) -> Probs:
    """Rounded for the log, still summing to 1 (the largest absorbs the rounding)."""
    r = {k: round(float(v), 5) for k, v in p.items()}
    top = max(r, key=r.get)
    r[top] = round(r[top] + 1.0 - sum(r.values()), 5)
    return r

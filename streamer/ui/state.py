"""What the dashboard shows, as plain data: a :class:`LiveState` consumes a stream's events
(:meth:`LiveState.on_event`: partial text, window and utterance results) and status (level,
VAD), from whichever threads make them; the dashboard renders a :class:`Snapshot` of it."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass


from streamer.core.measures import percentile
from streamer.core.messages import UtteranceResult, WindowResult


@dataclass(frozen=True)
class Snapshot:
    source: str
    models: dict[str, str]
    elapsed_s: float
    stream_s: float
    level_db: float
    in_speech: bool
    partial: str
    results: tuple[WindowResult, ...]
    counters: dict[str, int]
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    status: str = "running"
    utterances: tuple[UtteranceResult, ...] = ()  # the most recent closed utterances, oldest first
    half_life_s: float | None = None  # of the rolling emotion, when known (for the dashboard's title)


class LiveState:
    """Shared between the pipeline's threads and the dashboard: the last ``history`` window
    results and ``utterances`` closed utterances, the audio level, the partial transcript."""

    def __init__(self, source: str, models: dict[str, str], history: int = 12, latencies: int = 500,
                 utterances: int = 8, half_life_s: float | None = None) -> None:
        self._lock = threading.Lock()
        self.source = source
        self.models = dict(models)
        self.started = time.monotonic()
        self.stream_s = 0.0
        self.level = -90.0
        self.in_speech = False
        self.partial = ""
        self.status = "running"
        self.results: collections.deque[WindowResult] = collections.deque(maxlen=history)
        self.latencies: collections.deque[float] = collections.deque(maxlen=latencies)
        self.utterances: collections.deque[UtteranceResult] = collections.deque(maxlen=utterances)
        self.half_life_s = half_life_s

    def audio(self, stream_s: float, level: float, in_speech: bool) -> None:
        with self._lock:
            self.stream_s, self.level, self.in_speech = stream_s, level, in_speech

    def set_partial(self, text: str) -> None:
        with self._lock:
            self.partial = text

    def add_result(self, r: WindowResult) -> None:
        with self._lock:
            self.results.append(r)
            self.latencies.append(r.latency_ms)

    def add_utterance(self, u: UtteranceResult) -> None:
        with self._lock:
            self.utterances.append(u)

    def on_event(self, event) -> None:
        """One of a session's events (``streamer.core.session``): partial text or a result."""
        from streamer.core.session import Partial

        if isinstance(event, Partial):
            self.set_partial(event.text)
        elif isinstance(event, WindowResult):
            self.add_result(event)
        elif isinstance(event, UtteranceResult):
            self.add_utterance(event)

    def set_status(self, status: str) -> None:
        with self._lock:
            self.status = status

    def snapshot(self, counters: dict[str, int]) -> Snapshot:
        with self._lock:
            lat = list(self.latencies)
            return Snapshot(self.source, dict(self.models), time.monotonic() - self.started, self.stream_s, self.level,
                            self.in_speech, self.partial, tuple(self.results), dict(counters),
                            percentile(lat, 50), percentile(lat, 95), self.status, tuple(self.utterances),
                            self.half_life_s)

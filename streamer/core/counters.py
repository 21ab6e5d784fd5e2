"""Named counters shared by the pipeline's threads, shown on the dashboard and in the log.

>>> c = Counters()
>>> c.add("audio_dropped_samples", 160); c.add("audio_dropped_samples", 40); c.snapshot()
{'audio_dropped_samples': 200}
"""

from __future__ import annotations

import threading


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = {}

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0) + n

    def get(self, name: str) -> int:
        with self._lock:
            return self._values.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

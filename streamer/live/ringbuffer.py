"""A bounded ring of int16 samples between the capture callback and the pipeline.

The writer (the audio callback) never waits on the reader beyond a memcpy under a lock, never
allocates, never raises: when the ring is full the oldest unread audio is overwritten and
counted (``dropped``). The reader gets :class:`Chunk` s whose ``start`` is the sample index
from stream start, so a drop leaves a gap in time rather than shifting it.

>>> rb = RingBuffer(8)
>>> rb.write(np.arange(6, dtype=np.int16)); rb.write(np.arange(6, 11, dtype=np.int16))
>>> rb.dropped
3
>>> c = rb.read(); c.start, c.samples.tolist()
(3, [3, 4, 5, 6, 7, 8, 9, 10])
>>> rb.read() is None
True
"""

from __future__ import annotations

import threading

import numpy as np
from numpy.typing import NDArray

from streamer.core.buffers import mapped_zeros
from streamer.core.messages import Chunk


class RingBuffer:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._buf = mapped_zeros(capacity, np.int16)  # lives as long as its stream: off the C heap
        self._cap = capacity
        self._lock = threading.Lock()
        self._written = 0  # samples written since stream start (the next write's index)
        self._read = 0  # index of the next unread sample
        self.dropped = 0  # samples overwritten before they were read

    @property
    def capacity(self) -> int:
        return self._cap

    @property
    def written(self) -> int:
        """Samples written since the stream started (dropped ones included)."""
        with self._lock:
            return self._written

    def write(self, samples: NDArray[np.int16]) -> None:
        """Copy ``samples`` in (called from the audio callback)."""
        n = len(samples)
        with self._lock:
            if n > self._cap:  # keep the newest capacity samples
                skip = n - self._cap
                self._written += skip
                samples = samples[skip:]
                n = self._cap
            pos = self._written % self._cap
            first = min(n, self._cap - pos)
            self._buf[pos: pos + first] = samples[:first]
            self._buf[: n - first] = samples[first:]
            self._written += n
            lost = self._written - self._read - self._cap
            if lost > 0:
                self.dropped += lost
                self._read += lost

    def read(self, max_samples: int | None = None) -> Chunk | None:
        """The unread samples (at most ``max_samples``), or None when there are none."""
        with self._lock:
            n = self._written - self._read
            if max_samples is not None:
                n = min(n, max_samples)
            if n <= 0:
                return None
            start = self._read
            pos = start % self._cap
            first = min(n, self._cap - pos)
            out = np.empty(n, dtype=np.int16)
            out[:first] = self._buf[pos: pos + first]
            out[first:] = self._buf[: n - first]
            self._read += n
            return Chunk(start, out)

    def pending(self) -> int:
        with self._lock:
            return self._written - self._read

"""A call track's audio held to about real time: a client may send ``burst_s`` seconds of audio
ahead at once, then ``max_speed`` times real time on average; what it sends beyond is dropped
before any analysis (counted as ``audio_too_fast_samples``, part of the track's dropped audio),
leaving a gap in the stream's time as a full ring does. So a client that floods (10x real time)
costs the server about what a real-time call costs, and the other calls keep their latency.
Telephony platforms (Twilio, FreeSWITCH, Asterisk) send in real time and never reach it.

A protocol that answers each audio message (vosk-server's: its clients send a file as fast as
the answers come) is slowed instead: the call loop waits before taking audio beyond the pace
(:meth:`Pace.reserve`), the client waits for the answer, and no audio is dropped."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamer.core.counters import Counters
from streamer.core.messages import SAMPLE_RATE, Chunk
from streamer.live.sources import PushSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaceLimits:
    """``max_speed``: times real time a track's audio may average (0: no limit); ``burst_s``:
    seconds of audio it may send ahead of that at once (a client catching up after a stall, a
    short clip sent as fast as possible)."""

    max_speed: float = 1.5
    burst_s: float = 20.0


class Pace:
    """A bucket of audio samples: it holds ``burst_s`` of audio and fills at ``max_speed``
    times real time; :meth:`take` says how many of ``n`` samples may go on now.

    >>> t = [0.0]; p = Pace(PaceLimits(max_speed=1.0, burst_s=1.0), rate=10, clock=lambda: t[0])
    >>> p.take(8), p.take(8)  # a second of audio (10 samples) at once
    (8, 2)
    >>> t[0] = 0.5; p.take(8)  # half a second later: half a second more
    5
    >>> t[0] = 100.0; p.take(30)  # never more than the burst
    10
    """

    def __init__(self, limits: PaceLimits, rate: int = SAMPLE_RATE, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = limits.max_speed * rate
        self.burst = limits.burst_s * rate
        self.tokens = self.burst
        self.clock = clock
        self._last: float | None = None

    def _refill(self) -> None:
        """What the time since the last call earned, up to the burst."""
        now = self.clock()
        if self._last is not None:
            self.tokens = min(self.burst, self.tokens + max(0.0, now - self._last) * self.per_s)
        self._last = now

    def reserve(self, n: int) -> float:
        """Take ``n`` samples now, into debt where the bucket holds fewer; the seconds until the
        debt is paid, which a sender that can be kept waiting sleeps before going on (a protocol
        that answers each audio message: its client waits for the answer, so it is slowed, not cut).

        >>> t = [0.0]; p = Pace(PaceLimits(max_speed=1.0, burst_s=1.0), rate=10, clock=lambda: t[0])
        >>> p.reserve(8), p.reserve(8), p.reserve(5)  # the burst, then 0.6 s and 1.1 s of debt
        (0.0, 0.6, 1.1)
        >>> t[0] = 1.1; p.reserve(2)  # the debt paid: 0.2 s for these two
        0.2
        """
        self._refill()
        self.tokens -= n
        return round(max(0.0, -self.tokens / self.per_s), 6)

    def take(self, n: int) -> int:
        self._refill()
        k = int(min(n, self.tokens))
        self.tokens -= k
        return k


class PacedSource(PushSource):
    """A call track's :class:`PushSource` whose 16 kHz chunks are held to :class:`PaceLimits`:
    a chunk's part beyond the pace is dropped on the reader's thread, before the VAD (so no
    window, no model sees it); the next chunk kept starts where its audio was, after a gap.
    ``dropped_samples`` (at the track's rate) counts it with the ring's drops.

    >>> import numpy as np
    >>> t = [0.0]; c = Counters()
    >>> src = PacedSource("x", 16000, 10.0, PaceLimits(max_speed=1.0, burst_s=0.1), c, clock=lambda: t[0])
    >>> src.write(np.zeros(3200, np.int16)); chunk = src.read(0.0)  # 0.2 s at once: 0.1 s kept
    >>> len(chunk.samples), src.dropped_samples, c.snapshot()
    (1600, 1600, {'audio_too_fast_samples': 1600})
    >>> t[0] = 1.0; src.write(np.zeros(800, np.int16)); src.read(0.0).start  # after the gap
    3200
    """

    def __init__(self, name: str, rate: int, buffer_seconds: float, limits: PaceLimits, counters: Counters,
                 clock: Callable[[], float] = time.monotonic, on_first_drop: Callable[[], None] | None = None,
                 gather_s: float = 0.0) -> None:
        super().__init__(name, rate, buffer_seconds, gather_s)
        self.limits = limits
        self.pace = Pace(limits, SAMPLE_RATE, clock) if limits.max_speed > 0 else None
        self.counters = counters
        self.too_fast_16k = 0  # 16 kHz samples dropped for speed
        self.too_fast = 0  # the same at the track's rate
        self._on_first_drop = on_first_drop

    @property
    def dropped_samples(self) -> int:
        return self.ring.dropped + self.too_fast

    @property
    def too_fast_s(self) -> float:
        return self.too_fast_16k / SAMPLE_RATE

    def read(self, timeout: float = 0.1) -> Chunk | None:
        chunk = super().read(timeout)
        if chunk is None or self.pace is None:
            return chunk
        n = len(chunk.samples)
        keep = self.pace.take(n)
        if keep == n:
            return chunk
        first = self.too_fast_16k == 0
        self.too_fast_16k += n - keep
        at_rate = self.too_fast_16k * self.rate // SAMPLE_RATE  # cumulative, so no rounding adds up
        self.counters.add("audio_too_fast_samples", at_rate - self.too_fast)
        self.too_fast = at_rate
        if first and self._on_first_drop is not None:
            self._on_first_drop()
        return Chunk(chunk.start, chunk.samples[:keep]) if keep else None

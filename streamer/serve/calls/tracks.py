"""One track of a call (a speaker's audio): what a protocol handler feeds and the results it gets.

A :class:`TrackRunner` takes 16-bit PCM at the platform's rate (``push``, from the event loop
or any thread: it only copies into a bounded ring; audio beyond about real time is dropped
before analysis, :mod:`streamer.serve.calls.pace`), analyses it over the process's shared
models and hands every result to ``sink`` as the session-log record (``window``,
``utterance``) plus ``call_id`` and ``track``. ``sink`` is called from a worker thread: an
asyncio caller passes ``loop.call_soon_threadsafe``-wrapped callbacks. ``close()`` ends the
audio, finishes the windows held and returns the track's summary (blocking: call it from an
executor); ``abort()`` stops at once. Partial text (``partials``) costs a Whisper decode a
second per speaking track, so only a protocol that sends it (vosk) asks for it.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable

import numpy as np

from streamer.runtime.config import Config
from streamer.core.counters import Counters
from streamer.runtime.models import Models
from streamer.runtime.streams import open_stream
from streamer.serve.calls.pace import PaceLimits, PacedSource
from streamer.ui.state import LiveState

log = logging.getLogger(__name__)

Sink = Callable[[dict], None]


def weak_callback(method) -> Callable:
    """``method`` (bound) as a callback that does not keep its object alive: what a runner hands
    its source and pipeline, so that they and it form no reference cycle and the runner is freed
    as soon as the call lets go of it (with its source, pipeline and session: none of them is in a
    cycle either).

    >>> class A:
    ...     def f(self, x): return x + 1
    >>> a = A(); cb = weak_callback(a.f); cb(1)
    2
    >>> del a; cb(1) is None
    True
    """
    ref = weakref.WeakMethod(method)

    def call(*args):
        m = ref()
        return None if m is None else m(*args)
    return call


class TrackRunner:
    """``pace``: how far ahead of real time the track's audio may run before the excess is
    dropped (:mod:`streamer.serve.calls.pace`)."""

    def __init__(self, call_id: str, track: str, rate: int, models: Models, cfg: Config, sink: Sink,
                 transcript: bool = True, partials: bool = False, pace: PaceLimits = PaceLimits()) -> None:
        self.call_id, self.track = call_id, track
        self.counters = Counters()
        self.source = PacedSource(f"{call_id}/{track}", rate, cfg.live.ring_seconds, pace, self.counters,
                                  on_first_drop=weak_callback(self._too_fast), gather_s=cfg.server.gather_ms / 1000)
        self._sink = sink
        self._transcript = transcript
        self.state = LiveState(self.source.name, models.names, half_life_s=cfg.fusion.half_life_s)
        self.pipeline = open_stream(cfg, models, self.source, [weak_callback(self._emit)], observer=self.state, channel=track,
                                    counters=self.counters, partials=partials)
        self._stop = threading.Event()
        self.summary: dict | None = None

    def _emit(self, result) -> None:
        record = result.to_record(transcript=self._transcript)
        record.update(call_id=self.call_id, track=self.track)
        try:
            self._sink(record)
        except Exception:  # a sink's failure must not end the track's analysis
            log.exception("call %s track %s: a result sink failed", self.call_id, self.track)

    def _too_fast(self) -> None:
        lim = self.source.limits
        log.warning("call %s track %s: audio arrives faster than real time (beyond %g s at once and %gx on "
                    "average): the excess is dropped before analysis, counted as audio_too_fast_samples",
                    self.call_id, self.track, lim.burst_s, lim.max_speed)

    def start(self) -> "TrackRunner":
        """Start the track's reader and worker (the pipeline's two threads)."""
        self.pipeline.start(self._stop)
        return self

    def backlog(self) -> tuple[int, int, dict]:
        """(audio samples dropped, samples waiting in the ring, the session lane's depths):
        what /metrics reads of a running track."""
        return self.source.dropped_samples, self.source.ring.pending(), self.pipeline.session.lane.depths()

    @property
    def pushed(self) -> int:
        """Samples pushed so far, at the track's rate."""
        return self.source.written_samples

    def push(self, samples: np.ndarray) -> None:
        """16-bit PCM at the track's rate (never blocks)."""
        self.source.write(samples)

    def close(self, error: str | None = None, timeout: float | None = None) -> dict:
        """No more audio: finish what is held, return the summary (blocks up to ``timeout``)."""
        self.source.end(error)
        finished = self.pipeline.wait(timeout)
        if self.summary is None:
            try:  # when it did not finish in time, what was analysed is kept and the rest stopped
                self.summary = self.pipeline.finish(None if finished else 5.0)
            except Exception as exc:
                log.exception("call %s track %s: analysis failed", self.call_id, self.track)
                self.summary = {**self.pipeline.summary(), "error": f"analysis failed: {exc}"}
        return self.summary

    def abort(self) -> None:
        self._stop.set()
        self.source.end()

"""The threaded shell over one :class:`~streamer.core.session.StreamSession`: ser-live's
microphone or file, ser-analyze's files and the server's call tracks all run through it.

Two threads share one stop event:

- the reader pulls chunks from the source, keeps the recording, and pushes each chunk into
  the session (VAD, the audio model's request, the ordered lane of work); the level and VAD
  state go to the dashboard's :class:`LiveState`;
- the worker does the session's steps (the recogniser's audio, each window's words, text,
  fusion and rolling emotion, each utterance's close) and hands every result to the sinks
  (session log, dashboard state, ``--json``); while idle it refreshes the partial text.

The models are the process's shared services (``streamer.core.services``), so several
pipelines in one process batch their requests together. On stop the reader closes the
session's input (the VAD's last window), the worker drains what the lane holds, and both
threads are joined with a timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from streamer.core.recognizer import AsrEngine
from streamer.core.messages import SAMPLE_RATE
from streamer.core.services import InferenceServices
from streamer.core.session import Partial, SessionSettings, StreamSession
from streamer.core.counters import Counters
from streamer.core.messages import Chunk, UtteranceResult, WindowResult

log = logging.getLogger(__name__)

Sink = Callable[[WindowResult | UtteranceResult], None]
__all__ = ["Observer", "Pipeline", "Sink", "Source"]


class Source(Protocol):
    """Where a stream's audio comes from (``streamer.live.sources``: microphone, file, pushed
    call audio): 16 kHz chunks, stream-indexed."""

    name: str
    error: str | None          # why the audio stopped early, if it did
    dropped_samples: int       # audio lost to a full ring (the analysis fell behind)

    def start(self) -> None: ...

    def read(self, timeout: float = 0.1) -> Chunk | None: ...

    @property
    def done(self) -> bool: ...

    def stop(self) -> None: ...


class Observer(Protocol):
    """Who watches the stream as it goes (the dashboard's ``streamer.ui.state.LiveState``):
    the input's position and level, every event (partial text included), the final status."""

    def audio(self, seconds: float, level_db: float, in_speech: bool) -> None: ...

    def on_event(self, event: Partial | WindowResult | UtteranceResult) -> None: ...

    def set_status(self, status: str) -> None: ...


class NoObserver:
    """Nobody watches (a file analysed into a log)."""

    def audio(self, seconds: float, level_db: float, in_speech: bool) -> None:
        pass

    def on_event(self, event) -> None:
        pass

    def set_status(self, status: str) -> None:
        pass


class Pipeline:
    """Usually opened through :func:`streamer.runtime.streams.open_stream`, which wires it from
    the configuration and the loaded models."""

    def __init__(self, settings: SessionSettings, source: Source, asr: AsrEngine | None, services: InferenceServices,
                 sinks: list[Sink], observer: Observer | None = None, counters: Counters | None = None,
                 recorder=None, partials: bool = True) -> None:
        self.s = settings
        self.source = source
        self.sinks = sinks
        self.state = observer if observer is not None else NoObserver()
        self.counters = counters or Counters()
        self.recorder = recorder
        self.partials = partials  # refresh the partial text while idle (Whisper decodes for it)
        self.session = StreamSession(settings, asr, services, self.counters)
        self._stop: threading.Event | None = None
        self._threads: list[threading.Thread] = []

    # the session's figures, as the shells and benchmarks read them
    @property
    def latencies(self):
        return self.session.latencies

    @property
    def processing(self):
        return self.session.processing

    @property
    def error(self) -> str | None:
        return self.session.error

    def summary(self) -> dict:
        return self.session.summary(self.source.dropped_samples)

    # --- threads --------------------------------------------------------------------------
    def _read_loop(self) -> None:
        stop, session = self._stop, self.session
        error = None
        try:
            while not stop.is_set():
                chunk: Chunk | None = self.source.read(0.1)
                if chunk is None:
                    if self.source.done:
                        break
                    continue
                if self.recorder is not None:
                    self.recorder.write(chunk.samples)
                session.push(chunk, stop)
                st = session.status
                self.state.audio(st.samples / SAMPLE_RATE, st.level_db, st.in_speech)
        except Exception as exc:  # keep what was analysed; the CLI reports the error
            log.exception("reader failed")
            error = f"audio input failed: {exc}"
        finally:
            session.close(error or self.source.error)

    def _deliver(self) -> None:
        for event in self.session.poll():
            self.state.on_event(event)  # the dashboard's state is one consumer of the events
            if isinstance(event, Partial):
                continue
            for sink in self.sinks:
                sink(event)

    def _work_loop(self) -> None:
        session = self.session
        # Without partial text the worker has nothing to do between the lane's items: it sleeps
        # until one comes (the lane wakes it), waking now and then only as a safeguard.
        wait = 0.05 if self.partials else 1.0
        while not session.finished:
            if session.step(timeout=wait):
                self._deliver()
            elif self.partials:
                session.idle()
                self._deliver()
        self._deliver()

    # --- running --------------------------------------------------------------------------
    def start(self, stop: threading.Event) -> None:
        """Start the reader and the worker; they run until the source ends or ``stop`` is set.
        :meth:`wait` waits for them, :meth:`finish` ends them and gives the summary."""
        self._stop = stop
        self.source.start()
        self._threads = [threading.Thread(target=f, name=n, daemon=True) for f, n in
                         ((self._read_loop, "ser-reader"), (self._work_loop, "ser-worker"))]
        for t in self._threads:
            t.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s (None: no limit) for the source's end to be analysed: the
        reader and then the worker done. True when they are."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                return False
        return True

    def finish(self, join_timeout_s: float | None = None) -> dict:
        """Stop reading (what was read is still analysed), join both threads (each within
        ``join_timeout_s``, by default the settings'), and return the session summary."""
        timeout = self.s.join_timeout_s if join_timeout_s is None else join_timeout_s
        self._stop.set()
        self.source.stop()
        for t in self._threads:
            t.join(timeout)
            if t.is_alive():
                log.warning("%s: thread %s did not finish in %.0f s", self.source.name, t.name, timeout)
                self.counters.add("threads_not_joined")
        self.state.set_status("finished" if not self.error else "error")
        return self.summary()

    def run(self, stop: threading.Event) -> dict:
        """Run until the source ends or ``stop`` is set; returns the session summary."""
        self.start(stop)
        try:
            while self._threads[0].is_alive():
                self._threads[0].join(0.1)  # in short waits, so the caller's thread sees Ctrl-C
        finally:
            summary = self.finish()
        return summary

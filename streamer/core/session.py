"""One stream's analysis with no threads: VAD, speech recognition, emotion, fusion, rolling.

A :class:`StreamSession` is fed audio with :meth:`~StreamSession.push` (16 kHz int16
:class:`Chunk` s in stream order) and does the cheap part at once: the VAD cuts speech into
windows and utterances, each window's audio goes to the shared audio emotion service, and
the work that must follow the stream's order (the recogniser's audio, a window's words, an
utterance's end) goes into one bounded *lane*. :meth:`~StreamSession.step` does the next
item of the lane: it feeds the recogniser, or collects a window's words, its audio opinion,
the text model's opinion, fuses them and updates the rolling emotion, or closes an
utterance. :meth:`~StreamSession.poll` hands out the events made so far:
:class:`Partial` text, :class:`WindowResult` and :class:`UtteranceResult`. The level and VAD
state are in :attr:`~StreamSession.status`. :meth:`~StreamSession.close` ends the input
(the VAD's last window, the last utterance's end); :meth:`~StreamSession.flush` does every
step left and returns the last events; :meth:`~StreamSession.reset` starts over.

Who calls ``push`` and ``step`` is the shell's choice: ``ser-live`` and the server's tracks
use a reader thread and a worker thread (``streamer.runtime.pipeline``); a test may call them in
turn. ``push`` and ``step`` may run on different threads; each is called by one thread at a
time. When the lane is full the oldest item is dropped and counted (``windows_dropped`` for
a window: it gets no result), unless ``block_when_full`` (a file read ``--fast``), where
``push`` waits instead.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streamer.core.recognizer import AsrEngine
from streamer.core.messages import SAMPLE_RATE
from streamer.core.services import InferenceServices
from streamer.core.dims import all_dims
from streamer.core.errors import AudioInputError
from streamer.core.labels import LABELS
from streamer.core.counters import Counters
from streamer.core.fusion import Fuser, FusionConfig, Rolling, as_probs, as_vector, top
from streamer.core.messages import Chunk, UtteranceResult, Window, WindowResult, Word
from streamer.core.lane_items import END, ClosedWindow, UtteranceEnd, cancel_dropped, kind_of, where
from streamer.core.queues import Empty, Lane
from streamer.core.measures import level_db, percentile
from streamer.core.vad import VadConfig, VadSegmenter

log = logging.getLogger(__name__)

UNIFORM = {k: 1.0 / len(LABELS) for k in LABELS}


@dataclass(frozen=True)
class SessionSettings:
    """What a session needs from the configuration (``streamer.runtime.models.pipeline_settings``)."""

    window_samples: int = int(2.5 * SAMPLE_RATE)
    min_window_samples: int = int(0.5 * SAMPLE_RATE)
    max_utterance_samples: int = int(7.5 * SAMPLE_RATE)
    vad: VadConfig = VadConfig()
    fusion: FusionConfig = FusionConfig()
    queue_windows: int = 16
    queue_chunks: int = 300
    words_timeout_s: float = 30.0
    join_timeout_s: float = 30.0
    block_when_full: bool = False  # True for files read --fast
    channel: str | None = None
    max_lag_s: float = 5.0  # a window not analysed this long after it closed is dropped (not when blocking)


@dataclass(frozen=True)
class Partial:
    """The recogniser's partial text of the speech going on (may be empty)."""

    text: str


@dataclass(frozen=True)
class Status:
    """The stream's position (samples), its last chunk's level and the VAD's state."""

    samples: int = 0
    level_db: float = -90.0
    in_speech: bool = False


Event = Partial | WindowResult | UtteranceResult


def span_weighted_audio(windows: list[WindowResult]) -> dict[str, float]:
    """The voice's opinion of several windows (an utterance, a clip): their audio
    probabilities, each weighted by its span.

    >>> a = dict.fromkeys(LABELS, 0.0); a["angry"] = 1.0
    >>> b = dict.fromkeys(LABELS, 0.0); b["sad"] = 1.0
    >>> w = lambda s, e, p: WindowResult(0, s, e, (), p, None, p, p, "", "", 0.0, 0.0)
    >>> out = span_weighted_audio([w(0, 300, a), w(300, 400, b)])
    >>> round(out["angry"], 2), round(out["sad"], 2)
    (0.75, 0.25)
    """
    span = np.array([r.end - r.start for r in windows], float)
    return as_probs(sum(k * as_vector(r.audio) for k, r in zip(span / span.sum(), windows)))


class StreamSession:
    """``clock``: seconds (``time.monotonic`` by default), read for a window's latency, for
    dropping windows left waiting longer than ``max_lag_s`` and for the stages' timings; a
    test passes a fake one."""

    def __init__(self, settings: SessionSettings, asr: AsrEngine | None, services: InferenceServices,
                 counters: Counters | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.s = settings
        self.clock = clock
        self.asr = asr
        self._wake_for_chunks = settings.block_when_full or (asr is not None and asr.incremental)
        self.services = services
        self.counters = counters or Counters()
        self.fuser = Fuser(settings.fusion)
        self._events: collections.deque[Event] = collections.deque()
        self._events_lock = threading.Lock()
        self.latencies: collections.deque[float] = collections.deque(maxlen=100_000)  # bounded: the last ~70 h
        # The work on a window (audio model + its ASR decode + text + fusion), without queueing:
        # what a --fast run measures, where the latency is only how far the reader ran ahead.
        self.processing: collections.deque[float] = collections.deque(maxlen=100_000)
        self._attached = False
        self.reset()

    def reset(self) -> None:
        """Forget the stream: a new one starts at sample 0."""
        self.vad = VadSegmenter(self.s.vad, self.s.window_samples, self.s.min_window_samples,
                                max_utterance_samples=self.s.max_utterance_samples)
        self.rolling = Rolling(self.s.fusion.half_life_s)
        # The ordered work, bounded per kind: a chunk dropped means the recogniser misses that
        # audio; a window dropped gets no result. Utterance ends and the input's end are kept.
        self.lane: Lane = Lane({"chunk": self.s.queue_chunks, "window": self.s.queue_windows},
                               {"chunk": "asr_queue_dropped", "window": "windows_dropped"}, self.counters,
                               self.s.block_when_full, on_drop=cancel_dropped, kind_of=kind_of)
        self._open_utts: dict[int, list[WindowResult]] = {}  # window results of utterances not closed yet
        self._heard: dict[int, list[Word]] = {}  # the recogniser's words of closed utterances
        self._heard_skipped: dict[int, str | None] = {}  # the text gate's reason for those words
        self.status = Status()
        self.audio_stream = self.services.audio_stream()  # the audio model's statistics of this stream
        self.results = self.utterances = self.words = 0
        self.error: str | None = None
        self.closed = False  # no more input
        self.finished = False  # the lane's end was reached
        self._partial = ""
        self._stop: threading.Event | None = None
        if self.asr is not None:
            self.asr.reset()
        with self._events_lock:
            self._events.clear()

    # --- input (the reader's side) ---------------------------------------------------------
    def push(self, chunk: Chunk, stop: threading.Event | None = None) -> None:
        """Take the next chunk of the stream (waits only when ``block_when_full``)."""
        if not self._attached:
            self.services.attach()
            self._attached = True
        self._stop = stop
        self.vad.push(chunk)
        self.status = Status(chunk.end, level_db(chunk.samples), self.vad.in_speech)
        # Whisper only keeps the audio: its chunks wait for the worker's next wake-up (a window, an end,
        # a timeout). Vosk decodes them, and a file read --fast blocks on a full lane: each one wakes it.
        self.lane.put(("chunk", chunk, self.vad.in_speech), stop, wake=self._wake_for_chunks)
        self._windows(self.vad.poll())

    def close(self, error: str | None = None) -> None:
        """No more input: the VAD's last window and the last utterance's end go in the lane."""
        if self.closed:
            return
        self.closed = True
        if error and not self.error:
            self.error = error
        self._windows(self.vad.flush())
        if self.vad.short_tails:
            self.counters.add("short_tails_dropped", self.vad.short_tails)
        self.lane.put(END)

    def _windows(self, windows: list[Window]) -> None:
        for w in windows:
            self.counters.add("windows")
            audio = self.services.audio.submit(w.samples.astype(np.float32) / 32768.0, stream=self)
            self.lane.put(("window", ClosedWindow(w, audio, self.clock())), self._stop)
        for index, end in self.vad.poll_ends():
            self.lane.put(("end", UtteranceEnd(index, end)), self._stop)

    # --- work (the worker's side) ----------------------------------------------------------
    def step(self, timeout: float = 0.0) -> bool:
        """Do the lane's next item, waiting up to ``timeout`` s for one; False when there was none."""
        if self.finished:
            return False
        try:
            item = self.lane.get(timeout=timeout)
        except Empty:
            return False
        if item is END:
            self._close_utterances(None, None)
            if self.asr is not None:
                self.asr.flush()
            self.finished = True
            if self._attached:
                self.services.detach()
                self._attached = False
            return True
        kind, what = item[0], item[1]
        try:
            if kind == "chunk":
                if self.asr is not None:
                    self.asr.push(what, item[2])
                    self._set_partial(self.asr.partial())
            elif kind == "window":
                self._close_utterances(what.window.utterance - 1, None)  # its end marker was dropped
                if not self.s.block_when_full and self.clock() - what.at > self.s.max_lag_s:
                    self.counters.add("windows_dropped")  # too late to matter: catch up instead
                    self.counters.add("windows_stale")
                    what.audio.cancel()
                    if self.asr is not None:
                        self.asr.skip(what.window)
                else:
                    self._analyse(what)
            else:
                self._end_utterance(what)
        except Exception:
            log.exception("%s: analysis failed on %s %s", self.s.channel or "stream", kind, where(what))
            self.counters.add("emotion_errors" if kind == "window" else "asr_errors")
        return True

    def idle(self) -> None:
        """Spare time on the worker's side: refresh the partial text (Whisper decodes here)."""
        if self.asr is not None and not self.finished:
            try:
                if self.asr.refresh_partial():
                    self._set_partial(self.asr.partial())
            except Exception:
                log.exception("partial text failed")
                self.counters.add("asr_errors")

    def flush(self) -> list[Event]:
        """End the input if not yet, do every step left, and return the events not polled."""
        self.close()
        while not self.finished:
            self.step(timeout=0.1)
        return self.poll()

    def poll(self) -> list[Event]:
        """The events made since the last poll, oldest first."""
        with self._events_lock:
            out = list(self._events)
            self._events.clear()
        return out

    def _emit(self, event: Event) -> None:
        with self._events_lock:
            self._events.append(event)

    def _set_partial(self, text: str) -> None:
        if text != self._partial:
            self._partial = text
            self._emit(Partial(text))

    def _analyse(self, item: ClosedWindow) -> None:
        w = item.window
        t1 = self.clock()
        words: list[Word] = []
        skipped: str | None = None
        asr_ms = 0.0
        if self.asr is not None:
            try:
                words = self.asr.words_for(w)
                skipped = self.asr.text_skipped()  # the recogniser's words are not to be read
            except Exception:
                log.exception("speech recognition failed on window %d", w.index)
                self.counters.add("asr_errors")
            asr_ms = (self.clock() - t1) * 1e3
            self._set_partial(self.asr.partial())
        t0 = self.clock()
        try:
            audio = self.audio_stream.probs(item.audio.result(timeout=self.s.words_timeout_s))  # in window order
        except AudioInputError:  # a silent window: no opinion from the voice either
            audio = dict(UNIFORM)
            self.counters.add("silent_windows")
        audio_wait_ms = (self.clock() - t0) * 1e3
        t2 = self.clock()
        text = None
        if words and self.services.text is not None and skipped is None:
            text = self.services.text(" ".join(x.word for x in words))
        t3 = self.clock()
        fused = self.fuser.fuse(audio, text)
        uncertain = self.fuser.is_uncertain(fused)
        weight = self.s.fusion.uncertain_weight if uncertain else 1.0
        rolling = self.rolling.update(fused, w.end / SAMPLE_RATE, weight)
        label, emoji, conf = top(fused)
        r_label, r_emoji, r_conf = top(rolling)
        latency = (self.clock() - item.at) * 1e3
        result = WindowResult(w.index, w.start, w.end, tuple(words), audio, text, fused, rolling, label, emoji, conf,
                              latency, self.s.channel,
                              {"audio": audio_wait_ms if item.audio.compute_ms is None else item.audio.compute_ms, "asr": asr_ms,
                               "wait_audio": audio_wait_ms, "text": (t3 - t2) * 1e3, "fusion": (self.clock() - t3) * 1e3},
                              r_label, r_emoji, r_conf, uncertain, all_dims(audio, text, fused), w.utterance, skipped)
        self.results += 1
        self.words += len(words)
        self.latencies.append(latency)
        self.processing.append(sum(v for k, v in result.timings_ms.items() if k != "wait_audio"))
        self._open_utts.setdefault(w.utterance, []).append(result)
        self._emit(result)

    def _end_utterance(self, end: UtteranceEnd) -> None:
        heard: list[Word] = []
        if self.asr is not None:
            try:
                heard = self.asr.end_utterance(end.end)
                self._heard_skipped[end.index] = self.asr.text_skipped()
            except Exception:
                log.exception("speech recognition failed at the end of utterance %d", end.index)
                self.counters.add("asr_errors")
        self._heard[end.index] = heard
        self._close_utterances(end.index, end.end)

    def _close_utterances(self, upto: int | None, end: int | None) -> None:
        """Close the open utterances with index <= ``upto`` (all when None); ``end`` is the
        VAD's end sample of utterance ``upto``."""
        for index in sorted(self._open_utts):
            if upto is not None and index > upto:
                break
            self._utterance(index, self._open_utts.pop(index), self._heard.pop(index, []),
                            end if index == upto else None, self._heard_skipped.pop(index, None))
        for index in [i for i in self._heard if upto is None or i <= upto]:
            del self._heard[index]  # an utterance all of whose windows were dropped
        for index in [i for i in self._heard_skipped if upto is None or i <= upto]:
            del self._heard_skipped[index]

    def _utterance(self, index: int, windows: list[WindowResult], heard: list[Word], end: int | None,
                   heard_skipped: str | None = None) -> None:
        """``heard``: the recogniser's words of the whole utterance (none: its windows' words);
        ``heard_skipped``: the text gate's reason not to read them (without them: the first
        reason of its windows)."""
        words = tuple(heard) if heard else tuple(x for r in windows for x in r.words)
        skipped = heard_skipped if heard else next((r.text_skipped for r in windows if r.text_skipped), heard_skipped)
        audio = span_weighted_audio(windows)
        text = None
        if words and self.services.text is not None and skipped is None:
            text = self.services.text(" ".join(x.word for x in words))
        fused = self.fuser.fuse(audio, text)
        label, emoji, conf = top(fused)
        result = UtteranceResult(index, windows[0].start, max(end or 0, windows[-1].end, words[-1].end if words else 0),
                                 tuple(r.index for r in windows), words, audio, text, fused, label, emoji, conf,
                                 self.fuser.is_uncertain(fused), all_dims(audio, text, fused), self.s.channel, skipped)
        self.utterances += 1
        self._emit(result)

    # --- the session's figures --------------------------------------------------------------
    def summary(self, dropped_samples: int = 0) -> dict:
        counters = self.counters.snapshot()
        counters["audio_dropped_samples"] = int(dropped_samples)

        def spread(values) -> dict:
            return {"p50": percentile(values, 50), "p95": percentile(values, 95), "max": max(values) if values else None}

        return {"windows": self.results, "utterances": self.utterances, "words": self.words,
                "stream_s": round(self.status.samples / SAMPLE_RATE, 3), "counters": counters,
                "latency_ms": spread(self.latencies), "processing_ms": spread(self.processing), "error": self.error}

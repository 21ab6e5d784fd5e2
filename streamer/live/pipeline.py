"""The threaded shell: source -> VAD windows -> ASR and emotion workers -> fusion -> sinks.

Three threads share one stop event:

- the reader pulls chunks from the source, feeds the VAD segmenter, and hands every chunk
  (and each closed window) to the ASR worker and each window to the emotion worker;
- the ASR worker pushes audio into the engine, keeps the partial text fresh while idle, and
  resolves each closed window's words;
- the emotion worker runs the audio model on each window as soon as it closes, waits for the
  window's words, runs the text branch on them, fuses, updates the rolling emotion, and hands
  a :class:`WindowResult` to every sink (session log, dashboard state, ``--json``); when the
  VAD closes an utterance it hands over an :class:`UtteranceResult` too (the text branch
  reads the whole utterance; the voice opinion is its windows' length-weighted mean).

Queues are bounded. Live sources drop the oldest item when a queue is full and count it;
a file read ``--fast`` makes the reader wait instead (nothing needs to be lost). On stop the
reader flushes the VAD, workers drain what they hold, and threads are joined with a timeout.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streamer.asr.base import AsrEngine
from streamer.audio import SAMPLE_RATE
from streamer.audio.emotion import AudioEmotion
from streamer.dims import all_dims
from streamer.errors import AudioInputError
from streamer.labels import LABELS
from streamer.live.counters import Counters
from streamer.live.fusion import Fuser, FusionConfig, Rolling, as_probs, as_vector, top
from streamer.live.messages import Chunk, UtteranceResult, Window, WindowResult, Word
from streamer.live.queues import DropOldestQueue, Empty
from streamer.live.state import LiveState, level_db, percentile
from streamer.live.vad import VadConfig, VadSegmenter
from streamer.text.emotion import TextEmotion

log = logging.getLogger(__name__)

END = object()  # end of stream marker in the worker queues
Sink = Callable[[WindowResult | UtteranceResult], None]


@dataclass(frozen=True)
class UtteranceEnd:
    """Queue marker: the VAD closed utterance ``index`` at sample ``end`` (after its windows)."""

    index: int
    end: int


@dataclass(frozen=True)
class PipelineSettings:
    """What the pipeline needs from the configuration (built by the CLI from config.toml)."""

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


class _WordsBoard:
    """Words of each window, posted by the ASR worker, awaited by the emotion worker."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._words: dict[int, tuple[list[Word], float]] = {}
        self._forgotten: set[int] = set()
        self.closed = False

    def post(self, index: int, words: list[Word], ms: float = 0.0) -> None:
        with self._cond:
            if index in self._forgotten:
                self._forgotten.discard(index)
                return
            self._words[index] = (words, ms)
            self._cond.notify_all()

    def forget(self, index: int) -> None:
        with self._cond:
            self._words.pop(index, None)
            self._forgotten.add(index)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def take(self, index: int, timeout: float) -> tuple[list[Word], float] | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while index not in self._words:
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    return self._words.pop(index, None)
                self._cond.wait(min(left, 0.1))
            return self._words.pop(index)


class Pipeline:
    def __init__(self, settings: PipelineSettings, source, asr: AsrEngine | None, audio_model: AudioEmotion,
                 text_model: TextEmotion | None, sinks: list[Sink], state: LiveState, counters: Counters | None = None,
                 recorder=None) -> None:
        self.s = settings
        self.source = source
        self.asr = asr
        self.audio_model = audio_model
        self.text_model = text_model
        self.sinks = sinks
        self.state = state
        self.counters = counters or Counters()
        self.recorder = recorder
        self.vad = VadSegmenter(settings.vad, settings.window_samples, settings.min_window_samples,
                                max_utterance_samples=settings.max_utterance_samples)
        self.fuser = Fuser(settings.fusion)
        self.rolling = Rolling(settings.fusion.half_life_s)
        self._open_utts: dict[int, list[WindowResult]] = {}  # window results of utterances not closed yet
        self.board = _WordsBoard()
        block = settings.block_when_full
        self.asr_q: DropOldestQueue = DropOldestQueue(settings.queue_chunks, "asr_queue_dropped", self.counters, block,
                                                      on_drop=self._asr_dropped)
        self.emo_q: DropOldestQueue = DropOldestQueue(settings.queue_windows, "emotion_queue_dropped", self.counters,
                                                      block, on_drop=self._window_dropped)
        self._closed_at: dict[int, float] = {}
        self.latencies: collections.deque[float] = collections.deque(maxlen=100_000)  # bounded: the last ~70 h
        # The work on a window (audio model + its ASR decode + text + fusion), without queueing:
        # what a --fast run measures, where the latency is only how far the reader ran ahead.
        self.processing: collections.deque[float] = collections.deque(maxlen=100_000)
        self.results = 0
        self.utterances = 0
        self.words = 0
        self.samples = 0
        self.error: str | None = None
        self._stop: threading.Event | None = None

    # --- drops ----------------------------------------------------------------------------
    def _asr_dropped(self, item) -> None:
        if item is END or item[0] == "chunk":
            return
        if item[0] == "window":  # its words will never come: the emotion worker must not wait
            self.counters.add("asr_windows_dropped")
            self.board.post(item[1].index, [])
        else:
            self.board.post(("utterance", item[1].index), [])

    def _window_dropped(self, item) -> None:
        if isinstance(item, Window):  # its words will never be collected: forget them
            self.counters.add("windows_dropped")
            self._closed_at.pop(item.index, None)
            self.board.forget(item.index)

    # --- threads --------------------------------------------------------------------------
    def _emit_windows(self, windows: list[Window]) -> None:
        for w in windows:
            self._closed_at[w.index] = time.monotonic()
            self.counters.add("windows")
            self.asr_q.put(("window", w), self._stop)
            self.emo_q.put(w, self._stop)
        for index, end in self.vad.poll_ends():
            self.asr_q.put(("end", UtteranceEnd(index, end)), self._stop)
            self.emo_q.put(UtteranceEnd(index, end), self._stop)

    def _read_loop(self) -> None:
        stop = self._stop
        try:
            while not stop.is_set():
                chunk: Chunk | None = self.source.read(0.1)
                if chunk is None:
                    if self.source.done:
                        break
                    continue
                self.samples = chunk.end
                if self.recorder is not None:
                    self.recorder.write(chunk.samples)
                self.vad.push(chunk)
                self.state.audio(chunk.end / SAMPLE_RATE, level_db(chunk.samples), self.vad.in_speech)
                self.asr_q.put(("chunk", chunk, self.vad.in_speech), stop)
                self._emit_windows(self.vad.poll())
        except Exception as exc:  # keep what was analysed; the CLI reports the error
            log.exception("reader failed")
            self.error = f"audio input failed: {exc}"
        finally:
            self._emit_windows(self.vad.flush())
            if self.vad.short_tails:
                self.counters.add("short_tails_dropped", self.vad.short_tails)
            if getattr(self.source, "error", None) and not self.error:
                self.error = self.source.error
            self.asr_q.put(END)
            self.emo_q.put(END)

    def _asr_loop(self) -> None:
        try:
            while True:
                try:
                    msg = self.asr_q.get(timeout=0.05)
                except Empty:
                    if self.asr is not None and self.asr.refresh_partial():
                        self.state.set_partial(self.asr.partial())
                    continue
                if msg is END:
                    break
                if self.asr is None:
                    if msg[0] == "window":
                        self.board.post(msg[1].index, [])
                    elif msg[0] == "end":
                        self.board.post(("utterance", msg[1].index), [])
                    continue
                if msg[0] == "chunk":
                    self.asr.push(msg[1], msg[2])
                    self.state.set_partial(self.asr.partial())
                elif msg[0] == "end":
                    try:
                        words = self.asr.end_utterance(msg[1].end)
                    except Exception:
                        log.exception("speech recognition failed at the end of utterance %d", msg[1].index)
                        self.counters.add("asr_errors")
                        words = []
                    self.board.post(("utterance", msg[1].index), words)
                else:
                    w = msg[1]
                    t0 = time.perf_counter()
                    try:
                        words = self.asr.words_for(w)
                    except Exception:
                        log.exception("speech recognition failed on window %d", w.index)
                        self.counters.add("asr_errors")
                        words = []
                    self.board.post(w.index, words, (time.perf_counter() - t0) * 1e3)
            if self.asr is not None:
                self.asr.flush()
        finally:
            self.board.close()

    def _emotion_loop(self) -> None:
        while True:
            try:
                w = self.emo_q.get(timeout=0.1)
            except Empty:
                continue
            if w is END:
                break
            try:
                if isinstance(w, UtteranceEnd):
                    self._close_utterances(w.index, w.end)
                else:
                    self._close_utterances(w.utterance - 1, None)  # its end marker was dropped
                    self._analyse(w)
            except Exception:
                log.exception("emotion analysis failed on %s", w)
                self.counters.add("emotion_errors")
        self._close_utterances(None, None)

    def _analyse(self, w: Window) -> None:
        t0 = time.perf_counter()
        try:
            audio = self.audio_model.predict(w.samples.astype(np.float32) / 32768.0)
        except AudioInputError:  # a silent window: no opinion from the voice either
            audio = {k: 1.0 / len(LABELS) for k in LABELS}
            self.counters.add("silent_windows")
        t1 = time.perf_counter()
        got = self.board.take(w.index, self.s.words_timeout_s)
        if got is None:
            self.counters.add("asr_timeouts")
            words, asr_ms = [], 0.0
        else:
            words, asr_ms = got
        t2 = time.perf_counter()
        text = None
        if words and self.text_model is not None:
            text = self.text_model.predict(" ".join(x.word for x in words))
        t3 = time.perf_counter()
        fused = self.fuser.fuse(audio, text)
        uncertain = self.fuser.is_uncertain(fused)
        weight = self.s.fusion.uncertain_weight if uncertain else 1.0
        rolling = self.rolling.update(fused, w.end / SAMPLE_RATE, weight)
        label, emoji, conf = top(fused)
        r_label, r_emoji, r_conf = top(rolling)
        latency = (time.monotonic() - self._closed_at.pop(w.index, time.monotonic())) * 1e3
        result = WindowResult(w.index, w.start, w.end, tuple(words), audio, text, fused, rolling, label, emoji, conf,
                              latency, self.s.channel,
                              {"audio": (t1 - t0) * 1e3, "asr": asr_ms, "wait_words": (t2 - t1) * 1e3,
                               "text": (t3 - t2) * 1e3, "fusion": (time.perf_counter() - t3) * 1e3},
                              r_label, r_emoji, r_conf, uncertain, all_dims(audio, text, fused), w.utterance)
        self.results += 1
        self.words += len(words)
        self.latencies.append(latency)
        self.processing.append(sum(v for k, v in result.timings_ms.items() if k != "wait_words"))
        self._open_utts.setdefault(w.utterance, []).append(result)
        self.state.add_result(result)
        for sink in self.sinks:
            sink(result)

    def _close_utterances(self, upto: int | None, end: int | None) -> None:
        """Close the open utterances with index <= ``upto`` (all when None); ``end`` is the
        VAD's end sample of utterance ``upto``."""
        for index in sorted(self._open_utts):
            if upto is not None and index > upto:
                break
            heard = self.board.take(("utterance", index), self.s.words_timeout_s if index == upto else 0.0)
            self._utterance(index, self._open_utts.pop(index), heard[0] if heard else [],
                            end if index == upto else None)

    def _utterance(self, index: int, windows: list[WindowResult], heard: list[Word], end: int | None) -> None:
        """``heard``: the recogniser's words of the whole utterance (none: its windows' words)."""
        words = tuple(heard) if heard else tuple(x for r in windows for x in r.words)
        span = np.array([r.end - r.start for r in windows], float)
        audio = as_probs(sum(k * as_vector(r.audio) for k, r in zip(span / span.sum(), windows)))
        text = None
        if words and self.text_model is not None:
            text = self.text_model.predict(" ".join(x.word for x in words))
        fused = self.fuser.fuse(audio, text)
        label, emoji, conf = top(fused)
        result = UtteranceResult(index, windows[0].start, max(end or 0, windows[-1].end, words[-1].end if words else 0),
                                 tuple(r.index for r in windows), words, audio, text, fused, label, emoji, conf,
                                 self.fuser.is_uncertain(fused), all_dims(audio, text, fused), self.s.channel)
        self.utterances += 1
        self.state.add_utterance(result)
        for sink in self.sinks:
            sink(result)

    # --- running --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> dict:
        """Run until the source ends or ``stop`` is set; returns the session summary."""
        self._stop = stop
        self.source.start()
        threads = [threading.Thread(target=f, name=n, daemon=True) for f, n in
                   ((self._read_loop, "ser-reader"), (self._asr_loop, "ser-asr"), (self._emotion_loop, "ser-emotion"))]
        for t in threads:
            t.start()
        try:
            while threads[0].is_alive():
                threads[0].join(0.1)
        finally:
            stop.set()
            self.source.stop()
            for t in threads:
                t.join(self.s.join_timeout_s)
                if t.is_alive():
                    log.warning("thread %s did not finish in %.0f s", t.name, self.s.join_timeout_s)
                    self.counters.add("threads_not_joined")
        self.state.set_status("finished" if not self.error else "error")
        return self.summary()

    def summary(self) -> dict:
        counters = self.counters.snapshot()
        counters["audio_dropped_samples"] = int(getattr(self.source, "dropped_samples", 0))
        return {"windows": self.results, "utterances": self.utterances, "words": self.words, "stream_s": round(self.samples / SAMPLE_RATE, 3),
                "counters": counters,
                "latency_ms": {"p50": percentile(self.latencies, 50), "p95": percentile(self.latencies, 95),
                               "max": max(self.latencies) if self.latencies else None},
                "processing_ms": {"p50": percentile(self.processing, 50), "p95": percentile(self.processing, 95),
                                  "max": max(self.processing) if self.processing else None},
                "error": self.error}

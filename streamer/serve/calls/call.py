"""One call a ser-serve holds: its tracks, its log, what it produced so far; and the small
pieces every protocol handler uses (:class:`Refused`, :class:`CallLogger`)."""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import time
from pathlib import Path
from typing import Protocol

from streamer.live.session_log import SessionLog, now_iso
from streamer.runtime.config import Config
from streamer.runtime.models import Models
from streamer.serve.calls.pace import PaceLimits
from streamer.serve.calls.tracks import TrackRunner

log = logging.getLogger(__name__)


class CallHost(Protocol):
    """What a call needs of the registry that holds it (``streamer.serve.calls.registry``)."""

    models: Models
    cfg: Config
    loop: asyncio.AbstractEventLoop
    metrics: object  # streamer.serve.http.metrics.Metrics
    log_write_fd: object  # os.write, or a test's disk that fills (streamer.live.session_log.WriteFd)
    pace_limits: object  # streamer.serve.calls.pace.PaceLimits: how far ahead of real time a track may run

    def publish(self, event: dict) -> None: ...

MAX_WINDOWS = 2000  # kept per call for /api/calls/{id} (the log has them all)
MAX_UTTERANCES = 500
CLOSE_TIMEOUT_S = 30.0  # a track given longer than this to finish is stopped
MAX_CALL_ID = 128  # characters; platforms' ids are far shorter (Twilio's callSid: 34)


class Refused(Exception):
    """A call that is not taken: ``reason`` (a metrics label) and the WebSocket close ``code``."""

    def __init__(self, reason: str, message: str, code: int = 1013) -> None:
        super().__init__(message)
        self.reason, self.message, self.code = reason, message, code


class CallLogger(logging.LoggerAdapter):
    """Log lines that name their call: ``call CA123: ...``."""

    def process(self, msg, kwargs):
        return f"call {self.extra['call_id']}: {msg}", kwargs


def safe_name(call_id: str) -> str:
    """A call id as a file name part.

    >>> safe_name("CA/../x y")
    'CA_.._x_y'
    """
    return re.sub(r"[^A-Za-z0-9_.-]", "_", call_id)[:80] or "call"


def default_log_dir(cfg: Config) -> Path:
    if cfg.server.log_dir:
        return Path(cfg.server.log_dir).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("ser-live")) / "calls"


class Call:
    """One call: its tracks, log and what it produced so far. Mutated on the loop only
    (the tracks' threads reach it through ``call_soon_threadsafe``)."""

    def __init__(self, registry: CallHost, call_id: str, source: str, meta: dict, tracks: list[str],
                 log_path: Path) -> None:
        self.registry = registry
        self.id = call_id
        self.source = source
        self.meta = meta
        self.declared_tracks = list(tracks)
        self.started = now_iso()
        self.started_mono = time.monotonic()
        self.ended: str | None = None
        self.ended_mono: float | None = None
        self.state = "active"
        self.error: str | None = None
        self.log_path = log_path
        self.session = SessionLog(log_path, on_error=self._log_failed, write_fd=registry.log_write_fd)
        self.runners: dict[str, TrackRunner] = {}
        self.rates: dict[str, int] = {}
        self.last: dict[str, dict] = {}  # the last window record of each track
        self.windows: collections.deque[dict] = collections.deque(maxlen=MAX_WINDOWS)
        self.utterances: collections.deque[dict] = collections.deque(maxlen=MAX_UTTERANCES)
        self.counts = collections.Counter()
        self.summaries: dict[str, dict] = {}
        self.log = CallLogger(log, {"call_id": call_id})
        self.ending: asyncio.Future | None = None  # set by CallRegistry.end: the call's end under way or done
        self.segment = 1  # a call id back after its end (or its replica's loss) is segment 2, 3, ...
        self.previous: dict | None = None  # the bus's word on the segment before this one

    # --- what handlers use ------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.state == "active"

    @property
    def tracks(self) -> list[str]:
        return list(dict.fromkeys([*self.declared_tracks, *self.rates]))

    def track(self, name: str, rate: int, partials: bool = False, paced: bool = True) -> TrackRunner:
        """The track's runner, started on first use at ``rate`` Hz (16-bit mono PCM);
        ``partials``: its partial text is refreshed (a protocol that sends it asks); ``paced``:
        audio beyond the registry's pace is dropped (False: the call loop slows the sender instead)."""
        runner = self.runners.get(name)
        if runner is not None:
            if self.rates[name] != int(rate):
                raise ValueError(f"track {name!r} of call {self.id} runs at {self.rates[name]} Hz, not {rate}")
            return runner
        if not self.active:
            raise RuntimeError(f"call {self.id} has ended: no new track {name!r}")
        reg = self.registry
        runner = TrackRunner(self.id, name, int(rate), reg.models, reg.cfg, self._sink, transcript=reg.cfg.live.log_transcript,
                             partials=partials, pace=reg.pace_limits if paced else PaceLimits(max_speed=0.0))
        self.runners[name], self.rates[name] = runner, int(rate)
        runner.start()
        self.log.info("track %s started at %d Hz", name, rate)
        return runner

    def partial(self, track: str) -> str:
        """The track's current partial (not yet final) transcript; '' when none."""
        runner = self.runners.get(track)
        return (runner.state.partial or "") if runner is not None else ""

    def dropped(self) -> dict:
        """What analysis falling behind cost this call so far: audio (s) and windows."""
        audio_s, windows = 0.0, 0
        for name, rate in self.rates.items():
            runner = self.runners.get(name)
            if runner is not None:
                audio_s += runner.source.dropped_samples / rate
                counters = runner.counters.snapshot()
            else:
                counters = (self.summaries.get(name) or {}).get("counters") or {}
                audio_s += counters.get("audio_dropped_samples", 0) / rate
            windows += counters.get("windows_dropped", 0) + counters.get("asr_windows_dropped", 0)
        return {"audio_s": round(audio_s, 3), "windows": windows}

    def summary_row(self) -> dict:
        """One row of ``GET /api/calls``."""
        return {"call_id": self.id, "source": self.source, "tracks": self.tracks, "started": self.started,
                "ended": self.ended, "state": self.state, "error": self.error, "segment": self.segment,
                "windows": self.counts["window"], "utterances": self.counts["utterance"], "dropped": self.dropped(),
                "last": {t: self.last.get(t) for t in self.tracks}, "log": str(self.log_path),
                "log_error": self.session.error}

    def detail(self) -> dict:
        """``GET /api/calls/{id}``: the row plus its windows and utterances so far (the last
        MAX_WINDOWS / MAX_UTTERANCES; the log holds them all)."""
        return {**self.summary_row(), "meta": self.meta, "partial": {t: self.partial(t) for t in self.rates},
                "windows": list(self.windows), "utterances": list(self.utterances),
                "window_count": self.counts["window"], "utterance_count": self.counts["utterance"],
                "summaries": self.summaries or None}

    def pushed(self) -> int:
        """Samples pushed into the call's tracks so far (the bus reads it to time the call's audio)."""
        return sum(r.pushed for r in list(self.runners.values()))

    def bus_row(self) -> dict:
        """The call's row as the bus keeps it for the desks of other replicas (with its parameters)."""
        return {**self.summary_row(), "meta": self.meta}

    def bus_event(self, event: dict) -> None:
        """An event the bus made about this call (``call_resumed``): logged, then published."""
        if self.state != "ended":
            self.session.write(dict(event))
        self.registry.publish(event)

    def log_summary(self) -> dict:
        """What ``session_end`` says of the log itself: nothing when every record was written."""
        if not self.session.lost and not self.session.error:
            return {}
        return {"log_error": self.session.error, "log_records_lost": self.session.lost}

    def _log_failed(self, message: str, first: bool) -> None:
        """A record did not reach the log (a full disk), on whichever thread wrote it: counted;
        the first time, one log line and one ``error`` event. The call goes on; later records
        are tried again."""
        metrics = self.registry.metrics
        metrics.log_records_lost.inc()
        if not first:
            return
        metrics.log_write_errors.inc()
        error = (f"the call's log cannot be written ({message}): the call goes on, records that do not fit "
                 f"are lost and counted")
        self.log.error("%s; log %s", error, self.log_path)
        event = {"type": "error", "call_id": self.id, "track": None, "error": error, "time": now_iso()}
        try:
            self.registry.loop.call_soon_threadsafe(self.registry.publish, event)
        except RuntimeError:  # the loop is closed (the process is going down)
            pass

    # --- results from the tracks' threads ----------------------------------------------------
    def _sink(self, record: dict) -> None:
        """On a track's worker thread: log it, then hand it to the loop."""
        self.session.write(record)
        t = time.monotonic()
        try:
            self.registry.loop.call_soon_threadsafe(self._on_result, record, t)
        except RuntimeError:  # the loop is closed (the process is going down): the log has it
            pass

    def _on_result(self, record: dict, t_sink: float) -> None:
        kind = record.get("type")
        track = record.get("track")
        self.counts[kind] += 1
        event = dict(record)
        if kind == "window":
            self.windows.append(record)
            self.last[track] = record
            # window close -> result (the pipeline's latency) + result -> here (the hand-over)
            latency_s = float(record.get("latency_ms") or 0.0) / 1e3 + (time.monotonic() - t_sink)
            event["feed_latency_ms"] = round(latency_s * 1e3, 1)
            self.registry.metrics.windows.inc()
            self.registry.metrics.latency.observe(latency_s)
        elif kind == "utterance":
            self.utterances.append(record)
            self.registry.metrics.utterances.inc()
        self.registry.publish(event)

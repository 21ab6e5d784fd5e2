"""The calls a ser-serve process holds: admission, one log per call, the live results feed.

One :class:`CallRegistry` per process holds the loaded models and settings. A protocol
handler (Twilio, vosk, audio-fork, AudioSocket) runs on the event loop and does::

    try:
        call = await registry.open(call_id, "twilio", meta, tracks=["customer", "agent"])
    except Refused as exc:
        await ws.close(code=exc.code, message=exc.reason.encode())   # 1013 when full
        return
    try:
        call.track("customer", 8000).push(pcm_int16)    # never blocks
        ...
    finally:
        await registry.end(call, error=None)             # closes tracks in threads, logs session_end

``registry.subscribe(call_id)`` follows one call's events (``call.partial(track)`` is the
track's current partial text); ``registry.subscribe()`` follows every call (``/events``).
Each subscriber has its own bounded queue that drops its oldest event when full (counted),
so a slow reader never holds up the analysis or another reader.

Results are produced on the tracks' worker threads: the log record is written there
(flushed per record) and the event is handed to the loop with ``call_soon_threadsafe``.
Model code and blocking joins never run on the loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
import uuid
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from streamer.runtime.config import Config
from streamer.runtime.heap import HeapTrimmer, release_free_memory
from streamer.live.session_log import now_iso, session_end, session_start
from streamer.serve.bus import Bus, BusError, BusOptions, LocalBus, iso
from streamer.serve.calls.call import CLOSE_TIMEOUT_S, MAX_CALL_ID, Call, Refused, default_log_dir, safe_name
from streamer.serve.calls.feed import SUBSCRIBER_QUEUE, FeedLimits, Subscriber
from streamer.serve.calls.pace import PaceLimits
from streamer.serve.http.metrics import Metrics

log = logging.getLogger(__name__)



class CallRegistry:
    """Every call of the process. ``loop`` (where handlers run) defaults to the running loop
    of the first :meth:`open`."""

    def __init__(self, models, cfg: Config, log_dir: str | Path | None = None, metrics: Metrics | None = None,
                 loop: asyncio.AbstractEventLoop | None = None, bus: Bus | None = None) -> None:
        self.models = models
        self.cfg = cfg
        self.log_dir = Path(log_dir).expanduser() if log_dir else default_log_dir(cfg)
        self.metrics = metrics or Metrics()
        self.loop = loop
        self.calls: dict[str, Call] = {}  # active and recently ended, by id
        self.subscribers: set[Subscriber] = set()
        self.accepting = True
        self.refused = collections.Counter()
        self.total = 0
        # the results bus: the process's own (LocalBus), or Redis Streams shared by every replica
        self.bus = bus or LocalBus(BusOptions(keep_ended_s=cfg.server.keep_ended_min * 60))
        self.bus.on_lost = self._bus_lost
        self.metrics.watch(self._live_stats)
        self.log_write_fd = os.write  # what the calls' logs write with (a test's disk that fills)
        self.feed_limits = FeedLimits()  # how far an /events client may fall behind before it is closed
        # how far ahead of real time a call's audio may run (the rest is dropped; a vosk client is slowed)
        self.pace_limits = PaceLimits(cfg.server.max_speed, cfg.server.burst_s)
        self.heap = HeapTrimmer()  # freed memory back to the system after calls (resident memory = use)
        # what is alive before the first call (models, the app) lives for good: out of the collections
        # that free ended calls (they then walk only what came after, and hold the GIL less long)
        release_free_memory(freeze=True)
        self._collect_pending = False  # a collection waits for the trimmer (release_memory_soon)

    # --- admission ------------------------------------------------------------------------
    @property
    def active_calls(self) -> list[Call]:
        return [c for c in self.calls.values() if c.state != "ended"]

    def refuse(self, reason: str, message: str, code: int = 1013) -> Refused:
        self.refused[reason] += 1
        self.metrics.refused.labels(reason=reason).inc()
        log.warning("refused a call: %s", message)
        return Refused(reason, message, code)

    async def open(self, call_id: str | None, source: str, meta: dict | None = None,
                   tracks: list[str] | None = None) -> Call:
        """Admit a call (raises :class:`Refused`), open its log, write ``session_start``
        and announce ``call_start``. ``call_id`` None or empty: a generated one."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        if not self.accepting:
            raise self.refuse("shutting_down", "the server is shutting down", 1001)
        if len(self.active_calls) >= self.cfg.server.max_calls:
            raise self.refuse("max_calls", f"the server is at its limit of {self.cfg.server.max_calls} calls "
                              "([server] max_calls, --max-calls)", 1013)
        call_id = str(call_id).strip() if call_id else ""
        if len(call_id) > MAX_CALL_ID:
            raise self.refuse("bad_call_id", f"a call id of {len(call_id)} characters (at most {MAX_CALL_ID})", 1007)
        if not call_id:
            call_id = uuid.uuid4().hex
        old = self.calls.get(call_id)
        if old is not None and old.state != "ended":
            raise self.refuse("duplicate", f"call {call_id} is already being analysed", 1008)
        call: Call | None = None  # the bus's callbacks run later, on the loop, once it is set
        try:
            await self.bus.start()  # once (a no-op after)
            seg = await self.bus.open_call(call_id, source, list(tracks or []), dict(meta or {}),
                                           probe=lambda: call.pushed() if call else 0,
                                           row=lambda: call.bus_row() if call else {"call_id": call_id},
                                           emit=lambda ev: call.bus_event(ev) if call else None)
        except BusError as exc:
            raise self.refuse("bus", f"call {call_id}: the results bus cannot take it: {exc}", 1013) from exc
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = self.log_dir / f"{stamp}-{safe_name(call_id)}.ndjson"
        n = 1
        while path.exists():
            n += 1
            path = self.log_dir / f"{stamp}-{safe_name(call_id)}-{n}.ndjson"
        try:
            call = Call(self, call_id, source, dict(meta or {}), list(tracks or []), path)
        except Exception as exc:  # no log (a folder not writable): the bus must not keep it active
            self.bus.publish({"type": "call_end", "call_id": call_id, "track": None, "time": now_iso(),
                              "error": f"the call could not start: {exc}"})
            raise
        call.segment, call.previous = seg["segment"], seg["previous"]
        self.calls.pop(call_id, None)  # an ended call of that id gives way
        self.calls[call_id] = call
        self.total += 1
        self.metrics.calls.labels(source=source).inc()
        self.metrics.active.set(len(self.active_calls))
        joins = {}
        if call.previous:  # a reconnect: this log continues the call's earlier segment
            prev = call.previous
            joins = {"resumes": {"segment": prev.get("segment"), "state": prev.get("state"),
                                 "last_audio": iso(prev.get("audio_at")), "replica": prev.get("owner")}}
        start = session_start(self.models.names, call_id=call_id, source=source, tracks=call.declared_tracks,
                              meta=call.meta, segment=call.segment, **joins)
        call.started = start["time"]
        call.session.write({**start, "config": asdict(self.cfg)})
        self.publish({**start, "type": "call_start", "track": None})
        call.log.info("started (%s, tracks %s), log %s", source, ", ".join(call.declared_tracks) or "-", path)
        self._prune()
        return call

    # --- ending ---------------------------------------------------------------------------
    async def end(self, call: Call, error: str | None = None, interrupted: bool = False) -> None:
        """No more audio: close every track (in threads), write ``session_end``, announce
        ``call_end``. Safe to call more than once (later calls wait for the first)."""
        if call.ending is not None:
            await asyncio.shield(call.ending)
            return
        call.ending = self.loop.create_future()
        call.state = "ending"
        try:
            if error:
                call.error = error
                self.publish({"type": "error", "call_id": call.id, "track": None, "error": error,
                              "time": now_iso()})
                call.log.warning("%s", error)
            names = list(call.runners)
            results = await asyncio.gather(*(self.in_thread(call.runners[n].close, error, CLOSE_TIMEOUT_S)
                                             for n in names), return_exceptions=True)
            for name, res in zip(names, results):
                if isinstance(res, BaseException):
                    res = {"error": f"closing the track failed: {res}"}
                call.summaries[name] = res
                if res.get("error"):
                    self.metrics.errors.inc()
                    self.publish({"type": "error", "call_id": call.id, "track": name, "error": res["error"],
                                  "time": now_iso()})
                    if not call.error:
                        call.error = f"track {name}: {res['error']}"
                counters = res.get("counters") or {}
                self.metrics.ended_dropped_audio_s += counters.get("audio_dropped_samples", 0) / call.rates[name]
                self.metrics.ended_windows_dropped += counters.get("windows_dropped", 0) + counters.get("asr_windows_dropped", 0)
                self.metrics.ended_too_fast_audio_s += counters.get("audio_too_fast_samples", 0) / call.rates[name]
            call.ended_mono = time.monotonic()
            end = session_end(call.counts["window"], call.error, call_id=call.id, source=call.source,
                              tracks=call.summaries, duration_s=round(call.ended_mono - call.started_mono, 3),
                              utterances=call.counts["utterance"],
                              words=sum(int(s.get("words") or 0) for s in call.summaries.values()),
                              stream_s=max([float(s.get("stream_s") or 0.0) for s in call.summaries.values()] or [0.0]),
                              interrupted=interrupted, **call.log_summary())
            call.ended = end["time"]
            await self.in_thread(_write_and_close, call.session, end)
            call.state = "ended"
            call.runners.clear()  # an ended call keeps its results, not its analysers (memory)
            self.metrics.active.set(len(self.active_calls))
            self.publish({**end, "type": "call_end", "track": None})
            call.log.info("ended: %d windows, %d utterances%s", call.counts["window"], call.counts["utterance"],
                          f", error: {call.error}" if call.error else "")
            self.release_memory_soon()
        finally:
            call.state = "ended"
            call.ending.set_result(None)

    def release_memory_soon(self) -> None:
        """An ended call's analysers are freed by refcounting; collect whatever garbage it left in
        cycles (exceptions' tracebacks, handlers) and give the heap's free pages back, now when
        the trimmer is due, else once it is (one waits at a time), so every call's memory returns
        within ``every_s`` of its end."""
        if self._collect_pending:
            return
        if self.heap.due():
            self.in_thread(self.heap.trim)
            return
        self._collect_pending = True

        def later() -> None:
            self._collect_pending = False
            self.release_memory_soon()
        self.loop.call_later(self.heap.wait_s(), later)

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, end every call (windows held are finished) within ``timeout`` s."""
        self.accepting = False
        calls = self.active_calls
        if calls:
            log.warning("shutting down: ending %d call(s)", len(calls))
            done, pending = await asyncio.wait([asyncio.ensure_future(self.end(c, interrupted=True)) for c in calls],
                                               timeout=timeout)
            for c in calls:
                if c.state != "ended":  # past the deadline: stop its tracks, still log its end
                    for r in c.runners.values():
                        r.abort()
                    c.log.warning("did not finish within %.0f s; stopped", timeout)
                    msg = f"stopped: the call did not finish within shutdown_s ({timeout:.0f} s)"
                    _write_and_close(c.session, session_end(c.counts["window"], msg, call_id=c.id, source=c.source,
                                                            tracks=c.summaries, utterances=c.counts["utterance"],
                                                            interrupted=True, **c.log_summary()))
        for s in list(self.subscribers):
            s.close()
        try:
            await asyncio.wait_for(self.bus.close(), 5.0)  # call_end events written out first
        except Exception as exc:  # Redis gone: the logs have everything
            log.warning("closing the results bus: %s", exc)

    def in_thread(self, fn, *args) -> asyncio.Future:
        """``fn(*args)`` on a thread of its own, which ends with it: what blocks (closing a track
        joins its threads, the log's last write) never runs on the loop. A thread per job, not a
        pool: a pool keeps the most threads it ever needed (a shutdown ends every call at once),
        and the server's threads would not come back to their idle level between calls."""
        fut = self.loop.create_future()

        def settle(result, exc) -> None:
            if fut.done():  # cancelled: nobody awaits it
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        def run() -> None:
            try:
                result, exc = fn(*args), None
            except BaseException as e:  # handed to the awaiting task
                result, exc = None, e
            try:
                self.loop.call_soon_threadsafe(settle, result, exc)
            except RuntimeError:  # the loop is closed: nobody awaits it any more
                pass

        threading.Thread(target=run, name="ser-close").start()
        return fut

    # --- the feed -------------------------------------------------------------------------
    def subscribe(self, call_id: str | None = None, maxsize: int = SUBSCRIBER_QUEUE) -> Subscriber:
        """Follow one call's events (``call_id``) or every call's (None). Unsubscribe when done."""
        sub = Subscriber(call_id, maxsize, on_drop=self.metrics.events_dropped.inc)
        self.subscribers.add(sub)
        self.metrics.subscribers.set(len(self.subscribers))
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.close()
        self.subscribers.discard(sub)
        self.metrics.subscribers.set(len(self.subscribers))

    def publish(self, event: dict) -> None:
        event = self.bus.publish(event)  # stamped with the call's segment; to Redis when the bus is
        for sub in list(self.subscribers):
            if sub.call_id is None or sub.call_id == event.get("call_id"):
                sub.put(event)

    def _bus_lost(self, call_id: str) -> None:
        """The bus gave a call of ours to another replica (a reconnect there took it over; a call
        announced lost while this server could not reach Redis is taken back instead, by the bus):
        end it here; its events no longer go out."""
        call = self.calls.get(call_id)
        if call is not None and call.active:
            self.loop.create_task(self.end(call, error="the call continues on another replica (a reconnect there "
                                                       "took it over)"))

    async def bus_listing(self) -> list[dict]:
        """``GET /api/calls`` over the bus: every replica's calls, this process's own rows over
        them (BusError when Redis is gone)."""
        return await self.bus.listing(self.listing())

    # --- listing --------------------------------------------------------------------------
    def _prune(self) -> None:
        keep_s = self.cfg.server.keep_ended_min * 60
        now = time.monotonic()
        for cid, c in list(self.calls.items()):
            if c.state == "ended" and c.ended_mono is not None and now - c.ended_mono > keep_s:
                del self.calls[cid]

    def listing(self) -> list[dict]:
        self._prune()
        return [c.summary_row() for c in self.calls.values()]

    def get(self, call_id: str) -> Call | None:
        self._prune()
        return self.calls.get(call_id)

    def _live_stats(self) -> dict:
        """For /metrics at scrape time: drops and queue depths over the active calls."""
        audio_s, windows, ring_s, too_fast_s = 0.0, 0, 0.0, 0.0
        lane = collections.Counter()
        for c in list(self.calls.values()):
            if c.state == "ended":
                continue
            for name, r in list(c.runners.items()):
                rate = c.rates[name]
                dropped, pending, depths = r.backlog()
                audio_s += dropped / rate
                ring_s += pending / rate
                counters = r.counters.snapshot()
                windows += counters.get("windows_dropped", 0) + counters.get("asr_windows_dropped", 0)
                too_fast_s += counters.get("audio_too_fast_samples", 0) / rate
                for kind, n in depths.items():
                    lane[kind] += n
        queues = {"audio_s": round(ring_s, 3), "track_windows": lane["window"], "track_chunks": lane["chunk"],
                  "events": sum(len(s) for s in list(self.subscribers))}
        try:
            svc = self.models.shared_services()
            queues["audio_model"] = svc.audio.depth
            if svc.text is not None:
                queues["text_model"] = svc.text.depth
        except Exception:  # no shared services in this build: no figure
            pass
        return {"dropped_audio_s": audio_s, "windows_dropped": windows, "too_fast_audio_s": too_fast_s, "queues": queues}


def _write_and_close(session, record: dict) -> None:
    session.write(record)
    session.close()

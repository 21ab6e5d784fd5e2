"""ser-serve's Prometheus metrics (``GET /metrics``), one registry per server.

Counters and the latency histogram are updated on the event loop as events happen; what
lives inside the tracks (audio dropped by a full ring, windows dropped by a full queue,
queue depths) is read at scrape time by a collector, so nothing is polled in between.

>>> m = Metrics(); m.refused.labels(reason="max_calls").inc(); m.active.set(2)
>>> text = m.render().decode()
>>> 'ser_serve_calls_refused_total{reason="max_calls"} 1.0' in text, "ser_serve_active_calls 2.0" in text
(True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Window close (the VAD cut it) to its event leaving for the /events feed, in seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.active = Gauge("ser_serve_active_calls", "Calls being analysed now", registry=r)
        self.calls = Counter("ser_serve_calls", "Calls accepted, by protocol", ["source"], registry=r)
        self.refused = Counter("ser_serve_calls_refused", "Calls refused, by reason", ["reason"], registry=r)
        self.closed = Counter("ser_serve_connections_closed", "Connections the server closed for bad input or auth, "
                              "by protocol and WebSocket close code", ["source", "code"], registry=r)
        self.unauthorized = Counter("ser_serve_unauthorized", "Requests refused at the handshake for a missing or "
                                    "wrong token (401), by path", ["path"], registry=r)
        self.windows = Counter("ser_serve_windows", "Windows analysed", registry=r)
        self.utterances = Counter("ser_serve_utterances", "Utterances closed", registry=r)
        self.errors = Counter("ser_serve_track_errors", "Tracks that ended with an analysis error", registry=r)
        self.latency = Histogram("ser_serve_window_latency_seconds",
                                 "Window close to its event on the /events feed", buckets=LATENCY_BUCKETS, registry=r)
        self.events_dropped = Counter("ser_serve_events_dropped", "Feed events dropped because a subscriber "
                                      "read too slowly (oldest first)", registry=r)
        self.subscribers = Gauge("ser_serve_event_subscribers", "Clients on /events (and handlers following a call)",
                                 registry=r)
        self.slow_closed = Counter("ser_serve_events_slow_closed", "/events clients closed (1008) for reading too "
                                   "slowly: a send stalled or too many of their events were dropped", registry=r)
        self.log_write_errors = Counter("ser_serve_log_write_errors", "Calls whose log could not be written (a full "
                                        "disk, an I/O error): each call once; the call goes on", registry=r)
        self.log_records_lost = Counter("ser_serve_log_records_lost", "Records that did not reach their call's log "
                                        "(a write failed; never half a line)", registry=r)
        self.alerts = Counter("ser_serve_alerts", "Alerts raised by the desk's rules, by rule", ["rule"], registry=r)
        self._live: Callable[[], dict] | None = None
        self._bus: Callable[[], dict] | None = None
        r.register(_TrackCollector(self))
        r.register(_BusCollector(self))
        r.register(_LoopCollector())
        r.register(_HeapCollector())
        # what ended calls dropped, so the totals do not fall when a call ends
        self.ended_dropped_audio_s = 0.0
        self.ended_windows_dropped = 0
        self.ended_too_fast_audio_s = 0.0

    def watch(self, live: Callable[[], dict]) -> None:
        """``live()`` -> {"dropped_audio_s", "windows_dropped", "too_fast_audio_s", "queues": {name: depth}} of
        the calls now."""
        self._live = live

    def watch_bus(self, health: Callable[[], dict]) -> None:
        """``health()`` -> the results bus's figures (:meth:`streamer.serve.bus.Bus.health`)."""
        self._bus = health

    def bus_now(self) -> dict:
        """What :meth:`watch_bus`'s function says of the bus now ({} before it is set)."""
        return self._bus() if self._bus is not None else {}

    def live_now(self) -> dict:
        """What :meth:`watch`'s function says of the calls now ({} before it is set)."""
        return self._live() if self._live is not None else {}

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _TrackCollector:
    def __init__(self, m: Metrics) -> None:
        self.m = m

    def describe(self) -> Iterable:
        return []

    def collect(self) -> Iterable:
        live = self.m.live_now()
        audio = CounterMetricFamily("ser_serve_audio_dropped_seconds", "Audio dropped unanalysed: a track's ring was "
                                    "full (analysis fell behind) or its client sent faster than real time")
        audio.add_metric([], self.m.ended_dropped_audio_s + live.get("dropped_audio_s", 0.0))
        yield audio
        fast = CounterMetricFamily("ser_serve_audio_too_fast_seconds", "Of the audio dropped, what clients sent "
                                   "beyond the pace a call may run ahead of real time (a burst, then 1.5x)")
        fast.add_metric([], self.m.ended_too_fast_audio_s + live.get("too_fast_audio_s", 0.0))
        yield fast
        win = CounterMetricFamily("ser_serve_windows_dropped", "Windows dropped unanalysed because a track's queue "
                                  "was full (oldest first)")
        win.add_metric([], self.m.ended_windows_dropped + live.get("windows_dropped", 0))
        yield win
        q = GaugeMetricFamily("ser_serve_queue_depth", "Items waiting: audio_s (seconds of audio in the tracks' "
                              "rings), track_windows and track_chunks (in the tracks' lanes), audio_model and "
                              "text_model (requests at the shared models), events (in subscribers' queues)",
                              labels=["queue"])
        for name, depth in sorted(live.get("queues", {}).items()):
            q.add_metric([name], depth)
        yield q


class _BusCollector:
    """The results bus (Redis, or the process's own): is it reachable, what failed, what waits."""

    COUNTERS = (("errors", "ser_serve_bus_errors", "Results-bus (Redis) commands that failed: unreachable, too "
                 "slow or refused"),
                ("outages", "ser_serve_bus_outages", "Times the results bus became unreachable (one per outage)"),
                ("dropped", "ser_serve_bus_events_dropped", "Events dropped unwritten because the bus's buffer was "
                 "full during an outage (oldest first; the calls' logs still have them)"),
                ("lost", "ser_serve_bus_events_lost", "Events Redis refused, or left unwritten when the server "
                 "stopped during an outage"),
                ("reregistered", "ser_serve_bus_calls_reregistered", "Calls registered again on a Redis that came "
                 "back without them"),
                ("reclaimed", "ser_serve_bus_calls_reclaimed", "Calls of this server marked lost while it could not "
                 "reach Redis, taken back (nobody else had taken them over)"))

    def __init__(self, m: Metrics) -> None:
        self.m = m

    def describe(self) -> Iterable:
        return []

    def collect(self) -> Iterable:
        h = self.m.bus_now()
        if not h:
            return
        up = GaugeMetricFamily("ser_serve_bus_up", "1 while the results bus is reachable, 0 during an outage")
        up.add_metric([], 0.0 if h.get("state") == "down" else 1.0)
        yield up
        waiting = GaugeMetricFamily("ser_serve_bus_events_waiting", "Events kept for the bus, not yet written")
        waiting.add_metric([], h.get("waiting", 0))
        yield waiting
        for key, name, text in self.COUNTERS:
            c = CounterMetricFamily(name, text)
            c.add_metric([], h.get(key, 0))
            yield c


class _LoopCollector:
    """The event loop's live tasks (a task per socket, per call, per feed reader): what a soak
    watches return to its level between calls. Read at scrape time, on the loop's own thread."""

    def describe(self) -> Iterable:
        return []

    def collect(self) -> Iterable:
        import asyncio

        try:
            n = len(asyncio.all_tasks())
        except RuntimeError:  # scraped off the loop (a test's direct render): nothing to count
            return
        g = GaugeMetricFamily("ser_serve_asyncio_tasks", "Tasks alive on the server's event loop")
        g.add_metric([], n)
        yield g


class _HeapCollector:
    """What the C allocator holds (:func:`streamer.runtime.heap.heap_stats`): in-use bytes that
    climb are a leak, free bytes that climb while those stay are fragmentation."""

    def describe(self) -> Iterable:
        return []

    def collect(self) -> Iterable:
        from streamer.runtime.heap import heap_stats

        stats = heap_stats()
        if not stats:  # not glibc
            return
        g = GaugeMetricFamily("ser_serve_heap_bytes", "The C heap (glibc's arenas): in_use (allocated), free "
                              "(kept by the arenas), mapped (large blocks mapped on their own)", labels=["part"])
        for part, n in stats.items():
            g.add_metric([part], n)
        yield g

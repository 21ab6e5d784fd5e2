"""The driver's watch on the results bus: a gateway replica's lost calls get ``call_lost`` even
when no other gateway is left to notice.

Every gateway replica already looks for lapsed heartbeats (:meth:`RedisBus.watch`). When the
replica that died was the only one running (or the only one holding calls, and the others are
gone too), nobody looked until Ray had started its replacement: 15-25 s on a busy 2-core
machine. ``ser-serve --engine ray`` is a process of its own that outlives every replica, so it
watches too, on a thread with its own event loop: from a replica's death to ``call_lost`` is
then the heartbeat's TTL plus one round (about 6 s), replica or no replica. The bus's Lua
script announces each loss once, whoever finds it first.

>>> WatchOptions(url="redis://127.0.0.1:6379", desk="d").every_s
1.0
>>> WatchOptions(url="", desk="d")
Traceback (most recent call last):
...
ValueError: the lost-call watch needs a redis:// URL, not ''
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
from dataclasses import dataclass

from streamer.serve.cluster.background import Background

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchOptions:
    """The bus to watch, as the gateways see it (their desk, their ``keep_ended_s``)."""

    url: str
    desk: str = "default"
    keep_ended_s: float = 1800.0
    every_s: float = 1.0  # a round of the watch (the bus's watch_s)
    ttl_s: float = 5.0  # the heartbeats' TTL the gateways write (the bus's default)
    beat_s: float = 1.5

    def __post_init__(self) -> None:
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"the lost-call watch needs a redis:// URL, not {self.url!r}")
        if not 0 < self.every_s <= 60:
            raise ValueError(f"every_s must be between 0 and 60, not {self.every_s}")

    def bus_options(self):
        from streamer.serve.bus import BusOptions

        return BusOptions(url=self.url, desk=self.desk, keep_ended_s=self.keep_ended_s, watch_s=self.every_s,
                          ttl_s=self.ttl_s, beat_s=self.beat_s,
                          replica=f"driver-{socket.gethostname()}-{os.getpid()}")


class LostCallWatch(Background):
    """A thread that runs the bus's lost-call watch every ``every_s`` until :meth:`stop`.
    ``counters``: ``rounds``, ``lost`` (calls this watch announced), ``errors`` (rounds Redis
    failed); an outage is logged once when it starts and once when it ends."""

    thread_name = "ser-serve lost-call watch"

    def __init__(self, opts: WatchOptions) -> None:
        super().__init__()
        self.opts = opts
        self.counters: collections.Counter = collections.Counter()

    def run_thread(self) -> None:
        try:
            asyncio.run(self.run())
        except Exception:  # the watch is a safety net: its failure must not take the driver down
            log.exception("the lost-call watch stopped")

    async def run(self) -> None:
        """Rounds until :meth:`stop` (each bounded by the bus's command deadline)."""
        from streamer.serve.bus import BusError, RedisBus

        bus = RedisBus(self.opts.bus_options())
        down = False
        try:
            while not self.stopping():
                self.counters["rounds"] += 1
                try:
                    n = await bus.watch()
                    self.counters["lost"] += n
                    if down:
                        log.warning("lost-call watch: Redis answers again")
                        down = False
                except BusError as exc:
                    self.counters["errors"] += 1
                    if not down:
                        log.warning("lost-call watch: %s (retrying every %g s)", exc, self.opts.every_s)
                        down = True
                await asyncio.sleep(self.opts.every_s)
        finally:
            await bus.close(flush_s=0)

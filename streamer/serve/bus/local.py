"""The bus in the process: what a single ser-serve is (see :mod:`streamer.serve.bus`)."""

from __future__ import annotations

import asyncio
import collections
import logging
import time


from streamer.serve.bus.base import Bus, BusError, BusOptions, Follower, HeldCall

log = logging.getLogger(__name__)


class LocalFollower(Follower):
    """A bounded queue that drops its oldest event when full (counted)."""

    def __init__(self, bus: "Bus", call_id: str | None, maxsize: int) -> None:
        self.bus, self.call_id, self.maxsize = bus, call_id, maxsize
        self.items: collections.deque[dict] = collections.deque()
        self.dropped = 0
        self.closed = False
        self.error: BusError | None = None  # raised by get() once the queue is drained
        self._more = asyncio.Event()

    def put(self, event: dict) -> None:
        if self.closed or (self.call_id is not None and event.get("call_id") != self.call_id
                           and event.get("type") != "bus"):  # how the bus is goes to every reader
            return
        if len(self.items) >= self.maxsize:
            self.items.popleft()
            self.dropped += 1
            self.bus.counters["follower_dropped"] += 1
        self.items.append(event)
        self._more.set()

    def fail(self, exc: BusError) -> None:
        self.error = exc
        self._more.set()

    async def get(self, timeout: float | None = None) -> dict | None:
        while not self.items:
            if self.error is not None:
                raise self.error
            if self.closed:
                return None
            self._more.clear()
            try:
                await asyncio.wait_for(self._more.wait(), timeout)
            except asyncio.TimeoutError:
                return None
        return self.items.popleft()

    def close(self) -> None:
        self.closed = True
        self.bus.followers.discard(self)
        self._more.set()


class LocalBus(Bus):
    """The bus of one process: followers are queues, rows are the process's own calls.
    Segments work within the process (a call id back after its end); lost replicas cannot
    happen (the process is the only one)."""

    kind = "local"

    def __init__(self, opts: BusOptions | None = None, follower_queue: int = 1000) -> None:
        super().__init__(opts)
        self.follower_queue = follower_queue
        self.history: dict[str, dict] = {}  # call id -> its row and segments once it ended

    async def close(self) -> None:
        for f in list(self.followers):
            f.close()
        await super().close()

    async def _open(self, call_id: str) -> tuple[int, dict | None]:
        h = self.history.get(call_id)
        if h is None or time.time() - (h["ended"] or 0) > self.opts.keep_ended_s:
            return 1, None
        return h["segment"] + 1, {k: h[k] for k in ("segment", "state", "audio_at")} | {"owner": self.replica}

    def _send(self, event: dict, c: HeldCall | None) -> None:
        if c is not None and c.state == "ended":
            old = self.history.get(c.call_id)
            segs = (old["segments"] if old and old["segment"] == c.segment - 1 else []) + [c.segment_info()]
            self.history[c.call_id] = {"segment": c.segment, "state": "ended", "audio_at": c.audio_at,
                                       "ended": c.ended, "row": c.row(), "segments": segs}
            self._forget(time.time())  # a call ends: forget those past keep_ended_s, asked for or not
        for f in list(self.followers):
            f.put(event)

    def follow(self, call_id: str | None = None, since: str | None = None) -> LocalFollower:
        f = LocalFollower(self, call_id, self.follower_queue)
        self.followers.add(f)
        return f

    async def subscribe(self, call_id: str | None = None) -> LocalFollower:
        return self.follow(call_id)

    def _forget(self, now: float) -> None:
        """Drop the ended calls older than ``keep_ended_s`` (the history stays bounded by the calls
        that end in that time, whether or not anyone lists them)."""
        for cid, h in list(self.history.items()):
            if now - (h["ended"] or now) > self.opts.keep_ended_s:
                del self.history[cid]

    async def listing(self, local: list[dict] | None = None) -> list[dict]:
        rows: dict[str, dict] = {}
        self._forget(time.time())
        for cid, h in self.history.items():
            rows[cid] = {**h["row"], "segment": h["segment"], "segments": h["segments"],
                         "lost_audio_s": lost_seconds(h["segments"])}
        for cid, c in self.calls.items():
            old = self.history.get(cid)
            segs = (old["segments"] if old else []) + [c.segment_info()]
            rows[cid] = {**c.row(), "segment": c.segment, "segments": segs, "lost_audio_s": lost_seconds(segs)}
        return overlay_rows(rows, local)


def lost_seconds(segments: list[dict]) -> float:
    """Seconds of audio lost between a call's segments, all together.

    >>> lost_seconds([{"gap_s": None}, {"gap_s": 1.5}, {"gap_s": 0.25}])
    1.75
    """
    return round(sum(float(s.get("gap_s") or 0.0) for s in segments), 3)


def overlay_rows(rows: dict[str, dict], local: list[dict] | None) -> list[dict]:
    """The bus's rows, with this process's own (fresher) rows over them, call by call."""
    for r in local or []:
        cid = r.get("call_id")
        if cid is None:
            continue
        bus_row = rows.get(cid, {})
        keep = {k: bus_row[k] for k in ("segment", "segments", "lost_audio_s", "owner") if k in bus_row}
        if bus_row.get("state") == "lost" and r.get("state") != "active":
            keep["state"] = "lost"
        rows[cid] = {**r, **keep}
    return list(rows.values())

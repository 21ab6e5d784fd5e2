"""Reading the desk's Redis Stream: a follower from a given entry (``?since=``), and the one
shared tail reader per process that every follower from the stream's end hangs on."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from typing import Protocol

from streamer.serve.bus.base import BusDown, BusError, BusOptions, Follower, iso
from streamer.serve.bus.outage import Backoff, StatusTicker


class RedisBus(Protocol):
    """What the readers need of ``streamer.serve.bus.redis_bus.RedisBus``."""

    redis: object
    opts: BusOptions
    counters: collections.Counter
    followers: set
    closing: bool  # the bus is closing: its readers stop
    caught_up_id: str  # the last entry of what this bus's writer kept through its last outage

    async def op(self, aw, extra: float = 0.0): ...

    def keep_task(self, task: asyncio.Task) -> None: ...

    def where(self) -> str: ...

    def health(self) -> dict: ...


def entry_key(entry_id: str | None) -> tuple[int, int]:
    """A stream entry id as a comparable pair.

    >>> entry_key("1700000000000-2") < entry_key("1700000000001-0"), entry_key(None)
    (True, (0, 0))
    """
    ms, _, seq = (entry_id or "0-0").partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


def status_event(health: dict, state: str) -> dict:
    """The ``bus`` event a reader gives its client (the desk) when the bus goes down, while it
    is down or catching up (about once a second), and when it is up again. Not on the stream:
    each gateway tells its own readers."""
    keep = ("since", "down_s", "error", "waiting", "outage_dropped", "dropped")
    return {"type": "bus", "state": state, "call_id": None, "track": None, "time": iso(time.time()),
            **{k: health.get(k) for k in keep}}


class RedisFollower(Follower):
    """Follows the stream with XREAD BLOCK from a given entry id (or from its end).

    ``patient`` (the default): Redis going away is waited out. The reader gives a ``bus``
    event (``state`` ``down``, about once a second while it lasts), tries again with growing
    waits, and goes on from the last entry it read once Redis is back; ``catching_up`` while
    what this gateway kept through the outage is still being written, ``up`` when it has read
    it all. Not patient: :class:`BusError` when Redis is gone (and a patient reader that never
    found the stream's end raises the same)."""

    def __init__(self, bus: "RedisBus", call_id: str | None, since: str | None, patient: bool = True) -> None:
        self.bus, self.call_id, self.patient = bus, call_id, patient
        self.last = since or None  # None: the stream's end, resolved at the first read
        self.items: collections.deque[dict] = collections.deque()
        self.closed = False
        self.backoff = Backoff(0.1, 2.0)
        self.ticker = StatusTicker(1.0)
        self._wake = asyncio.Event()

    async def start_id(self) -> str:
        top = await self.bus.op(self.bus.redis.xrevrange(self.bus.opts.stream, "+", "-", count=1))
        return top[0][0] if top else "0-0"

    def reading_state(self) -> str:
        """What the bus says (``catching_up`` while this gateway's kept events are being
        written), and ``catching_up`` too for a reader that said it was behind until it has read
        the last of them."""
        state = self.bus.health()["state"]
        if state == "up" and self.ticker.state != "up" and entry_key(self.bus.caught_up_id) > entry_key(self.last):
            return "catching_up"
        return state

    async def get(self, timeout: float | None = None) -> dict | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.items:
            if self.closed or self.bus.closing:
                return None
            left = self.bus.opts.block_s if deadline is None else min(self.bus.opts.block_s, deadline - time.monotonic())
            if left <= 0:
                return None
            try:
                if self.last is None:
                    self.last = await self.start_id()
                got = await self.bus.op(self.bus.redis.xread({self.bus.opts.stream: self.last}, count=500,
                                                             block=max(1, int(left * 1000))), extra=left)
            except BusDown:
                if not self.patient:
                    raise
                if self.ticker.due("down"):
                    return status_event(self.bus.health(), "down")
                await self._pause(min(self.backoff.next(), max(0.01, left)))
                continue
            self.backoff.reset()
            for _stream, entries in got or []:
                for entry_id, fields in entries:
                    self.last = entry_id
                    if self.call_id is not None and fields.get("call_id") != self.call_id:
                        continue
                    try:
                        ev = json.loads(fields["json"])
                    except (KeyError, ValueError):
                        self.bus.counters["bad_entries"] += 1
                        continue
                    ev["bus_id"] = entry_id  # reconnect with ?since=<bus_id> to resume after it
                    self.items.append(ev)
            if self.patient:
                state = self.reading_state()
                if self.ticker.due(state):  # behind: before what was read; caught up: after it
                    if state == "up":
                        self.items.append(status_event(self.bus.health(), state))
                    else:
                        self.items.appendleft(status_event(self.bus.health(), state))
        return self.items.popleft()

    async def _pause(self, seconds: float) -> None:
        """Wait before trying again; cut short by :meth:`close`."""
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def close(self) -> None:
        self.closed = True
        self._wake.set()


class SharedTail:
    """One XREAD loop per RedisBus shared by every follower that starts at the stream's end
    (each desk page's /events): Redis serves each event once per gateway, not once per page."""

    def __init__(self, bus: "RedisBus") -> None:
        self.bus = bus
        self.task: asyncio.Task | None = None
        self.pinned = asyncio.Event()
        self.status: dict | None = None  # the last ``bus`` event while the bus is not up (new readers get it)

    async def ensure(self) -> None:
        if self.task is None or self.task.done():
            self.pinned.clear()
            self.task = asyncio.get_running_loop().create_task(self._run(), name="bus tail reader")
            self.bus.keep_task(self.task)
        waiter = asyncio.ensure_future(self.pinned.wait())
        done, _ = await asyncio.wait([waiter, self.task], timeout=self.bus.opts.timeout_s + 1.0,
                                     return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not self.pinned.is_set():
            exc = self.task.exception() if self.task.done() and not self.task.cancelled() else None
            raise exc if isinstance(exc, BusError) else BusError(f"Redis at {self.bus.where()}: the feed did not start")

    async def _run(self) -> None:
        f = RedisFollower(self.bus, None, None)
        f.last = await f.start_id()  # from here on Redis going away is waited out (patient)
        self.pinned.set()
        try:
            while True:
                ev = await f.get(timeout=self.bus.opts.block_s)
                if ev is None and self.bus.closing:
                    return
                if ev is not None:
                    if ev.get("type") == "bus":
                        self.status = None if ev.get("state") == "up" else ev
                    for sub in list(self.bus.followers):
                        sub.put(ev)
        except BusError as exc:
            for sub in list(self.bus.followers):
                sub.fail(exc)
            raise

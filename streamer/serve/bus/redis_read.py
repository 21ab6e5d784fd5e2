"""Reading the desk's Redis Stream: a follower from a given entry (``?since=``), and the one
shared tail reader per process that every follower from the stream's end hangs on."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from typing import Protocol

from streamer.serve.bus.base import BusError, BusOptions, Follower


class RedisBus(Protocol):
    """What the readers need of ``streamer.serve.bus.redis_bus.RedisBus``."""

    redis: object
    opts: BusOptions
    counters: collections.Counter

    async def op(self, aw, extra: float = 0.0): ...

    def keep_task(self, task: asyncio.Task) -> None: ...

    def where(self) -> str: ...


class RedisFollower(Follower):
    """Follows the stream with XREAD BLOCK from a given entry id (or from its end)."""

    def __init__(self, bus: "RedisBus", call_id: str | None, since: str | None) -> None:
        self.bus, self.call_id = bus, call_id
        self.last = since or None  # None: the stream's end, resolved at the first read
        self.items: collections.deque[dict] = collections.deque()
        self.closed = False

    async def start_id(self) -> str:
        top = await self.bus.op(self.bus.redis.xrevrange(self.bus.opts.stream, "+", "-", count=1))
        return top[0][0] if top else "0-0"

    async def get(self, timeout: float | None = None) -> dict | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.items:
            if self.closed:
                return None
            if self.last is None:
                self.last = await self.start_id()
            left = self.bus.opts.block_s if deadline is None else min(self.bus.opts.block_s, deadline - time.monotonic())
            if left <= 0:
                return None
            block_ms = max(1, int(left * 1000))
            got = await self.bus.op(self.bus.redis.xread({self.bus.opts.stream: self.last}, count=500, block=block_ms),
                                     extra=left)
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
        return self.items.popleft()

    def close(self) -> None:
        self.closed = True


class SharedTail:
    """One XREAD loop per RedisBus shared by every follower that starts at the stream's end
    (each desk page's /events): Redis serves each event once per gateway, not once per page."""

    def __init__(self, bus: "RedisBus") -> None:
        self.bus = bus
        self.task: asyncio.Task | None = None
        self.pinned = asyncio.Event()

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
        f.last = await f.start_id()
        self.pinned.set()
        try:
            while True:
                ev = await f.get(timeout=self.bus.opts.block_s)
                if ev is not None:
                    for sub in list(self.bus.followers):
                        sub.put(ev)
        except BusError as exc:
            for sub in list(self.bus.followers):
                sub.fail(exc)
            raise

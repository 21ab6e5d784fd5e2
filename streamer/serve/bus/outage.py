"""Riding out a results-bus outage (Redis gone for a while): whether the bus is reachable and
since when, how long to wait before the next try, and the events kept until it is back.
Pure: no I/O, no tasks; the clocks are given (tests pass fake ones).

What the Redis bus does with them (:mod:`streamer.serve.bus.redis_bus`): every command's
outcome goes to :class:`Health` (one log line when an outage starts, one when it ends: its
caller logs the transitions it returns); the writer keeps unwritten events in a
:class:`WriteBuffer` and retries after :class:`Backoff`'s waits.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Callable

Clock = Callable[[], float]


class Backoff:
    """Waits between tries: ``first`` doubling up to ``cap``; :meth:`reset` after a success.

    >>> b = Backoff(0.1, 1.0)
    >>> [b.next() for _ in range(6)]
    [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    >>> b.reset(); b.next()
    0.1
    """

    def __init__(self, first: float = 0.1, cap: float = 2.0) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"backoff: need 0 < first ({first}) <= cap ({cap})")
        self.first, self.cap = first, cap
        self.tries = 0

    def next(self) -> float:
        wait = min(self.cap, self.first * 2 ** min(self.tries, 30))
        self.tries += 1
        return wait

    def reset(self) -> None:
        self.tries = 0


class Health:
    """Is the bus reachable? ``up`` or ``down``, since when and why. :meth:`failed` and
    :meth:`succeeded` take each command's outcome and say when the state changes, so that the
    caller logs an outage once, not once per command.

    A command that started before the bus came back and fails after it (a read that was
    blocked through the outage, a connection made stale by it) belongs to the outage that
    ended: it is counted, it does not start a new one.

    >>> t = [100.0]
    >>> h = Health(clock=lambda: t[0], wall=lambda: 1e9 + t[0])
    >>> h.failed("refused", started=100.0), h.failed("refused", started=100.5), h.state, h.outages
    (True, False, 'down', 1)
    >>> t[0] = 110.0
    >>> h.succeeded(), h.state
    (10.0, 'up')
    >>> h.failed("closed", started=109.0), h.state, h.errors   # began during the outage
    (False, 'up', 3)
    >>> h.failed("refused", started=111.0), h.outages
    (True, 2)
    """

    def __init__(self, clock: Clock = time.monotonic, wall: Clock = time.time) -> None:
        self.clock, self.wall = clock, wall
        self.state = "up"
        self.since: float | None = None  # clock() when the outage began
        self.since_wall: float | None = None  # wall() then (shown to people)
        self.up_since = clock()
        self.error = ""
        self.errors = 0
        self.outages = 0
        self.last_down_s: float | None = None  # how long the last outage lasted

    def failed(self, error: str, started: float | None = None) -> bool:
        """A command could not reach Redis (``started``: clock() when it was sent). True when
        this begins an outage."""
        self.errors += 1
        if self.state == "down":
            self.error = error
            return False
        if started is not None and started < self.up_since:  # a straggler of the outage that ended
            return False
        self.state, self.error = "down", error
        self.since, self.since_wall = self.clock(), self.wall()
        self.outages += 1
        return True

    def succeeded(self) -> float | None:
        """A command reached Redis. The outage's length in seconds when this ends one, else None."""
        if self.state == "up":
            return None
        now = self.clock()
        down_s = now - (self.since if self.since is not None else now)
        self.state, self.up_since, self.last_down_s = "up", now, down_s
        self.since = self.since_wall = None
        return down_s

    def down_s(self) -> float:
        """How long the current outage has lasted (0 while up)."""
        return 0.0 if self.since is None else max(0.0, self.clock() - self.since)


class WriteBuffer:
    """Events waiting to be written, oldest first, at most ``size``: when full, the oldest is
    dropped (counted). A batch that could not be written goes back in front, in its order.
    :meth:`mark` gives what an outage cost since the last mark (for the bus's outage record).

    >>> b = WriteBuffer(3)
    >>> for i in range(4):
    ...     _ = b.put(i)
    >>> list(b.items), b.dropped
    ([1, 2, 3], 1)
    >>> batch = b.take(2); batch, len(b)
    ([1, 2], 1)
    >>> b.put(4), b.put(5)             # room for the batch is not kept: newer events come first
    (True, True)
    >>> b.give_back(batch); list(b.items), b.dropped   # full again: the oldest go
    ([3, 4, 5], 3)
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"write buffer: size must be at least 1, not {size}")
        self.size = size
        self.items: collections.deque[Any] = collections.deque()
        self.dropped = 0  # in all

    def __len__(self) -> int:
        return len(self.items)

    def put(self, item: Any) -> bool:
        """Keep one more; False when the oldest was dropped to make room."""
        full = len(self.items) >= self.size
        if full:
            self.items.popleft()
            self.dropped += 1
        self.items.append(item)
        return not full

    def take(self, n: int) -> list:
        """Up to ``n`` of the oldest, removed (give them back if they could not be written)."""
        return [self.items.popleft() for _ in range(min(n, len(self.items)))]

    def give_back(self, batch: list) -> None:
        """A batch that was not written, back in front; the oldest dropped past ``size``."""
        self.items.extendleft(reversed(batch))
        while len(self.items) > self.size:
            self.items.popleft()
            self.dropped += 1

    def clear(self) -> int:
        """Forget everything waiting; how many that was."""
        n = len(self.items)
        self.items.clear()
        return n


class StatusTicker:
    """When a reader of the bus tells its client how the bus is (the desk's ``bus`` events):
    at every change of state, and every ``every_s`` while it is not ``up`` (the counts move).
    Nothing while all is well.

    >>> t = [0.0]
    >>> k = StatusTicker(1.0, clock=lambda: t[0])
    >>> k.due("up"), k.due("down"), k.due("down")
    (False, True, False)
    >>> t[0] = 1.5; k.due("down"), k.due("catching_up"), k.due("up"), k.due("up")
    (True, True, True, False)
    """

    def __init__(self, every_s: float = 1.0, clock: Clock = time.monotonic) -> None:
        self.every_s, self.clock = every_s, clock
        self.state = "up"
        self.at = clock()

    def due(self, state: str) -> bool:
        now = self.clock()
        if state != self.state or (state != "up" and now - self.at >= self.every_s):
            self.state, self.at = state, now
            return True
        return False

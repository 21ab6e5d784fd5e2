"""A reader of the results feed: a bounded queue on the event loop that drops its oldest
event when full (counted), so a slow reader never holds up the analysis or another reader;
and the bounds past which an ``/events`` client is too slow to keep (:class:`FeedLimits`)."""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass

SUBSCRIBER_QUEUE = 1000  # events a subscriber may fall behind before its oldest are dropped


@dataclass(frozen=True)
class FeedLimits:
    """How far an ``/events`` client may fall behind before it is closed (1008, "too slow"):
    its queue holds ``queue`` events (the oldest dropped beyond, counted); it is closed once it
    has lost ``max_dropped`` events, once one send waits ``send_timeout_s`` s for it to read
    (the socket's buffers are full), or once ``max_buffer_bytes`` wait in the socket's write
    buffer. The close frame gets ``close_grace_s`` s to go out; then the connection is cut."""

    queue: int = SUBSCRIBER_QUEUE
    max_dropped: int = SUBSCRIBER_QUEUE
    send_timeout_s: float = 10.0
    max_buffer_bytes: int = 4 * 1_048_576
    close_grace_s: float = 5.0


def too_slow(dropped: int, buffered: int, limits: FeedLimits) -> str | None:
    """Why a reader that lost ``dropped`` events and has ``buffered`` bytes waiting in its
    socket is too slow to keep (the close reason), or None.

    >>> lim = FeedLimits(max_dropped=10, max_buffer_bytes=1000)
    >>> too_slow(9, 999, lim) is None
    True
    >>> too_slow(10, 0, lim)
    'too slow: 10 events dropped (it reads slower than they come); reconnect'
    >>> too_slow(0, 1000, lim)
    'too slow: 1000 bytes wait unread in its socket; reconnect'
    """
    if dropped >= limits.max_dropped:
        return f"too slow: {dropped} events dropped (it reads slower than they come); reconnect"
    if buffered >= limits.max_buffer_bytes:
        return f"too slow: {buffered} bytes wait unread in its socket; reconnect"
    return None


def stalled(limits: FeedLimits) -> str:
    """The close reason of a send that waited ``send_timeout_s``.

    >>> stalled(FeedLimits(send_timeout_s=10))
    'too slow: nothing read for 10 s (the socket is full); reconnect'
    """
    return f"too slow: nothing read for {limits.send_timeout_s:g} s (the socket is full); reconnect"


class Subscriber:
    """One reader of the feed: a bounded queue that drops its oldest event when full.

    >>> s = Subscriber(None, maxsize=2)
    >>> for i in range(3): s.put({"i": i})
    >>> [e["i"] for e in s.pending()], s.dropped
    ([1, 2], 1)
    """

    def __init__(self, call_id: str | None, maxsize: int = SUBSCRIBER_QUEUE, on_drop=None) -> None:
        self.call_id = call_id
        self._items: collections.deque[dict] = collections.deque()
        self.maxsize = maxsize
        self.dropped = 0
        self.closed = False
        self._more: asyncio.Event | None = None
        self._on_drop = on_drop

    def _event(self) -> asyncio.Event:
        if self._more is None:
            self._more = asyncio.Event()
        return self._more

    def put(self, event: dict) -> None:
        if self.closed:
            return
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop()
        self._items.append(event)
        if self._more is not None:
            self._more.set()

    def close(self) -> None:
        self.closed = True
        if self._more is not None:
            self._more.set()

    def pending(self) -> list[dict]:
        items = list(self._items)
        self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, timeout: float | None = None) -> dict | None:
        """The next event; None once closed (and drained) or after ``timeout`` seconds."""
        while not self._items:
            if self.closed:
                return None
            ev = self._event()
            ev.clear()
            try:
                await asyncio.wait_for(ev.wait(), timeout)
            except asyncio.TimeoutError:
                return None
        return self._items.popleft()

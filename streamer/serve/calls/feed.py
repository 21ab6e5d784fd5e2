"""A reader of the results feed: a bounded queue on the event loop that drops its oldest
event when full (counted), so a slow reader never holds up the analysis or another reader."""

from __future__ import annotations

import asyncio
import collections

SUBSCRIBER_QUEUE = 1000  # events a subscriber may fall behind before its oldest are dropped


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

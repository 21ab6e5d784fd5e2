"""A bounded queue that, when full, drops its oldest item and counts it (live sources), or
makes the producer wait (a file read ``--fast``: nothing has to be lost).

>>> from streamer.live.counters import Counters
>>> c = Counters(); q = DropOldestQueue(2, "q_dropped", c)
>>> for i in range(4): q.put(i)
>>> q.get(timeout=0), q.get(timeout=0), c.get("q_dropped")
(2, 3, 2)
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from streamer.live.counters import Counters

T = TypeVar("T")


class Empty(Exception):
    pass


class DropOldestQueue(Generic[T]):
    def __init__(self, maxsize: int, counter: str, counters: Counters, block: bool = False,
                 on_drop: Callable[[T], None] | None = None) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be positive")
        self.maxsize = maxsize
        self.counter = counter
        self.counters = counters
        self.block = block
        self.on_drop = on_drop
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()

    def put(self, item: T, stop: threading.Event | None = None) -> None:
        dropped = None
        with self._cond:
            if self.block:
                while len(self._items) >= self.maxsize and not (stop is not None and stop.is_set()):
                    self._cond.wait(0.05)
            elif len(self._items) >= self.maxsize:
                dropped = self._items.popleft()
                self.counters.add(self.counter)
            self._items.append(item)
            self._cond.notify_all()
        if dropped is not None and self.on_drop is not None:
            self.on_drop(dropped)

    def get(self, timeout: float | None = None) -> T:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                raise Empty
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

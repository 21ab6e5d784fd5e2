"""Bounded queues that, when full, drop their oldest item and count it (live sources), or
make the producer wait (a file read ``--fast``: nothing has to be lost).

:class:`Lane` bounds each *kind* of item on its own (a stream's chunks for the recogniser and
its closed windows share one ordered lane, but a flood of one never pushes out the other);
items of a kind without a bound (markers) are never dropped. :class:`DropOldestQueue` is the
one-kind case.

>>> from streamer.core.counters import Counters
>>> c = Counters(); q = DropOldestQueue(2, "q_dropped", c)
>>> for i in range(4): q.put(i)
>>> q.get(timeout=0), q.get(timeout=0), c.get("q_dropped")
(2, 3, 2)
>>> lane = Lane({"chunk": 2, "window": 1}, {"chunk": "chunks_dropped", "window": "windows_dropped"}, c,
...             kind_of=lambda item: item[0])
>>> for item in [("chunk", 1), ("chunk", 2), ("chunk", 3), ("window", "a"), ("end", 0), ("window", "b")]: lane.put(item)
>>> [lane.get(0)[1] for _ in range(4)], c.get("chunks_dropped"), c.get("windows_dropped")
([2, 3, 0, 'b'], 1, 1)
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from streamer.core.counters import Counters

T = TypeVar("T")


class Empty(Exception):
    pass


class Lane(Generic[T]):
    def __init__(self, caps: dict[Hashable, int], counter_names: dict[Hashable, str], counters: Counters,
                 block: bool = False, on_drop: Callable[[T], None] | None = None,
                 kind_of: Callable[[T], Hashable | None] = lambda item: None) -> None:
        if any(n < 1 for n in caps.values()):
            raise ValueError("every bound must be positive")
        self.caps = dict(caps)
        self.counter_names = counter_names
        self.counters = counters
        self.block = block
        self.on_drop = on_drop
        self.kind_of = kind_of
        self._items: collections.deque[T] = collections.deque()
        self._count = {k: 0 for k in caps}
        self._cond = threading.Condition()

    def depths(self) -> dict[Hashable, int]:
        """Items waiting, per bounded kind (for /metrics)."""
        with self._cond:
            return dict(self._count)

    def _bounded(self, item: T) -> Hashable | None:
        kind = self.kind_of(item)
        return kind if kind in self.caps else None

    def put(self, item: T, stop: threading.Event | None = None, wake: bool = True) -> None:
        """Add ``item`` (dropping the oldest of its kind when full); ``wake=False``: the getter
        waiting is not woken for it (it is taken with the next item that wakes it, or when the
        getter's wait times out)."""
        kind = self._bounded(item)
        dropped = None
        with self._cond:
            if kind is not None:
                if self.block:
                    while self._count[kind] >= self.caps[kind] and not (stop is not None and stop.is_set()):
                        self._cond.wait(0.05)
                elif self._count[kind] >= self.caps[kind]:
                    for k, old in enumerate(self._items):
                        if self._bounded(old) == kind:
                            del self._items[k]
                            dropped = old
                            break
                    self._count[kind] -= 1
                    self.counters.add(self.counter_names[kind])
                self._count[kind] += 1
            self._items.append(item)
            if wake:
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
            kind = self._bounded(item)
            if kind is not None:
                self._count[kind] -= 1
            self._cond.notify_all()
            return item

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class DropOldestQueue(Lane[T]):
    """One bound for every item."""

    def __init__(self, maxsize: int, counter: str, counters: Counters, block: bool = False,
                 on_drop: Callable[[T], None] | None = None) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be positive")
        super().__init__({"*": maxsize}, {"*": counter}, counters, block, on_drop, kind_of=lambda item: "*")
        self.maxsize = maxsize
        self.counter = counter

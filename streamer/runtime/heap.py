"""Freed heap memory back to the system once a call is over (glibc's ``malloc_trim``).

A server's threads free their audio and feature buffers into glibc's arenas (one per thread,
up to eight per core), and glibc keeps those pages. Resident memory then follows the busiest
moment so far, not what is in use, and over hours that looks like a leak (the complaint of
vosk-server's issues #44 and #149). After a call ends, ``ser-serve`` asks glibc to give the
free pages back (:meth:`HeapTrimmer.due`, at most once per ``every_s``, then
:meth:`HeapTrimmer.trim` on a thread of its own). Where the C library is not glibc it does
nothing.

>>> t = HeapTrimmer(every_s=30.0, clock=iter([0.0, 10.0, 31.0]).__next__)
>>> [t.due() for _ in range(3)] == [t.available, False, t.available]
True
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim(pad)`` from the process's own C library, or None."""
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


class HeapTrimmer:
    """Returns the heap's free pages to the system, at most once per ``every_s``."""

    def __init__(self, every_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self.trims = 0
        self._fn = _malloc_trim()
        self._last: float | None = None

    @property
    def available(self) -> bool:
        """True where the C library can trim (glibc)."""
        return self._fn is not None

    def due(self) -> bool:
        """Whether to trim now (then the next one is ``every_s`` away)."""
        now = self.clock()
        if self._fn is None or (self._last is not None and now - self._last < self.every_s):
            return False
        self._last = now
        return True

    def trim(self) -> bool:
        """Give the free pages back now (blocks for a few ms: call it off the event loop);
        True when glibc released memory."""
        if self._fn is None:
            return False
        self.trims += 1
        released = bool(self._fn(0))
        log.debug("heap trimmed (%s)", "memory released" if released else "nothing to release")
        return released

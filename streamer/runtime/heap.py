"""How a long-running process keeps its resident memory to what it uses (Python's collector, glibc's allocator).

A server's threads free their audio and feature buffers into glibc's arenas, and glibc keeps
those pages. Resident memory then follows the busiest moment so far, not what is in use, and
over hours that looks like a leak (the complaint of vosk-server's issues #44 and #149). Three
settings; what they ask of the C library is a no-op where it is not glibc (musl, macOS):

- :func:`tune_allocator`, once at start-up, before the threads start: few arenas
  (``M_ARENA_MAX``; glibc allows eight per core, each keeping its own free pages). A value the
  user set in ``MALLOC_ARENA_MAX`` wins. The mmap threshold is left to glibc: fixed at 256 KB
  (so that large buffers are unmapped when freed) it made a Whisper decode take 1.8 times as
  long on this project's virtual machine, every large buffer then costing fresh page faults
  (bench/README.md, "the allocator's settings").
- :func:`release_free_memory`: give the free pages back now (after loading the models); the
  call registry, when it starts, also freezes what is alive (``gc.freeze``: the models and the
  app), so that later full collections only walk what came after.
- :class:`HeapTrimmer`: after a call ends, at most once per ``every_s``
  (:meth:`HeapTrimmer.due`, then :meth:`HeapTrimmer.trim` on a thread of its own), collect
  Python's garbage, then give the free pages back. A track's analysers once sat in reference
  cycles (bound-method callbacks between a runner, its source, its pipeline and its session's
  lane), so an ended call's buffers waited for a full collection, which CPython runs rarely
  once the long-lived heap is large: in a soak at 8 calls the tracks of ~30 ended calls were
  still alive, and one ``gc.collect()`` took resident memory from 567 to 503 MB
  (bench/README.md, the soak). Those cycles are gone (weak callbacks, a plain function for the
  lane's drops; ``tests/test_pipeline.py`` checks it), so refcounting frees a track when its
  call lets go of it; the collection stays for whatever other garbage a call leaves.

:func:`heap_stats` says what the allocator holds (``/metrics``' ``ser_serve_heap_bytes``): bytes
in use that grow are a leak; free bytes that grow while those in use stay are fragmentation.

>>> t = HeapTrimmer(every_s=30.0, clock=iter([0.0, 10.0, 10.0, 31.0]).__next__)
>>> t.due(), t.due(), t.wait_s(), t.due()
(True, False, 20.0, True)
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's malloc.h
ARENA_MAX = 2  # arenas (the main one included) for every thread of the process


def _glibc(name: str, argtypes: list, restype=ctypes.c_int) -> Callable | None:
    """A glibc function from the process's own C library, or None (not glibc)."""
    try:
        fn = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    fn.argtypes = argtypes
    fn.restype = restype
    return fn


def tune_allocator(arena_max: int = ARENA_MAX) -> dict[str, int]:
    """At most ``arena_max`` glibc arenas for this process (call it before the threads that
    allocate start); returns the settings made: {} where there is no glibc, or where the
    user's ``MALLOC_ARENA_MAX`` already made it."""
    mallopt = _glibc("mallopt", [ctypes.c_int, ctypes.c_int])
    if mallopt is None or "MALLOC_ARENA_MAX" in os.environ:
        return {}
    if mallopt(M_ARENA_MAX, int(arena_max)) != 1:
        log.warning("mallopt(M_ARENA_MAX, %d) refused; resident memory may grow with many threads", arena_max)
        return {}
    return {"MALLOC_ARENA_MAX": int(arena_max)}


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_stats() -> dict[str, int]:
    """glibc's ``mallinfo2`` over every arena, in bytes: ``in_use`` (allocated blocks),
    ``free`` (free blocks the arenas keep, resident or given back by a trim), ``mapped`` (blocks
    mapped on their own); {} where there is no glibc 2.33 or later, or where another allocator
    took ``malloc``'s place (``LD_PRELOAD`` of jemalloc or tcmalloc): glibc's arenas then hold
    nothing, and zeros would read as a process that allocates nothing."""
    fn = _glibc("mallinfo2", [], _MallInfo2)
    if fn is None:
        return {}
    m = fn()
    if m.uordblks == 0 and m.hblkhd == 0:  # a running Python always holds some: not glibc's malloc
        return {}
    return {"in_use": int(m.uordblks), "free": int(m.fordblks), "mapped": int(m.hblkhd)}


def _malloc_trim() -> Callable[[int], int] | None:
    return _glibc("malloc_trim", [ctypes.c_size_t])


def release_free_memory(freeze: bool = False) -> bool:
    """Collect Python's garbage, then give the C heap's free pages back to the system; True
    when glibc released memory. ``freeze``: then move every object still alive to the
    collector's permanent generation (after start-up: what lives now lives for good)."""
    import gc

    gc.collect()
    if freeze:
        gc.freeze()
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


class HeapTrimmer:
    """Collects Python's garbage and returns the heap's free pages to the system, at most once
    per ``every_s``."""

    def __init__(self, every_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self.trims = 0
        self._fn = _malloc_trim()
        self._last: float | None = None

    @property
    def available(self) -> bool:
        """True where the C library can trim (glibc); garbage is collected everywhere."""
        return self._fn is not None

    def wait_s(self) -> float:
        """Seconds until the next trim may run (0: now)."""
        if self._last is None:
            return 0.0
        return max(0.0, self._last + self.every_s - self.clock())

    def due(self) -> bool:
        """Whether to trim now (then the next one is ``every_s`` away)."""
        now = self.clock()
        if self._last is not None and now - self._last < self.every_s:
            return False
        self._last = now
        return True

    def trim(self) -> bool:
        """Collect garbage and give the free pages back now (blocks for tens of ms and holds
        the GIL while collecting: call it off the event loop); True when glibc released memory."""
        import gc

        self.trims += 1
        t0 = time.perf_counter()
        found = gc.collect()
        ms = (time.perf_counter() - t0) * 1000
        released = bool(self._fn(0)) if self._fn is not None else False
        log.debug("garbage collected (%d objects, %.0f ms), heap trimmed (%s)", found, ms,
                  "memory released" if released else "nothing to release")
        return released

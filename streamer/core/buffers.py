"""Buffers that live as long as a stream, mapped on their own instead of cut from the C heap.

A server takes calls for hours. A buffer that lives as long as its call (a track's ring buffer,
its recent audio) and is cut from glibc's heap sits among shorter-lived allocations: those
settle around it, and when the call ends its hole is reused piecemeal, so the heap's resident
span creeps up call after call (``bench/README.md``, the soak). A buffer on an anonymous map of
its own is returned to the system whole when it is collected.
"""

from __future__ import annotations

import mmap

import numpy as np
from numpy.typing import NDArray


def mapped_zeros(n: int, dtype: type = np.int16) -> NDArray:
    """A writable zeroed array of ``n`` items on an anonymous memory map of its own, unmapped
    when the array is collected.

    >>> a = mapped_zeros(3); a[1] = 7; a.tolist(), a.flags.writeable
    ([0, 7, 0], True)
    """
    itemsize = np.dtype(dtype).itemsize
    m = mmap.mmap(-1, max(1, n) * itemsize, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(m, dtype)[:n]

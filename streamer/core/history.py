"""A stream's most recent samples, kept in one buffer allocated once.

A stage that must look back at its stream's last seconds (Whisper decodes an utterance from
them) appends every chunk. Concatenating the kept audio with each chunk allocates and copies
the whole history per chunk: at 50 chunks a second and 32 streams that is ~1,600 allocations
of ~0.4 MB a second (the largest churn of the server's heap, ``bench/README.md``'s soak).
:class:`SampleHistory` writes chunks in place into a buffer twice the history's length and
moves the kept part to the front only when the end is reached, so appending costs the chunk's
own copy and nothing is allocated after start. The buffer lives as long as its stream and is
mapped on its own (:func:`streamer.core.buffers.mapped_zeros`).

>>> h = SampleHistory(4)
>>> h.extend(np.array([1, 2, 3], np.int16)); h.view().tolist()
[0, 1, 2, 3]
>>> for x in range(4, 20): h.extend(np.array([x], np.int16))
>>> h.view().tolist()
[16, 17, 18, 19]
>>> h.extend(np.arange(100, 110, dtype=np.int16)); h.view().tolist()  # longer than the history
[106, 107, 108, 109]
>>> h.clear(); h.view().tolist()  # as after a gap: silence before
[0, 0, 0, 0]
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from streamer.core.buffers import mapped_zeros


class SampleHistory:
    """The last ``length`` samples of a stream (zeros before its first). ``view()`` is valid
    until the next ``extend``; copy it to keep it."""

    def __init__(self, length: int, dtype: type = np.int16) -> None:
        if length <= 0:
            raise ValueError(f"a history of {length} samples: it must be positive")
        self.length = int(length)
        self._buf = mapped_zeros(2 * self.length, dtype)
        self._pos = self.length  # the history is _buf[_pos - length:_pos]

    def extend(self, samples: NDArray) -> None:
        n = len(samples)
        if n >= self.length:
            self._buf[:self.length] = samples[-self.length:]
            self._pos = self.length
            return
        if self._pos + n > len(self._buf):  # at the end: the kept part moves to the front
            keep = self.length - n
            self._buf[:keep] = self._buf[self._pos - keep:self._pos]
            self._pos = keep
        self._buf[self._pos:self._pos + n] = samples
        self._pos += n

    def clear(self) -> None:
        """Forget the kept samples (zeros), as after a gap."""
        self._buf[:] = 0

    def view(self) -> NDArray:
        return self._buf[self._pos - self.length:self._pos]

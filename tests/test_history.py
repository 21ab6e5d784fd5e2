"""SampleHistory: the last samples, the same as concatenating everything, for any chunking."""

import numpy as np
from hypothesis import given, settings, strategies as st

from streamer.core.history import SampleHistory


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 50), chunks=st.lists(st.integers(0, 120), max_size=40),
       gap_at=st.integers(-1, 39))
def test_the_view_is_the_last_samples_of_everything_appended(length, chunks, gap_at):
    h = SampleHistory(length)
    kept = np.zeros(length, np.int16)  # the naive history: concatenate, keep the tail
    k = 0
    for i, n in enumerate(chunks):
        if i == gap_at:
            h.clear()
            kept[:] = 0
        x = np.arange(k, k + n, dtype=np.int16)
        k += n
        h.extend(x)
        kept = np.concatenate([kept, x])[-length:]
        assert h.view().tolist() == kept.tolist()
        assert h.view().dtype == np.int16 and len(h.view()) == length


def test_appending_allocates_nothing():
    h = SampleHistory(16000)
    buf = h.view().base
    for _ in range(500):
        h.extend(np.ones(320, np.int16))
    assert h.view().base is buf  # still the buffer made at the start

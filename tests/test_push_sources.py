"""Push and microphone sources read their ring through one gap-aware reader (RingReader): audio
lost to a full ring leaves a gap in time; it never pulls later audio back (issue 26)."""

import numpy as np
import pytest

from streamer.core.messages import SAMPLE_RATE
from streamer.live.sources import PushSource


def drain(src: PushSource) -> list:
    chunks = []
    while not src.done:
        c = src.read(0.0)
        if c is not None:
            chunks.append(c)
    return chunks


def tone(n: int, rate: int, start: int = 0) -> np.ndarray:
    t = (np.arange(n) + start) / rate
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def check_contiguous_except_gaps(chunks):
    for a, b in zip(chunks, chunks[1:]):
        assert b.start >= a.start + len(a.samples)


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_a_ring_overflow_leaves_a_gap_in_time_at_any_rate(rate):
    src = PushSource("track", rate, buffer_seconds=0.5)  # a ring of half a second
    src.write(tone(rate // 2, rate))                      # 0.5 s, read at once
    first = drain_some(src)
    src.write(tone(2 * rate, rate, rate // 2))             # 2 s unread: 1.5 s of it overwritten
    src.end()
    rest = drain(src)
    chunks = first + rest
    check_contiguous_except_gaps(chunks)
    assert src.dropped_samples == 3 * rate // 2
    assert src.reader.gaps == 1
    end = chunks[-1].start + len(chunks[-1].samples)
    assert end == 5 * SAMPLE_RATE // 2  # 2.5 s written, so the last sample ends at 2.5 s, lost audio or not
    # the audio after the gap starts where it was written: 2.0 s in
    after = [c for c in rest if c.start >= SAMPLE_RATE]
    assert after and after[0].start == 2 * SAMPLE_RATE


def drain_some(src: PushSource) -> list:
    out = []
    while src.ring.pending():
        c = src.read(0.0)
        if c is not None:
            out.append(c)
    return out


def test_a_calls_two_tracks_stay_aligned_when_one_loses_audio():
    """Two 8 kHz tracks of one call, the same 3 s; one reader falls behind and loses audio. Both
    end at the same 16 kHz sample, and the shared audio after the loss has the same index."""
    rate = 8000
    a, b = PushSource("caller", rate, buffer_seconds=0.5), PushSource("agent", rate, buffer_seconds=0.5)
    audio = tone(3 * rate, rate)
    got_a, got_b = [], []
    for i in range(0, len(audio), 800):  # 100 ms frames
        a.write(audio[i:i + 800])
        b.write(audio[i:i + 800])
        got_a += drain_some(a)          # track a is read as it comes
        if i >= 2 * rate:               # track b's reader stalls for the first 2 s
            got_b += drain_some(b)
    a.end(), b.end()
    got_a += drain(a)
    got_b += drain(b)
    assert a.dropped_samples == 0 and b.dropped_samples > 0
    end = [c[-1].start + len(c[-1].samples) for c in (got_a, got_b)]
    assert end[0] == end[1] == 3 * SAMPLE_RATE
    # the same audio lies at the same index on both tracks
    ya = np.concatenate([c.samples for c in got_a])
    first_b = got_b[0]
    assert first_b.start > 0
    seg_a = ya[first_b.start + 400: first_b.start + 2000].astype(float)
    seg_b = first_b.samples[400:2000].astype(float) if len(first_b.samples) >= 2000 else np.concatenate(
        [c.samples for c in got_b])[400:2000].astype(float)
    assert np.corrcoef(seg_a, seg_b)[0, 1] > 0.99


def test_16khz_sources_need_no_resampler_and_keep_the_ring_index():
    src = PushSource("wide", SAMPLE_RATE, buffer_seconds=0.1)
    src.write(np.ones(1000, np.int16))
    src.write(np.ones(2000, np.int16))  # 1,400 overwritten
    src.end()
    chunks = drain(src)
    assert [(c.start, len(c.samples)) for c in chunks] == [(1400, 1600)]
    assert src.dropped_samples == 1400


@pytest.mark.parametrize("rate", [8000, 16000])
def test_gathered_reads_hold_the_same_audio_in_fewer_wake_ups(rate):
    """A call's 20 ms frames written from another thread: with ``gather_s`` (ser-serve's
    ``[server] gather_ms``) the reader gets the same samples at the same indices, in reads of
    about 100 ms instead of one per frame."""
    import threading
    import time

    audio = tone(rate, rate)  # 1 s
    frame = rate // 50

    def play(src: PushSource) -> list:
        def writer():
            for i in range(0, len(audio), frame):
                src.write(audio[i:i + frame])
                time.sleep(0.02)
            src.end()
        t = threading.Thread(target=writer)
        t.start()
        chunks = []
        while not src.done:
            c = src.read(0.1)
            if c is not None:
                chunks.append(c)
        t.join()
        return chunks

    plain, gathered = play(PushSource("plain", rate)), play(PushSource("gathered", rate, gather_s=0.1))
    for chunks in (plain, gathered):
        check_contiguous_except_gaps(chunks)
    assert np.array_equal(np.concatenate([c.samples for c in plain]), np.concatenate([c.samples for c in gathered]))
    assert gathered[0].start == plain[0].start == 0
    # About 10 reads of 100 ms (up to 25 on a machine so busy that the writer's 20 ms sleeps
    # double); read as it comes, 16 kHz audio is about 50 reads of 20 ms. (At 8 kHz the resampler
    # hands out its output in blocks either way; the reader's wake-ups per frame are what differ
    # there: bench/track_cost.py counts them.)
    assert len(gathered) <= 25

"""The live pipeline's pure core: ring buffer, queues, VAD windows, fusion, session log."""

import json
import os
import stat

import numpy as np
import pytest

from streamer.audio.io import load_audio
from streamer.core.labels import LABELS
from streamer.core.counters import Counters
from streamer.core.fusion import FusionConfig, Rolling, confidence, fuse
from streamer.core.messages import Chunk
from streamer.core.queues import DropOldestQueue
from streamer.live.ringbuffer import RingBuffer
from streamer.live.session_log import SessionLog, read_log
from streamer.core.vad import VadConfig, VadSegmenter

SR = 16000


def test_ring_buffer_keeps_order_and_counts_overflow():
    rng = np.random.default_rng(0)
    rb = RingBuffer(1000)
    data = rng.integers(-3000, 3000, 20_000).astype(np.int16)
    got, pos = [], 0
    while pos < len(data):
        n = int(rng.integers(1, 400))
        rb.write(data[pos: pos + n])
        pos += n
        if rng.random() < 0.5:
            c = rb.read(int(rng.integers(1, 900)))
            if c is not None:
                got.append(c)
    while (c := rb.read()) is not None:
        got.append(c)
    # every chunk is the stream at its index; what is missing is exactly what was counted
    for c in got:
        assert np.array_equal(c.samples, data[c.start: c.end])
    starts = [c.start for c in got]
    assert starts == sorted(starts)
    assert sum(len(c.samples) for c in got) + rb.dropped == len(data)


def test_ring_buffer_overflow_is_not_fatal():
    rb = RingBuffer(SR)
    for _ in range(50):
        rb.write(np.ones(SR // 10, np.int16))  # 5 s into a 1 s ring, nobody reading
    assert rb.dropped == 4 * SR and rb.pending() == SR
    c = rb.read()
    assert c.start == 4 * SR and len(c.samples) == SR
    rb.write(np.zeros(3 * SR, np.int16))  # a write larger than the ring keeps its newest part
    assert rb.pending() == SR and rb.dropped == 6 * SR


def test_drop_counters_rise_when_a_queue_is_full():
    c = Counters()
    dropped = []
    q = DropOldestQueue(3, "windows_dropped", c, on_drop=dropped.append)
    for i in range(10):
        q.put(i)
    assert c.get("windows_dropped") == 7 and dropped == list(range(7)) and len(q) == 3
    assert [q.get(0), q.get(0), q.get(0)] == [7, 8, 9]


def test_blocking_queue_waits_instead_of_dropping():
    import threading

    c = Counters()
    q = DropOldestQueue(2, "x", c, block=True)
    out = []
    t = threading.Thread(target=lambda: [out.append(q.get(timeout=5)) for _ in range(50)])
    t.start()
    for i in range(50):
        q.put(i)
    t.join(10)
    assert out == list(range(50)) and c.get("x") == 0


def test_a_quiet_put_wakes_nobody(monkeypatch):
    """Whisper's chunks go into the lane without waking the ASR thread (``wake=False``); they
    are taken, in order, with the next item that wakes it."""
    import threading

    from streamer.core import queues

    class Spy(threading.Condition):
        wakes = 0

        def notify_all(self):
            Spy.wakes += 1
            super().notify_all()

    monkeypatch.setattr(queues.threading, "Condition", Spy)
    lane = queues.Lane({"chunk": 10, "window": 2}, {"chunk": "c", "window": "w"}, Counters(), kind_of=lambda i: i[0])
    monkeypatch.undo()
    lane.put(("chunk", 1), wake=False)
    lane.put(("chunk", 2), wake=False)
    assert Spy.wakes == 0
    lane.put(("window", 3))
    assert Spy.wakes == 1
    assert [lane.get(0) for _ in range(3)] == [("chunk", 1), ("chunk", 2), ("window", 3)]


@pytest.fixture(scope="module")
def utterances(speech_wav):
    """Two utterances of real (espeak) speech with silences: 0.7 s + speech + 1.5 s + speech + 0.6 s."""
    x = (load_audio(speech_wav) * 32767).astype(np.int16)
    z = lambda s: np.zeros(int(s * SR), np.int16)
    return np.concatenate([z(0.7), x, z(1.5), x, x, z(0.6)])


def run_vad(audio, chunks, cfg=VadConfig(), window=40000, minimum=8000):
    seg = VadSegmenter(cfg, window, minimum)
    out, pos, k = [], 0, 0
    while pos < len(audio):
        n = chunks[k % len(chunks)]
        seg.push(Chunk(pos, audio[pos: pos + n]))
        out += seg.poll()
        pos += n
        k += 1
    return out + seg.flush(), seg


def test_vad_windows_do_not_depend_on_chunking(utterances):
    ref, _ = run_vad(utterances, [SR])
    assert len(ref) >= 3
    for chunks in ([160], [1, 7, 333, 4096], [480, 50000], [len(utterances)]):
        got, _ = run_vad(utterances, chunks)
        assert [(w.start, w.end, w.final) for w in got] == [(w.start, w.end, w.final) for w in ref]
        assert all(np.array_equal(a.samples, b.samples) for a, b in zip(got, ref))


def test_vad_windows_are_monotonic_and_sized(utterances):
    wins, _ = run_vad(utterances, [1234])
    assert [w.index for w in wins] == list(range(len(wins)))
    for a, b in zip(wins, wins[1:]):
        assert a.end <= b.start
    for w in wins:
        assert np.array_equal(w.samples, utterances[w.start: w.end])
        assert (len(w.samples) == 40000) or (w.final and 8000 <= len(w.samples) < 40000)
    assert wins[0].start < int(0.9 * SR)  # the onset is kept (padding)
    assert sum(w.final for w in wins) >= 2  # at least the two utterances split by 1.5 s of silence


def test_vad_silence_gives_no_windows():
    rng = np.random.default_rng(1)
    quiet = (rng.normal(0, 30, 10 * SR)).astype(np.int16)  # -60 dBFS hiss
    wins, _ = run_vad(quiet, [1600])
    assert wins == []


def test_vad_short_tail_is_counted(utterances):
    wins, seg = run_vad(utterances, [1600], window=40000, minimum=39000)
    assert all(len(w.samples) >= 39000 for w in wins)
    assert seg.short_tails >= 1


def test_vad_gap_ends_the_utterance(utterances):
    seg = VadSegmenter(VadConfig(), 40000, 8000)
    half = int(2.0 * SR)
    seg.push(Chunk(0, utterances[:half]))
    seg.push(Chunk(half + SR, utterances[half + SR:]))  # one second lost upstream
    wins = seg.poll() + seg.flush()
    assert len(wins) >= 2, wins  # windows came out (the check below holds vacuously without them)
    assert all(not (w.start < half + SR and w.end > half) for w in wins)  # no window spans the gap
    before = [w for w in wins if w.end <= half]
    after = [w for w in wins if w.start >= half + SR]
    assert before and after, wins  # the speech on each side of the gap gave windows
    assert before[-1].final and after[0].utterance != before[-1].utterance  # the gap ended the utterance


def test_vad_config_is_validated():
    from streamer.core.errors import ConfigError

    for bad in ({"aggressiveness": 4}, {"frame_ms": 25}, {"padding_ms": 5}, {"end_ratio": 0}):
        with pytest.raises(ConfigError):
            VadConfig(**bad)


def dist(**kw):
    p = {k: 0.0 for k in LABELS}
    p.update(kw)
    return p


def test_fusion():
    audio = dist(angry=0.6, neutral=0.4)
    sure_text = dist(happy=1.0)
    unsure_text = {k: 1 / 7 for k in LABELS}
    for mode in ("confidence", "weighted"):
        f = fuse(audio, sure_text, FusionConfig(mode=mode))
        assert abs(sum(f.values()) - 1) < 1e-9
        assert fuse(audio, None, FusionConfig(mode=mode)) == pytest.approx(audio)
    # a uniform text opinion has confidence 0: the confidence-aware mode ignores it
    assert fuse(audio, unsure_text, FusionConfig(mode="confidence")) == pytest.approx(audio)
    assert fuse(audio, unsure_text, FusionConfig(mode="weighted"))["angry"] < 0.6
    assert confidence(sure_text) == 1.0 and confidence(unsure_text) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        fuse(dist(angry=float("nan")), None, FusionConfig(mode="confidence"))


def test_rolling_half_life():
    r = Rolling(half_life_s=2.0)
    r.update(dist(happy=1.0), 0.0)
    v = r.update(dist(sad=1.0), 2.0)
    assert v["happy"] == pytest.approx(0.5) and v["sad"] == pytest.approx(0.5)
    v = r.update(dist(sad=1.0), 6.0)
    assert v["happy"] == pytest.approx(0.125)


def test_session_log_private_flushed_and_tolerant(tmp_path):
    path = tmp_path / "logs" / "s.ndjson"
    log = SessionLog(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    log.write({"type": "session_start"})
    log.write({"type": "window", "index": 0, "transcript": "héllo"})
    # flushed per record: another reader sees both lines while the writer is still open
    assert [r["type"] for r in read_log(path).records] == ["session_start", "window"]
    log.close()
    with open(path, "a") as f:
        f.write('{"type": "window", "index": 1, "transcr')  # torn by a crash
    got = read_log(path)
    assert len(got.records) == 2 and got.skipped == [3] and not got.complete
    assert json.loads(path.read_text().splitlines()[1])["transcript"] == "héllo"


def run_vad_ends(audio, chunk, **kw):
    seg = VadSegmenter(VadConfig(), 40000, 8000, **kw)
    wins, ends = [], []
    for pos in range(0, len(audio), chunk):
        seg.push(Chunk(pos, audio[pos: pos + chunk]))
        wins += seg.poll()
        ends += seg.poll_ends()
    wins += seg.flush()
    return wins, ends + seg.poll_ends()


def test_vad_utterances_are_numbered_and_closed_after_their_windows(utterances):
    wins, ends = run_vad_ends(utterances, 1600)
    assert [u for u, _ in ends] == list(range(len(ends))) and len(ends) >= 2
    for u, end in ends:
        mine = [w for w in wins if w.utterance == u]
        assert mine and [w.index for w in mine] == list(range(mine[0].index, mine[-1].index + 1))
        assert end >= mine[-1].end and all(not w.final for w in mine[:-1])
    assert sorted({w.utterance for w in wins}) == [u for u, _ in ends]
    for chunk in (160, 7777):  # the same utterances whatever the chunking
        got, got_ends = run_vad_ends(utterances, chunk)
        assert got_ends == ends and [(w.start, w.utterance, w.final) for w in got] == [(w.start, w.utterance, w.final) for w in wins]


def test_vad_long_speech_is_closed_every_max_utterance(speech_wav):
    x = (load_audio(speech_wav) * 32767).astype(np.int16)
    loud = np.flatnonzero(np.abs(x) > 500)
    x = x[loud[0]: loud[-1]]  # no silence at either end
    long = np.concatenate([np.zeros(SR // 2, np.int16), *[x] * 6, np.zeros(SR, np.int16)])  # 12+ s without a pause
    free, _ = run_vad_ends(long, 1600)
    capped, ends = run_vad_ends(long, 1600, max_utterance_samples=80000)
    assert [(w.start, w.end) for w in capped] == [(w.start, w.end) for w in free]  # the same windows
    for u in {w.utterance for w in capped}:
        mine = [w for w in capped if w.utterance == u]
        assert mine[-1].end - mine[0].start <= 80000 + 40000 and mine[-1].final
    assert len(ends) > len({w.utterance for w in free})


def test_vad_short_tail_still_closes_its_utterance(utterances):
    seg = VadSegmenter(VadConfig(), 40000, 39000)
    seg.push(Chunk(0, utterances))
    wins = seg.flush()
    ends = seg.poll_ends()
    assert seg.short_tails >= 1 and ends
    last = {u: e for u, e in ends}
    assert any(e > max(w.end for w in wins if w.utterance == u) for u, e in last.items())  # the tail is in it

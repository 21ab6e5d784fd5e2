"""StreamSession driven directly: no threads of its own, a fake clock, fake services.

The session is the pure core of every front end (``ser-live``, ``ser-analyze``, each call
track): these tests push real (espeak-ng) speech through its VAD and check the windows,
utterances, drops, stale windows, flush and reset without a worker thread or the wall clock.
"""

from dataclasses import replace

import numpy as np
import pytest


from streamer.audio.io import load_audio
from streamer.core.services import BatchService, PlainStream, Services
from streamer.core.session import Partial, SessionSettings, StreamSession
from streamer.core.labels import LABELS
from streamer.core.messages import Chunk, UtteranceResult, WindowResult, Word

SR = 16000


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def probs(top: str, p: float = 0.7) -> dict[str, float]:
    rest = (1 - p) / (len(LABELS) - 1)
    return {k: (p if k == top else rest) for k in LABELS}


def audio_scores(windows: list[np.ndarray]) -> list[dict[str, float]]:
    """A stand-in audio model: loud windows are angry, others sad (a function of the samples)."""
    return [probs("angry" if np.abs(x).mean() > 0.05 else "sad") for x in windows]


def text_scores(texts: list[str]) -> list[dict[str, float]]:
    return [probs("happy", 0.9) if "fox" in t else probs("neutral") for t in texts]


class FakeAsr:
    """A recogniser that 'hears' one word per window (``fox``), and a gate it may close."""

    name = "fake"
    incremental = True

    def __init__(self, skipped: str | None = None) -> None:
        self.skipped = skipped
        self.pushed = 0
        self.skips: list[int] = []

    def push(self, chunk, in_speech):
        self.pushed += len(chunk.samples)

    def partial(self):
        return "fox" if self.pushed else ""

    def refresh_partial(self):
        return False

    def words_for(self, window):
        return [Word("fox", window.start, window.end, 0.9)]

    def end_utterance(self, end):
        return []

    def skip(self, window):
        self.skips.append(window.index)

    def text_skipped(self):
        return self.skipped

    def flush(self):
        pass

    def reset(self):
        self.pushed = 0


@pytest.fixture(scope="module")
def speech(speech_wav) -> np.ndarray:
    """Two utterances of espeak-ng speech with silences around and between them."""
    x = (load_audio(speech_wav) * 32767).astype(np.int16)
    z = lambda s: np.zeros(int(s * SR), np.int16)
    return np.concatenate([z(0.7), x, z(1.5), x, x, z(0.6)])


@pytest.fixture
def services():
    svc = Services(BatchService("audio", audio_scores), BatchService("text", text_scores), PlainStream)
    yield svc
    svc.audio.close()
    svc.text.close()


def push_all(session: StreamSession, audio: np.ndarray, chunk: int = 1600) -> None:
    for pos in range(0, len(audio), chunk):
        session.push(Chunk(pos, audio[pos:pos + chunk]))


def run(session: StreamSession, audio: np.ndarray, chunk: int = 1600, step_each: bool = True) -> list:
    """Push the audio, stepping the session after each chunk (as its worker would), then flush."""
    events = []
    for pos in range(0, len(audio), chunk):
        session.push(Chunk(pos, audio[pos:pos + chunk]))
        while step_each and session.step():
            pass
        events += session.poll()
    return events + session.flush()


def kinds(events, kind):
    return [e for e in events if isinstance(e, kind)]


def test_windows_and_utterances_follow_the_stream(speech, services):
    clock = FakeClock()
    s = StreamSession(SessionSettings(channel="caller"), FakeAsr(), services, clock=clock)
    events = run(s, speech)
    windows, utts = kinds(events, WindowResult), kinds(events, UtteranceResult)
    n = s.counters.snapshot()["windows"]
    assert n >= 3 and len(windows) == n == s.results
    assert [w.index for w in windows] == list(range(n))
    assert all(a.end <= b.start for a, b in zip(windows, windows[1:]))
    assert all(w.channel == "caller" for w in windows)
    # each window: the voice's opinion, the words' opinion, and their fusion
    for w in windows:
        assert [x.word for x in w.words] == ["fox"]
        assert max(w.text, key=w.text.get) == "happy" and w.text_skipped is None
        assert max(w.audio, key=w.audio.get) in ("angry", "sad")
        assert sum(w.fused.values()) == pytest.approx(1.0)
        assert w.latency_ms == 0.0  # the fake clock did not move
    # the utterances cover every window once, in order; 1.5 s of silence splits at least two
    assert len(utts) >= 2 and s.utterances == len(utts)
    assert [i for u in utts for i in u.windows] == list(range(n))
    assert all(a.end <= b.start for a, b in zip(utts, utts[1:]))
    assert any(isinstance(e, Partial) and e.text == "fox" for e in events)
    assert s.finished and s.status.samples == len(speech)


def test_latency_is_read_from_the_sessions_clock(speech, services):
    clock = FakeClock()
    s = StreamSession(SessionSettings(), FakeAsr(), services, clock=clock)
    push_all(s, speech)
    s.close()
    clock.advance(0.25)  # the worker comes to the windows a quarter of a second after they closed
    events = s.flush()
    windows = kinds(events, WindowResult)
    assert windows and all(w.latency_ms == pytest.approx(250.0) for w in windows)
    assert s.summary()["latency_ms"]["p50"] == pytest.approx(250.0)


def test_windows_left_waiting_past_max_lag_are_dropped_as_stale(speech, services):
    clock = FakeClock()
    asr = FakeAsr()
    s = StreamSession(SessionSettings(max_lag_s=5.0), asr, services, clock=clock)
    push_all(s, speech)
    s.close()
    clock.advance(5.01)
    events = s.flush()
    c = s.counters.snapshot()
    assert c["windows"] >= 3
    assert kinds(events, WindowResult) == [] and c["windows_stale"] == c["windows_dropped"] == c["windows"]
    assert asr.skips == list(range(c["windows"]))  # the recogniser keeps its place without the work
    assert kinds(events, UtteranceResult) == []  # an utterance with no analysed window has no result


def test_stale_windows_are_kept_when_the_input_blocks(speech, services):
    """A file read --fast blocks instead of dropping: a slow window is late, not stale."""
    clock = FakeClock()
    s = StreamSession(SessionSettings(max_lag_s=5.0, block_when_full=True), FakeAsr(), services, clock=clock)
    push_all(s, speech)
    s.close()
    clock.advance(60)
    events = s.flush()
    assert len(kinds(events, WindowResult)) == s.counters.snapshot()["windows"]
    assert s.counters.snapshot().get("windows_stale", 0) == 0


def test_a_full_lane_drops_the_oldest_windows_and_counts_them(speech, services):
    """Nobody steps while the audio comes in: the lane keeps the newest window; every window
    either has a result or is counted as dropped."""
    s = StreamSession(SessionSettings(queue_windows=1, queue_chunks=5), FakeAsr(), services, clock=FakeClock())
    events = run(s, speech, step_each=False)
    c = s.counters.snapshot()
    windows = kinds(events, WindowResult)
    assert c["windows"] >= 3
    assert len(windows) == 1 and c["windows_dropped"] == c["windows"] - 1
    assert windows[0].index == c["windows"] - 1  # the newest is kept
    assert c["asr_queue_dropped"] > 0


def test_results_do_not_depend_on_chunk_size(speech, services):
    def key(events):
        return [(e.index, e.start, e.end, e.label, round(e.confidence, 9)) for e in kinds(events, WindowResult)]

    ref = key(run(StreamSession(SessionSettings(), FakeAsr(), services, clock=FakeClock()), speech, 1600))
    assert ref
    for chunk in (160, 4000, 33333):
        assert key(run(StreamSession(SessionSettings(), FakeAsr(), services, clock=FakeClock()), speech, chunk)) == ref


def test_reset_starts_the_stream_over(speech, services):
    s = StreamSession(SessionSettings(), FakeAsr(), services, clock=FakeClock())
    first = run(s, speech)
    s.reset()
    assert not s.finished and s.results == 0 and s.status.samples == 0 and s.poll() == []
    again = run(s, speech)
    strip = lambda evs: [(e.index, e.start, e.end, e.label) for e in kinds(evs, WindowResult)]
    assert strip(again) == strip(first) and s.results == len(strip(first))


def test_a_closed_text_gate_leaves_the_text_branch_without_an_opinion(speech, services):
    s = StreamSession(SessionSettings(), FakeAsr(skipped="language"), services, clock=FakeClock())
    events = run(s, speech)
    windows, utts = kinds(events, WindowResult), kinds(events, UtteranceResult)
    assert windows and all(w.text is None and w.text_skipped == "language" for w in windows)
    assert all(w.fused == pytest.approx(w.audio) for w in windows)  # fusion uses the voice alone
    assert utts and all(u.text is None and u.text_skipped == "language" for u in utts)


def test_a_failing_audio_model_is_counted_and_the_stream_goes_on(speech):
    def broken(xs):
        raise RuntimeError("model failed")

    svc = Services(BatchService("audio", broken), None, PlainStream)
    try:
        s = StreamSession(SessionSettings(), FakeAsr(), svc, clock=FakeClock())
        events = run(s, speech)
        c = s.counters.snapshot()
        assert kinds(events, WindowResult) == [] and c["emotion_errors"] == c["windows"] >= 3
        assert s.finished
    finally:
        svc.audio.close()


def test_no_recogniser_gives_voice_only_windows(speech, services):
    s = StreamSession(replace(SessionSettings(), channel=None), None, services, clock=FakeClock())
    windows = kinds(run(s, speech), WindowResult)
    assert windows and all(w.words == () and w.text is None for w in windows)

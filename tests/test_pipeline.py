"""The threaded pipeline with stand-in models (fast): drops are counted and never fatal,
a file read --fast loses nothing, results do not depend on chunk size, stop is clean."""

import gc
import threading
import time
import weakref

import numpy as np
import pytest

from streamer.audio.io import load_audio
from streamer.core.services import PlainStream, services_for
from streamer.core.labels import LABELS
from streamer.core.fusion import FusionConfig
from streamer.core.messages import Chunk, UtteranceResult, Word
from streamer.core.session import SessionSettings
from streamer.runtime.pipeline import Pipeline
from streamer.ui.state import LiveState

SR = 16000


class ArraySource:
    """Chunks of an array, as fast as asked (``pace`` seconds between chunks)."""

    def __init__(self, x, chunk, pace=0.0):
        self.x, self.chunk, self.pace, self.pos = x, chunk, pace, 0
        self.name, self.error, self.dropped_samples = "array", None, 0

    def start(self):
        pass

    @property
    def done(self):
        return self.pos >= len(self.x)

    def read(self, timeout=0.1):
        if self.done:
            return None
        if self.pace:
            time.sleep(self.pace)
        c = Chunk(self.pos, self.x[self.pos: self.pos + self.chunk])
        self.pos += len(c.samples)
        return c

    def stop(self):
        pass


class StubAudio:
    def predict(self, x):
        level = float(np.sqrt(np.mean(x ** 2)))
        p = np.full(len(LABELS), 0.1)
        p[int(level * 1000) % len(LABELS)] += 0.3
        return dict(zip(LABELS, p / p.sum()))

    max_batch = 8

    def score_batch(self, xs):
        return [self.predict(x) for x in xs]

    def stream_factory(self):
        return PlainStream


class StubText:
    def predict(self, text):
        p = np.full(len(LABELS), 0.1)
        p[len(text) % len(LABELS)] += 0.5
        return dict(zip(LABELS, p / p.sum()))

    def predict_batch(self, texts):
        return [self.predict(t) for t in texts]


class StubAsr:
    """One word per window, named after the window's start; optionally slow."""

    name = "stub"
    incremental = True  # a slow push() must hold the reader's chunks up (drops counted)

    def __init__(self, delay=0.0):
        self.delay = delay

    def push(self, chunk, in_speech):
        if self.delay:
            time.sleep(self.delay)

    def partial(self):
        return ""

    def refresh_partial(self):
        return False

    def words_for(self, w):
        return [Word(f"w{w.start}", w.start, w.start + 1000, 1.0)]

    def end_utterance(self, end):
        return []

    def skip(self, window):
        pass

    def text_skipped(self):
        return None

    def flush(self):
        pass

    def reset(self):
        pass


@pytest.fixture(scope="module")
def speech(speech_wav):
    x = (load_audio(speech_wav) * 32767).astype(np.int16)
    z = np.zeros(SR, np.int16)
    return np.concatenate([z, x, z, x, x, z, x, z] * 3)


def run(x, chunk, settings, asr=None, pace=0.0, stop=None, utterances=None):
    """Window results and the summary; utterance results go to ``utterances`` when given."""
    results, utts = [], []
    pipe = Pipeline(settings, ArraySource(x, chunk, pace), asr or StubAsr(), services_for(StubAudio(), StubText()),
                    [lambda r: (utts if isinstance(r, UtteranceResult) else results).append(r)], LiveState("array", {}))
    summary = pipe.run(stop or threading.Event())
    if utterances is not None:
        utterances.extend(utts)
    return results, summary


def test_results_do_not_depend_on_chunk_size(speech):
    s = SessionSettings(block_when_full=True, fusion=FusionConfig(mode="confidence", min_confidence=0.3))
    ref_utts = []
    ref, summary = run(speech, 1600, s, utterances=ref_utts)
    assert len(ref) >= 6 and summary["utterances"] == len(ref_utts) >= 3
    for chunk in (160, 4321, 16000):
        utts = []
        got, summary = run(speech, chunk, s, utterances=utts)
        assert [(r.start, r.end, r.transcript, r.label) for r in got] == [(r.start, r.end, r.transcript, r.label) for r in ref]
        assert [r.rolling for r in got] == [r.rolling for r in ref]
        assert [(u.start, u.end, u.windows, u.transcript, u.fused) for u in utts] == \
            [(u.start, u.end, u.windows, u.transcript, u.fused) for u in ref_utts]
    for r in ref:  # the window's own result; the rolling one beside it
        assert r.label == max(r.fused, key=r.fused.get) and r.confidence == r.fused[r.label]
        assert r.rolling_label == max(r.rolling, key=r.rolling.get)
        assert r.uncertain == (r.confidence < 0.3)
    assert sorted(i for u in ref_utts for i in u.windows) == [r.index for r in ref]
    for u in ref_utts:  # the stand-in recogniser's words of its windows, the text model on all of them
        mine = [r for r in ref if r.index in u.windows]
        assert u.transcript == " ".join(r.transcript for r in mine) and u.text == StubText().predict(u.transcript)
    starts = [r.start for r in ref]
    assert starts == sorted(starts) and all(a.end <= b.start for a, b in zip(ref, ref[1:]))


def test_full_queues_drop_oldest_and_count_not_fatal(speech):
    s = SessionSettings(queue_chunks=4, queue_windows=1, words_timeout_s=2.0)
    results, summary = run(speech, 1600, s, asr=StubAsr(delay=0.01))
    c = summary["counters"]
    assert c.get("asr_queue_dropped", 0) > 0  # the slow recogniser could not keep up
    assert summary["windows"] == len(results) and results
    assert len(results) + c.get("windows_dropped", 0) == c["windows"]  # every window analysed or counted
    for r in results:
        assert abs(sum(r.fused.values()) - 1) < 1e-9


def test_blocking_mode_loses_nothing(speech):
    s = SessionSettings(queue_chunks=4, queue_windows=1, block_when_full=True)
    results, summary = run(speech, 1600, s, asr=StubAsr(delay=0.002))
    c = summary["counters"]
    assert not c.get("asr_queue_dropped") and not c.get("windows_dropped") and len(results) == c["windows"]
    assert all(r.words for r in results)


def test_stop_mid_stream_is_clean(speech):
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    results, summary = run(speech, 1600, SessionSettings(), pace=0.02, stop=stop)
    assert summary["stream_s"] < len(speech) / SR and summary["windows"] == len(results)
    assert summary["counters"].get("threads_not_joined", 0) == 0


def test_windows_too_late_to_matter_are_dropped_and_counted(speech):
    """A worker far behind skips windows older than max_lag_s instead of queueing latency."""
    s = SessionSettings(max_lag_s=0.5, words_timeout_s=2.0)
    results, summary = run(speech, 1600, s, asr=StubAsr(delay=0.01))
    c = summary["counters"]
    assert c.get("windows_stale", 0) > 0 and c["windows_dropped"] >= c["windows_stale"]
    assert len(results) + c["windows_dropped"] == c["windows"]  # every window analysed or counted
    # (how late the analysed ones were is the wall clock's: tests/test_session.py checks the
    # bound itself with a fake clock)
    blocking = SessionSettings(max_lag_s=0.5, block_when_full=True)
    results, summary = run(speech, 1600, blocking, asr=StubAsr(delay=0.002))
    assert not summary["counters"].get("windows_stale") and len(results) == summary["counters"]["windows"]


class LevelStream:
    """A stand-in stream side of an adapting audio model: a window's answer depends on the
    levels of the stream's earlier windows (as the pooled model's running statistics do)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.seen = []

    def probs(self, level):
        prior = float(np.mean(self.seen)) if self.seen else 0.0
        self.seen.append(level)
        p = np.full(len(LABELS), 0.1)
        p[int(abs(level - prior) * 1e4) % len(LABELS)] += 0.3
        return dict(zip(LABELS, p / p.sum()))


class AdaptingStub:
    """Stateless scores (the window's level) plus a per-stream side."""

    max_batch = 8

    def score_batch(self, xs):
        return [float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2))) for x in xs]

    def stream_factory(self):
        return LevelStream


class ScrambledService:
    """An audio service whose answers come back out of order (as from several Ray replicas)."""

    def __init__(self, model, seed=0):
        import random
        from concurrent.futures import ThreadPoolExecutor

        self.model, self.rng, self.pool = model, random.Random(seed), ThreadPoolExecutor(4)
        self.submitted, self.done = [], []

    def submit(self, x, stream=None):
        delay = self.rng.random() * 0.02

        def work():
            time.sleep(delay)
            self.done.append(id(x))
            return self.model.score_batch([x])[0]

        from streamer.core.services import TimedFuture

        self.submitted.append(id(x))
        out = TimedFuture()  # what a service's submit gives (the Service protocol)
        self.pool.submit(work).add_done_callback(lambda f: out.set_result(f.result()))
        return out

    def attach(self):
        pass

    def detach(self):
        pass


def test_a_streams_answers_do_not_depend_on_the_order_the_service_answers_in(speech):
    """The stream's state lives in the session and takes the scores in window order, so an
    out-of-order service (several replicas, batches) gives the same answers as an in-order one."""
    from streamer.core.services import Services, services_for

    s = SessionSettings(block_when_full=True)

    def answers(services):
        out = []
        pipe = Pipeline(s, ArraySource(speech, 1600), StubAsr(), services,
                        [lambda r: out.append(r) if not isinstance(r, UtteranceResult) else None],
                        LiveState("array", {}))
        pipe.run(threading.Event())
        return [r.audio for r in out]

    model = AdaptingStub()
    ref = answers(services_for(model, None))
    scrambled = ScrambledService(model)
    got = answers(Services(scrambled, None, model.stream_factory()))
    assert len(ref) >= 6 and got == ref
    assert scrambled.done != scrambled.submitted  # the service did answer out of order
    assert len({tuple(a.values()) for a in ref}) > 1


def test_a_finished_pipeline_is_freed_without_the_garbage_collector(speech):
    """No reference cycle keeps a finished stream's session alive: a server frees each ended
    call's analysers (and their buffers) at once, not at the collector's next full pass."""
    settings = SessionSettings(fusion=FusionConfig())
    pipe = Pipeline(settings, ArraySource(speech[: SR * 6], 320), StubAsr(), services_for(StubAudio(), StubText()),
                    [lambda r: None], LiveState("array", {}))
    gc.collect()
    gc.disable()
    try:
        pipe.run(threading.Event())
        held = {name: weakref.ref(o) for name, o in
                (("pipeline", pipe), ("session", pipe.session), ("lane", pipe.session.lane), ("vad", pipe.session.vad))}
        del pipe
        assert [name for name, ref in held.items() if ref() is not None] == []
    finally:
        gc.enable()

"""Shared inference services: one object per model per process, batching across streams.

A service is stateless: what a stream carries from window to window (the audio model's
running statistics of the stream's voice) lives in the stream's own session, which gets it
from :attr:`Services.audio_stream` and feeds it the service's answers in the stream's order.
So a stream's answers do not depend on which batch, thread or Ray replica computed them.

A :class:`BatchService` runs a model's batch entry point on a worker thread of its own.
A request is taken at once when the worker is free; requests that arrive while a batch runs
go together in the next one (up to ``max_batch``). When more than one stream uses the
service, the worker waits at most ``max_wait_s`` for company before a batch; a stream alone
never waits. A batch that fails is run again item by item, so one bad input fails only its
own request.

Requests are taken fairly across streams (:func:`fair_order`): each stream's next request in
turn, a stream with nothing else waiting first. So a stream that sends a burst of windows (a
client sending a recording ahead of real time) delays another stream's window by at most one
batch, not by the whole burst.

>>> svc = BatchService("double", lambda xs: [2 * x for x in xs])
>>> svc(21), svc.submit(4).result(timeout=5)
(42, 8)
>>> svc.close()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


class TimedFuture(Future):
    """A service's answer to come, and ``compute_ms``: the time its batch (or round trip)
    took, for the window's timings; None until a service sets it.

    >>> f = TimedFuture(); f.compute_ms is None
    True
    """

    def __init__(self) -> None:
        super().__init__()
        self.compute_ms: float | None = None


def fair_order(streams: Sequence[Hashable], served: Mapping[Hashable, int] | None = None) -> list[int]:
    """Indices of requests (given their streams, oldest first) in the order to serve them:
    round by round, each stream's next request; within a round, the stream served longest ago
    (``served``: the turn each stream was last served; never: first), then the oldest.

    >>> fair_order(["a", "a", "a", "b", "a", "c", "b"])
    [0, 3, 5, 1, 6, 2, 4]
    >>> fair_order(["a", "a", "b"], served={"a": 7})  # b waits behind a's burst, but goes next
    [2, 0, 1]
    >>> fair_order([None, None])  # one stream: first come, first served
    [0, 1]
    """
    served = served or {}
    first: dict[Hashable, int] = {}
    for i, s in enumerate(streams):
        first.setdefault(s, i)
    rank: dict[Hashable, int] = {}
    keys = []
    for i, s in enumerate(streams):
        keys.append((rank.get(s, 0), served.get(s, -1), first[s], i))
        rank[s] = rank.get(s, 0) + 1
    return [k[-1] for k in sorted(keys)]


class BatchService(Generic[In, Out]):
    def __init__(self, name: str, run_batch: Callable[[list[In]], Sequence[Out]], max_batch: int = 8,
                 max_wait_s: float = 0.003, clock: Callable[[], float] = time.perf_counter) -> None:
        self.name = name
        self.clock = clock  # seconds, for each batch's compute time
        self.run_batch = run_batch
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max_wait_s
        self.clients = 0  # streams using the service (they wait for company only when > 1)
        self._pending: list[tuple[In, TimedFuture, Hashable]] = []  # oldest first
        self._served: dict[Hashable, int] = {}  # the turn each stream with requests waiting was last served
        self._turn = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # statistics
        self.items = 0
        self.largest = 0

    # --- clients ---------------------------------------------------------------------------
    def attach(self) -> None:
        with self._cond:
            self.clients += 1

    def detach(self) -> None:
        with self._cond:
            self.clients = max(0, self.clients - 1)

    def submit(self, item: In, stream: Hashable = None) -> TimedFuture:
        """A future of ``item``'s answer; ``stream`` names the stream it is for (served fairly)."""
        fut = TimedFuture()
        with self._cond:
            if self._closed:
                raise RuntimeError(f"the {self.name} service is closed")
            self._pending.append((item, fut, stream))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=f"service {self.name}", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return fut

    def __call__(self, item: In) -> Out:
        return self.submit(item).result()

    @property
    def depth(self) -> int:
        """Requests waiting (for /metrics)."""
        with self._cond:
            return len(self._pending)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5.0)

    # --- the worker ------------------------------------------------------------------------
    def _take(self) -> list[tuple[In, Future]] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None
            if self.clients > 1 and len(self._pending) < self.max_batch and self.max_wait_s > 0:
                self._cond.wait_for(lambda: len(self._pending) >= self.max_batch or self._closed, self.max_wait_s)
            order = fair_order([s for _, _, s in self._pending], self._served)[:self.max_batch]
            batch = [self._pending[i] for i in order]
            taken = set(order)
            self._pending = [p for i, p in enumerate(self._pending) if i not in taken]
            self._turn += 1
            waiting = {s for _, _, s in self._pending}
            # a stream with nothing left waiting is forgotten: its next request goes first
            self._served = {s: t for s, t in self._served.items() if s in waiting}
            self._served.update((s, self._turn) for _, _, s in batch if s in waiting)
            return [(x, f) for x, f, _ in batch]

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            batch = [(x, f) for x, f in batch if f.set_running_or_notify_cancel()]
            if not batch:
                continue
            t0 = self.clock()
            try:
                outs = list(self.run_batch([x for x, _ in batch]))
                if len(outs) != len(batch):
                    raise RuntimeError(f"{self.name}: {len(outs)} results for {len(batch)} inputs")
                ms = (self.clock() - t0) * 1e3
                for (_, f), out in zip(batch, outs):
                    f.compute_ms = ms  # the batch's time, for the window's timings
                    f.set_result(out)
            except Exception as exc:
                if len(batch) == 1:
                    batch[0][1].set_exception(exc)
                else:
                    log.debug("%s: a batch of %d failed (%s); running each alone", self.name, len(batch), exc)
                    for x, f in batch:
                        try:
                            f.set_result(self.run_batch([x])[0])
                        except Exception as one:
                            f.set_exception(one)
            self.batches += 1
            self.items += len(batch)
            self.largest = max(self.largest, len(batch))


class AudioStream(Protocol):
    """A stream's side of the audio model: the service's score of each window, in the
    stream's order, becomes that window's probabilities (``streamer.audio.pooled.PooledStream``
    adapts to the stream; :class:`PlainStream` passes them through)."""

    def probs(self, scored) -> dict[str, float]: ...

    def reset(self) -> None: ...


class PlainStream:
    """The stream side of a model without per-stream state: a window's score is its answer."""

    def probs(self, scored: dict[str, float]) -> dict[str, float]:
        return scored

    def reset(self) -> None:
        pass


class AudioModel(Protocol):
    """What the audio service needs of an audio emotion model (``streamer.audio``): a batch
    of windows (float32, 16 kHz) scored statelessly, and a factory of the stream side that
    turns a stream's scores, in its order, into probabilities; ``digest`` names the weights
    (a short hash, for the log's ``session_start``); ``max_batch`` caps the service's batches."""

    digest: str
    max_batch: int  # the most windows worth scoring in one call (1: a batch only holds answers back)

    def score_batch(self, audios: Sequence) -> Sequence: ...

    def stream_factory(self) -> Callable[[], AudioStream]: ...


class TextModel(Protocol):
    """What the text service needs of a text emotion model (``streamer.text``)."""

    def predict_batch(self, texts: Sequence[str]) -> Sequence: ...


class Service(Protocol):
    """One shared model behind requests: :class:`BatchService` here, a Ray Serve deployment's
    handle in a cluster (``streamer.serve.cluster.models``)."""

    def submit(self, item, stream: Hashable = None) -> TimedFuture: ...

    def __call__(self, item): ...

    @property
    def depth(self) -> int: ...


class InferenceServices(Protocol):
    """What a :class:`~streamer.core.session.StreamSession` needs: the audio and text services
    and a new stream's side of the audio model. :class:`Services` is this process's;
    ``RayServices`` (``streamer.serve.cluster.models``) is the cluster's."""

    audio: Service
    text: Service | None

    def audio_stream(self) -> AudioStream: ...

    def attach(self) -> None: ...

    def detach(self) -> None: ...


@dataclass
class Services:
    """The process's shared inference: the audio emotion model and the text model (None: no
    text branch). Speech recognition is shared inside the engines: one Whisper model whose
    decodes are batched across streams (``streamer.asr.decode.Batcher``), or one Vosk model
    with a recogniser per stream."""

    audio: BatchService  # window samples -> the model's score (``score_batch``)
    text: BatchService | None
    audio_stream: Callable[[], AudioStream]  # a new stream's side of the audio model
    models: tuple = ()  # the model objects served, kept alive with the services

    def attach(self) -> None:
        for s in (self.audio, self.text):
            if s is not None:
                s.attach()

    def detach(self) -> None:
        for s in (self.audio, self.text):
            if s is not None:
                s.detach()


_shared: dict[tuple[int, int], Services] = {}
_lock = threading.Lock()


def services_for(audio_model: AudioModel, text_model: TextModel | None, max_batch: int = 8,
                 max_wait_s: float = 0.003) -> Services:
    """The one :class:`Services` of these model objects in this process (made on first use)."""
    key = (id(audio_model), id(text_model))
    with _lock:
        svc = _shared.get(key)
        if svc is None:
            audio_batch = min(max_batch, audio_model.max_batch)
            svc = Services(BatchService("audio", audio_model.score_batch, audio_batch, max_wait_s),
                           None if text_model is None else BatchService("text", text_model.predict_batch, max_batch, max_wait_s),
                           audio_model.stream_factory(), (audio_model, text_model))
            _shared[key] = svc
        return svc

"""The bus's interface and what both buses share: options, errors, times, followers."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

log = logging.getLogger(__name__)

Probe = Callable[[], int]  # samples pushed into the call so far (any monotonic count of its audio)
RowFn = Callable[[], dict]  # the call's /api/calls row
Emit = Callable[[dict], None]  # hands a bus-made event about a local call back to its owner


class BusError(Exception):
    """The results bus cannot do what was asked (Redis unreachable, too slow, refused)."""


class BusDown(BusError):
    """Redis could not be reached or did not answer in time: an outage, worth waiting out
    (unlike a refusal, which trying again would not change)."""


@dataclass(frozen=True)
class BusOptions:
    """Where the bus lives and how it keeps time.

    >>> BusOptions(desk="east").stream
    'ser:events:east'
    >>> BusOptions(ttl_s=1.0, beat_s=1.0)
    Traceback (most recent call last):
    ...
    ValueError: bus: beat_s (1.0) must be under ttl_s (1.0), or a live call's heartbeat lapses between beats
    """

    url: str = ""  # redis://HOST:PORT/DB; empty: the in-process LocalBus
    desk: str = "default"  # one stream (and one set of call keys) per desk
    prefix: str = "ser"
    maxlen: int = 50_000  # events kept in the stream (MAXLEN ~; about 1.7 KB each: 85 MB)
    ttl_s: float = 5.0  # a heartbeat lapses this long after its replica stopped
    beat_s: float = 1.5  # heartbeats (and the calls' rows) are written this often
    watch_s: float = 1.0  # lost heartbeats are looked for this often
    sample_s: float = 0.2  # the calls' audio counters are read this often (gap_s precision)
    keep_ended_s: float = 1800.0  # ended and lost calls stay listed this long
    timeout_s: float = 2.0  # every Redis command's deadline
    block_s: float = 1.0  # a follower's XREAD BLOCK
    queue: int = 10_000  # events waiting for Redis before the oldest are dropped
    replica: str = ""  # this gateway's name in the keys; empty: host-pid-random

    def __post_init__(self) -> None:
        for name in ("ttl_s", "beat_s", "watch_s", "sample_s", "timeout_s", "block_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"bus: {name} must be above 0, not {getattr(self, name)}")
        if self.beat_s >= self.ttl_s:
            raise ValueError(f"bus: beat_s ({self.beat_s}) must be under ttl_s ({self.ttl_s}), or a live call's "
                             "heartbeat lapses between beats")
        if self.maxlen < 100 or self.queue < 1 or self.keep_ended_s < 0:
            raise ValueError("bus: maxlen must be at least 100, queue at least 1, keep_ended_s at least 0")
        if not self.desk or ":" in self.desk or not self.prefix:
            raise ValueError(f"bus: a desk name without ':' and a prefix are needed (desk {self.desk!r})")

    @property
    def stream(self) -> str:
        return f"{self.prefix}:events:{self.desk}"

    def call_key(self, call_id: str) -> str:
        return f"{self.prefix}:call:{self.desk}:{call_id}"

    def hb_key(self, call_id: str) -> str:
        return f"{self.prefix}:hb:{self.desk}:{call_id}"

    @property
    def index(self) -> str:
        return f"{self.prefix}:calls:{self.desk}"

    @property
    def active(self) -> str:
        return f"{self.prefix}:active:{self.desk}"




def iso(epoch: float | None) -> str | None:
    """An epoch time as ISO 8601 in UTC (None stays None).

    >>> iso(0.0)
    '1970-01-01T00:00:00.000+00:00'
    """
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)


def gap_seconds(last_audio: float | None, first_audio: float | None) -> float | None:
    """Audio lost between two segments: from the last audio of one to the first of the next.

    >>> gap_seconds(100.0, 103.25), gap_seconds(None, 5.0), gap_seconds(10.0, 9.0)
    (3.25, None, 0.0)
    """
    if last_audio is None or first_audio is None:
        return None
    return round(max(0.0, first_audio - last_audio), 3)


class HeldCall:
    """What the bus knows of a call held by this process."""

    def __init__(self, call_id: str, segment: int, previous: dict | None, probe: Probe | None, row: RowFn | None,
                 emit: Emit | None, head: dict) -> None:
        self.call_id, self.segment, self.previous = call_id, segment, previous
        self.probe, self.row_fn, self.emit = probe, row, emit
        self.head = head  # source, tracks, meta: the row's base when the owner gives no row function
        self.counts: collections.Counter = collections.Counter()
        self.last: dict[str, dict] = {}
        self.state = "active"
        self.error: str | None = None
        self.started = time.time()
        self.ended: float | None = None
        self.pushed = 0
        self.audio_at: float | None = None  # epoch of the last audio seen
        self.first_audio: float | None = None
        self.gap_s: float | None = None
        self.earlier: list[dict] = []  # the segments before this one (RedisBus)
        self.dirty = True

    def sample(self, now: float) -> dict | None:
        """Read the audio counter; returns a ``call_resumed`` event at a later segment's first audio."""
        if self.probe is None or self.state != "active":
            return None
        try:
            n = int(self.probe())
        except Exception:  # the call's internals went away: it is ending
            return None
        if n == self.pushed:
            return None
        self.pushed, self.audio_at, self.dirty = n, now, True
        if self.first_audio is not None:
            return None
        self.first_audio = now
        if self.previous is None:
            return None
        self.gap_s = gap_seconds(self.previous.get("audio_at"), now)
        return {"type": "call_resumed", "call_id": self.call_id, "track": None, "segment": self.segment,
                "previous_segment": self.previous.get("segment"), "previous_state": self.previous.get("state"),
                "gap_s": self.gap_s, "last_audio": iso(self.previous.get("audio_at")), "first_audio": iso(now),
                "time": iso(now)}

    def note(self, event: dict) -> None:
        kind = event.get("type")
        self.counts[kind] += 1
        if kind == "window" and event.get("track"):
            self.last[str(event["track"])] = event
        elif kind == "error" and not self.error:
            self.error = event.get("error")
        elif kind == "call_end":
            self.state, self.ended = "ended", time.time()
        self.dirty = True

    def row(self) -> dict:
        if self.row_fn is not None:
            try:
                base = dict(self.row_fn())
            except Exception:  # the owner's row failed: ours still says what the bus knows
                log.exception("call %s: its row failed", self.call_id)
                base = {}
        else:
            base = {"call_id": self.call_id, "source": self.head.get("source"), "tracks": self.head.get("tracks"),
                    "started": iso(self.started), "ended": iso(self.ended), "state": self.state, "error": self.error,
                    "windows": self.counts["window"], "utterances": self.counts["utterance"], "last": self.last}
        base.setdefault("call_id", self.call_id)
        return base

    def segment_info(self) -> dict:
        return {"segment": self.segment, "started": iso(self.started), "first_audio": iso(self.first_audio),
                "last_audio": iso(self.audio_at), "ended": iso(self.ended), "state": self.state, "gap_s": self.gap_s}


class Follower:
    """One reader of the bus: ``await get(timeout)`` gives the next event, or None after
    ``timeout`` seconds or once closed. Raises BusError when the bus is gone."""

    dropped = 0

    async def get(self, timeout: float | None = None) -> dict | None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def __aiter__(self):
        return self

    async def __anext__(self) -> dict:
        ev = await self.get()
        if ev is None:
            raise StopAsyncIteration
        return ev


class Bus:
    """The interface both buses share (see the module's docstring)."""

    kind = "?"

    def __init__(self, opts: BusOptions | None = None) -> None:
        self.opts = opts or BusOptions()
        self.replica = self.opts.replica or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.calls: dict[str, HeldCall] = {}  # this process's calls (ended ones leave at once)
        self.gone: dict[str, int] = {}  # call id -> segment: calls of ours the bus marked lost
        self.on_lost: Callable[[str], None] | None = None  # told when a call of ours was marked lost or taken over
        self.counters: collections.Counter = collections.Counter()
        self.followers: set[Follower] = set()  # this process's readers, closed with the bus
        self._tasks: list[asyncio.Task] = []
        self._started = False
        self.closing = False  # close() has begun: what fails now is the bus going, not Redis

    # --- life -----------------------------------------------------------------------------
    async def start(self) -> "Bus":
        if not self._started:
            self._started = True
            self._tasks.append(asyncio.get_running_loop().create_task(self._sampler(), name="bus audio sampler"))
        return self

    def keep_task(self, task: asyncio.Task) -> None:
        """A task of the bus's own (a reader, a writer): cancelled when the bus closes."""
        self._tasks.append(task)

    async def close(self) -> None:
        self.closing = True
        for f in list(self.followers):
            f.close()
        await _cancel(self._tasks)
        self._tasks.clear()
        self._started = False

    async def __aenter__(self) -> "Bus":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _sampler(self) -> None:
        while True:
            await asyncio.sleep(self.opts.sample_s)
            self.sample()

    def sample(self) -> None:
        """Read every local call's audio counter (the sampler does this every ``sample_s``)."""
        now = time.time()
        for c in list(self.calls.values()):
            ev = c.sample(now)
            if ev is None:
                continue
            log.info("call %s: segment %d resumed after %s s of lost audio", c.call_id, c.segment, ev["gap_s"])
            try:
                if c.emit is not None:
                    c.emit(ev)  # the owner logs it and publishes it back through publish()
                else:
                    self.publish(ev)
            except Exception:  # one call's owner failing must not stop the sampler of every call
                log.exception("call %s: handing over call_resumed failed", c.call_id)

    # --- calls ----------------------------------------------------------------------------
    async def open_call(self, call_id: str, source: str = "", tracks: list[str] | None = None, meta: dict | None = None,
                        probe: Probe | None = None, row: RowFn | None = None, emit: Emit | None = None) -> dict:
        """Register a call this process now holds; returns ``{"segment": n, "previous": {...} | None}``
        (``previous``: the last segment's ``segment``, ``state``, ``audio_at``, ``owner``). Raises BusError."""
        if call_id in self.calls and self.calls[call_id].state == "active":
            raise BusError(f"call {call_id} is already open on this replica")
        segment, previous = await self._open(call_id)
        self.gone.pop(call_id, None)
        self.calls[call_id] = HeldCall(call_id, segment, previous, probe, row, emit,
                                     {"source": source, "tracks": list(tracks or []), "meta": meta or {}})
        return {"segment": segment, "previous": previous}

    def publish(self, event: dict) -> dict:
        """Send one event (never blocks); returns it as sent. Events of a call this process
        holds get its ``segment``. The events of a call the bus gave to another replica
        (:attr:`gone`: a reconnect elsewhere took it over) are not sent (counted)."""
        cid = str(event.get("call_id") or "")
        c = self.calls.get(cid)
        if c is not None:
            event = {**event, "segment": c.segment}
            c.note(event)
        elif cid in self.gone:
            self.counters["events_after_loss"] += 1
            return {**event, "segment": self.gone[cid]}
        self.counters["published"] += 1
        self._send(event, c)
        if c is not None and c.state == "ended":
            self.calls.pop(c.call_id, None)
        return event

    def follow(self, call_id: str | None = None, since: str | None = None) -> Follower:  # pragma: no cover
        """A reader from ``since`` (an event's ``bus_id``; RedisBus only) or from now."""
        raise NotImplementedError

    async def subscribe(self, call_id: str | None = None) -> Follower:  # pragma: no cover
        """A reader from now, sharing one reader of the bus with the others (/events)."""
        raise NotImplementedError

    async def listing(self, local: list[dict] | None = None) -> list[dict]:  # pragma: no cover
        raise NotImplementedError

    async def row(self, call_id: str) -> dict | None:
        rows = await self.listing()
        return next((r for r in rows if r.get("call_id") == call_id), None)

    async def _open(self, call_id: str) -> tuple[int, dict | None]:  # pragma: no cover
        raise NotImplementedError

    def _send(self, event: dict, c: HeldCall | None) -> None:  # pragma: no cover
        raise NotImplementedError

    def stats(self) -> dict:
        return dict(self.counters)

    def health(self) -> dict:
        """Whether the bus is reachable and what waits for it (``/healthz``, ``/metrics``, the
        desk's ``bus`` status): ``state`` is ``up``, ``down`` (Redis unreachable: events are
        kept, up to ``queue``) or ``catching_up`` (back; what was kept is being written).
        The in-process bus is always up."""
        return {"kind": self.kind, "state": "up", "since": None, "down_s": 0.0, "error": None, "waiting": 0,
                "dropped": 0, "outage_dropped": 0, "lost": 0, "errors": 0, "outages": 0, "reregistered": 0,
                "reclaimed": 0}


async def _cancel(tasks: list[asyncio.Task], tries: int = 5, wait_s: float = 1.0) -> None:
    """Cancel the bus's tasks and wait for them, ``tries`` times at most: before Python 3.12
    ``asyncio.wait_for`` can swallow a cancellation that lands as its command completes, and a
    task that missed it is cancelled again rather than waited for forever."""
    for _ in range(tries):
        left = [t for t in tasks if not t.done()]
        if not left:
            break
        for t in left:
            t.cancel()
        await asyncio.wait(left, timeout=wait_s)
    if any(not t.done() for t in tasks):
        log.error("results bus: %d task(s) would not stop", sum(not t.done() for t in tasks))
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()  # retrieved: a task that failed while stopping says nothing more


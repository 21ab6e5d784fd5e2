"""The results bus: where every call's events go, and where the desk reads them back.

Two implementations of one interface (:class:`Bus`):

- :class:`LocalBus`: in the process, what a single ser-serve is. Events fan out to the
  process's own followers; ``/api/calls`` rows come from the process's own calls.
- :class:`RedisBus`: Redis Streams (redis-py's asyncio client), so that one desk sees the
  calls of every gateway replica on every node. Keys, for ``prefix`` ``ser`` and desk ``D``:

  ============================ =========================================================
  ``ser:events:D``             the stream: one entry per event (``XADD ... MAXLEN ~ N``),
                               fields ``type``, ``call_id``, ``json`` (the event)
  ``ser:call:D:<id>``          a hash per call: ``state`` (active, ended, lost),
                               ``segment``, ``owner`` (the replica), ``row`` (its
                               ``/api/calls`` row, JSON), ``segments`` (JSON), ``audio_at``
                               (epoch of its last audio); expires ``keep_ended_s`` after
                               the call ended or was lost
  ``ser:calls:D``              a sorted set of the call ids (score: last change, epoch)
  ``ser:active:D``             a set of the call ids whose state is active
  ``ser:hb:D:<id>``            the heartbeat: ``owner:segment``, ``PX ttl``, refreshed
                               every ``beat_s`` by the replica that holds the call
  ============================ =========================================================

**Lost calls.** Every gateway runs a watcher: about once every ``watch_s`` it looks at the
active calls, and a call whose heartbeat key has expired is marked ``lost`` and announced
with one ``call_lost`` event. Both happen in one Lua script that checks the heartbeat, the
state and the segment first, so any number of watchers announce a loss exactly once (no
lock needed). From a replica's death to ``call_lost``: at most ``ttl_s + watch_s`` (6 s
with the defaults).

**Segments.** A call id that comes back (a reconnect; Twilio's ``callSid``) after its call
ended or was lost continues as segment 2, 3, ... of the same call: every event carries
``segment``, the row lists the segments, and once the new segment's first audio arrives a
``call_resumed`` event says how much audio was lost in between: ``gap_s``, from the last
audio the bus saw for the previous segment to the first audio of the new one. The last
audio is written with each heartbeat, so ``gap_s`` errs high by at most ``beat_s``, never
low. A reconnect while the old segment still looks alive (its replica died a moment ago)
takes the call over: the old segment is announced lost first.

**Redis going away** (:mod:`streamer.serve.bus.outage`). Every Redis command has a deadline
(``timeout_s``), so nothing hangs, and every command's outcome feeds one up/down state: one log
line when Redis goes, one when it is back, ``/healthz`` ``degraded`` and ``/metrics``
(``ser_serve_bus_*``) meanwhile. The calls go on and are logged. ``publish`` never blocks:
events wait in a bounded buffer (``queue``; when full the oldest are dropped, counted), the
writer tries again with growing waits, and when Redis answers it writes a ``bus_outage``
record (how long, how many kept, how many dropped), then what it kept, in order (at least
once). The desk's readers wait the outage out: ``bus`` events (``down``, ``catching_up``,
``up``) instead of an error, then they go on from their last entry. What needs an answer now
fails with :class:`BusError`: a new call (refused, 1013), ``/api/calls`` (503).
A Redis that comes back empty is not a takeover: each replica's next heartbeat registers its
calls again, and takes back a call announced lost while it could not reach Redis
(``call_reclaimed``); only another owner's heartbeat, or a later segment, ends a call here.

The registry (:mod:`streamer.serve.calls.registry`) uses a bus like this::

    seg = await bus.open_call(call_id, source, tracks, meta, probe=pushed, row=call.summary_row, emit=on_event)
    bus.publish(event)               # every event of the call (call_start ... call_end)
    follower = bus.follow(call_id)   # /events: await follower.get(timeout) -> event | None
    rows = await bus.listing(local)  # /api/calls (local rows win for local calls)
"""

from __future__ import annotations

from streamer.serve.bus.base import Bus, BusDown, BusError, BusOptions, Emit, Follower, Probe, RowFn, dumps, gap_seconds, iso
from streamer.serve.bus.local import LocalBus, LocalFollower
from streamer.serve.bus.redis_bus import RedisBus, RedisFollower

__all__ = ["Bus", "BusDown", "BusError", "BusOptions", "Emit", "Follower", "LocalBus", "LocalFollower", "Probe", "RedisBus",
           "RedisFollower", "RowFn", "dumps", "gap_seconds", "iso", "make_bus"]

def make_bus(opts: BusOptions) -> "Bus":
    """A RedisBus when ``opts.url`` is set, else a LocalBus."""
    return RedisBus(opts) if opts.url else LocalBus(opts)

"""The bus on Redis Streams, so that one desk sees every replica's calls (see :mod:`streamer.serve.bus`)."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from streamer.serve.bus.base import Bus, BusDown, BusError, BusOptions, Emit, Follower, Probe, RowFn, HeldCall, dumps, iso
from streamer.serve.bus.local import LocalFollower, lost_seconds, overlay_rows
from streamer.serve.bus.outage import Backoff, Health, WriteBuffer
from streamer.serve.bus.redis_calls import BEAT_LUA, END_LUA, LOST_LUA, OPEN_LUA, CallLiveness
from streamer.serve.bus.redis_read import RedisFollower, SharedTail

log = logging.getLogger(__name__)


class RedisBus(CallLiveness, Bus):
    """The results bus through Redis Streams (see the module's docstring); the calls' heartbeats
    and the lost-call watcher are :class:`~streamer.serve.bus.redis_calls.CallLiveness`."""

    kind = "redis"

    def __init__(self, opts: BusOptions, clock=time.monotonic, wall=time.time) -> None:
        """``clock`` (monotonic) and ``wall`` (epoch) time the outages (tests give fake ones)."""
        if not opts.url:
            raise ValueError("RedisBus needs a redis:// URL (BusOptions.url, --redis)")
        super().__init__(opts)
        try:
            import redis.asyncio as aioredis
        except ImportError as exc:
            raise BusError("the Redis bus needs redis-py: .venv/bin/python -m pip install redis") from exc
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.redis = aioredis.Redis.from_url(
            opts.url, decode_responses=True, socket_connect_timeout=opts.timeout_s,
            socket_timeout=opts.timeout_s + opts.block_s, retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self._open_s = self.redis.register_script(OPEN_LUA)
        self._beat_s = self.redis.register_script(BEAT_LUA)
        self._end_s = self.redis.register_script(END_LUA)
        self._lost_s = self.redis.register_script(LOST_LUA)
        # (event, its call, its end row): waiting for the writer, kept through an outage
        self.buffer = WriteBuffer(opts.queue)
        self.link = Health(clock, wall)  # is Redis reachable (every command's outcome)
        self._backoff = Backoff(0.1, 2.0)  # the writer's waits between tries
        self.written_id = "0-0"  # the last entry the writer added to the stream
        self.caught_up_id = "0-0"  # the last of what it kept through its last outage
        self._tail = SharedTail(self)
        self.follower_queue = 1000
        self._more = asyncio.Event()
        self._behind = False  # a write failed; true until what was kept is written
        self._fail_since: float | None = None  # epoch of the first write that failed (this outage)
        self._dropped_mark = 0  # buffer.dropped when the last outage record was written
        self._refusing = False  # Redis refused a write: said once until a write works

    def where(self) -> str:
        kw = self.redis.connection_pool.connection_kwargs
        return f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}"

    async def op(self, aw, extra: float = 0.0):
        """One Redis command (or pipeline), within ``timeout_s``: :class:`BusDown` when Redis
        cannot be reached or is too slow, :class:`BusError` when it refuses. Every outcome
        goes to :attr:`link`: the one log line when an outage starts and when it ends."""
        import redis.exceptions as rexc

        started = self.link.clock()
        try:
            res = await asyncio.wait_for(aw, self.opts.timeout_s + extra)
        except (asyncio.TimeoutError, rexc.TimeoutError) as exc:
            raise self._down(BusDown(f"Redis at {self.where()} did not answer within {self.opts.timeout_s + extra:g} s; "
                                     "is redis-server running and reachable (--redis)?"), started) from exc
        except (rexc.ConnectionError, OSError) as exc:
            raise self._down(BusDown(f"cannot reach Redis at {self.where()} ({exc}); start redis-server or fix --redis"),
                             started) from exc
        except rexc.RedisError as exc:
            self.counters["errors"] += 1
            self.link.errors += 1
            raise BusError(f"Redis at {self.where()} refused: {exc}") from exc
        down_s = self.link.succeeded()
        if down_s is not None:
            log.warning("results bus: Redis at %s is back after %.1f s; writing the %d event(s) kept for the desk "
                        "(%d dropped, the buffer being full)", self.where(), down_s, max(0, self.pending()),
                        self.buffer.dropped - self._dropped_mark)
        return res

    def _down(self, exc: BusDown, started: float) -> BusDown:
        self.counters["errors"] += 1
        if self.closing:  # the connections are being closed under the last readers: not an outage
            return exc
        if self.link.failed(str(exc), started):
            log.error("results bus: %s. The calls go on and are logged; their events are kept for the desk (up to "
                      "%d, then the oldest are dropped) until Redis is back; /healthz says degraded",
                      exc, self.opts.queue)
        return exc

    def health(self) -> dict:
        link = self.link
        state = "down" if link.state == "down" else ("catching_up" if self._behind else "up")
        c = self.counters
        return {"kind": self.kind, "state": state, "since": iso(link.since_wall), "down_s": round(link.down_s(), 1),
                "error": link.error if link.state == "down" else None, "waiting": max(0, self.pending()),
                "dropped": self.buffer.dropped, "outage_dropped": self.buffer.dropped - self._dropped_mark,
                "lost": c["lost_events"], "errors": c["errors"], "outages": link.outages,
                "reregistered": c["calls_reregistered"], "reclaimed": c["calls_reclaimed"]}

    async def start(self) -> "RedisBus":
        if self._started:
            return self
        await self.op(self.redis.ping())
        await super().start()
        loop = asyncio.get_running_loop()
        self._tasks += [loop.create_task(self._writer(), name="bus writer"),
                        loop.create_task(self._beater(), name="bus heartbeat"),
                        loop.create_task(self._watcher(), name="bus lost-call watcher")]
        # the shared tail finds the stream's end now, while Redis is here: a desk that
        # connects during an outage is told so, and gets what was kept once it is over
        await self._tail.ensure()
        log.info("results bus: %s stream %s, replica %s", self.where(), self.opts.stream, self.replica)
        return self

    async def close(self, flush_s: float = 2.0) -> None:
        """Write what is queued (``flush_s`` at most), stop the tasks, close the connections.
        Calls still open keep their heartbeats until the TTL (a closing replica's calls are
        announced lost unless they were ended first)."""
        self.closing = True
        if self._tasks and flush_s > 0:
            await self.flush(flush_s)
        await super().close()
        left = self.buffer.clear()
        if left:
            self.counters["lost_events"] += left
            log.error("results bus: closing with %d event(s) not written (Redis at %s unreachable); the calls' logs "
                      "have them", left, self.where())
        try:
            await asyncio.wait_for(self.redis.aclose(), self.opts.timeout_s)
        except Exception:  # gone already
            pass

    def pending(self) -> int:
        """Events published and not yet written, lost or dropped (queued or in flight)."""
        c = self.counters
        return c["published"] - c["written"] - c["lost_events"] - self.buffer.dropped

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every event published so far was written (or given up); False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.pending() > 0:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def kill(self) -> None:
        """Stop at once as a dead replica would: no flush, no call_end, heartbeats left to lapse (tests)."""
        self.counters["lost_events"] += self.buffer.clear()
        self.calls.clear()
        await self.close(flush_s=0)

    # --- calls ----------------------------------------------------------------------------
    async def open_call(self, call_id: str, source: str = "", tracks: list[str] | None = None, meta: dict | None = None,
                        probe: Probe | None = None, row: RowFn | None = None, emit: Emit | None = None) -> dict:
        info = await super().open_call(call_id, source, tracks, meta, probe, row, emit)
        c = self.calls[call_id]
        c.earlier = list((info["previous"] or {}).pop("segments", []) or []) if info["previous"] else []
        if c.earlier and c.earlier[-1].get("segment") == c.segment - 1 and info["previous"]:
            c.earlier[-1] = {**c.earlier[-1], "state": info["previous"]["state"]}
        return info

    # --- the tasks ------------------------------------------------------------------------
    def _send(self, event: dict, c: HeldCall | None) -> None:
        end = None
        if c is not None and c.state == "ended":
            end = {"row": dumps(c.row()), "segments": dumps(self._segments(c)), "audio_at": c.audio_at,
                   "segment": c.segment}
        self.buffer.put((event, c, end))  # full (a long outage): the oldest goes, counted
        self.counters["dropped"] = self.buffer.dropped
        self._more.set()

    async def _writer(self) -> None:
        while True:
            if not self.buffer:
                self._more.clear()
                await self._more.wait()
            wait = await self.write_once()
            if wait > 0:
                await asyncio.sleep(wait)

    async def write_once(self, batch_max: int = 500) -> float:
        """Write up to ``batch_max`` of what waits; the seconds to wait before trying again (0:
        written, or nothing to write). Redis unreachable: the batch goes back in front, to be
        tried again after growing waits; once it works, a ``bus_outage`` record says on the
        stream what this replica kept and dropped, and what was kept follows in order.
        Delivery is at least once: a batch cut off mid-write may be written twice (the desk
        shows a window once). The writer task calls this in a loop."""
        o = self.opts
        if not self.buffer:
            if self._behind:  # all that was kept through the outage is written
                self.caught_up_id, self._behind = self.written_id, False
            return 0.0
        batch = self.buffer.take(batch_max)
        pipe = self.redis.pipeline(transaction=False)
        adds: list[int] = []  # where each XADD's id is in the results
        n = 0
        record = self._outage_record(len(batch)) if self._fail_since is not None else None
        for event, c, end in ([(record, None, None)] if record else []) + batch:
            cid = str(event.get("call_id") or "")
            pipe.xadd(o.stream, {"type": str(event.get("type") or ""), "call_id": cid, "json": dumps(event)},
                      maxlen=o.maxlen, approximate=True)
            adds.append(n)
            n += 1
            if end is not None:
                await self._end_s(keys=[o.call_key(cid), o.hb_key(cid), o.index, o.active],
                                  args=[self.replica, end["segment"], f"{self.link.wall():.3f}", end["row"],
                                        "" if end["audio_at"] is None else f"{end['audio_at']:.3f}",
                                        end["segments"], int(max(1, o.keep_ended_s)), cid], client=pipe)
                n += 1
        try:
            res = await self.op(pipe.execute())
        except BusDown:
            self.buffer.give_back(batch)
            self.counters["dropped"] = self.buffer.dropped
            if self._fail_since is None:
                self._fail_since, self._behind = self.link.wall(), True
            return self._backoff.next()
        except BusError as exc:  # refused: trying the same again would not help
            self.counters["lost_events"] += len(batch)
            if not self._refusing:
                self._refusing = True
                log.error("results bus: %s; %d event(s) not on the desk (the calls' logs have them), and so on "
                          "until Redis takes writes again", exc, len(batch))
            return self._backoff.next()
        self._backoff.reset()
        self._refusing = False
        self.counters["written"] += len(batch)
        if adds:
            self.written_id = str(res[adds[-1]])
        if record is not None:
            self._fail_since = None
            self._dropped_mark += record["dropped"]
        if not self.buffer and self._behind:
            self.caught_up_id, self._behind = self.written_id, False
        return 0.0

    def _outage_record(self, in_batch: int) -> dict:
        """What this replica's desk feed missed: written first when Redis is back."""
        now = self.link.wall()
        since = self._fail_since or now
        return {"type": "bus_outage", "call_id": None, "track": None, "replica": self.replica, "since": iso(since),
                "down_s": round(now - since, 1), "kept": len(self.buffer) + in_batch,
                "dropped": self.buffer.dropped - self._dropped_mark, "time": iso(now)}

    # --- reading --------------------------------------------------------------------------
    def follow(self, call_id: str | None = None, since: str | None = None, patient: bool = True) -> RedisFollower:
        """A reader of its own (XREAD BLOCK), from ``since`` (an event's ``bus_id``) or the end;
        ``patient``: it waits out an outage (``bus`` events say how it goes), else BusError."""
        return RedisFollower(self, call_id, since, patient)

    async def subscribe(self, call_id: str | None = None) -> Follower:
        """A reader of the process's shared tail (one XREAD loop for all of them), from now;
        BusError when Redis is gone."""
        await self._tail.ensure()
        f = LocalFollower(self, call_id, self.follower_queue)
        if self._tail.status is not None:  # joined during an outage: say so first
            f.items.append(dict(self._tail.status))
        self.followers.add(f)
        return f

    async def listing(self, local: list[dict] | None = None) -> list[dict]:
        """Every call of every replica on this desk (active, and ended or lost in the last
        ``keep_ended_s``), with this process's own rows over them."""
        o = self.opts
        now = time.time()
        ids = await self.op(self.redis.zrangebyscore(o.index, now - o.keep_ended_s - 60, "+inf"))
        await self.op(self.redis.zremrangebyscore(o.index, "-inf", now - o.keep_ended_s - 60))
        rows: dict[str, dict] = {}
        if ids:
            pipe = self.redis.pipeline(transaction=False)
            for cid in ids:
                pipe.hgetall(o.call_key(cid))
            for cid, h in zip(ids, await self.op(pipe.execute())):
                if not h:
                    continue
                row = _row_of(cid, h)
                if row["state"] != "active" and now - float(h.get("ended") or now) > o.keep_ended_s:
                    continue
                rows[cid] = row
        return overlay_rows(rows, local)


def _row_of(call_id: str, h: dict) -> dict:
    """An /api/calls row from a call's hash."""
    try:
        row = json.loads(h.get("row") or "{}")
    except ValueError:
        row = {}
    try:
        segs = json.loads(h.get("segments") or "[]")
    except ValueError:
        segs = []
    state = h.get("state") or row.get("state")
    row = {"call_id": call_id, **row, "state": state, "segment": int(h.get("segment") or 1), "segments": segs,
           "owner": h.get("owner"), "lost_audio_s": lost_seconds(segs), "updated": iso(float(h["updated"])) if h.get("updated") else None}
    if state == "lost":
        if not row.get("ended") and h.get("ended"):
            row["ended"] = iso(float(h["ended"]))
        if segs and segs[-1].get("segment") == row["segment"]:
            segs[-1] = {**segs[-1], "state": "lost"}
    return row

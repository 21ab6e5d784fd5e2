"""The bus on Redis Streams, so that one desk sees every replica's calls (see :mod:`streamer.serve.bus`)."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from streamer.serve.bus.base import Bus, BusDown, BusError, BusOptions, Emit, Follower, Probe, RowFn, HeldCall, dumps, iso
from streamer.serve.bus.local import LocalFollower, lost_seconds, overlay_rows
from streamer.serve.bus.outage import Backoff, Health, WriteBuffer
from streamer.serve.bus.redis_read import RedisFollower, SharedTail

log = logging.getLogger(__name__)


OPEN_LUA = """
-- KEYS: call hash, heartbeat, index, active set; ARGV: owner, now, ttl ms, call id
local st = redis.call('HGET', KEYS[1], 'state')
if st == 'active' then return {-1, '', '', '', ''} end
local seg = tonumber(redis.call('HGET', KEYS[1], 'segment') or '0') + 1
local audio = redis.call('HGET', KEYS[1], 'audio_at') or ''
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
local segs = redis.call('HGET', KEYS[1], 'segments') or '[]'
redis.call('HSET', KEYS[1], 'state', 'active', 'segment', seg, 'owner', ARGV[1], 'opened', ARGV[2], 'updated', ARGV[2])
redis.call('PERSIST', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1] .. ':' .. seg, 'PX', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[4])
return {seg, st or '', audio, owner, segs}
"""

BEAT_LUA = """
-- KEYS: call hash, heartbeat, index, active set
-- ARGV: owner, segment, ttl ms, now, row json, audio_at, segments json, call id, opened
-- 0: another owner's heartbeat, or a later segment (taken over); 1: beat; 2: the hash was
-- gone (Redis came back empty): registered again; 3: marked lost while we could not reach
-- Redis, nobody took it: ours again
local me = ARGV[1] .. ':' .. ARGV[2]
local hb = redis.call('GET', KEYS[2])
if hb and hb ~= me then return 0 end
local st = redis.call('HGET', KEYS[1], 'state')
local code = 1
if not st then
  code = 2
  redis.call('HSET', KEYS[1], 'state', 'active', 'segment', ARGV[2], 'owner', ARGV[1], 'opened', ARGV[9])
elseif redis.call('HGET', KEYS[1], 'segment') ~= ARGV[2] or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return 0
elseif st == 'lost' then
  code = 3
  redis.call('HSET', KEYS[1], 'state', 'active')
  redis.call('HDEL', KEYS[1], 'ended')
  redis.call('PERSIST', KEYS[1])
elseif st ~= 'active' then
  return 0
end
redis.call('SET', KEYS[2], me, 'PX', ARGV[3])
redis.call('HSET', KEYS[1], 'updated', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'row', ARGV[5], 'segments', ARGV[7]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'audio_at', ARGV[6]) end
-- the index's score is the last change: a call longer than keep_ended_s stays listed
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[8])
redis.call('SADD', KEYS[4], ARGV[8])
return code
"""

END_LUA = """
-- KEYS: call hash, heartbeat, index, active set; ARGV: owner, segment, now, row json, audio_at, segments json, keep s, id
-- (a hash that is gone, Redis having come back empty, is written anew: the call ended here)
if redis.call('EXISTS', KEYS[1]) == 1 and (redis.call('HGET', KEYS[1], 'segment') ~= ARGV[2]
   or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'state', 'ended', 'ended', ARGV[3], 'updated', ARGV[3], 'row', ARGV[4], 'segments', ARGV[6],
           'segment', ARGV[2], 'owner', ARGV[1])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'audio_at', ARGV[5]) end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[4], ARGV[8])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[8])
redis.call('EXPIRE', KEYS[1], ARGV[7])
return 1
"""

LOST_LUA = """
-- KEYS: call hash, heartbeat, stream, index, active set
-- ARGV: segment, now, maxlen, keep s, event json, force ('1': a takeover), call id
if ARGV[6] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'active' or redis.call('HGET', KEYS[1], 'segment') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'lost', 'ended', ARGV[2], 'updated', ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[5], ARGV[7])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'type', 'call_lost', 'call_id', ARGV[7], 'json', ARGV[5])
return 1
"""


class RedisBus(Bus):
    """The results bus through Redis Streams (see the module's docstring)."""

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
    async def _open(self, call_id: str) -> tuple[int, dict | None]:
        o = self.opts
        for _ in range(3):
            seg, prev_state, audio, owner, segs = await self.op(self._open_s(
                keys=[o.call_key(call_id), o.hb_key(call_id), o.index, o.active],
                args=[self.replica, f"{time.time():.3f}", int(o.ttl_s * 1000), call_id]))
            seg = int(seg)
            if seg > 0:
                break
            # still active: a reconnect before the old segment's heartbeat lapsed takes it over
            h = await self.op(self.redis.hmget(o.call_key(call_id), "segment", "owner", "audio_at"))
            if h[1] == self.replica:
                raise BusError(f"call {call_id} is already open on this replica")
            await self._mark_lost(call_id, h[0] or "0", h[1] or "", h[2], force=True,
                                  reason="a reconnect took the call over before its heartbeat lapsed")
        else:
            raise BusError(f"call {call_id}: could not take over its earlier segment (it keeps coming back)")
        previous = None
        if seg > 1:
            previous = {"segment": seg - 1, "state": prev_state or None, "owner": owner or None,
                        "audio_at": float(audio) if audio else None, "segments": json.loads(segs or "[]")}
        return seg, previous

    async def open_call(self, call_id: str, source: str = "", tracks: list[str] | None = None, meta: dict | None = None,
                        probe: Probe | None = None, row: RowFn | None = None, emit: Emit | None = None) -> dict:
        info = await super().open_call(call_id, source, tracks, meta, probe, row, emit)
        c = self.calls[call_id]
        c.earlier = list((info["previous"] or {}).pop("segments", []) or []) if info["previous"] else []
        if c.earlier and c.earlier[-1].get("segment") == c.segment - 1 and info["previous"]:
            c.earlier[-1] = {**c.earlier[-1], "state": info["previous"]["state"]}
        return info

    def _segments(self, c: HeldCall) -> list[dict]:
        return [*c.earlier, c.segment_info()]

    async def _mark_lost(self, call_id: str, segment: str, owner: str, audio_at: str | None, force: bool = False,
                         reason: str = "") -> bool:
        o, now = self.opts, time.time()
        audio = float(audio_at) if audio_at else None
        event = {"type": "call_lost", "call_id": call_id, "track": None, "segment": int(segment or 0),
                 "replica": owner or None, "last_audio": iso(audio), "time": iso(now),
                 "reason": reason or f"no heartbeat from replica {owner or '?'} for {o.ttl_s:g} s: it stopped or lost Redis"}
        done = await self.op(self._lost_s(
            keys=[o.call_key(call_id), o.hb_key(call_id), o.stream, o.index, o.active],
            args=[str(segment), f"{now:.3f}", o.maxlen, int(max(1, o.keep_ended_s)), dumps(event), "1" if force else "0",
                  call_id]))
        if done:
            self.counters["calls_lost"] += 1
            log.warning("call %s: segment %s lost (%s)", call_id, segment, event["reason"])
        return bool(done)

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

    async def _beater(self) -> None:
        while True:
            try:
                await self.beat()
            except BusDown:  # the outage is logged once (op); the calls go on
                pass
            except BusError as exc:
                log.warning("results bus: heartbeat failed: %s", exc)
            await asyncio.sleep(self.opts.beat_s)

    async def beat(self) -> None:
        """Refresh the heartbeat (and the row, when it changed) of every call held here. A call
        whose hash is gone (Redis came back empty) is registered again; one marked lost while
        this replica could not reach Redis is taken back, unless another replica took it over
        (only another owner's heartbeat, or a later segment, is a takeover)."""
        o = self.opts
        calls = [c for c in list(self.calls.values()) if c.state == "active"]
        if not calls:
            return
        self.sample()
        pipe = self.redis.pipeline(transaction=False)
        for c in calls:
            row = dumps(c.row()) if c.dirty or c.row_fn is not None else ""
            c.dirty = False
            await self._beat_s(keys=[o.call_key(c.call_id), o.hb_key(c.call_id), o.index, o.active],
                               args=[self.replica, c.segment, int(o.ttl_s * 1000), f"{time.time():.3f}", row,
                                     "" if c.audio_at is None else f"{c.audio_at:.3f}", dumps(self._segments(c)),
                                     c.call_id, f"{c.started:.3f}"], client=pipe)
        try:
            res = await self.op(pipe.execute())
        except BusError:
            for c in calls:  # the rows go again with the next beat that works (Redis may come back empty)
                c.dirty = True
            raise
        again, reclaimed = [], []
        for c, code in zip(calls, res):
            if c.state != "active":
                continue
            if code == 2:
                again.append(c.call_id)
            elif code == 3:
                reclaimed.append(c)
            elif not code:  # another replica took it over (a reconnect there)
                c.state = "lost"
                self.calls.pop(c.call_id, None)
                self.gone[c.call_id] = c.segment
                self.counters["superseded"] += 1
                log.warning("call %s: segment %d was taken over by another replica on the bus", c.call_id, c.segment)
                if self.on_lost is not None:
                    self.on_lost(c.call_id)
        if again:
            self.counters["calls_reregistered"] += len(again)
            log.warning("results bus: Redis came back without %d call(s) of this replica; registered again: %s",
                        len(again), ", ".join(again))
        if reclaimed:
            self.counters["calls_reclaimed"] += len(reclaimed)
            log.warning("results bus: %d call(s) of this replica were announced lost while it could not reach Redis; "
                        "nobody took them over, so they go on here: %s", len(reclaimed),
                        ", ".join(c.call_id for c in reclaimed))
            for c in reclaimed:
                self._reclaimed(c)

    def _reclaimed(self, c: HeldCall) -> None:
        ev = {"type": "call_reclaimed", "call_id": c.call_id, "track": None, "segment": c.segment,
              "replica": self.replica, "time": iso(time.time()),
              "reason": "announced lost while its server could not reach Redis; it was never cut and goes on"}
        try:
            if c.emit is not None:
                c.emit(ev)  # the owner logs it and publishes it back through publish()
            else:
                self.publish(ev)
        except Exception:  # one call's owner failing must not stop the heartbeats
            log.exception("call %s: handing over call_reclaimed failed", c.call_id)

    async def _watcher(self) -> None:
        while True:
            await asyncio.sleep(self.opts.watch_s)
            try:
                await self.watch()
            except BusDown:  # logged once (op)
                pass
            except BusError as exc:
                log.warning("results bus: lost-call watcher: %s", exc)

    async def watch(self, force: bool = False) -> int:
        """Announce every active call whose heartbeat lapsed; returns how many this watcher did.
        ``force``: scan even when another gateway holds this round's lock."""
        o = self.opts
        # one gateway scans per round (a lock that lapses before the next round); the Lua
        # script makes a loss announced once even if two scan at once
        if not force and not await self.op(self.redis.set(f"{o.prefix}:watch:{o.desk}", self.replica, nx=True,
                                                            px=max(1, int(o.watch_s * 900)))):
            return 0
        ids = sorted(await self.op(self.redis.smembers(o.active)))
        if not ids:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for cid in ids:
            pipe.exists(o.hb_key(cid))
            pipe.hmget(o.call_key(cid), "state", "segment", "owner", "audio_at")
        res = await self.op(pipe.execute())
        n = 0
        for i, cid in enumerate(ids):
            alive, (state, segment, owner, audio_at) = res[2 * i], res[2 * i + 1]
            if state is None:  # its hash expired or was removed: not active any more
                await self.op(self.redis.srem(o.active, cid))
            elif not alive and state == "active":
                n += await self._mark_lost(cid, segment, owner, audio_at)
        return n

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

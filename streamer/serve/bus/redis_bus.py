"""The bus on Redis Streams, so that one desk sees every replica's calls (see :mod:`streamer.serve.bus`)."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time

from streamer.serve.bus.base import Bus, BusError, BusOptions, Emit, Follower, Probe, RowFn, HeldCall, dumps, iso
from streamer.serve.bus.local import LocalFollower, lost_seconds, overlay_rows
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
-- KEYS: call hash, heartbeat; ARGV: owner, segment, ttl ms, now, row json, audio_at, segments json
if redis.call('HGET', KEYS[1], 'state') ~= 'active' or redis.call('HGET', KEYS[1], 'segment') ~= ARGV[2]
   or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
redis.call('HSET', KEYS[1], 'updated', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'row', ARGV[5], 'segments', ARGV[7]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'audio_at', ARGV[6]) end
return 1
"""

END_LUA = """
-- KEYS: call hash, heartbeat, index, active set; ARGV: owner, segment, now, row json, audio_at, segments json, keep s, id
if redis.call('HGET', KEYS[1], 'segment') ~= ARGV[2] or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'ended', 'ended', ARGV[3], 'updated', ARGV[3], 'row', ARGV[4], 'segments', ARGV[6])
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

    def __init__(self, opts: BusOptions) -> None:
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
        self.queue: collections.deque[tuple[dict, HeldCall | None, dict | None]] = collections.deque()
        self.followers: set[LocalFollower] = set()  # the shared tail's readers
        self._tail = SharedTail(self)
        self.follower_queue = 1000
        self._more = asyncio.Event()
        self._down_since: float | None = None

    def where(self) -> str:
        kw = self.redis.connection_pool.connection_kwargs
        return f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}"

    async def op(self, aw, extra: float = 0.0):
        """One Redis command (or pipeline), within ``timeout_s``: BusError otherwise."""
        import redis.exceptions as rexc

        try:
            return await asyncio.wait_for(aw, self.opts.timeout_s + extra)
        except (asyncio.TimeoutError, rexc.TimeoutError) as exc:
            self.counters["errors"] += 1
            raise BusError(f"Redis at {self.where()} did not answer within {self.opts.timeout_s + extra:g} s; "
                           "is redis-server running and reachable (--redis)?") from exc
        except (rexc.ConnectionError, OSError) as exc:
            self.counters["errors"] += 1
            raise BusError(f"cannot reach Redis at {self.where()} ({exc}); start redis-server or fix --redis") from exc
        except rexc.RedisError as exc:
            self.counters["errors"] += 1
            raise BusError(f"Redis at {self.where()} refused: {exc}") from exc

    async def start(self) -> "RedisBus":
        if self._started:
            return self
        await self.op(self.redis.ping())
        await super().start()
        loop = asyncio.get_running_loop()
        self._tasks += [loop.create_task(self._writer(), name="bus writer"),
                        loop.create_task(self._beater(), name="bus heartbeat"),
                        loop.create_task(self._watcher(), name="bus lost-call watcher")]
        log.info("results bus: %s stream %s, replica %s", self.where(), self.opts.stream, self.replica)
        return self

    async def close(self, flush_s: float = 2.0) -> None:
        """Write what is queued (``flush_s`` at most), stop the tasks, close the connections.
        Calls still open keep their heartbeats until the TTL (a closing replica's calls are
        announced lost unless they were ended first)."""
        if self._tasks and flush_s > 0:
            await self.flush(flush_s)
        await super().close()
        try:
            await asyncio.wait_for(self.redis.aclose(), self.opts.timeout_s)
        except Exception:  # gone already
            pass

    def pending(self) -> int:
        """Events published and not yet written, lost or dropped (queued or in flight)."""
        c = self.counters
        return c["published"] - c["written"] - c["lost_events"] - c["dropped"]

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
        self.queue.clear()
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
        if len(self.queue) >= self.opts.queue:
            self.queue.popleft()
            self.counters["dropped"] += 1
        self.queue.append((event, c, end))
        self._more.set()

    async def _writer(self) -> None:
        o = self.opts
        while True:
            if not self.queue:
                self._more.clear()
                await self._more.wait()
            batch = [self.queue.popleft() for _ in range(min(len(self.queue), 500))]
            pipe = self.redis.pipeline(transaction=False)
            for event, c, end in batch:
                cid = str(event.get("call_id") or "")
                pipe.xadd(o.stream, {"type": str(event.get("type") or ""), "call_id": cid, "json": dumps(event)},
                          maxlen=o.maxlen, approximate=True)
                if end is not None:
                    await self._end_s(keys=[o.call_key(cid), o.hb_key(cid), o.index, o.active],
                                args=[self.replica, end["segment"], f"{time.time():.3f}", end["row"],
                                      "" if end["audio_at"] is None else f"{end['audio_at']:.3f}", end["segments"],
                                      int(max(1, o.keep_ended_s)), cid], client=pipe)
            try:
                await self.op(pipe.execute())
                self.counters["written"] += len(batch)
                if self._down_since is not None:
                    log.warning("results bus: Redis is back after %.1f s", time.monotonic() - self._down_since)
                    self._down_since = None
            except BusError as exc:
                self.counters["lost_events"] += len(batch)
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.error("results bus: %s; %d event(s) lost, more are dropped until it is back", exc, len(batch))
                await asyncio.sleep(0.5)

    async def _beater(self) -> None:
        while True:
            try:
                await self.beat()
            except BusError as exc:
                log.warning("results bus: heartbeat failed: %s", exc)
            await asyncio.sleep(self.opts.beat_s)

    async def beat(self) -> None:
        """Refresh the heartbeat (and the row, when it changed) of every call held here."""
        o = self.opts
        calls = [c for c in list(self.calls.values()) if c.state == "active"]
        if not calls:
            return
        self.sample()
        pipe = self.redis.pipeline(transaction=False)
        for c in calls:
            row = dumps(c.row()) if c.dirty or c.row_fn is not None else ""
            c.dirty = False
            await self._beat_s(keys=[o.call_key(c.call_id), o.hb_key(c.call_id)],
                         args=[self.replica, c.segment, int(o.ttl_s * 1000), f"{time.time():.3f}", row,
                               "" if c.audio_at is None else f"{c.audio_at:.3f}", dumps(self._segments(c))], client=pipe)
        res = await self.op(pipe.execute())
        for c, ok in zip(calls, res):
            if not ok and c.state == "active":  # marked lost by a watcher (we stalled), or taken over
                c.state = "lost"
                self.calls.pop(c.call_id, None)
                self.gone[c.call_id] = c.segment
                self.counters["superseded"] += 1
                log.warning("call %s: segment %d is no longer ours on the bus (lost or taken over)", c.call_id, c.segment)
                if self.on_lost is not None:
                    self.on_lost(c.call_id)

    async def _watcher(self) -> None:
        while True:
            await asyncio.sleep(self.opts.watch_s)
            try:
                await self.watch()
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
    def follow(self, call_id: str | None = None, since: str | None = None) -> RedisFollower:
        """A reader of its own (XREAD BLOCK), from ``since`` (an event's ``bus_id``) or the end."""
        return RedisFollower(self, call_id, since)

    async def subscribe(self, call_id: str | None = None) -> Follower:
        """A reader of the process's shared tail (one XREAD loop for all of them), from now;
        BusError when Redis is gone."""
        await self._tail.ensure()
        f = LocalFollower(self, call_id, self.follower_queue)
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

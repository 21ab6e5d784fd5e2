"""A call's life on the Redis bus: its registration, its heartbeat, and the announcement of
calls whose replica went silent (see :mod:`streamer.serve.bus` for the keys and the rules).

Each change to a call's keys is one Lua script, so that it checks and writes at once: two
watchers announce a loss once, and a heartbeat tells a takeover (another owner's heartbeat, or a
later segment) from a Redis that came back empty (the call's hash gone: registered again).
:class:`CallLiveness` runs them for :class:`~streamer.serve.bus.redis_bus.RedisBus`, which adds
the connection, the event writer and the readers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from streamer.serve.bus.base import BusDown, BusError, HeldCall, dumps, iso

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


class CallLiveness:
    """The call registry's half of :class:`~streamer.serve.bus.redis_bus.RedisBus`: opening a
    call's segment, the heartbeat task (:meth:`beat`) and the lost-call watcher (:meth:`watch`).

    It uses what the bus has: ``opts``, ``replica``, ``calls``, ``gone``, ``counters``,
    ``on_lost``, ``redis``, ``op`` (one command within the deadline), ``sample``,
    ``publish`` and the registered scripts ``_open_s``, ``_beat_s`` and ``_lost_s``.
    """

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

"""The results bus (streamer.serve.bus) against a real redis-server on 127.0.0.1: publish,
follow and trim; two replicas, one reader; a killed replica's call announced lost exactly
once; a reconnect as segment 2 with its gap counted; Redis going away is waited out by the
desk's readers, an error for the rest, never a hang (tests/test_redis_outage.py: it coming back).
The LocalBus (one process) is checked for the same interface."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time

import pytest

from streamer.serve.bus import BusError, BusOptions, LocalBus, RedisBus, make_bus
from tests.redis_util import free_port, redis_server, start_redis  # noqa: F401  (fixture)

FAST = dict(ttl_s=1.0, beat_s=0.25, watch_s=0.2, sample_s=0.05, timeout_s=1.0, block_s=0.2)
HANG_S = 30.0  # only stops a hung call from hanging the suite; no test asserts how fast a call is


def opts(server, desk: str, **kw) -> BusOptions:
    return BusOptions(url=server.url, desk=desk, **{**FAST, **kw})


async def drain(follower, until, timeout: float = 10.0) -> list[dict]:
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = await follower.get(timeout=0.2)
        if ev is not None:
            out.append(ev)
            if until(ev):
                return out
    raise AssertionError(f"timed out; got {[(e['type'], e.get('call_id')) for e in out]}")


def gap_between(gap_s: float, last: tuple[float, float], first: tuple[float, float], rounding: float = 0.002) -> bool:
    """``gap_s`` lies between the shortest and the longest gap the bracketing readings allow:
    ``last`` brackets the epoch the bus took as the last audio, ``first`` the first audio of
    the next segment (time.time() read before and after each). No speed is assumed."""
    return first[0] - last[1] - rounding <= gap_s <= first[1] - last[0] + rounding


def window(call_id: str, track: str, i: int) -> dict:
    return {"type": "window", "call_id": call_id, "track": track, "index": i, "start_s": i * 1.0,
            "end_s": i * 1.0 + 2.0, "label": "neutral", "confidence": 0.5}


def test_options_and_factory():
    assert isinstance(make_bus(BusOptions()), LocalBus)
    with pytest.raises(ValueError, match="beat_s"):
        BusOptions(ttl_s=2.0, beat_s=3.0)
    with pytest.raises(ValueError, match="desk"):
        BusOptions(desk="a:b")


def test_publish_follow_trim(redis_server):
    async def run():
        async with RedisBus(opts(redis_server, "trim", maxlen=100)) as bus:
            f = bus.follow()
            assert await f.get(timeout=0.3) is None  # from the end: nothing yet
            await bus.open_call("c1", "twilio", ["customer"])
            bus.publish({"type": "call_start", "call_id": "c1", "track": None})
            for i in range(3):
                bus.publish(window("c1", "customer", i))
            got = await drain(f, lambda e: e.get("index") == 2)
            assert [e["type"] for e in got] == ["call_start", "window", "window", "window"]
            assert all(e["segment"] == 1 and e["bus_id"] for e in got)
            # from a given id: only what came after it
            g = bus.follow(since=got[1]["bus_id"])
            again = await drain(g, lambda e: e.get("index") == 2)
            assert [e.get("index") for e in again] == [1, 2]
            # one call's events only
            h = bus.follow(call_id="c2")
            bus.publish(window("c1", "customer", 9))
            bus.publish({"type": "call_start", "call_id": "c2", "track": None})
            assert (await drain(h, lambda e: True))[0]["call_id"] == "c2"
            # MAXLEN ~ 100: the stream stays near 100 entries however many are written
            for i in range(2000):
                bus.publish(window("c1", "customer", 100 + i))
            assert await bus.flush(10) and bus.pending() == 0
            n = await bus.redis.xlen(bus.opts.stream)
            assert 100 <= n < 400, n
            assert bus.counters["written"] >= 2000
            row = await bus.row("c1")
            assert row["state"] == "active" and row["segment"] == 1 and row["owner"] == bus.replica

    asyncio.run(run())


def test_two_replicas_one_reader(redis_server):
    """Two gateways publish their calls; one desk reads every event and lists every call."""

    async def run():
        a, b, desk = (RedisBus(opts(redis_server, "two", replica=n)) for n in ("gw-a", "gw-b", "desk"))
        async with a, b, desk:
            feed = await desk.subscribe()  # the shared tail: one XREAD loop for every page
            only_b1 = await desk.subscribe(call_id="B1")
            calls = {"A1": a, "A2": a, "B1": b, "B2": b}
            for cid, bus in calls.items():
                await bus.open_call(cid, "twilio", ["customer", "agent"], row=None)
                bus.publish({"type": "call_start", "call_id": cid, "track": None})
            for i in range(3):
                for cid, bus in calls.items():
                    bus.publish(window(cid, "customer", i))
                    bus.publish(window(cid, "agent", i))
            await a.beat(), await b.beat()
            rows = {r["call_id"]: r for r in await desk.listing()}
            assert set(rows) == set(calls)
            assert {rows[c]["owner"] for c in calls} == {"gw-a", "gw-b"}
            assert all(rows[c]["state"] == "active" and rows[c]["windows"] == 6 for c in calls)
            for cid, bus in calls.items():
                bus.publish({"type": "call_end", "call_id": cid, "track": None})
            got: list[dict] = []
            ends = set()
            while ends != set(calls):
                ev = await feed.get(timeout=5)
                assert ev is not None, f"feed stopped; ends so far {ends}"
                got.append(ev)
                if ev["type"] == "call_end":
                    ends.add(ev["call_id"])
            per_call = {c: [e for e in got if e["call_id"] == c] for c in calls}
            for c, evs in per_call.items():
                assert [e["type"] for e in evs] == ["call_start"] + ["window"] * 6 + ["call_end"], c
            b1 = [await only_b1.get(timeout=1) for _ in range(8)]
            assert [e["bus_id"] for e in b1] == [e["bus_id"] for e in per_call["B1"]]
            assert await only_b1.get(timeout=0.1) is None
            await asyncio.sleep(0.2)
            rows = {r["call_id"]: r for r in await desk.listing()}
            assert all(rows[c]["state"] == "ended" for c in calls)
            assert await desk.redis.scard(desk.opts.active) == 0

    asyncio.run(run())


PUBLISHER = textwrap.dedent("""
    import asyncio, sys
    from streamer.serve.bus import BusOptions, RedisBus
    async def main():
        bus = RedisBus(BusOptions(url=sys.argv[1], desk=sys.argv[2], replica="doomed", ttl_s=2.0, beat_s=0.25))
        await bus.start()
        pushed = [0]
        def probe():
            pushed[0] += 160
            return pushed[0]
        for cid in sys.argv[3:]:
            await bus.open_call(cid, "twilio", ["customer"], probe=probe)
            bus.publish({"type": "call_start", "call_id": cid, "track": None})
        await bus.beat()
        print("READY", flush=True)
        await asyncio.sleep(600)
    asyncio.run(main())
""")


def test_killed_replica_gives_one_call_lost(redis_server):
    """A replica process killed with SIGKILL: each of its calls gets exactly one call_lost
    (two watchers race for it) well within 15 s, and /api/calls says lost."""
    ids = ["L1", "L2"]
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, redis_server.url, "lost", *ids], stdout=subprocess.PIPE,
                            text=True, cwd=os.getcwd())
    try:
        assert proc.stdout.readline().strip() == "READY"

        async def run():
            w1, w2 = RedisBus(opts(redis_server, "lost", replica="w1")), RedisBus(opts(redis_server, "lost", replica="w2"))
            async with w1, w2:
                feed = w1.follow(since="0-0")
                await asyncio.sleep(2.5)  # longer than the TTL: alive replicas are not announced
                rows = {r["call_id"]: r for r in await w1.listing()}
                assert all(rows[c]["state"] == "active" for c in ids)
                proc.kill()
                proc.wait(5)
                t0 = time.monotonic()
                lost, seen = {}, []
                while len(lost) < len(ids) and time.monotonic() - t0 < 15:
                    ev = await feed.get(timeout=0.5)
                    if ev is not None:
                        seen.append(ev)
                        if ev["type"] == "call_lost":
                            lost.setdefault(ev["call_id"], time.monotonic() - t0)
                assert set(lost) == set(ids), seen
                await asyncio.sleep(1.0)  # both watchers keep looking: no second announcement
                while (ev := await feed.get(timeout=0.3)) is not None:
                    seen.append(ev)
                kinds = [(e["type"], e["call_id"]) for e in seen if e["type"] == "call_lost"]
                assert sorted(kinds) == [("call_lost", c) for c in ids]
                ev = next(e for e in seen if e["type"] == "call_lost")
                assert ev["replica"] == "doomed" and ev["segment"] == 1 and ev["last_audio"]
                # a product promise (a dead replica's calls are announced lost within 15 s), not a speed figure
                assert max(lost.values()) < 15.0
                rows = {r["call_id"]: r for r in await w2.listing()}
                assert all(rows[c]["state"] == "lost" for c in ids)
                assert w1.counters["calls_lost"] + w2.counters["calls_lost"] == len(ids)
                print(f"call_lost after the kill: {max(lost.values()):.2f} s (ttl 2.0 s, watch 0.2 s)")

        asyncio.run(run())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_reconnect_is_segment_two_with_its_gap_counted(redis_server):
    async def run():
        a, b = RedisBus(opts(redis_server, "re", replica="gw-a")), RedisBus(opts(redis_server, "re", replica="gw-b"))
        await a.start()
        async with b:
            feed = b.follow()
            await feed.get(timeout=0.01)
            audio = {"n": 0}
            await a.open_call("R1", "twilio", ["customer"], probe=lambda: audio["n"])
            a.publish({"type": "call_start", "call_id": "R1", "track": None})
            for i in range(4):
                last_lo = time.time()  # the last audio the bus sees is read at or after this
                audio["n"] += 1600
                await asyncio.sleep(0.06)  # (A's own sampler may read it during the sleep)
                a.sample()
            last_hi = time.time()  # ... and at the latest by now
            await a.beat()
            await a.kill()  # replica A dies: no call_end, its heartbeat lapses
            await drain(feed, lambda e: e["type"] == "call_lost")
            await asyncio.sleep(0.5)
            # the client reconnects to replica B with the same call id
            resumed: list[dict] = []
            audio2 = {"n": 0}
            info = await b.open_call("R1", "twilio", ["customer"], probe=lambda: audio2["n"], emit=resumed.append)
            assert info["segment"] == 2 and info["previous"]["state"] == "lost"
            b.publish({"type": "call_start", "call_id": "R1", "track": None})
            await asyncio.sleep(0.3)
            assert not resumed  # no audio yet: no gap yet
            first_lo = time.time()
            audio2["n"] += 160
            b.sample()
            first_hi = time.time()
            assert len(resumed) == 1
            ev = resumed[0]
            assert ev["type"] == "call_resumed" and ev["segment"] == 2 and ev["previous_state"] == "lost"
            # gap_s: from the last audio the bus saw to the new first audio (A's beat above wrote
            # its last audio time, so no beat_s error here); both ends are bracketed by readings
            assert gap_between(ev["gap_s"], (last_lo, last_hi), (first_lo, first_hi)), \
                (ev, first_lo - last_hi, first_hi - last_lo)
            b.publish(ev)
            b.publish(window("R1", "customer", 0))
            got = await drain(feed, lambda e: e["type"] == "window")
            assert [e["type"] for e in got] == ["call_start", "call_resumed", "window"]
            assert all(e["segment"] == 2 for e in got)
            await b.beat()
            row = await b.row("R1")
            assert row["state"] == "active" and row["segment"] == 2 and row["owner"] == "gw-b"
            assert [s["segment"] for s in row["segments"]] == [1, 2]
            assert row["segments"][0]["state"] == "lost" and row["segments"][1]["gap_s"] == ev["gap_s"]
            assert row["lost_audio_s"] == ev["gap_s"]
            b.publish({"type": "call_end", "call_id": "R1", "track": None})
            await asyncio.sleep(0.3)
            assert (await b.row("R1"))["state"] == "ended"

    asyncio.run(run())


def test_reconnect_before_the_ttl_takes_the_call_over(redis_server):
    """A reconnect while the old segment still heartbeats (its replica just died, or is
    stuck): the old segment is announced lost once, the new one is segment 2, and the old
    replica, if it is alive after all, stops heartbeating it."""

    async def run():
        a, b = RedisBus(opts(redis_server, "take", replica="gw-a")), RedisBus(opts(redis_server, "take", replica="gw-b"))
        async with a, b:
            told: list[str] = []
            a.on_lost = told.append
            feed = b.follow()
            await feed.get(timeout=0.01)
            await a.open_call("T1", "twilio", ["customer"])
            info = await b.open_call("T1", "twilio", ["customer"])
            assert info["segment"] == 2 and info["previous"]["owner"] == "gw-a"
            got = await drain(feed, lambda e: e["type"] == "call_lost")
            assert got[-1]["segment"] == 1 and "took the call over" in got[-1]["reason"]
            await a.beat()
            assert told == ["T1"] and "T1" not in a.calls
            a.publish(window("T1", "customer", 7))  # the old replica's late results stay off the desk
            assert a.counters["events_after_loss"] == 1
            await asyncio.sleep(FAST["ttl_s"] + 0.5)  # B's heartbeat keeps segment 2 alive
            assert (await a.row("T1"))["state"] == "active"
            assert await feed.get(timeout=0.3) is None  # no second call_lost

    asyncio.run(run())


def test_redis_going_away_is_waited_out_or_an_error_never_a_hang(tmp_path):
    """Redis killed: what needs an answer now (a listing, a new call, a reader that asked not
    to wait) raises BusError; the desk's readers (patient, the default) say the bus is down
    instead, and so does /healthz's figure; events wait in the bounded buffer."""
    server = start_redis(tmp_path / "r")

    async def run():
        bus = RedisBus(BusOptions(url=server.url, desk="gone", **FAST))
        await bus.start()
        f = bus.follow()
        strict = bus.follow(patient=False)
        await f.get(timeout=0.01), await strict.get(timeout=0.01)
        shared = await bus.subscribe()
        await bus.open_call("G1", "twilio", ["customer"])
        server.kill()
        # publish never blocks: it is a plain call that queues the event for the writer task
        # (nothing awaited, no I/O) and returns it as sent
        sent = bus.publish({"type": "call_start", "call_id": "G1", "track": None})
        assert sent["call_id"] == "G1" and sent["segment"] == 1
        assert bus.pending() == 1 and bus.buffer.items[-1][0]["call_id"] == "G1"
        for what in (bus.listing(), strict.get(timeout=5), bus.open_call("G2", "twilio")):
            # each one raises BusError; wait_for only keeps a hang from hanging the suite (a hang
            # fails the test with TimeoutError, not BusError)
            with pytest.raises(BusError, match="Redis at redis://127.0.0.1"):
                await asyncio.wait_for(what, HANG_S)
        for reader in (f, shared):  # patient: told, not raised
            ev = await asyncio.wait_for(reader.get(timeout=5), HANG_S)
            assert ev["type"] == "bus" and ev["state"] == "down" and "127.0.0.1" in ev["error"], ev
            assert ev["waiting"] >= 1
        late = await asyncio.wait_for(bus.subscribe(), HANG_S)  # joins during the outage: told at once
        assert (await late.get(timeout=1))["state"] == "down"
        h = bus.health()
        assert h["state"] == "down" and h["outages"] == 1 and h["errors"] >= 3 and h["waiting"] == 1
        await asyncio.wait_for(bus.close(flush_s=0.5), 5)
        assert bus.counters["lost_events"] == 1  # left unwritten at close: counted, not hidden
        # nothing listening at all: start() says so at once
        with pytest.raises(BusError, match="start redis-server"):
            await asyncio.wait_for(RedisBus(BusOptions(url=f"redis://127.0.0.1:{free_port()}", **FAST)).start(), HANG_S)

    try:
        asyncio.run(run())
    finally:
        server.stop()


def test_local_bus_segments_and_listing():
    async def run():
        async with LocalBus(BusOptions(sample_s=0.05)) as bus:
            f = bus.follow()
            one = bus.follow(call_id="X")
            audio = {"n": 0}
            info = await bus.open_call("X", "vosk", ["caller"], probe=lambda: audio["n"])
            assert info == {"segment": 1, "previous": None}
            with pytest.raises(BusError, match="already open"):
                await bus.open_call("X", "vosk")
            bus.publish({"type": "call_start", "call_id": "X", "track": None})
            bus.publish({"type": "call_start", "call_id": "Y", "track": None})  # not held here: passed on as is
            last_lo = time.time()
            audio["n"] = 100
            bus.sample()
            last_hi = time.time()
            bus.publish(window("X", "caller", 0))
            bus.publish({"type": "call_end", "call_id": "X", "track": None})
            got = [await f.get(timeout=1) for _ in range(4)]
            assert [e["type"] for e in got] == ["call_start", "call_start", "window", "call_end"]
            assert got[0]["segment"] == 1 and "segment" not in got[1]
            assert [e["call_id"] for e in [await one.get(timeout=1) for _ in range(3)]] == ["X"] * 3
            await asyncio.sleep(0.2)
            resumed: list[dict] = []
            info = await bus.open_call("X", "vosk", ["caller"], probe=lambda: audio["n"], emit=resumed.append)
            assert info["segment"] == 2 and info["previous"]["state"] == "ended"
            first_lo = time.time()
            audio["n"] = 200
            bus.sample()
            first_hi = time.time()
            assert len(resumed) == 1
            assert gap_between(resumed[0]["gap_s"], (last_lo, last_hi), (first_lo, first_hi)), \
                (resumed, first_lo - last_hi, first_hi - last_lo)
            local = [{"call_id": "X", "state": "active", "windows": 0, "dropped": {"audio_s": 0.0}}]
            rows = {r["call_id"]: r for r in await bus.listing(local)}
            assert rows["X"]["segment"] == 2 and rows["X"]["dropped"] == {"audio_s": 0.0}
            assert [s["state"] for s in rows["X"]["segments"]] == ["ended", "active"]
            assert rows["X"]["lost_audio_s"] == resumed[0]["gap_s"]

    asyncio.run(run())


def test_local_bus_forgets_ended_calls_past_keep_ended_s_whether_or_not_anyone_lists_them():
    """A server nobody asks for /api/calls still forgets its ended calls (was: only a listing
    pruned the history, which grew by a row per call for as long as the server ran)."""
    async def run():
        async with LocalBus(BusOptions(sample_s=0.05, keep_ended_s=60)) as bus:
            for k in range(5):
                cid = f"C{k}"
                await bus.open_call(cid, "twilio", ["customer"])
                bus.publish({"type": "call_end", "call_id": cid, "track": None})
            assert sorted(bus.history) == [f"C{k}" for k in range(5)]
            for h in bus.history.values():
                h["ended"] -= 120  # these ended two minutes ago
            await bus.open_call("C9", "twilio", ["customer"])
            bus.publish({"type": "call_end", "call_id": "C9", "track": None})  # a call ends: the old are forgotten
            assert list(bus.history) == ["C9"]

    asyncio.run(run())

"""Redis goes away and comes back (issue 28 item 1).

- The bus's outage logic without Redis, on fake clocks: one outage is one state change (and
  so one log line) however many commands fail; the writer keeps what it cannot write, bounded,
  in order, and once Redis answers writes a ``bus_outage`` record of what it kept and dropped
  before the rest; a refusal is not retried; /metrics and /healthz's figures follow.
- Against a real redis-server on 127.0.0.1 stopped and started again (empty) by the test: two
  replicas' calls go on, are registered again (not taken over), and every event published
  during the outage reaches both replicas' desk readers after it, in order; a replica cut off
  from Redis past the heartbeat TTL (a proxy the test cuts) takes its calls back.
- A real ser-serve with the models, a Twilio call played in real time, Redis down 10 s of it:
  the call is not ended, its log is complete, /healthz says degraded, /metrics counts the
  errors, the server logs the outage once, and the desk's feed stays open, says it is behind,
  and gets every window of the call.
- The desk page in chromium shows the outage, then catches up and says what was lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from streamer.serve.bus import BusError, BusOptions, RedisBus
from streamer.serve.bus.outage import Backoff, Health, StatusTicker, WriteBuffer
from streamer.serve.bus.redis_read import entry_key
from tests.redis_util import RedisServer, start_redis

FAST = dict(ttl_s=1.0, beat_s=0.25, watch_s=0.2, sample_s=0.05, timeout_s=1.0, block_s=0.2)
HANG_S = 30.0  # only keeps a hung wait from hanging the suite; no test asserts a speed with it
TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OUTAGE = "results bus: "  # every line the bus logs about Redis begins so


def window(call_id: str, track: str, i: int, label: str = "neutral") -> dict:
    return {"type": "window", "call_id": call_id, "track": track, "index": i, "start_s": i * 1.0,
            "end_s": i * 1.0 + 2.0, "label": label, "confidence": 0.5}


def restart_redis(old: RedisServer, wait_s: float = 10.0) -> RedisServer:
    """A new, empty redis-server on the port ``old`` had (``old`` is stopped first)."""
    old.stop()
    log = open(old.folder / f"redis-{old.port}-again.log", "wb")
    proc = subprocess.Popen([shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(old.port), "--save", "",
                             "--appendonly", "no", "--dir", str(old.folder), "--daemonize", "no"],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    server = RedisServer(proc, old.port, old.folder)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if server.cli("PING") == "PONG":
                return server
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"redis-server did not start again on port {old.port}")


async def drain(reader, until, timeout: float = 15.0) -> list[dict]:
    """Events from a bus reader until ``until(event)``; AssertionError after ``timeout``."""
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = await reader.get(timeout=0.2)
        if ev is not None:
            out.append(ev)
            if until(ev):
                return out
    raise AssertionError(f"timed out; got {[(e['type'], e.get('call_id'), e.get('index'), e.get('state')) for e in out]}")


def outage_lines(caplog) -> tuple[list[str], list[str]]:
    """(the lines that said Redis went away, the lines that said it came back)."""
    msgs = [r.getMessage() for r in caplog.records if r.name.startswith("streamer.serve.bus")]
    return ([m for m in msgs if m.startswith(OUTAGE) and "The calls go on" in m],
            [m for m in msgs if m.startswith(OUTAGE) and " is back after " in m])


# --- the pure parts, on fake clocks ---------------------------------------------------------------
def test_health_is_one_state_change_per_outage():
    t = [0.0]
    h = Health(clock=lambda: t[0], wall=lambda: 1_000_000.0 + t[0])
    starts = [h.failed("refused", started=t[0]) for _ in range(50)]  # every command of a 10 s outage
    assert starts == [True] + [False] * 49 and h.state == "down" and h.outages == 1 and h.errors == 50
    assert h.since_wall == 1_000_000.0
    t[0] = 10.0
    assert h.down_s() == 10.0
    assert h.succeeded() == 10.0 and h.succeeded() is None  # the first success ends it, once
    assert h.state == "up" and h.last_down_s == 10.0 and h.down_s() == 0.0
    # a read that was blocked through the outage fails after it ended: not a second outage
    assert h.failed("connection closed", started=9.5) is False and h.state == "up"
    t[0] = 12.0
    assert h.failed("refused", started=12.0) is True and h.outages == 2


def test_backoff_and_status_ticker():
    b = Backoff(0.1, 2.0)
    assert [b.next() for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    b.reset()
    assert b.next() == 0.1
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)
    t = [0.0]
    k = StatusTicker(1.0, clock=lambda: t[0])
    said = []
    for step in range(40):  # 4 s of checks every 0.1 s: up 1 s, down 2 s, up again
        t[0] = step / 10
        state = "down" if 10 <= step < 30 else "up"
        if k.due(state):
            said.append((round(t[0], 1), state))
    assert said == [(1.0, "down"), (2.0, "down"), (3.0, "up")]


def test_write_buffer_is_bounded_and_keeps_order():
    b = WriteBuffer(5)
    for i in range(5):
        assert b.put(i)
    batch = b.take(3)
    b.give_back(batch)
    assert list(b.items) == [0, 1, 2, 3, 4] and b.dropped == 0
    assert b.put(5) is False and b.dropped == 1  # full: the oldest goes
    batch = b.take(10)
    b.put(6), b.put(7)
    b.give_back(batch)  # back in front; past the bound the oldest go
    assert list(b.items) == [3, 4, 5, 6, 7] and b.dropped == 3
    assert b.clear() == 5 and len(b) == 0
    with pytest.raises(ValueError):
        WriteBuffer(0)


class FakePipe:
    def __init__(self, redis: "FakeRedis") -> None:
        self.redis, self.cmds = redis, []

    def xadd(self, stream, fields, maxlen=None, approximate=True):
        self.cmds.append(("xadd", json.loads(fields["json"])))

    async def evalsha(self, *args):  # a Lua script queued in the pipeline (END_LUA)
        self.cmds.append(("script", args))
        return self

    async def execute(self):
        import redis.exceptions as rexc

        self.redis.tries += 1
        if self.redis.mode == "down":
            raise rexc.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        if self.redis.mode == "refuse":
            raise rexc.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")
        out = []
        for kind, what in self.cmds:
            if kind == "xadd":
                self.redis.stream.append(what)
                out.append(f"{1000 + len(self.redis.stream)}-0")
            else:
                out.append(1)
        return out


class FakeRedis:
    """Just what the writer uses: pipelines of XADDs that fail while ``mode`` says so."""

    def __init__(self) -> None:
        self.mode = "up"
        self.tries = 0
        self.stream: list[dict] = []
        self.connection_pool = type("Pool", (), {"connection_kwargs": {"host": "127.0.0.1", "port": 6379}})()

    def pipeline(self, transaction=False):
        return FakePipe(self)


def fake_bus(queue: int = 100) -> tuple[RedisBus, FakeRedis, list[float]]:
    t = [0.0]
    bus = RedisBus(BusOptions(url="redis://127.0.0.1:6379/0", desk="fake", queue=queue, replica="gw-f", **FAST),
                   clock=lambda: t[0], wall=lambda: 1_700_000_000.0 + t[0])
    fake = FakeRedis()
    bus.redis = fake
    return bus, fake, t


def test_writer_keeps_events_through_an_outage_and_says_what_it_cost(caplog):
    caplog.set_level(logging.INFO, logger="streamer.serve.bus")

    async def run():
        bus, fake, t = fake_bus()
        for i in range(3):
            bus.publish(window("F1", "customer", i))
        assert await bus.write_once() == 0.0 and len(fake.stream) == 3 and bus.health()["state"] == "up"
        fake.mode = "down"
        waits = []
        for i in range(3, 8):  # 5 events during the outage, a try between each
            bus.publish(window("F1", "customer", i))
            waits.append(await bus.write_once())
            t[0] += waits[-1]
            h = bus.health()
            assert h["state"] == "down" and h["waiting"] == i - 2, h
        assert waits == [0.1, 0.2, 0.4, 0.8, 1.6]  # growing waits, no busy loop
        assert bus.counters["errors"] == 5 and bus.health()["outages"] == 1
        t[0] += 10.0
        fake.mode = "up"
        assert await bus.write_once() == 0.0
        rec, *kept = fake.stream[3:]
        assert rec["type"] == "bus_outage" and rec["replica"] == "gw-f" and rec["kept"] == 5 and rec["dropped"] == 0
        assert rec["down_s"] == pytest.approx(13.1) and rec["since"].startswith("2023-11-14T22:13:20")
        assert [e["index"] for e in kept] == [3, 4, 5, 6, 7]  # in order, once
        h = bus.health()
        assert h["state"] == "up" and h["waiting"] == 0 and h["outages"] == 1 and bus.pending() == 0
        # the next events go straight out, with no second record
        bus.publish(window("F1", "customer", 8))
        assert await bus.write_once() == 0.0 and [e.get("index") for e in fake.stream[-1:]] == [8]
        return bus

    asyncio.run(run())
    went, back = outage_lines(caplog)
    assert len(went) == 1 and "Connection refused" in went[0], went  # one line, not one per try
    assert len(back) == 1 and "back after 13.1 s" in back[0] and "5 event(s)" in back[0], back


def test_a_full_buffer_drops_the_oldest_and_the_desk_and_metrics_say_so(caplog):
    from streamer.serve.http.metrics import Metrics

    async def run():
        bus, fake, t = fake_bus(queue=3)
        m = Metrics()
        m.watch_bus(bus.health)
        fake.mode = "down"
        for i in range(5):
            bus.publish(window("F2", "agent", i))
        assert await bus.write_once() > 0
        h = bus.health()
        assert h["state"] == "down" and h["waiting"] == 3 and h["dropped"] == 2 and h["outage_dropped"] == 2
        text = m.render().decode()
        assert "ser_serve_bus_up 0.0" in text and "ser_serve_bus_events_dropped_total 2.0" in text
        assert "ser_serve_bus_events_waiting 3.0" in text and "ser_serve_bus_errors_total 1.0" in text
        fake.mode = "up"
        t[0] += 5.0
        assert await bus.write_once() == 0.0
        rec, *kept = fake.stream
        assert rec["type"] == "bus_outage" and rec["kept"] == 3 and rec["dropped"] == 2
        assert [e["index"] for e in kept] == [2, 3, 4]  # the newest kept
        assert bus.health()["outage_dropped"] == 0 and bus.pending() == 0
        text = m.render().decode()
        assert "ser_serve_bus_up 1.0" in text and "ser_serve_bus_outages_total 1.0" in text

    asyncio.run(run())


def test_a_refused_write_is_counted_not_retried(caplog):
    caplog.set_level(logging.INFO, logger="streamer.serve.bus")

    async def run():
        bus, fake, t = fake_bus()
        fake.mode = "refuse"
        for i in range(4):
            bus.publish(window("F3", "customer", i))
            assert await bus.write_once() > 0
        assert fake.tries == 4 and bus.counters["lost_events"] == 4 and bus.pending() == 0
        assert bus.health()["state"] == "up"  # Redis answered: no outage
        fake.mode = "up"
        bus.publish(window("F3", "customer", 9))
        assert await bus.write_once() == 0.0 and [e["index"] for e in fake.stream] == [9]

    asyncio.run(run())
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "OOM" in refused[0]


# --- a real redis-server, stopped and started again -------------------------------------------
def test_two_replicas_ride_out_a_redis_restart(tmp_path, caplog):
    """Redis killed while two replicas hold a call each, and started again empty: no call is
    lost or taken over, both are registered again, and both replicas' desk readers get every
    event published during the outage, in order, after a ``bus`` down status and before up."""
    caplog.set_level(logging.INFO, logger="streamer.serve.bus")
    server = start_redis(tmp_path / "redis")

    async def run():
        nonlocal server
        a, b = (RedisBus(BusOptions(url=server.url, desk="restart", replica=n, **FAST)) for n in ("gw-a", "gw-b"))
        async with a, b:
            told: list[str] = []
            a.on_lost = b.on_lost = told.append
            desk_a, desk_b = await a.subscribe(), await b.subscribe()
            await a.open_call("A1", "twilio", ["customer"])
            await b.open_call("B1", "twilio", ["customer"])
            for bus, cid in ((a, "A1"), (b, "B1")):
                bus.publish({"type": "call_start", "call_id": cid, "track": None})
                for i in range(3):
                    bus.publish(window(cid, "customer", i))
            for desk in (desk_a, desk_b):
                last: set[str] = set()

                def both(e, last=last):
                    if e.get("index") == 2:
                        last.add(e["call_id"])
                    return last == {"A1", "B1"}

                first = await drain(desk, both)
            since = a.follow(since=max((e["bus_id"] for e in first), key=entry_key))  # a client with ?since=

            server.kill()
            for i in range(3, 8):  # the calls go on: their events are kept
                a.publish(window("A1", "customer", i))
                b.publish(window("B1", "customer", i))
                await asyncio.sleep(0.5)  # 2.5 s in all: past the heartbeat TTL (1 s)
            for desk in (desk_a, desk_b):
                said = await drain(desk, lambda e: e["type"] == "bus", timeout=10)
                assert said[-1]["state"] == "down" and len(said) == 1, said
            assert a.health()["state"] == "down" and a.health()["waiting"] == 5 and b.health()["waiting"] == 5
            with pytest.raises(BusError):  # a new call needs the bus: refused now, not hung
                await asyncio.wait_for(a.open_call("A2", "twilio"), HANG_S)

            server = restart_redis(server)
            after = {}
            for name, desk in (("a", desk_a), ("b", desk_b), ("since", since)):
                seen: set[str] = set()

                def until(e, seen=seen, name=name):
                    if e.get("type") == "window" and e.get("index") == 7:
                        seen.add(e["call_id"])
                    if e.get("type") == "bus" and e.get("state") == "up":
                        seen.add("up")
                    # a desk's reader says "up" once its own server's kept events are read
                    return seen == ({"A1", "B1"} if name == "since" else {"A1", "B1", "up"})

                after[name] = await drain(desk, until, timeout=20)
            await asyncio.sleep(3 * FAST["beat_s"])  # both replicas beat again
            rows = {r["call_id"]: r for r in await a.listing()}
            for bus in (a, b):
                bus.publish({"type": "call_end", "call_id": "A1" if bus is a else "B1", "track": None})
                assert await bus.flush(10)
            ended = {r["call_id"]: r for r in await b.listing()}
            return told, after, rows, ended, (a.stats(), b.stats()), (a.health(), b.health())

    try:
        told, after, rows, ended, stats, health = asyncio.run(run())
    finally:
        server.stop()
    assert told == []  # nothing was taken over
    for name, evs in after.items():
        for cid in ("A1", "B1"):
            idx = [e["index"] for e in evs if e.get("type") == "window" and e.get("call_id") == cid]
            assert idx == [3, 4, 5, 6, 7], (name, cid, idx)  # every one, in order, once
        outages = {e["replica"]: e for e in evs if e.get("type") == "bus_outage"}
        assert set(outages) == {"gw-a", "gw-b"}, name
        assert all(o["kept"] == 5 and o["dropped"] == 0 and o["down_s"] > 2.0 for o in outages.values())
        if name == "since":
            continue
        status = [e["state"] for e in evs if e.get("type") == "bus"]
        steps = [st for i, st in enumerate(status) if i == 0 or st != status[i - 1]]
        assert steps in (["down", "catching_up", "up"], ["down", "up"], ["catching_up", "up"], ["up"]), (name, status)
        # "up" once all that its own server kept has been read
        own = "A1" if name == "a" else "B1"
        up = max(i for i, e in enumerate(evs) if e.get("type") == "bus")
        assert up > max(i for i, e in enumerate(evs) if e.get("type") == "window" and e["call_id"] == own)
    assert rows["A1"]["state"] == "active" and rows["A1"]["owner"] == "gw-a" and rows["A1"]["segment"] == 1
    assert rows["B1"]["state"] == "active" and rows["B1"]["owner"] == "gw-b"
    assert ended["A1"]["state"] == "ended" and ended["B1"]["state"] == "ended"
    for s, h in zip(stats, health):
        assert s["calls_reregistered"] == 1 and s.get("superseded", 0) == 0 and s.get("calls_lost", 0) == 0
        assert h["state"] == "up" and h["outages"] == 1 and h["errors"] >= 1 and h["dropped"] == 0
    went, back = outage_lines(caplog)
    assert len(went) == 2 and len(back) == 2, (went, back)  # once per replica
    msgs = [r.getMessage() for r in caplog.records]
    assert not [m for m in msgs if "taken over" in m or "no longer ours" in m]
    assert len([m for m in msgs if "registered again" in m]) == 2


class Cuttable:
    """A TCP proxy to Redis that the test cuts (its connections closed, new ones closed at once)
    and mends: one replica loses Redis while the others keep it."""

    def __init__(self, target: int) -> None:
        self.target, self.open, self.conns = target, True, set()

    async def start(self) -> "Cuttable":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader, writer) -> None:
        if not self.open:
            writer.close()
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        pair = (writer, up_w)
        self.conns.add(pair)

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self.conns.discard(pair)

    def cut(self) -> None:
        self.open = False
        for w, up in list(self.conns):
            w.close()
            up.close()

    def mend(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        self.server.close()
        await self.server.wait_closed()


def test_a_replica_cut_off_past_the_ttl_takes_its_call_back(tmp_path, caplog):
    """Redis stays up but one replica cannot reach it for longer than the heartbeat TTL: the
    other replica's watcher announces its call lost (it cannot know better); when the replica
    reaches Redis again nobody has taken the call over, so it takes it back (call_reclaimed)
    instead of ending it, and goes on publishing."""
    caplog.set_level(logging.INFO, logger="streamer.serve.bus")
    server = start_redis(tmp_path / "redis")

    async def run():
        proxy = await Cuttable(server.port).start()
        a = RedisBus(BusOptions(url=f"redis://127.0.0.1:{proxy.port}/0", desk="cut", replica="gw-a", **FAST))
        b = RedisBus(BusOptions(url=server.url, desk="cut", replica="gw-b", **FAST))
        try:
            async with a, b:
                told: list[str] = []
                a.on_lost = told.append
                feed = b.follow()
                await feed.get(timeout=0.01)
                handed: list[dict] = []

                def emit(ev):  # what the registry does: log it (here: keep it), then publish it
                    handed.append(ev)
                    a.publish(ev)

                await a.open_call("P1", "twilio", ["customer"], emit=emit)
                a.publish({"type": "call_start", "call_id": "P1", "track": None})
                proxy.cut()
                lost = await drain(feed, lambda e: e["type"] == "call_lost", timeout=15)
                a.publish(window("P1", "customer", 0))
                assert a.health()["state"] == "down"
                proxy.mend()
                got = await drain(feed, lambda e: e["type"] == "call_reclaimed", timeout=20)
                a.publish(window("P1", "customer", 1))
                got += await drain(feed, lambda e: e.get("index") == 1)
                await asyncio.sleep(3 * FAST["beat_s"])
                row = await b.row("P1")
                await asyncio.sleep(FAST["ttl_s"] + 0.5)  # a's heartbeats hold it: no second loss
                again = await feed.get(timeout=0.3)
                return told, lost, got, handed, row, again, a.stats()
        finally:
            await proxy.close()

    try:
        told, lost, got, handed, row, again, stats = asyncio.run(run())
    finally:
        server.stop()
    assert lost[-1]["call_id"] == "P1" and lost[-1]["replica"] == "gw-a"
    assert told == [] and stats["calls_reclaimed"] == 1 and stats.get("superseded", 0) == 0
    assert [e["type"] for e in handed] == ["call_reclaimed"]  # to the call's owner: its log has it
    kinds = [e["type"] for e in got if e.get("call_id") == "P1"]
    assert kinds.index("window") < kinds.index("call_reclaimed") < len(kinds) - 1  # the window kept, then back
    assert any(e["type"] == "bus_outage" and e["replica"] == "gw-a" for e in got)
    assert row["state"] == "active" and row["owner"] == "gw-a" and row["segment"] == 1
    assert again is None or again["type"] != "call_lost"
    assert any("nobody took them over" in r.getMessage() for r in caplog.records)


# --- a real server, a real call -------------------------------------------------------------------
OUTAGE_S = 10.0
LINES = [("inbound", "I have been waiting for an hour and nobody answers my question about the bill."),
         ("outbound", "I am sorry about that, let me look at your account and see what happened there."),
         ("inbound", "The charge on my card is twice what you told me it would be last month."),
         ("outbound", "I can see the second charge now, and I will send the refund to your card today."),
         ("inbound", "Thank you, and please send me an email when the refund has gone through."),
         ("outbound", "Of course, you will have the email within the hour, is there anything else?")]


def test_a_call_through_a_redis_restart(models, tmp_path, caplog):
    """One Twilio call in real time on a ser-serve with --redis; Redis killed a few seconds
    in and started again, empty, 10 s later."""
    import aiohttp

    from tests.serve_util import espeak_mulaw, play_call, server_config
    from tests.test_serve_bus import server_on_bus

    caplog.set_level(logging.INFO, logger="streamer")
    turns = [(track, espeak_mulaw(tmp_path, f"t{i}", text)) for i, (track, text) in enumerate(LINES)]
    server = start_redis(tmp_path / "redis")

    async def scenario():
        nonlocal server
        bus = RedisBus(BusOptions(url=server.url, desk="outage", ttl_s=2.0, beat_s=0.5, watch_s=0.5, timeout_s=1.0,
                                  block_s=0.5))
        async with server_on_bus(models, server_config(), tmp_path / "logs", bus) as (url, reg), \
                aiohttp.ClientSession() as http:
            feed = await http.ws_connect(f"{url}/events", headers=AUTH)
            seen: list[tuple[float, dict]] = []

            async def read():
                async for msg in feed:
                    seen.append((time.monotonic(), json.loads(msg.data)))

            reader = asyncio.ensure_future(read())

            async def get(path: str):
                async with http.get(url + path, headers=AUTH, timeout=aiohttp.ClientTimeout(total=HANG_S)) as r:
                    return r.status, (await r.json() if path == "/healthz" else await r.text())

            await asyncio.sleep(0.3)
            call = await http.ws_connect(f"{url}/twilio")
            t_play = time.monotonic()
            play = asyncio.ensure_future(play_call(call, "CA-R", turns, pace_s=0.02))
            deadline = time.monotonic() + 40
            while not any(e.get("type") == "window" for _, e in seen) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            server.kill()
            t_down = time.monotonic()
            await asyncio.sleep(2.0)
            during = await get("/healthz"), await get("/metrics")
            await asyncio.sleep(OUTAGE_S - (time.monotonic() - t_down))
            server = restart_redis(server)
            t_up = time.monotonic()
            await asyncio.wait_for(play, 90)
            deadline = time.monotonic() + 60
            while not any(e.get("type") == "call_end" for _, e in seen) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            deadline = time.monotonic() + 20
            while (healthy := await get("/healthz"))[1]["status"] != "ok" and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            after = healthy, await get("/metrics")
            feed_open = not feed.closed
            await feed.close()
            reader.cancel()
            return seen, during, after, feed_open, reg.calls["CA-R"], (t_play, t_down, t_up)

    try:
        seen, during, after, feed_open, call, (t_play, t_down, t_up) = asyncio.run(scenario())
    finally:
        server.stop()
    events = [e for _, e in seen]
    # the call was not ended by the outage, and its log is complete
    assert call.error is None and call.segment == 1
    records = [json.loads(line) for line in call.log_path.read_text().splitlines()]
    assert records[0]["type"] == "session_start" and records[-1]["type"] == "session_end"
    logged = {(r["track"], r["index"]) for r in records if r["type"] == "window"}
    ends = [e for e in events if e.get("type") == "call_end"]
    assert len(ends) == 1 and not ends[0].get("error"), ends
    # the desk's feed stayed open, said it was behind, and got every window of the call
    assert feed_open
    states = [e["state"] for e in events if e.get("type") == "bus"]
    assert states[0] == "down" and states[-1] == "up", states
    fed = [(e["track"], e["index"]) for e in events if e.get("type") == "window"]
    assert set(fed) == logged and len(logged) >= 6, (sorted(set(fed) ^ logged), len(logged))
    # windows that closed during the outage arrived after it
    call_down, call_up = t_down - t_play, t_up - t_play  # the outage in the call's time (played in real time)
    inside = [(t, e) for t, e in seen if e.get("type") == "window" and call_down + 1.0 < e["end_s"] < call_up - 1.0]
    assert inside and all(t >= t_up for t, _ in inside), [(round(t - t_up, 2), e["end_s"]) for t, e in inside]
    outage = [e for e in events if e.get("type") == "bus_outage"]
    assert len(outage) == 1 and outage[0]["dropped"] == 0 and outage[0]["kept"] >= len(inside)
    # /healthz: 200 and degraded while it lasted, ok after; /metrics counted it
    (hs, health), (ms, metrics) = during
    assert hs == 200 and health["status"] == "degraded" and health["bus"]["state"] == "down", health
    assert health["active_calls"] == 1
    assert ms == 200 and "ser_serve_bus_up 0.0" in metrics
    (hs, health), (ms, metrics) = after
    assert hs == 200 and health["status"] == "ok" and health["bus"]["outages"] == 1
    assert "ser_serve_bus_up 1.0" in metrics and "ser_serve_bus_outages_total 1.0" in metrics
    errors = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("ser_serve_bus_errors_total")))
    assert errors >= 1
    # one line when it went, one when it came back; nothing read as a takeover
    went, back = outage_lines(caplog)
    assert len(went) == 1 and len(back) == 1, (went, back)
    msgs = [r.getMessage() for r in caplog.records]
    assert not [m for m in msgs if "another replica" in m or "taken over" in m or "no longer ours" in m]
    print(f"{len(logged)} windows; {len(inside)} closed during the {OUTAGE_S:g} s outage and reached the feed after it")


# --- the desk page in a browser -------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"


def test_the_desk_page_shows_the_outage_then_catches_up(tmp_path):
    """The desk in chromium over a server on the Redis bus (no models: the call's events are
    published on the bus as a replica would). Redis killed: the page says the bus is down and
    how many events it is owed; six windows are published meanwhile into a buffer of four;
    Redis started again, empty: the page catches up (the card shows the last window), the
    banner goes, and a notice says two events were lost."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not here: apt-get install chromium")
    pw = pytest.importorskip("playwright.async_api")
    from types import SimpleNamespace

    from streamer.serve.http.app import start
    from streamer.serve.server import build_server
    from tests.serve_util import server_config

    server = start_redis(tmp_path / "redis")

    async def scenario():
        nonlocal server
        bus = RedisBus(BusOptions(url=server.url, desk="page", replica="gw-p", queue=4, **FAST))
        built = build_server(SimpleNamespace(names={"asr": "none"}), server_config(), TOKEN, bus=bus,
                             log_dir=tmp_path / "logs", loop=asyncio.get_running_loop())
        runner, port = await start(built.app, "127.0.0.1", 0, shutdown_timeout=1.0)
        out: dict = {}
        try:
            await bus.start()
            async with pw.async_playwright() as p:
                browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = await browser.new_page(viewport={"width": 1280, "height": 800})
                await page.goto(f"http://127.0.0.1:{port}/?token={TOKEN}")
                await page.wait_for_selector('#conn[data-conn="live"]', timeout=15_000)
                await page.evaluate("""() => {  // every state the banner goes through
                    window.busStates = [];
                    new MutationObserver(() => window.busStates.push(document.getElementById("bus").dataset.state))
                        .observe(document.getElementById("bus"), {attributes: true, attributeFilter: ["data-state"]});
                }""")
                await bus.open_call("D1", "twilio", ["customer"])
                bus.publish({"type": "call_start", "call_id": "D1", "track": None, "source": "twilio",
                             "tracks": ["customer"], "meta": {}})
                bus.publish(window("D1", "customer", 0, "neutral"))
                card = '#grid [data-call-id="D1"] [data-track="customer"]'
                await page.wait_for_selector(f'{card}[data-label="neutral"]', timeout=15_000)

                server.kill()
                await page.wait_for_selector('#bus[data-state="down"]', state="visible", timeout=15_000)
                for i in range(1, 7):
                    bus.publish(window("D1", "customer", i, "angry" if i == 6 else "sad"))
                await page.wait_for_function(
                    "/4 event\\(s\\) held/.test(document.getElementById('bus').textContent)", timeout=15_000)
                out["down text"] = await page.inner_text("#bus")
                out["conn down"] = await page.get_attribute("#conn", "data-conn")
                out["label during"] = await page.get_attribute(card, "data-label")
                await page.screenshot(path=str(tmp_path / "desk_bus_down.png"))

                server = restart_redis(server)
                await page.wait_for_selector('#bus[data-state="up"]', state="hidden", timeout=20_000)
                await page.wait_for_selector(f'{card}[data-label="angry"]', timeout=15_000)
                note = '#bus-notes .bus-note[data-replica="gw-p"]'
                await page.wait_for_selector(note, timeout=15_000)
                out["note"] = await page.inner_text(note)
                out["note dropped"] = await page.get_attribute(note, "data-dropped")
                out["states"] = await page.evaluate("window.busStates")
                await page.wait_for_selector('#conn[data-conn="live"]', timeout=10_000)
                await page.screenshot(path=str(tmp_path / "desk_bus_back.png"))
                await page.click(f"{note} button")
                out["notes left"] = await page.locator("#bus-notes li").count()
                await browser.close()
        finally:
            await runner.cleanup()
            await bus.close()
        return out

    try:
        out = asyncio.run(asyncio.wait_for(scenario(), 120))
    finally:
        server.stop()
    assert "Results bus down since" in out["down text"] and "4 event(s) held" in out["down text"], out
    assert "2 dropped" in out["down text"] and out["conn down"] == "behind"
    assert out["label during"] == "neutral"  # nothing of the outage's windows yet
    states = [s for i, s in enumerate(out["states"]) if i == 0 or s != out["states"][i - 1]]
    assert states[0] == "down" and states[-1] == "up" and set(states) <= {"down", "catching_up", "up"}, out["states"]
    assert out["note dropped"] == "2" and "4 event(s) arrived late" in out["note"] and "2 were lost" in out["note"]
    assert out["notes left"] == 0


# --- every gateway replica (Ray's CallGateway, outside Ray) ----------------------------------------
def test_every_gateway_replica_rides_out_a_redis_restart(tmp_path, caplog):
    """Two gateway replicas as Ray Serve builds them (``Gateway`` with a Redis URL, behind the
    ASGI bridge, served by uvicorn as a replica's FastAPI ingress; no models: the calls' events
    are published on each replica's bus). Redis killed and started again empty: each replica's
    /healthz says degraded then ok, each replica's /events stays open, says the bus is down and
    then gets both replicas' events from the outage; no call is taken over."""
    uvicorn = pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    import contextlib
    from types import SimpleNamespace

    import aiohttp

    from streamer.serve.cluster.gateway import Gateway, GatewayOptions
    from streamer.serve.cluster.ingress import asgi_app

    caplog.set_level(logging.INFO, logger="streamer.serve.bus")
    server = start_redis(tmp_path / "redis")

    @contextlib.asynccontextmanager
    async def replica(name: str):
        gw = Gateway(GatewayOptions(redis_url=server.url, desk="gw", token=TOKEN, log_dir=str(tmp_path / name)),
                     models=SimpleNamespace(names={"asr": "none"}), replica=name)
        await gw.start()
        srv = uvicorn.Server(uvicorn.Config(asgi_app(gw), host="127.0.0.1", port=0, log_level="warning",
                                            lifespan="off"))
        task = asyncio.ensure_future(srv.serve())
        deadline = time.monotonic() + HANG_S
        while not srv.started and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{srv.servers[0].sockets[0].getsockname()[1]}", gw
        finally:
            await gw.stop()
            srv.should_exit = True
            await asyncio.wait_for(task, HANG_S)

    async def scenario():
        nonlocal server
        async with replica("r1") as (url1, gw1), replica("r2") as (url2, gw2), aiohttp.ClientSession() as http:
            buses = {"r1": gw1.registry.bus, "r2": gw2.registry.bus}
            told: list[str] = []
            for name, bus in buses.items():
                bus.on_lost = told.append
                await bus.open_call(f"C-{name}", "twilio", ["customer"])
                bus.publish({"type": "call_start", "call_id": f"C-{name}", "track": None})
            feeds = {n: await http.ws_connect(f"{u}/events", headers=AUTH) for n, u in (("r1", url1), ("r2", url2))}
            got: dict[str, list[dict]] = {n: [] for n in feeds}

            async def read(name):
                async for msg in feeds[name]:
                    got[name].append(json.loads(msg.data))

            readers = [asyncio.ensure_future(read(n)) for n in feeds]

            async def health(u):
                async with http.get(f"{u}/healthz", timeout=aiohttp.ClientTimeout(total=HANG_S)) as r:
                    return r.status, (await r.json())["status"]

            await asyncio.sleep(0.5)
            server.kill()
            for i in range(3):
                for name, bus in buses.items():
                    bus.publish(window(f"C-{name}", "customer", i))
                await asyncio.sleep(0.5)
            during = [await health(u) for u in (url1, url2)]
            server = restart_redis(server)

            def done(evs):
                last = {e["call_id"] for e in evs if e.get("type") == "window" and e.get("index") == 2}
                return last == {"C-r1", "C-r2"} and any(e.get("type") == "bus" and e["state"] == "up" for e in evs)

            deadline = time.monotonic() + 30
            while not all(done(evs) for evs in got.values()) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            deadline = time.monotonic() + 10  # each replica's next heartbeat registers its call again
            while not all(b.counters["calls_reregistered"] for b in buses.values()) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            after = [await health(u) for u in (url1, url2)]
            still_open = [not f.closed for f in feeds.values()]
            for f in feeds.values():
                await f.close()
            for t in readers:
                t.cancel()
            stats = [b.stats() for b in buses.values()]
            return told, got, during, after, still_open, stats

    try:
        told, got, during, after, still_open, stats = asyncio.run(asyncio.wait_for(scenario(), 120))
    finally:
        server.stop()
    assert during == [(200, "degraded")] * 2 and after == [(200, "ok")] * 2
    assert still_open == [True, True] and told == []
    for name, evs in got.items():
        assert [e["state"] for e in evs if e.get("type") == "bus"][0] == "down", name
        for cid in ("C-r1", "C-r2"):
            assert [e["index"] for e in evs if e.get("type") == "window" and e["call_id"] == cid] == [0, 1, 2], name
        assert {e["replica"] for e in evs if e.get("type") == "bus_outage"} == {"r1", "r2"}, name
    assert all(s.get("calls_reregistered") == 1 and not s.get("superseded") for s in stats), stats
    went, back = outage_lines(caplog)
    assert len(went) == 2 and len(back) == 2, (went, back)

"""Two ser-serve processes' worth of servers (two registries with the real models, in one
process) share one desk through a real redis-server: one feed and one /api/calls see the
calls of both; a server that dies mid-call (its bus killed: no call_end, heartbeats left to
lapse) gets its call announced ``call_lost``; the caller reconnecting to the other server
with the same callSid continues the call as segment 2, its lost audio counted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiohttp
import pytest

from streamer.serve.bus import BusOptions, RedisBus
from tests.redis_util import redis_server  # noqa: F401  (fixture)
from tests.serve_util import collect, espeak_mulaw, play_call, server_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HANG_S = 30.0  # only keeps a hung request or socket from hanging the suite; not a speed figure


@contextlib.asynccontextmanager
async def server_on_bus(models, cfg, log_dir, bus):
    from streamer.serve.http.app import start
    from streamer.serve.server import build_server

    built = build_server(models, cfg, TOKEN, bus=bus, log_dir=log_dir, loop=asyncio.get_running_loop())
    registry = built.registry
    runner, port = await start(built.app, "127.0.0.1", 0, shutdown_timeout=1.0)
    try:
        yield f"http://127.0.0.1:{port}", registry
    finally:
        await runner.cleanup()


def test_two_servers_one_desk_a_lost_call_and_its_second_segment(models, redis_server, tmp_path):
    customer = espeak_mulaw(tmp_path, "c", "I have been waiting for an hour and nobody answers my question.")
    agent = espeak_mulaw(tmp_path, "a", "I am sorry about that, let me look at your account.")
    fast = dict(url=redis_server.url, desk="e2e", ttl_s=1.0, beat_s=0.25, watch_s=0.2, keep_ended_s=600)

    async def scenario():
        cfg = server_config()
        bus_a, bus_b = RedisBus(BusOptions(replica="gw-a", **fast)), RedisBus(BusOptions(replica="gw-b", **fast))
        async with server_on_bus(models, cfg, tmp_path / "a", bus_a) as (url_a, reg_a), \
                server_on_bus(models, cfg, tmp_path / "b", bus_b) as (url_b, reg_b), aiohttp.ClientSession() as http:
            feed = await http.ws_connect(f"{url_a}/events", headers=AUTH)  # the desk: server A's feed
            await asyncio.sleep(0.3)
            ca = await http.ws_connect(f"{url_a}/twilio")
            cb = await http.ws_connect(f"{url_b}/twilio")
            turns = [("inbound", customer), ("outbound", agent)]
            await asyncio.gather(play_call(ca, "CA-A", turns), play_call(cb, "CA-B", turns, stop=False))
            seen: list[dict] = []
            got_a_end = got_b_window = False

            def until(e):
                nonlocal got_a_end, got_b_window
                got_a_end |= e["type"] == "call_end" and e["call_id"] == "CA-A"
                got_b_window |= e["type"] == "window" and e["call_id"] == "CA-B"
                return got_a_end and got_b_window

            seen += await collect(feed, until, timeout=40)
            await asyncio.sleep(0.5)  # a heartbeat writes B's row
            async with http.get(f"{url_a}/api/calls", headers=AUTH) as r:
                listing = await r.json()
            async with http.get(f"{url_a}/api/desk", headers=AUTH) as r:
                desk = await r.json()
            # server B dies with CA-B open: nothing more from it, its heartbeat lapses
            await bus_b.kill()
            t0 = time.monotonic()
            seen += await collect(feed, lambda e: e["type"] == "call_lost", timeout=15)
            lost_after = time.monotonic() - t0
            async with http.get(f"{url_a}/api/calls", headers=AUTH) as r:
                after_loss = await r.json()
            await cb.close()
            # the caller reconnects to server A with the same callSid
            await asyncio.sleep(0.5)
            ca2 = await http.ws_connect(f"{url_a}/twilio")
            await play_call(ca2, "CA-B", turns)
            seen += await collect(feed, lambda e: e["type"] == "call_end" and e["call_id"] == "CA-B", timeout=40)
            await asyncio.sleep(0.3)
            async with http.get(f"{url_a}/api/calls", headers=AUTH) as r:
                final = await r.json()
            await feed.close()
            return seen, listing, desk, lost_after, after_loss, final, reg_a

    seen, listing, desk, lost_after, after_loss, final, reg_a = asyncio.run(scenario())
    print(f"call_lost {lost_after:.2f} s after the server's bus died (ttl 1.0 s)")
    # one feed, both servers' calls
    by = {c: [e for e in seen if e["call_id"] == c] for c in ("CA-A", "CA-B")}
    assert by["CA-A"][0]["type"] == "call_start" and by["CA-A"][-1]["type"] == "call_end"
    assert any(e["type"] == "window" for e in by["CA-A"]) and any(e["type"] == "window" for e in by["CA-B"])
    assert all(e.get("bus_id") for e in seen)  # read back from the stream
    rows = {r["call_id"]: r for r in listing["calls"]}
    assert rows["CA-A"]["owner"] == "gw-a" and rows["CA-A"]["state"] == "ended"
    assert rows["CA-B"]["owner"] == "gw-b" and rows["CA-B"]["state"] == "active" and rows["CA-B"]["windows"] >= 1
    cards = {c["call_id"]: c for c in desk["calls"]}
    assert cards["CA-B"].get("remote") and cards["CA-B"]["last"]
    # the lost call: one call_lost, and the listing says so
    lost = [e for e in seen if e["type"] == "call_lost"]
    assert [(e["call_id"], e["segment"], e["replica"]) for e in lost] == [("CA-B", 1, "gw-b")]
    # a product promise (a dead server's call is announced lost within 15 s), not a speed figure
    assert lost_after < 15.0
    assert {r["call_id"]: r for r in after_loss["calls"]}["CA-B"]["state"] == "lost"
    # the second segment, on server A
    seg2 = [e for e in by["CA-B"] if e.get("segment") == 2]
    kinds = [e["type"] for e in seg2]
    assert kinds[0] == "call_start" and "call_resumed" in kinds and kinds[-1] == "call_end" and "window" in kinds
    resumed = next(e for e in seg2 if e["type"] == "call_resumed")
    assert resumed["previous_state"] == "lost" and resumed["gap_s"] > 0.5
    row = {r["call_id"]: r for r in final["calls"]}["CA-B"]
    assert row["segment"] == 2 and [s["state"] for s in row["segments"]] == ["lost", "ended"]
    assert row["lost_audio_s"] == resumed["gap_s"]
    # segment 2's log says which segment it continues, and has the gap
    log_path = reg_a.calls["CA-B"].log_path
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert records[0]["segment"] == 2 and records[0]["resumes"]["state"] == "lost"
    assert any(r["type"] == "call_resumed" and r["gap_s"] == resumed["gap_s"] for r in records)


def test_redis_going_away_is_a_clear_answer_on_every_endpoint(models, tmp_path):
    """Redis killed under a running server: /api/calls answers 503 naming the bus, a new call is
    refused (1013), rather than either hanging; /events stays open and says the bus is down
    (tests/test_redis_outage.py: what it gets when Redis is back); /healthz answers 200,
    "degraded". (The bus's own timeouts bound how long that takes; the waits here are hang
    guards only.)"""
    from tests.redis_util import start_redis
    from tests.serve_util import closed_with, start_message

    server = start_redis(tmp_path / "redis")

    async def scenario():
        bus = RedisBus(BusOptions(url=server.url, desk="gone", timeout_s=1.0, block_s=0.5, ttl_s=2.0, beat_s=0.5))
        async with server_on_bus(models, server_config(), tmp_path / "logs", bus) as (url, _reg), \
                aiohttp.ClientSession() as http:
            feed = await http.ws_connect(f"{url}/events", headers=AUTH)
            await asyncio.sleep(0.3)
            server.kill()
            t0 = time.monotonic()
            async with http.get(f"{url}/api/calls", headers=AUTH, timeout=aiohttp.ClientTimeout(total=HANG_S)) as r:
                status, text = r.status, await r.text()
            api_s = time.monotonic() - t0  # printed below, not asserted
            said = json.loads((await feed.receive(timeout=HANG_S)).data)
            feed_s = time.monotonic() - t0  # printed below, not asserted
            async with http.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=HANG_S)) as r:
                health = r.status, await r.json()
            call = await http.ws_connect(f"{url}/twilio")
            await call.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await call.send_str(start_message("CA-G", token=TOKEN))
            refused = await closed_with(call, timeout=HANG_S)
            return status, text, api_s, said, feed_s, feed.closed, health, refused

    try:
        status, text, api_s, said, feed_s, feed_closed, health, refused = asyncio.run(scenario())
    finally:
        server.stop()
    print(f"/api/calls 503 after {api_s:.2f} s, /events said the bus was down after {feed_s:.2f} s")
    assert status == 503 and "results bus" in text and "Redis" in text
    assert said["type"] == "bus" and said["state"] == "down" and "Redis" in said["error"] and not feed_closed
    assert health[0] == 200 and health[1]["status"] == "degraded" and health[1]["bus"]["state"] == "down"
    assert refused[0] == 1013 and "results bus" in refused[1]

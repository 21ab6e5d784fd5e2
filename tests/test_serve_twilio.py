"""ser-serve's /twilio end to end: real espeak-ng speech as mu-law 8 kHz (sox), the real
models, a server on 127.0.0.1 and a free port; the results on /events, the API and the log;
admission; every bad-input case while another call keeps being served."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
import weakref

import aiohttp
import pytest

from tests.serve_util import (SILENCE, closed_with, collect, espeak_mulaw, media_message, play_call, running_server,
                              server_config, start_message)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    d = tmp_path_factory.mktemp("twilio")
    return {"customer": espeak_mulaw(d, "customer", "I am so happy today, this is wonderful news for everyone."),
            "agent": espeak_mulaw(d, "agent", "I understand, let me check your account right now.")}


def test_two_track_call_gives_per_track_results_on_the_feed_api_and_log(models, speech, tmp_path):
    async def scenario():
        cfg = server_config()
        async with running_server(models, cfg, tmp_path) as (url, registry), aiohttp.ClientSession() as http:
            feed = await http.ws_connect(f"{url}/events", headers=AUTH)
            lazy = registry.subscribe(maxsize=2)  # a subscriber that never reads
            lag = asyncio.ensure_future(loop_lag())
            call = await http.ws_connect(f"{url}/twilio")  # the token comes in customParameters
            await play_call(call, "CA01", [("inbound", speech["customer"]), ("outbound", speech["agent"])])
            events = await collect(feed, lambda e: e["type"] == "call_end")
            lag.cancel()
            code, _ = await closed_with(call)
            async with http.get(f"{url}/api/calls", headers=AUTH) as r:
                listing = await r.json()
            async with http.get(f"{url}/api/calls/CA01?token={TOKEN}") as r:
                detail = await r.json()
            async with http.get(f"{url}/metrics", headers=AUTH) as r:
                metrics = await r.text()
            await feed.close()
            return events, code, listing, detail, metrics, lazy

    lags = [0.0]

    async def loop_lag():  # how late the event loop wakes a 10 ms sleep: model code must not run there
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - t - 0.01)

    events, code, listing, detail, metrics, lazy = asyncio.run(scenario())
    print(f"event loop lag: worst {max(lags) * 1e3:.0f} ms, p99 {sorted(lags)[int(len(lags) * 0.99)] * 1e3:.0f} ms "
          f"over {len(lags)} wakes")
    assert max(lags) < 0.25
    assert code == 1000
    # the subscriber that never read lost its own oldest events, and nobody else's
    assert lazy.dropped == len(events) - 2 and len(lazy) == 2
    assert f"ser_serve_events_dropped_total {float(lazy.dropped)}" in metrics
    kinds = [e["type"] for e in events]
    assert kinds[0] == "call_start" and kinds[-1] == "call_end" and "error" not in kinds
    assert events[0]["call_id"] == "CA01" and events[0]["tracks"] == ["customer", "agent"]
    assert all(e["call_id"] == "CA01" for e in events)
    windows = [e for e in events if e["type"] == "window"]
    utterances = [e for e in events if e["type"] == "utterance"]
    assert {e["track"] for e in windows} == {"customer", "agent"}
    assert {e["track"] for e in utterances} == {"customer", "agent"}
    said = {u["track"]: u["transcript"].lower() for u in utterances}
    assert "happy" in said["customer"] and "account" in said["agent"]
    # each track's time runs from the call's first audio: the agent speaks after the customer
    first_agent = min(w["start_s"] for w in windows if w["track"] == "agent")
    assert first_agent > 3.0
    for w in windows:
        assert w["label"] and 0 <= w["confidence"] <= 1 and w["feed_latency_ms"] >= w["latency_ms"] >= 0
    assert events[-1]["tracks"].keys() == {"customer", "agent"}

    row = [c for c in listing["calls"] if c["call_id"] == "CA01"][0]
    assert row["state"] == "ended" and row["source"] == "twilio" and set(row["last"]) == {"customer", "agent"}
    assert row["last"]["agent"]["type"] == "window" and row["dropped"] == {"audio_s": 0.0, "windows": 0}
    assert len(detail["windows"]) == len(windows) and len(detail["utterances"]) == len(utterances)

    assert 'ser_serve_calls_total{source="twilio"} 1.0' in metrics
    assert f"ser_serve_windows_total {float(len(windows))}" in metrics
    assert f"ser_serve_window_latency_seconds_count {float(len(windows))}" in metrics
    assert "ser_serve_active_calls 0.0" in metrics

    (log,) = list(tmp_path.glob("*CA01*.ndjson"))
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records[0]["type"] == "session_start" and records[0]["call_id"] == "CA01"
    assert records[0]["source"] == "twilio" and "config" in records[0] and "models" in records[0]
    assert records[-1]["type"] == "session_end" and records[-1]["error"] is None
    assert set(records[-1]["tracks"]) == {"customer", "agent"}
    logged = [r for r in records if r["type"] in ("window", "utterance")]
    assert len(logged) == len(windows) + len(utterances)
    assert all(r["call_id"] == "CA01" and r["track"] in ("customer", "agent") for r in logged)
    assert "t0ken" not in log.read_text()  # customParameters.token is not logged


def test_admission_refuses_the_call_beyond_max_calls_with_1013(models, speech, tmp_path):
    async def scenario():
        cfg = server_config(max_calls=1, keep_ended_min=0.0)
        async with running_server(models, cfg, tmp_path) as (url, registry), aiohttp.ClientSession() as http:
            first = await http.ws_connect(f"{url}/twilio", headers=AUTH)
            await first.send_str(start_message("CA1"))
            await first.send_str(media_message("CA1", "inbound", 1, SILENCE))
            while not registry.active_calls:
                await asyncio.sleep(0.01)
            track = next(iter(registry.calls["CA1"].runners.values()))
            held = [weakref.ref(o) for o in (track, track.source, track.pipeline, track.pipeline.session)]
            del track
            second = await http.ws_connect(f"{url}/twilio", headers=AUTH)
            await second.send_str(start_message("CA2"))
            refused = await closed_with(second)
            async with http.get(f"{url}/metrics", headers=AUTH) as r:
                metrics = await r.text()
            await first.close()  # hung up without a stop: the call ends, its place is free again
            while registry.active_calls:
                await asyncio.sleep(0.01)
            for _ in range(500):  # the ended call's analysers are freed (runner, source, pipeline and
                if not any(r() for r in held):  # session, none kept by a reference cycle) and its
                    break  # memory goes back to the system, off the loop
                await asyncio.sleep(0.01)
            collected, trims = not any(r() for r in held), registry.heap.trims
            third = await http.ws_connect(f"{url}/twilio", headers=AUTH)
            await third.send_str(start_message("CA3"))
            await third.send_str(media_message("CA3", "inbound", 1, SILENCE))
            while not registry.active_calls:
                await asyncio.sleep(0.01)
            listed = [c["call_id"] for c in registry.listing()]
            await third.close()
            return refused, metrics, listed, trims, collected

    (code, reason), metrics, listed, trims, collected = asyncio.run(scenario())
    assert code == 1013 and "max_calls" in reason
    assert collected and trims == 1
    assert 'ser_serve_calls_refused_total{reason="max_calls"} 1.0' in metrics
    assert 'ser_serve_calls_total{source="twilio"} 1.0' in metrics
    assert listed == ["CA3"]  # keep_ended_min = 0: the ended CA1 is no longer listed


BAD = {  # name: (messages after the handshake, close code, words in the reason)
    "malformed JSON": (['{"event": "start", '], 1007, "malformed JSON"),
    "media before start": ([media_message("CAx", "inbound", 1, SILENCE)], 1008, "before start"),
    "bad base64": ([start_message("CAb64"), json.dumps({"event": "media", "media": {"track": "inbound",
                    "payload": "not base64!!"}})], 1007, "base64"),
    "unknown event": ([json.dumps({"event": "dance"})], 1008, "unknown event"),
    "unknown track": ([start_message("CAtr"), media_message("CAtr", "sideways", 1, SILENCE)], 1008, "unknown track"),
    "binary frame": ([b"\x00\x01"], 1003, "binary"),
    "message too big": (["x" * 5000], 1009, "4096"),
    "idle client": ([start_message("CAidle")], 1008, "idle_timeout_s"),
    "wrong token": ([start_message("CAtok", token="nope")], 1008, "wrong token"),
    "missing token": ([start_message("CAnotok", token=None)], 1008, "missing token"),
    "call id too long": ([start_message("CA" + "9" * 200)], 1007, "call id of 202 characters"),
}


def test_bad_input_closes_only_its_own_connection(models, speech, tmp_path):
    async def bad(http, url, messages):
        ws = await http.ws_connect(f"{url}/twilio")
        for m in messages:
            await (ws.send_bytes(m) if isinstance(m, bytes) else ws.send_str(m))
        return await closed_with(ws)

    async def scenario():
        cfg = server_config(max_message_bytes=4096, idle_timeout_s=1.0)
        async with running_server(models, cfg, tmp_path) as (url, registry), aiohttp.ClientSession() as http:
            feed = await http.ws_connect(f"{url}/events?call_id=CAgood", headers=AUTH)
            good = await http.ws_connect(f"{url}/twilio", headers=AUTH)
            playing = asyncio.ensure_future(play_call(good, "CAgood", [("inbound", speech["customer"])], pace_s=0.01))
            closes = {name: await bad(http, url, msgs) for name, (msgs, _, _) in BAD.items()}
            try:
                await http.ws_connect(f"{url}/twilio?token=wrong")
                handshake = None
            except aiohttp.WSServerHandshakeError as exc:
                handshake = exc.status
            await playing
            events = await collect(feed, lambda e: e["type"] == "call_end")
            async with http.get(f"{url}/metrics", headers=AUTH) as r:
                metrics = await r.text()
            return closes, handshake, events, metrics, registry

    closes, handshake, events, metrics, registry = asyncio.run(scenario())
    for name, (_, code, words) in BAD.items():
        assert closes[name][0] == code, (name, closes[name])
        assert words in closes[name][1], (name, closes[name])
    assert handshake == 401
    # the good call was served throughout: its windows, its utterance, no error
    assert [e["type"] for e in events if e["type"] in ("call_end", "error")] == ["call_end"]
    assert any(e["type"] == "utterance" and "happy" in e["transcript"].lower() for e in events)
    assert events[-1]["error"] is None
    # each bad call that got as far as a start is logged with its error
    ended = {c["call_id"]: c for c in registry.listing()}
    assert "base64" in ended["CAb64"]["error"] and "idle_timeout_s" in ended["CAidle"]["error"]
    assert "CAtok" not in ended and "CAnotok" not in ended  # never admitted
    assert 'ser_serve_connections_closed_total{code="1007",source="twilio"} 3.0' in metrics
    assert 'ser_serve_calls_refused_total{reason="unauthorized"} 2.0' in metrics  # the start messages' tokens


def test_twilio_signature_is_checked_when_an_auth_token_is_set(models, tmp_path):
    from streamer.serve.http.auth import compute_signature

    async def scenario():
        cfg = server_config(twilio_auth_token="twilio-secret")
        async with running_server(models, cfg, tmp_path) as (url, registry), aiohttp.ClientSession() as http:
            statuses = []
            for sig in (None, "bogus", compute_signature("twilio-secret", f"ws://{url[7:]}/twilio")):
                headers = {**AUTH, **({"X-Twilio-Signature": sig} if sig else {})}
                try:
                    ws = await http.ws_connect(f"{url}/twilio", headers=headers)
                    statuses.append(101)
                    await ws.close()
                except aiohttp.WSServerHandshakeError as exc:
                    statuses.append(exc.status)
            return statuses

    assert asyncio.run(scenario()) == [403, 403, 101]

"""The desk's routes without the models: sign-in (``/?token=T`` and the form) into an HttpOnly
cookie that stands for the token, a wrong token or cookie refused (401, no data), the alert
runner over a call's window results (feed event, log record, metric), acknowledging, dead
air, and an ended call kept with its report.

The calls here are real registry calls whose window results are handed in as a track's
worker would (``Call._on_result``); no track runs, so the models are not loaded (the
registry only needs their names). tests/test_desk_browser.py runs the real thing."""

from __future__ import annotations

import asyncio
import json
import time
import types
from dataclasses import replace

import aiohttp
import pytest

from streamer.core.alerts import AlertRule
from streamer.core.labels import EMOJI, LABELS
from streamer.serve.desk import routes as desk_mod
from streamer.serve.http.app import start
from streamer.serve.server import build_server
from tests.serve_util import server_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TOKEN = "t0ken"
MODELS = types.SimpleNamespace(names={"audio": "(none: routes test)"}, audio=None, text=None)


def window(call_id: str, track: str, i: int, label: str = "angry", conf: float = 0.7, uncertain: bool = False) -> dict:
    fused = {x: (0.94 if x == label else 0.01) for x in LABELS}
    return {"type": "window", "index": i, "utterance": 0, "start_s": 2.5 * i, "end_s": 2.5 * i + 2.5,
            "transcript": "this is not what I ordered", "words": [],
            "probs": {"audio": fused, "text": None, "fused": fused, "rolling": fused},
            "label": label, "emoji": EMOJI[label], "confidence": conf, "uncertain": uncertain,
            "dims": {"fused": {"arousal": 0.6, "valence": -0.5}}, "rolling_label": label, "rolling_emoji": EMOJI[label],
            "rolling_confidence": conf, "latency_ms": 120.0, "timings_ms": {}, "call_id": call_id, "track": track}


class FakeClock:
    """A clock for the desk (``Desk(clock=...)``) that stands still until the test moves it."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Server:
    def __init__(self, tmp_path, rules=None, tick_s=1.0, keep_ended_min=30.0, token=TOKEN, clock=None):
        cfg = server_config()
        cfg = replace(cfg, desk=replace(cfg.desk, keep_ended_min=keep_ended_min))
        if rules is not None:
            cfg = replace(cfg, alerts=tuple(rules))
        self.cfg, self.tmp_path, self.tick_s, self.token, self.clock = cfg, tmp_path, tick_s, token, clock

    async def __aenter__(self):
        built = build_server(MODELS, self.cfg, self.token, log_dir=self.tmp_path, loop=asyncio.get_running_loop(),
                             desk_tick_s=self.tick_s, clock=self.clock)
        self.registry, self.desk, app = built.registry, built.desk, built.app
        self.runner, port = await start(app, "127.0.0.1", 0, shutdown_timeout=1.0)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()


async def until(predicate, timeout: float = 5.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await predicate()
        if got:
            return got
        await asyncio.sleep(step)
    raise AssertionError(f"not within {timeout} s")


def test_sign_in_keeps_a_cookie_and_a_wrong_token_gets_401_and_no_data(tmp_path):
    async def scenario():
        out = {}
        async with Server(tmp_path) as srv:
            call = await srv.registry.open("CAsecret", "twilio", {"customParameters": {"customer": "Ann"}},
                                           ["customer", "agent"])
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                for name, path in [("bare", "/"), ("wrong", "/?token=nope"), ("api", "/api/desk"),
                                   ("alerts", "/api/alerts"), ("css", "/desk/static/desk.css"),
                                   ("js", "/desk/static/desk.js"), ("html file", "/desk/static/desk.html")]:
                    async with http.get(srv.url + path, allow_redirects=False) as r:
                        out[name] = (r.status, await r.text())
                try:
                    await http.ws_connect(srv.url + "/events")
                    out["ws bare"] = 101
                except aiohttp.WSServerHandshakeError as exc:
                    out["ws bare"] = exc.status
                async with http.get(f"{srv.url}/?token={TOKEN}", allow_redirects=False) as r:
                    out["login"] = (r.status, r.headers.get("Location"), r.headers.getall("Set-Cookie", []))
                cookie = http.cookie_jar.filter_cookies(srv.url).get(desk_mod.COOKIE)
                out["cookie"] = cookie.value if cookie else None
                async with http.get(srv.url + "/") as r:
                    out["page"] = (r.status, await r.text())
                async with http.get(srv.url + "/api/desk") as r:
                    out["state"] = (r.status, await r.json())
                ws = await http.ws_connect(srv.url + "/events")  # the cookie goes with the handshake
                out["ws cookie"] = not ws.closed
                await ws.close()
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                http.cookie_jar.update_cookies({desk_mod.COOKIE: "0" * 64})
                async with http.get(srv.url + "/api/desk") as r:
                    out["bad cookie"] = (r.status, await r.text())
                async with http.post(srv.url + "/login", data={"token": "nope"}, allow_redirects=False) as r:
                    out["form wrong"] = (r.status, r.headers.getall("Set-Cookie", []))
                async with http.post(srv.url + "/login", data={"token": TOKEN}, allow_redirects=False) as r:
                    out["form"] = (r.status, r.headers.get("Location"))
                async with http.get(srv.url + "/api/alerts") as r:
                    out["form then api"] = r.status
            async with aiohttp.ClientSession() as http, http.get(srv.url + "/metrics?token=" + TOKEN) as r:
                out["metrics"] = await r.text()
            await srv.registry.end(call)
        return out

    out = asyncio.run(scenario())
    for name in ("bare", "wrong"):  # the login form, 401, nothing about the calls
        status, body = out[name]
        assert status == 401 and 'name="token"' in body and "CAsecret" not in body and "Ann" not in body
    assert "Wrong token" in out["wrong"][1]
    assert out["api"][0] == 401 and out["alerts"][0] == 401 and out["ws bare"] == 401
    assert "CAsecret" not in out["api"][1]
    assert out["css"][0] == 200 and out["js"][0] == 200 and out["html file"][0] == 404  # the page needs the token
    status, location, cookies = out["login"]
    assert status == 303 and location == "/"
    assert len(cookies) == 1 and "HttpOnly" in cookies[0] and "SameSite=Lax" in cookies[0]
    assert out["cookie"] and TOKEN not in out["cookie"]  # a keyed hash, not the token
    assert out["page"][0] == 200 and "/desk/static/desk.js" in out["page"][1]
    status, state = out["state"]
    assert status == 200 and [c["call_id"] for c in state["calls"]] == ["CAsecret"]
    assert state["calls"][0]["names"] == {"customer": "Ann"} and state["calls"][0]["tracks"] == ["customer", "agent"]
    assert out["ws cookie"]
    assert out["bad cookie"][0] == 401 and "CAsecret" not in out["bad cookie"][1]
    assert out["form wrong"] == (401, [])
    assert out["form"] == (303, "/") and out["form then api"] == 200
    assert 'ser_serve_unauthorized_total{path="/login"} 1.0' in out["metrics"]


def test_three_angry_windows_raise_an_alert_on_the_feed_in_the_log_and_in_metrics_and_ack_clears_it(tmp_path):
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def scenario():
        out = {}
        async with Server(tmp_path) as srv, aiohttp.ClientSession(headers=auth) as http:
            feed = await http.ws_connect(srv.url + "/events")
            call = await srv.registry.open("CAangry", "twilio", {}, ["customer", "agent"])
            await asyncio.sleep(0.1)
            call._on_result(window(call.id, "agent", 0), time.monotonic())  # the rule watches the customer only
            call._on_result(window(call.id, "agent", 1), time.monotonic())
            call._on_result(window(call.id, "agent", 2), time.monotonic())
            call._on_result(window(call.id, "customer", 0), time.monotonic())
            call._on_result(window(call.id, "customer", 1, uncertain=True), time.monotonic())  # breaks the run
            for i in (2, 3):
                call._on_result(window(call.id, "customer", i), time.monotonic())
            await asyncio.sleep(0.3)
            async with http.get(srv.url + "/api/alerts") as r:
                out["before"] = (await r.json())["alerts"]
            call._on_result(window(call.id, "customer", 4, conf=0.5), time.monotonic())

            async def got_alert():
                async with http.get(srv.url + "/api/alerts?open=1") as r:
                    return (await r.json())["alerts"]

            out["alerts"] = await until(got_alert)
            events = []

            async def read_feed():
                async for msg in feed:
                    events.append(json.loads(msg.data))
                    if events[-1]["type"] == "alert_ack":
                        return

            reader = asyncio.ensure_future(read_feed())
            aid = out["alerts"][0]["id"]
            async with http.post(f"{srv.url}/api/alerts/{aid}/ack", headers={"Authorization": "Bearer nope"}) as r:
                out["wrong ack"] = r.status
            async with http.get(srv.url + "/api/alerts?open=1") as r:
                out["still open"] = len((await r.json())["alerts"])
            async with http.post(f"{srv.url}/api/alerts/{aid}/ack") as r:
                out["ack"] = (r.status, await r.json())
            async with http.post(f"{srv.url}/api/alerts/{aid}/ack") as r:  # again: no change
                out["ack again"] = (await r.json())["acked"]
            async with http.post(f"{srv.url}/api/alerts/nope/ack") as r:
                out["unknown"] = r.status
            await asyncio.wait_for(reader, 5.0)
            out["events"] = events
            async with http.get(srv.url + "/api/alerts?open=1") as r:
                out["after"] = (await r.json())["alerts"]
            async with http.get(srv.url + "/api/desk") as r:
                out["state"] = await r.json()
            async with http.get(srv.url + "/metrics") as r:
                out["metrics"] = await r.text()
            await feed.close()
            await srv.registry.end(call)
            out["log"] = [json.loads(x) for x in call.log_path.read_text().splitlines()]
        return out

    out = asyncio.run(scenario())
    assert out["before"] == []  # agent windows and the broken run raised nothing
    [alert] = out["alerts"]
    assert alert["rule"] == "angry customer" and alert["call_id"] == "CAangry" and alert["track"] == "customer"
    assert alert["reason"] == "customer angry in 3 windows in a row, confidence 0.63" and alert["at_s"] == 12.5
    assert alert["time"] and alert["acked"] is None
    assert out["wrong ack"] == 401 and out["still open"] == 1
    status, acked = out["ack"]
    assert status == 200 and acked["acked"]["time"] and out["ack again"] == acked["acked"]
    assert out["unknown"] == 404 and out["after"] == []
    kinds = [e["type"] for e in out["events"]]
    feed_alert = next(e for e in out["events"] if e["type"] == "alert")
    assert {k: feed_alert[k] for k in ("rule", "call_id", "track", "reason")} == \
        {k: alert[k] for k in ("rule", "call_id", "track", "reason")} and feed_alert["time"]
    assert kinds.count("alert_ack") == 1
    assert 'ser_serve_alerts_total{rule="angry customer"} 1.0' in out["metrics"]
    logged = [r for r in out["log"] if r["type"] in ("alert", "alert_ack")]
    assert [r["type"] for r in logged] == ["alert", "alert_ack"] and logged[0]["reason"] == alert["reason"]
    card = out["state"]["calls"][0]
    assert card["last"]["customer"]["label"] == "angry" and card["last"]["agent"]["label"] == "angry"
    assert [a["id"] for a in out["state"]["alerts"]] == [alert["id"]]  # acked, still listed with its call


def test_dead_air_fires_when_the_stream_sends_nothing(tmp_path):
    """On the desk's clock (a fake one, moved by the test): nothing before silence_s of no audio,
    the alert at exactly silence_s, nothing in the cooldown, and the desk's own runner ticks too.
    The runner only ever sees the clock readings set here, so every outcome is exact."""
    rules = [AlertRule("dead air", silence_s=1.0, cooldown_s=60.0)]
    clock = FakeClock(1000.0)

    async def scenario():
        out = {}
        async with Server(tmp_path, rules=rules, tick_s=0.05, clock=clock) as srv:
            call = await srv.registry.open("CAquiet", "twilio", {}, ["customer"])

            async def started():  # the runner took the call_start at 1000.0
                return call.id in srv.desk.engines

            await until(started, timeout=30.0)  # a hang guard only

            def dead_air():
                return [a for a in srv.desk.alerts.values() if a["rule"] == "dead air"]

            # tick() by hand right after moving the clock (no await in between): exact readings
            clock.t = 1000.5
            out["at 0.5 s"] = srv.desk.tick()
            clock.t = 1000.875
            out["at 0.875 s"] = srv.desk.tick()
            clock.t = 1001.0
            out["at 1 s"] = srv.desk.tick()
            clock.t = 1060.5
            out["in the cooldown"] = srv.desk.tick()
            # past the cooldown, leave it to the runner (it ticks every tick_s of the desk's clock)
            clock.t = 1061.0

            async def fired_twice():
                return len(dead_air()) == 2

            await until(fired_twice, timeout=30.0)  # a hang guard only
            out["alerts"] = dead_air()
            await srv.registry.end(call)
        return out

    out = asyncio.run(scenario())
    assert out["at 0.5 s"] == [] and out["at 0.875 s"] == [] and out["in the cooldown"] == []
    [first] = out["at 1 s"]
    assert first["rule"] == "dead air" and first["track"] is None and "no audio for 1 s" in first["reason"]
    assert out["alerts"][0]["id"] == first["id"]
    second = out["alerts"][1]  # raised by the runner, at 1061.0: 61 s after the call started
    assert second["track"] is None and "no audio for 61 s" in second["reason"]


def test_an_ended_call_stays_listed_with_its_report(tmp_path):
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def scenario():
        async with Server(tmp_path) as srv, aiohttp.ClientSession(headers=auth) as http:
            call = await srv.registry.open("CAdone", "twilio", {}, ["customer"])
            for i in range(3):
                call._on_result(window(call.id, "customer", i, label="neutral"), time.monotonic())
            await srv.registry.end(call)
            await asyncio.sleep(0.2)
            async with http.get(srv.url + "/api/desk") as r:
                state = await r.json()
            async with http.get(srv.url + state["calls"][0]["report"]) as r:
                report = (r.status, r.headers.get("Content-Type"), await r.text())
            async with http.get(srv.url + "/desk/report/CAnone") as r:
                missing = r.status
            return state, report, missing

    state, report, missing = asyncio.run(scenario())
    [card] = state["calls"]
    assert card["state"] == "ended" and card["report"] == "/desk/report/CAdone" and state["keep_ended_min"] == 30.0
    status, ctype, body = report
    assert status == 200 and ctype.startswith("text/html") and "<html" in body.lower()
    assert missing == 404


def test_ended_calls_leave_the_desk_after_keep_ended_min(tmp_path):
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def scenario():
        async with Server(tmp_path, keep_ended_min=0.0) as srv, aiohttp.ClientSession(headers=auth) as http:
            call = await srv.registry.open("CAgone", "twilio", {}, ["customer"])
            live = await srv.registry.open("CAlive", "twilio", {}, ["customer"])
            await srv.registry.end(call)
            await asyncio.sleep(0.2)
            async with http.get(srv.url + "/api/desk") as r:
                state = await r.json()
            await srv.registry.end(live)
            return [c["call_id"] for c in state["calls"]]

    assert asyncio.run(scenario()) == ["CAlive"]


def test_without_a_token_the_desk_is_open_on_loopback(tmp_path):
    async def scenario():
        async with Server(tmp_path, token=None) as srv, aiohttp.ClientSession() as http:
            out = {}
            for path in ("/", "/api/desk", "/login"):
                async with http.get(srv.url + path, allow_redirects=False) as r:
                    out[path] = (r.status, r.headers.get("Location"), r.headers.getall("Set-Cookie", []))
            return out

    out = asyncio.run(scenario())
    assert out["/"][0] == 200 and out["/api/desk"][0] == 200
    assert out["/login"][:2] == (303, "/") and out["/"][2] == []

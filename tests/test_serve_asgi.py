"""The gateway's endpoints outside Ray: ser-serve's aiohttp handlers behind the ASGI bridge
(:mod:`streamer.serve.cluster.asgi`), served by uvicorn on 127.0.0.1 as a Ray Serve replica serves its
FastAPI ingress. The same calls give the same results as on the aiohttp server; tokens, close
codes and reasons, the desk's sign-in cookie and files are those of the aiohttp server."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import numpy as np
import pytest

from streamer.serve import client
from tests.serve_util import running_server, server_config

uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

TOKEN = "t0ken"


@pytest.fixture(scope="module")
def call_audio(tmp_path_factory):
    """A two-track phone call at 8 kHz: the customer speaks, then the agent."""
    import subprocess

    d = tmp_path_factory.mktemp("asgi")
    out = []
    for name, text in (("customer", "my parcel never arrived and I want my money back right now"),
                       ("agent", "I am so sorry to hear that, let me look at your account")):
        wav = d / f"{name}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), text], check=True)
        out.append(client.load_pcm(wav, 8000))
    customer, agent = out
    gap = np.zeros(8000, np.int16)
    return (np.concatenate([customer, gap, np.zeros_like(agent), gap]),
            np.concatenate([np.zeros_like(customer), gap, agent, gap]))


@contextlib.asynccontextmanager
async def bridged(models, tmp_path, token: str | None = TOKEN, **server):
    """(base URL, gateway) of a Gateway behind uvicorn on 127.0.0.1 and a free port."""
    from streamer.serve.cluster.gateway import Gateway, GatewayOptions
    from streamer.serve.cluster.ingress import asgi_app

    gw = Gateway(GatewayOptions(token=token, log_dir=str(tmp_path / "logs")), models=models)
    if server:  # the registry reads its settings at each call
        from dataclasses import replace

        gw.registry.cfg = replace(gw.registry.cfg, server=replace(gw.registry.cfg.server, **server))
    await gw.start()
    config = uvicorn.Config(asgi_app(gw), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    task = asyncio.ensure_future(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.02)
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", gw
    finally:
        await gw.stop()
        srv.should_exit = True
        await task


def summary(detail: dict) -> list[tuple]:
    return sorted((w["track"], w["index"], w["label"], round(w["confidence"], 3)) for w in detail["windows"])


def test_a_call_through_the_bridge_gives_what_the_aiohttp_server_gives(models, tmp_path, call_audio):
    customer, agent = call_audio

    async def run(kind: str):
        if kind == "asgi":
            ctx = bridged(models, tmp_path / kind)
        else:
            ctx = running_server(models, server_config(), tmp_path / kind, token=TOKEN)
        async with ctx as (base, _), aiohttp.ClientSession() as s:
            ws_base = base.replace("http", "ws")
            events = await s.ws_connect(f"{ws_base}/events?token={TOKEN}")
            got = await client.play_twilio(s, f"{ws_base}/twilio", customer, agent, token=TOKEN, call_sid="CA1",
                                           speed=0)
            detail = await client.wait_ended(s, base, "CA1", token=TOKEN)
            types = []
            async for msg in events:
                ev = json.loads(msg.data)
                types.append(ev["type"])
                if ev["type"] == "call_end":
                    break
            await events.close()
            return got, detail, types

    async def both():
        return await run("aiohttp"), await run("asgi")

    (a_got, a, a_types), (b_got, b, b_types) = asyncio.run(both())
    assert a_got["close_code"] == b_got["close_code"] == 1000
    assert a["state"] == b["state"] == "ended"
    assert summary(a) and summary(a) == summary(b)
    def said(d):  # the two tracks' utterances finish in either order
        return sorted((u["track"], u["start_s"], u["transcript"]) for u in d["utterances"])

    assert said(a) == said(b)
    assert "money back" in " ".join(u["transcript"] for u in b["utterances"])
    assert sorted(a_types) == sorted(b_types) and a_types[0] == b_types[0] == "call_start"
    assert a_types[-1] == b_types[-1] == "call_end" and "window" in a_types


def test_tokens_close_codes_and_reasons_are_the_aiohttp_servers(models, tmp_path):
    async def run():
        async with bridged(models, tmp_path, max_message_bytes=4096) as (base, gw), aiohttp.ClientSession() as s:
            ws_base = base.replace("http", "ws")
            async with s.get(f"{base}/healthz") as r:
                assert r.status == 200 and (await r.json())["status"] == "ok"
            async with s.get(f"{base}/api/calls") as r:
                assert r.status == 401 and "missing token" in await r.text()
            async with s.get(f"{base}/api/calls", headers={"Authorization": "Bearer nope"}) as r:
                assert r.status == 401 and "wrong token" in await r.text()
            async with s.get(f"{base}/api/calls?token={TOKEN}") as r:
                assert r.status == 200 and (await r.json())["calls"] == []
            async with s.get(f"{base}/api/calls/nosuch?token={TOKEN}") as r:
                assert r.status == 404 and "nosuch" in await r.text()
            async with s.get(f"{base}/metrics?token={TOKEN}") as r:
                assert r.status == 200 and "ser_serve_active_calls" in await r.text()
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await s.ws_connect(f"{ws_base}/events?token=nope")
            assert err.value.status in (401, 403)
            out = {}
            for name, send in (("json", lambda ws: ws.send_str("{bad")),
                               ("binary", lambda ws: ws.send_bytes(b"\x00" * 10)),
                               ("big", lambda ws: ws.send_str("x" * 5000)),
                               ("order", lambda ws: ws.send_str(json.dumps({"event": "media", "media": {}})))):
                async with s.ws_connect(f"{ws_base}/twilio?token={TOKEN}", max_msg_size=0) as ws:
                    await send(ws)
                    msg = await ws.receive(timeout=10)
                    out[name] = (msg.type, msg.data, msg.extra)
            return out, gw.registry.metrics.render().decode()

    out, metrics = asyncio.run(run())
    assert out["json"][1] == 1007 and "malformed JSON" in out["json"][2]
    assert out["binary"][1] == 1003 and "binary" in out["binary"][2]
    assert out["big"][1] == 1009 and "4096 bytes" in out["big"][2] and "max_message_bytes" in out["big"][2]
    assert out["order"][1] == 1008 and "media before start" in out["order"][2]
    assert 'ser_serve_unauthorized_total{path="/api/calls"} 2.0' in metrics


def test_the_desk_signs_in_with_a_cookie_and_serves_its_files(models, tmp_path):
    async def run():
        async with bridged(models, tmp_path) as (base, _):
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:  # no cookie yet
                async with s.get(f"{base}/") as r:
                    assert r.status == 401 and "token" in (await r.text()).lower()
                async with s.get(f"{base}/?token={TOKEN}", allow_redirects=False) as r:
                    assert r.status == 303
                    cookie = r.headers["Set-Cookie"]
                    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and TOKEN not in cookie
                async with s.get(f"{base}/") as r:  # the cookie stands for the token
                    assert r.status == 200 and "text/html" in r.headers["Content-Type"]
                    assert "<html" in (await r.text()).lower()
                async with s.get(f"{base}/api/desk") as r:
                    assert r.status == 200 and "calls" in await r.json()
                async with s.get(f"{base}/desk/static/desk.js") as r:
                    assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
                    assert len(await r.read()) > 1000
            async with aiohttp.ClientSession() as s:  # the sign-in form
                async with s.post(f"{base}/login", data={"token": "nope"}, allow_redirects=False) as r:
                    assert r.status == 401
                async with s.post(f"{base}/login", data={"token": TOKEN}, allow_redirects=False) as r:
                    assert r.status == 303 and "ser_desk=" in r.headers["Set-Cookie"]

    asyncio.run(run())


def test_vosk_and_audio_fork_through_the_bridge(models, tmp_path, call_audio):
    customer, agent = call_audio

    async def run():
        async with bridged(models, tmp_path) as (base, _), aiohttp.ClientSession() as s:
            ws_base = base.replace("http", "ws")
            vosk = await client.play_vosk(s, f"{ws_base}/vosk", customer, 8000, token=TOKEN, speed=0)
            fork = await client.play_audiofork(s, f"{ws_base}/audio-fork", [customer, agent], 8000, token=TOKEN,
                                               call_id="fork-1", speed=0)
            detail = await client.wait_ended(s, base, "fork-1", token=TOKEN)
            return vosk, fork, detail

    vosk, fork, detail = asyncio.run(run())
    assert "money" in vosk["replies"][-1].get("text", "")
    assert fork["protocol"] == "audio.drachtio.org" and fork["close_code"] in (1000, None)
    assert {w["track"] for w in detail["windows"]} == {"customer", "agent"}

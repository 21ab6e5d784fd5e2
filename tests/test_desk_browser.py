"""The desk in a real browser: Debian's chromium driven by Playwright, over a ser-serve on
127.0.0.1 with the real models. Three two-track Twilio calls are played in real time with
ser-call's client (``streamer.serve.client.play_twilio``), one with an angry customer (espeak-ng's
loud, overdriven voice saying angry lines, ``conftest.ANGRY_VOICE``, as the inbound track); the
other turns are calm lines in other espeak-ng voices. The page must show three
``data-call-id`` cards and their transcripts, catch up after its feed drops, show the angry
rule's alert within 10 s of its last qualifying window, lose it on acknowledge, show the
call's detail (transcript per speaker, a timeline per track), fit a 390-px phone, show the
calls as ended with a report after ``stop``, and refuse a wrong token.

``SER_DESK_SCREENSHOTS=docs`` saves the grid and detail screenshots (1280x800) there
(docs/desk_grid.png, docs/desk_detail.png); otherwise they go to the test's tmp folder."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ANGRY_LINES, ANGRY_VOICE, espeak

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
CHROMIUM = "/usr/bin/chromium"
TOKEN = "t0ken"
RATE = 8000  # Twilio's
GAP_S = 0.5
ANGRY = [ANGRY_LINES[0], ANGRY_LINES[1], ANGRY_LINES[2], ANGRY_LINES[0]]  # the customer says the first again
CALM = ["Good morning, thank you for calling, how can I help you?", "I would like to check the status of my order.",
        "Of course, may I have your order number please?", "Yes, it is four five six seven eight.",
        "Thank you, one moment while I look it up.", "Your parcel left the warehouse this morning.",
        "Hello, I am calling about my internet connection.", "I can help with that, what seems to be the problem?",
        "It has been a bit slow in the evenings.", "Let me run a quick test on your line.",
        "The line looks fine, I will reset your router now.", "Great, that sounds good, thank you.",
        "You are welcome, have a nice day."]
CALLS = {  # call id -> (names, turns: (track, line))
    "CAangry0001": ({"customer": "Dana Reyes", "agent": "Sam Okafor"},
                    [("customer", ANGRY[0]), ("agent", CALM[0]), ("customer", ANGRY[1]), ("customer", ANGRY[2]),
                     ("customer", ANGRY[3])]),
    "CAcalm00002": ({"customer": "Lee Park", "agent": "Ana Silva"},
                    [("customer", CALM[1]), ("agent", CALM[2]), ("customer", CALM[3]), ("agent", CALM[4]),
                     ("customer", CALM[5]), ("agent", CALM[6])]),
    "CAcalm00003": ({"customer": "Omar Haddad", "agent": "Jo Brandt"},
                    [("agent", CALM[7]), ("customer", CALM[8]), ("agent", CALM[9]), ("customer", CALM[10]),
                     ("agent", CALM[11]), ("customer", CALM[12])]),
}
ANGRY_ID = "CAangry0001"


@pytest.fixture(scope="module")
def models():
    import torch

    from streamer.runtime.config import Config
    from streamer.runtime.models import load_models, warm_up

    torch.set_num_threads(1)
    m = load_models(Config.load())
    warm_up(m)
    return m


def line(path: Path, track: str, text: str) -> np.ndarray:
    """One turn at 8 kHz: an angry line in the angry voice, a calm one in the track's voice."""
    from streamer.serve.client import load_pcm

    voice = ANGRY_VOICE if text in ANGRY_LINES else {"voice": "en-us+f2" if track == "agent" else "en-us+m1"}
    return load_pcm(espeak(path, text, **voice), RATE)


def two_tracks(folder: Path, turns: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """(customer, agent) at 8 kHz: the speakers take turns, the other track silent meanwhile."""
    folder.mkdir()
    parts = {"customer": [], "agent": []}
    for k, (track, text) in enumerate(turns):
        x = np.concatenate([line(folder / f"{k}.wav", track, text), np.zeros(int(GAP_S * RATE), np.int16)])
        parts[track].append(x)
        parts["agent" if track == "customer" else "customer"].append(np.zeros_like(x))
    return np.concatenate(parts["customer"]), np.concatenate(parts["agent"])


def test_the_desk_in_chromium(models, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not here: apt-get install chromium")
    pw = pytest.importorskip("playwright.async_api")
    shots = Path(os.environ.get("SER_DESK_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    audio = {cid: two_tracks(tmp_path / cid, turns) for cid, (_, turns) in CALLS.items()}
    out = asyncio.run(asyncio.wait_for(scenario(pw, models, tmp_path, audio, shots), 150))

    assert out["cards"] == 3 and out["after login"].endswith("/") and "token" not in out["after login"]
    assert out["transcript"]
    assert out["reconnected"]
    assert out["alert"]["rule"] == "angry customer" and out["alert"]["track"] == "customer"
    print(f"the alert was on the page {out['alert_on_page_s']:.2f} s after its last qualifying window reached the feed")
    assert out["alert_on_page_s"] < 10.0, out["alert_on_page_s"]
    assert out["in list"] and out["first card"] == ANGRY_ID
    assert out["customer label"] in ("angry", "disgust", "fear", "surprise", "sad", "happy", "neutral")
    assert out["names"] and "Dana Reyes" in out["names"]
    assert out["detail lines"] >= 1 and out["timelines"] >= 2
    assert out["after ack"] == 0 and out["acked on server"]
    assert out["order after ack"][-1] == ANGRY_ID  # no open alert: back to the order the calls started in
    assert out["phone overflow"] <= 390
    assert out["ended"] == 3 and out["report"][0] == 200 and "<html" in out["report"][1].lower()
    assert out["wrong"][0] == 401 and out["wrong"][1] == 0 and "Dana" not in out["wrong"][2]
    assert out["wrong api"] == 401
    for name in ("desk_grid.png", "desk_detail.png"):
        assert (shots / name).stat().st_size > 20_000


async def scenario(pw, models, tmp_path, audio, shots) -> dict:
    import aiohttp

    from streamer.serve.client import play_twilio
    from streamer.serve.http.app import start
    from streamer.serve.server import build_server
    from tests.serve_util import server_config

    out: dict = {}
    built = build_server(models, server_config(max_calls=4), TOKEN, log_dir=tmp_path / "logs",
                         loop=asyncio.get_running_loop())
    registry, app, desk = built.registry, built.app, built.desk
    runner, port = await start(app, "127.0.0.1", 0, shutdown_timeout=1.0)
    url = f"http://127.0.0.1:{port}"
    seen: dict = {"windows": {}, "alert": None, "alert_t": None}
    sub = registry.subscribe(ANGRY_ID)

    async def watch():  # when each of the angry call's customer windows reached the feed
        while True:
            ev = await sub.get(timeout=0.5)
            if ev is None:
                if sub.closed:
                    return
                continue
            if ev["type"] == "window" and ev["track"] == "customer":
                seen["windows"][ev["end_s"]] = time.monotonic()
            elif ev["type"] == "alert" and seen["alert"] is None:
                seen["alert"], seen["alert_t"] = ev, time.monotonic()

    watcher = asyncio.ensure_future(watch())
    try:
        async with pw.async_playwright() as p, aiohttp.ClientSession() as http:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            ctx = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await ctx.new_page()
            await page.goto(f"{url}/?token={TOKEN}")  # signs in, then / without the token
            out["after login"] = page.url
            await page.wait_for_selector('#conn[data-conn="live"]', timeout=10_000)

            ws_url = url.replace("http", "ws") + "/twilio"

            async def play(cid: str, delay_s: float) -> dict:
                await asyncio.sleep(delay_s)
                cust, agent = audio[cid]
                return await play_twilio(http, ws_url, cust, agent, token=TOKEN, call_sid=cid, params=CALLS[cid][0])

            # the angry call starts last: its card comes first only because it has an open alert
            calls = [asyncio.ensure_future(play(cid, 1.0 if cid == ANGRY_ID else 0.0)) for cid in CALLS]
            await page.wait_for_function("document.querySelectorAll('#grid [data-call-id]').length === 3",
                                         timeout=15_000)
            out["cards"] = await page.locator("#grid [data-call-id]").count()
            out["names"] = await page.locator(f'[data-call-id="{ANGRY_ID}"] .names').inner_text()

            # the feed drops: the page reconnects and catches up from /api/desk
            await page.evaluate("S.ws.close()")
            await page.wait_for_selector('#conn[data-conn="down"]', timeout=5_000)
            await page.wait_for_selector('#conn[data-conn="live"]', timeout=10_000)
            out["reconnected"] = await page.locator("#grid [data-call-id]").count() == 3

            await page.wait_for_function(
                "[...document.querySelectorAll('#grid .utt')].some(e => e.textContent.trim().length > 5)",
                timeout=20_000)
            out["transcript"] = True

            deadline = time.monotonic() + 40
            while seen["alert"] is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert seen["alert"] is not None, "the angry customer raised no alert"
            out["alert"] = seen["alert"]
            t_window = seen["windows"].get(seen["alert"]["at_s"], seen["alert_t"])
            sel = f'#grid [data-call-id="{ANGRY_ID}"] [data-alert-rule="angry customer"]'
            await page.wait_for_selector(sel, timeout=max(100, int((t_window + 10 - time.monotonic()) * 1000)))
            out["alert_on_page_s"] = time.monotonic() - t_window
            out["in list"] = await page.locator('#alert-list [data-alert-rule="angry customer"]').count() == 1
            out["first card"] = await page.evaluate("document.querySelector('#grid [data-call-id]').dataset.callId")
            out["order"] = await page.evaluate("[...document.querySelectorAll('#grid [data-call-id]')].map(e => e.dataset.callId)")
            out["customer label"] = await page.get_attribute(
                f'[data-call-id="{ANGRY_ID}"] [data-track="customer"][data-label]', "data-label", timeout=5_000)
            await page.wait_for_timeout(1500)  # every card with its latest window
            await page.screenshot(path=str(shots / "desk_grid.png"))

            await page.click(f'#grid [data-call-id="{ANGRY_ID}"] .cid')
            await page.wait_for_selector('#detail [data-transcript="customer"] li[data-utterance]', timeout=10_000)
            await page.wait_for_selector('#detail svg[data-timeline="customer"] circle', timeout=10_000)
            out["detail lines"] = await page.locator("#detail li[data-utterance]").count()
            out["timelines"] = await page.locator("#detail svg[data-timeline]").count()
            await page.screenshot(path=str(shots / "desk_detail.png"))
            await page.click("#back")

            await page.click(f'#grid [data-call-id="{ANGRY_ID}"] [data-ack]')
            await page.wait_for_selector('[data-alert-rule="angry customer"]', state="detached", timeout=5_000)
            out["after ack"] = await page.locator("[data-alert-rule]").count()
            out["order after ack"] = await page.evaluate(
                "[...document.querySelectorAll('#grid [data-call-id]')].map(e => e.dataset.callId)")
            out["acked on server"] = desk.alerts[seen["alert"]["id"]]["acked"] is not None

            await page.set_viewport_size({"width": 390, "height": 844})
            await page.wait_for_timeout(300)
            out["phone overflow"] = await page.evaluate("document.documentElement.scrollWidth")
            await page.screenshot(path=str(tmp_path / "desk_phone.png"), full_page=True)
            await page.set_viewport_size({"width": 1280, "height": 800})

            results = await asyncio.wait_for(asyncio.gather(*calls), 60)
            assert all(r["close_code"] == 1000 for r in results), results
            await page.wait_for_function(
                "document.querySelectorAll('#grid [data-call-id][data-state=\"ended\"]').length === 3", timeout=20_000)
            out["ended"] = await page.locator('#grid [data-state="ended"] .card-foot a').count()
            href = await page.get_attribute(f'[data-call-id="{ANGRY_ID}"] .card-foot a', "href")
            r = await page.request.get(url + href, timeout=60_000)
            out["report"] = (r.status, await r.text())

            other = await browser.new_context(viewport={"width": 1280, "height": 800})
            wrong = await other.new_page()
            resp = await wrong.goto(f"{url}/?token=nope")
            await wrong.wait_for_timeout(500)
            out["wrong"] = (resp.status, await wrong.locator("[data-call-id]").count(), await wrong.content())
            out["wrong api"] = (await other.request.get(url + "/api/desk")).status
            await browser.close()
    finally:
        watcher.cancel()
        registry.unsubscribe(sub)
        await runner.cleanup()
    return out

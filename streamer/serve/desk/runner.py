"""The desk's alert runner and page state: one :class:`streamer.core.alerts.Alerts` per call over
``[[alerts]]``, fed by the registry's feed, dead-air rules ticked about once a second; every
alert kept for the page, counted (``ser_serve_alerts_total{rule}``), written into the call's log
and published on the feed. The routes that show it are in :mod:`streamer.serve.desk.routes`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from pathlib import Path

from streamer.core.alerts import Alerts
from streamer.runtime.config import Config
from streamer.live.session_log import now_iso
from streamer.serve.calls.call import Call
from streamer.serve.calls.registry import CallRegistry

log = logging.getLogger(__name__)

MAX_ALERTS = 5000  # kept for the page (the calls' logs have them all)
TICK_S = 1.0  # dead-air rules are checked this often


def call_names(meta: dict) -> dict[str, str]:
    """The names a call's platform gave it: Twilio's ``customParameters`` (the token left
    out), else the short text fields of the metadata (audio-fork).

    >>> call_names({"streamSid": "MZ1", "customParameters": {"customer": "Ann Lee", "agent": "Bo", "token": "x"}})
    {'customer': 'Ann Lee', 'agent': 'Bo'}
    >>> call_names({"callId": "c1", "sampleRate": 8000, "caller": "+4411"})
    {'callId': 'c1', 'caller': '+4411'}
    """
    params = meta.get("customParameters")
    source = params if isinstance(params, dict) else meta
    out: dict[str, str] = {}
    for k, v in source.items():
        if k == "token" or not isinstance(v, (str, int)) or isinstance(v, bool):
            continue
        if source is meta and (not isinstance(v, str) or k in ("streamSid", "accountSid")):
            continue
        out[str(k)[:40]] = str(v)[:80]
        if len(out) >= 6:
            break
    return out


def compact(record: dict | None) -> dict | None:
    """The fields of a window or utterance record the page shows.

    >>> compact({"type": "window", "label": "angry", "emoji": "x", "confidence": 0.71234, "uncertain": False,
    ...          "end_s": 5.0, "dims": {"fused": {"arousal": 0.6, "valence": -0.4}}, "probs": {}})["arousal"]
    0.6
    """
    if not record:
        return None
    fused = (record.get("dims") or {}).get("fused") or {}
    return {"type": record.get("type"), "index": record.get("index"), "start_s": record.get("start_s"),
            "end_s": record.get("end_s"), "label": record.get("label"), "emoji": record.get("emoji"),
            "confidence": record.get("confidence"), "uncertain": bool(record.get("uncertain")),
            "arousal": fused.get("arousal"), "valence": fused.get("valence"), "transcript": record.get("transcript")}


def remote_card(row: dict) -> dict:
    """A card for a call another replica holds, from its row on the bus (no transcript or
    timeline here: those live where the call does).

    >>> c = remote_card({"call_id": "B1", "tracks": ["customer"], "state": "lost", "started": "2026-01-01T00:00:00+00:00",
    ...                  "ended": "2026-01-01T00:01:30+00:00", "meta": {"customParameters": {"agent": "Bo"}},
    ...                  "last": {"customer": {"label": "sad", "dims": {}}}})
    >>> c["names"], c["duration_s"], c["last"]["customer"]["label"], c["remote"]
    ({'agent': 'Bo'}, 90.0, 'sad', True)
    """
    from datetime import datetime, timezone

    def when(v):
        try:
            return datetime.fromisoformat(v) if v else None
        except (TypeError, ValueError):
            return None

    start, end = when(row.get("started")), when(row.get("ended")) or datetime.now(timezone.utc)
    card = {k: v for k, v in row.items() if k not in ("last", "meta")}
    card.update(last={t: compact(w) for t, w in (row.get("last") or {}).items()},
                last_utterance={t: None for t in row.get("tracks") or []}, names=call_names(row.get("meta") or {}),
                duration_s=round((end - start).total_seconds(), 1) if start else 0.0, report=None, remote=True)
    return card


def _pushed(call: Call | None) -> int:
    """Samples pushed into the call's tracks so far (a stream that stops sending stops it)."""
    if call is None:
        return 0
    return sum(r.pushed for r in list(call.runners.values()))


def _as_kept(ev: dict) -> dict:
    """A bus event as the desk keeps it (without the stream's own stamps)."""
    return {k: v for k, v in ev.items() if k not in ("bus_id", "segment")}


class Desk:
    """The alerts of every call, and what the page shows. Runs on the event loop."""

    def __init__(self, registry: CallRegistry, cfg: Config | None = None, tick_s: float = TICK_S,
                 clock=time.monotonic) -> None:
        self.registry = registry
        self.cfg = cfg or registry.cfg
        self.rules = tuple(self.cfg.alerts)
        self.keep_s = self.cfg.desk.keep_ended_min * 60.0
        self.tick_s = tick_s
        self.clock = clock
        self.engines: dict[str, Alerts] = {}
        self.audio: dict[str, int] = {}  # call id -> samples pushed at the last tick
        self.alerts: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self.ended: dict[str, dict] = {}  # call id -> the ended call's card, kept keep_s
        self.counter = registry.metrics.alerts  # ser_serve_alerts_total{rule}
        self._sub = None
        self._task: asyncio.Task | None = None
        self._bus_task: asyncio.Task | None = None
        self._reports: dict[str, asyncio.Future] = {}

    # --- the runner -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._sub = self.registry.subscribe(None)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ser-serve desk alerts")
        if self._bus_task is None and self.registry.bus.kind != "local":
            self._bus_task = asyncio.get_running_loop().create_task(self._follow_bus(), name="ser-serve desk bus")

    async def _follow_bus(self) -> None:
        """With a shared bus: the alerts other replicas raise, and acknowledgements made on any
        replica's desk, so that every desk lists the same alerts (the rules run where the call is)."""
        from streamer.serve.bus import BusError

        # from [desk] keep_ended_min ago (a stream entry's id is its time in ms): a replica that
        # starts later (a replacement, a scale-up) lists the alerts raised before it too
        last = f"{max(0, int((time.time() - self.keep_s) * 1000))}-0"
        while True:
            sub = self.registry.bus.follow(None, since=last)
            try:
                while (ev := await sub.get()) is not None:
                    last = ev.get("bus_id", last)
                    if ev.get("type") in ("alert", "alert_ack"):
                        self.on_bus(ev)
            except BusError as exc:
                log.warning("desk: lost the results bus (%s); following it again", exc)
            finally:
                sub.close()
            await asyncio.sleep(1.0)

    def on_bus(self, ev: dict) -> None:
        """An ``alert`` or ``alert_ack`` event from the bus (this replica's own come back too)."""
        alert_id = ev.get("id")
        if not alert_id:
            return
        if ev["type"] == "alert":
            if alert_id not in self.alerts:
                self.alerts[alert_id] = _as_kept(ev) | {"acked": None}
                while len(self.alerts) > MAX_ALERTS:
                    self.alerts.popitem(last=False)
            return
        alert = self.alerts.get(alert_id)
        if alert is not None and alert["acked"] is None:  # acknowledged on another replica's desk
            alert["acked"] = {"time": ev.get("time"), "by": ev.get("by", "")}
            self._log(alert["call_id"], _as_kept(ev))

    async def stop(self) -> None:
        if self._bus_task is not None:
            self._bus_task.cancel()
            self._bus_task = None
        if self._sub is not None:
            self.registry.unsubscribe(self._sub)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        sub = self._sub
        next_tick = self.clock() + self.tick_s
        try:
            while True:
                ev = await sub.get(timeout=max(0.0, next_tick - self.clock()))
                if ev is not None:
                    try:
                        self.handle(ev)
                    except Exception:  # one odd event must not stop the alerts of every call
                        log.exception("desk: handling a %s event failed", ev.get("type"))
                elif sub.closed:
                    break
                if self.clock() >= next_tick:
                    self.tick()
                    next_tick = self.clock() + self.tick_s
        finally:
            self.registry.unsubscribe(sub)

    def _engine(self, call_id: str) -> Alerts:
        eng = self.engines.get(call_id)
        if eng is None:
            eng = self.engines[call_id] = Alerts(self.rules, call_id, started=self.clock())
        return eng

    def handle(self, ev: dict) -> list[dict]:
        """One feed event; returns the alerts it raised."""
        kind, call_id = ev.get("type"), ev.get("call_id")
        if not call_id:
            return []
        raised: list[dict] = []
        if kind == "call_start":
            self.ended.pop(call_id, None)
            self.engines[call_id] = Alerts(self.rules, call_id, started=self.clock())
            self.audio[call_id] = 0
        elif kind == "window":
            eng = self._engine(call_id)
            eng.on_audio(self.clock())
            raised = [self._raise(a) for a in eng.on_window(ev, self.clock())]
        elif kind == "call_end":
            self.engines.pop(call_id, None)
            self.audio.pop(call_id, None)
            call = self.registry.calls.get(call_id)
            if call is not None:
                card = self.card(call)
                card["duration_s"] = ev.get("duration_s", card.get("duration_s"))
                self.ended[call_id] = {**card, "_ended_mono": self.clock()}
        return raised

    def tick(self) -> list[dict]:
        """The dead-air rules of every active call (audio seen since the last tick counts)."""
        now = self.clock()
        raised: list[dict] = []
        for call_id, eng in list(self.engines.items()):
            call = self.registry.calls.get(call_id)
            n = _pushed(call)
            if n != self.audio.get(call_id):
                self.audio[call_id] = n
                eng.on_audio(now)
            raised += [self._raise(a) for a in eng.tick(now, ended=call is None or not call.active)]
        self._prune()
        return raised

    def _raise(self, alert: dict) -> dict:
        alert = {**{k: v for k, v in alert.items() if k != "wall_s"}, "time": now_iso(), "acked": None}  # wall_s: this process's clock
        base, n = alert["id"], 1
        while alert["id"] in self.alerts:  # a call id used again
            n += 1
            alert["id"] = f"{base}.{n}"
        self.alerts[alert["id"]] = alert
        while len(self.alerts) > MAX_ALERTS:
            self.alerts.popitem(last=False)
        self.counter.labels(rule=alert["rule"]).inc()
        self._log(alert["call_id"], {k: v for k, v in alert.items() if k != "acked"})
        log.warning("call %s: alert %r: %s", alert["call_id"], alert["rule"], alert["reason"])
        self.registry.publish(dict(alert))
        return alert

    def _log(self, call_id: str, record: dict) -> None:
        call = self.registry.calls.get(call_id)
        if call is not None and call.state != "ended":
            call.session.write(record)

    def ack(self, alert_id: str, by: str = "") -> dict:
        """Acknowledge an alert (KeyError when unknown); a second ack changes nothing."""
        alert = self.alerts[alert_id]
        if alert["acked"] is None:
            alert["acked"] = {"time": now_iso(), "by": by}
            event = {"type": "alert_ack", "id": alert_id, "rule": alert["rule"], "call_id": alert["call_id"],
                     "track": alert["track"], "time": alert["acked"]["time"], "by": by}
            self._log(alert["call_id"], event)
            log.info("call %s: alert %s (%s) acknowledged by %s", alert["call_id"], alert_id, alert["rule"], by or "?")
            self.registry.publish(event)
        return alert

    # --- what the page draws ----------------------------------------------------------------
    def _prune(self) -> None:
        now = self.clock()
        for cid, card in list(self.ended.items()):
            if now - card["_ended_mono"] > self.keep_s:
                del self.ended[cid]

    def card(self, call: Call) -> dict:
        row = call.summary_row()
        last_utt: dict[str, dict | None] = {t: None for t in row["tracks"]}
        for u in reversed(call.utterances):
            t = u.get("track")
            if t in last_utt and last_utt[t] is None:
                last_utt[t] = compact(u)
            if all(v is not None for v in last_utt.values()):
                break
        end = call.ended_mono if call.ended_mono is not None else time.monotonic()
        return {**{k: v for k, v in row.items() if k != "last"}, "last": {t: compact(w) for t, w in row["last"].items()},
                "last_utterance": last_utt, "names": call_names(call.meta),
                "duration_s": round(end - call.started_mono, 1),
                "report": f"/desk/report/{call.id}" if call.state == "ended" else None}

    def state(self, remote: list[dict] | None = None) -> dict:
        """``GET /api/desk``; ``remote``: the bus's rows (every replica's calls), whose calls
        held elsewhere get a card from their row."""
        self._prune()
        cards, seen = [], set()
        for row in self.registry.listing():
            call = self.registry.calls.get(row["call_id"])
            if call is None:
                continue
            if call.state == "ended" and (call.id in self.ended or call.ended_mono is None
                                          or time.monotonic() - call.ended_mono > self.keep_s):
                continue  # the desk's own card of it, or gone after [desk] keep_ended_min
            cards.append(self.card(call))
            seen.add(call.id)
        for cid, card in self.ended.items():
            if cid not in seen:
                cards.append({k: v for k, v in card.items() if not k.startswith("_")})
                seen.add(cid)
        for row in remote or []:
            cid = row.get("call_id")
            if cid and cid not in seen and cid not in self.registry.calls:
                cards.append(remote_card(row))
                seen.add(cid)
        alerts = [a for a in self.alerts.values() if a["call_id"] in seen or a["acked"] is None]
        return {"calls": cards, "alerts": alerts, "keep_ended_min": self.cfg.desk.keep_ended_min,
                "rules": [r.name for r in self.rules], "time": now_iso()}

    def log_path(self, call_id: str) -> Path | None:
        call = self.registry.calls.get(call_id)
        if call is not None and call.state == "ended":
            return call.log_path
        card = self.ended.get(call_id)
        return Path(card["log"]) if card and card.get("log") else None

    async def report(self, call_id: str) -> Path:
        """The ser-report HTML of an ended call's log (made once, in a thread; again when the
        log is newer). FileNotFoundError when no ended call has that id."""
        path = self.log_path(call_id)
        if path is None or not path.exists():
            raise FileNotFoundError(call_id)
        html = path.with_suffix(".html")
        if html.exists() and html.stat().st_mtime >= path.stat().st_mtime:
            return html
        fut = self._reports.get(call_id)
        if fut is None:
            from streamer.report.page import report

            loop = asyncio.get_running_loop()
            fut = self._reports[call_id] = loop.run_in_executor(None, report, path, html, None)
        try:
            await asyncio.shield(fut)
        finally:
            self._reports.pop(call_id, None)
        return html


/* ser-serve call desk: plain JavaScript, no build step, nothing loaded from elsewhere.
 *
 * State comes from GET /api/desk (on load and after every reconnect) and then from the
 * /events feed (call_start, window, utterance, call_end, error, alert, alert_ack). A call's
 * detail loads GET /api/calls/{id} (its windows and utterances so far) and then follows
 * the feed. The token travels in the HttpOnly cookie the server set at sign-in.
 *
 * With Redis, the feed also says how the results bus is: "bus" events from this server
 * (down, catching_up, up: the banner, and the state again from /api/desk once it is up) and
 * "bus_outage" records from every server that kept events through an outage (a notice: how
 * many arrived late, how many were lost).
 */
"use strict";

const LABEL_COLOURS = {
  angry: "#d62728", disgust: "#8c564b", fear: "#9467bd", happy: "#e6a700",
  neutral: "#7f7f7f", sad: "#1f77b4", surprise: "#17becf",
};
const MAX_POINTS = 2000;       // windows kept per track in the detail view
const MAX_UTTERANCES = 500;    // utterances kept per call in the detail view

const S = {
  calls: new Map(),    // call_id -> call
  alerts: new Map(),   // alert id -> alert
  keepEndedMin: 30,
  detail: null,        // {id, windows: {track: [w]}, utterances: [u], loaded}
  ws: null,
  backoff: 1000,
  buffering: null,     // events that arrived while catching up
  dirty: true,
  cards: new Map(),    // call_id -> {key, el}: the grid's cards as last drawn
  bus: {state: "up"},  // this server's last "bus" event
  busNotes: [],        // "bus_outage" records, newest first
  retry: null,         // a catch-up to try again (the bus was down when the page asked)
};
const MAX_BUS_NOTES = 5;

// --- small helpers -------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function clock(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  const s = Math.max(0, Math.floor(seconds));
  const m = Math.floor(s / 60), r = s % 60;
  return m >= 60 ? `${Math.floor(m / 60)}:${String(m % 60).padStart(2, "0")}:${String(r).padStart(2, "0")}`
                 : `${m}:${String(r).padStart(2, "0")}`;
}

function signed(x) {
  if (x === null || x === undefined || !isFinite(x)) return "–";
  return (x >= 0 ? "+" : "−") + Math.abs(x).toFixed(2);
}

function title(s) { return s ? s.charAt(0).toUpperCase() + s.slice(1) : ""; }

function namesOf(meta) {  // mirrors streamer.serve.desk.runner.call_names
  const out = {};
  if (!meta) return out;
  const params = meta.customParameters;
  const src = params && typeof params === "object" ? params : meta;
  for (const [k, v] of Object.entries(src)) {
    if (k === "token") continue;
    if (src === meta && (typeof v !== "string" || k === "streamSid" || k === "accountSid")) continue;
    if (typeof v !== "string" && typeof v !== "number") continue;
    out[k] = String(v);
    if (Object.keys(out).length >= 6) break;
  }
  return out;
}

function compact(r) {  // mirrors streamer.serve.desk.runner.compact
  if (!r) return null;
  const fused = (r.dims && r.dims.fused) || {};
  return {type: r.type, index: r.index, start_s: r.start_s, end_s: r.end_s, label: r.label, emoji: r.emoji,
          confidence: r.confidence, uncertain: !!r.uncertain, arousal: fused.arousal ?? r.arousal,
          valence: fused.valence ?? r.valence, transcript: r.transcript};
}

async function api(path, options) {
  const resp = await fetch(path, {credentials: "same-origin", ...(options || {})});
  if (resp.status === 401) { location.href = "/login"; throw new Error("signed out"); }
  if (!resp.ok) throw new Error(`${path}: ${resp.status}`);
  return resp.json();
}

// --- the model -----------------------------------------------------------------------------
function upsertCall(c) {
  const old = S.calls.get(c.call_id) || {};
  const call = {
    call_id: c.call_id, source: c.source || old.source || "", tracks: c.tracks || old.tracks || [],
    names: c.names || old.names || {}, state: c.state || old.state || "active", error: c.error ?? old.error ?? null,
    last: {...(old.last || {}), ...(c.last || {})}, last_utterance: {...(old.last_utterance || {}), ...(c.last_utterance || {})},
    report: c.report ?? old.report ?? null, duration_s: c.duration_s ?? old.duration_s ?? 0,
    startedAt: c.startedAt ?? old.startedAt ?? Date.now(), endedAt: c.endedAt ?? old.endedAt ?? null,
  };
  for (const t of Object.keys(call.last)) if (!call.tracks.includes(t)) call.tracks.push(t);
  S.calls.set(call.call_id, call);
  S.dirty = true;
  return call;
}

function fromServer(state) {
  S.keepEndedMin = state.keep_ended_min ?? S.keepEndedMin;
  const calls = new Map();
  const now = Date.now();
  for (const c of state.calls) {
    const ended = c.state === "ended" || c.state === "lost";
    calls.set(c.call_id, {
      call_id: c.call_id, source: c.source, tracks: c.tracks || [], names: c.names || {}, state: c.state,
      error: c.error, last: c.last || {}, last_utterance: c.last_utterance || {}, report: c.report,
      duration_s: c.duration_s || 0, startedAt: now - (c.duration_s || 0) * 1000,
      endedAt: ended ? (S.calls.get(c.call_id)?.endedAt ?? now) : null,
    });
  }
  S.calls = calls;
  S.alerts = new Map(state.alerts.map(a => [a.id, a]));
  S.dirty = true;
}

function apply(ev) {
  const id = ev.call_id;
  if (!id) return;
  const d = S.detail && S.detail.id === id ? S.detail : null;
  switch (ev.type) {
    case "call_start":
      upsertCall({call_id: id, source: ev.source, tracks: ev.tracks || [], names: namesOf(ev.meta), state: "active",
                  startedAt: Date.now(), duration_s: 0, last: {}, last_utterance: {}, report: null, endedAt: null});
      if (d) loadDetail(id);
      break;
    case "window": {
      const call = S.calls.get(id) || upsertCall({call_id: id});
      call.last[ev.track] = compact(ev);
      if (!call.tracks.includes(ev.track)) call.tracks.push(ev.track);
      if (d && d.loaded) addWindow(d, compact(ev), ev.track);
      S.dirty = true;
      break;
    }
    case "utterance": {
      const call = S.calls.get(id) || upsertCall({call_id: id});
      call.last_utterance[ev.track] = compact(ev);
      if (d && d.loaded) addUtterance(d, {...compact(ev), track: ev.track});
      S.dirty = true;
      break;
    }
    case "call_end": {
      const call = S.calls.get(id) || upsertCall({call_id: id});
      call.state = "ended";
      call.duration_s = ev.duration_s ?? (Date.now() - call.startedAt) / 1000;
      call.endedAt = Date.now();
      call.report = `/desk/report/${encodeURIComponent(id)}`;
      if (ev.error) call.error = ev.error;
      S.dirty = true;
      break;
    }
    case "call_lost": {  // the server holding it stopped (its heartbeat on the bus lapsed)
      const call = S.calls.get(id) || upsertCall({call_id: id});
      call.state = "lost";
      call.duration_s = (Date.now() - call.startedAt) / 1000;
      call.endedAt = Date.now();
      call.error = ev.reason || "the server holding this call stopped";
      S.dirty = true;
      break;
    }
    case "call_reclaimed": {  // announced lost while its server could not reach Redis; it went on
      const call = S.calls.get(id) || upsertCall({call_id: id});
      call.state = "active";
      call.endedAt = null;
      call.error = null;
      S.dirty = true;
      break;
    }
    case "call_resumed": {  // a reconnect: the same call as its next segment, the audio in between lost
      const call = S.calls.get(id);
      if (call) { call.error = `segment ${ev.segment}: ${ev.gap_s ?? "?"} s of audio lost before it`; S.dirty = true; }
      break;
    }
    case "error": {
      const call = S.calls.get(id);
      if (call) { call.error = ev.error; S.dirty = true; }
      break;
    }
    case "alert":
      S.alerts.set(ev.id, ev);
      S.dirty = true;
      break;
    case "alert_ack": {
      const a = S.alerts.get(ev.id);
      if (a) { a.acked = {time: ev.time, by: ev.by}; S.dirty = true; }
      break;
    }
  }
}

function openAlerts(callId) {
  return [...S.alerts.values()].filter(a => !a.acked && (callId === undefined || a.call_id === callId));
}

function prune() {
  const keepMs = S.keepEndedMin * 60 * 1000;
  const now = Date.now();
  for (const [id, c] of S.calls) {
    if ((c.state === "ended" || c.state === "lost") && c.endedAt !== null && now - c.endedAt > keepMs) { S.calls.delete(id); S.dirty = true; }
  }
}

// --- the results bus -----------------------------------------------------------------------
function hhmmss(iso) { return (iso || "").slice(11, 19); }

function onBus(ev) {  // this server's view of the bus: down, catching_up, up
  const was = S.bus.state;
  S.bus = ev;
  renderBus();
  if (ev.state === "up" && was !== "up") {  // all it kept has come: the state again, as it is now
    catchUp().catch(err => console.warn("catch-up failed", err));
  }
}

function onOutage(ev) {  // a server (this one or another) kept events through an outage
  S.busNotes.unshift(ev);
  S.busNotes.length = Math.min(S.busNotes.length, MAX_BUS_NOTES);
  renderBus();
}

function renderBus() {
  const el = document.getElementById("bus");
  const b = S.bus;
  el.dataset.state = b.state;
  el.hidden = b.state === "up";
  const waiting = b.waiting || 0, dropped = b.outage_dropped || 0;
  if (b.state === "down") {
    el.textContent = `Results bus down since ${hhmmss(b.since)} (${Math.round(b.down_s || 0)} s): the calls go on ` +
      `and are logged; ${waiting} event(s) held for this page, shown when it is back` +
      (dropped ? `; ${dropped} dropped, the server's buffer being full (the calls' logs have them)` : "") + ".";
    el.title = b.error || "";
    setConn("behind", "behind: bus down");
  } else if (b.state === "catching_up") {
    el.textContent = `Results bus back: catching up, ${waiting} event(s) still to come.`;
    el.title = "";
    setConn("behind", "catching up…");
  } else if (S.ws && S.ws.readyState === WebSocket.OPEN) {
    setConn("live", "live");
  }
  document.getElementById("bus-notes").replaceChildren(...S.busNotes.map(n =>
    h("li", {class: "bus-note", "data-replica": n.replica || "", "data-dropped": n.dropped || 0,
             "data-kept": n.kept || 0},
      h("span", {}, `${hhmmss(n.since)}: server ${n.replica || "?"} could not reach the results bus for ` +
        `${Math.round(n.down_s || 0)} s; ${n.kept || 0} event(s) arrived late` +
        (n.dropped ? `, ${n.dropped} were lost (the calls' logs have them)` : ", none lost") + "."),
      h("button", {type: "button", "aria-label": "dismiss", title: "dismiss",
                   onclick: () => { S.busNotes = S.busNotes.filter(x => x !== n); renderBus(); }}, "×"))));
}

// --- the feed ------------------------------------------------------------------------------
function setConn(state, text) {
  const el = document.getElementById("conn");
  el.dataset.conn = state;
  el.textContent = text;
}

async function catchUp() {
  S.buffering = [];
  clearTimeout(S.retry);
  try {
    fromServer(await api("/api/desk"));
  } catch (err) {  // the bus is down (503): the feed says so; try again in a while
    const ws = S.ws;
    S.retry = setTimeout(() => { if (S.ws === ws) catchUp().catch(e => console.warn("catch-up failed", e)); }, 5000);
    throw err;
  } finally {
    const held = S.buffering || [];
    S.buffering = null;
    for (const ev of held) apply(ev);
  }
  if (S.detail) loadDetail(S.detail.id);
  render();
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/events`);
  S.ws = ws;
  setConn("connecting", "connecting…");
  ws.onopen = () => {
    S.backoff = 1000;
    S.bus = {state: "up"};
    setConn("live", "live");
    renderBus();
    catchUp().catch(err => console.warn("catch-up failed", err));
  };
  ws.onmessage = msg => {
    let ev;
    try { ev = JSON.parse(msg.data); } catch (e) { return; }
    if (ev.type === "bus") { onBus(ev); return; }
    if (ev.type === "bus_outage") { onOutage(ev); return; }
    if (S.buffering) S.buffering.push(ev); else apply(ev);
  };
  ws.onclose = closed => {
    if (S.ws !== ws) return;
    const wait = S.backoff;
    S.backoff = Math.min(S.backoff * 2, 10000);
    const why = /results bus/.test(closed.reason || "") ? "results bus unavailable; " : "";
    setConn("down", `${why}reconnecting in ${Math.round(wait / 1000)} s…`);
    setTimeout(() => {
      // a refused handshake looks like any drop: ask the API whether we are still signed in
      api("/api/desk").then(() => connect(), () => connect());
    }, wait);
  };
}

async function ack(alertId, button) {
  if (button) button.disabled = true;
  try {
    const a = await api(`/api/alerts/${encodeURIComponent(alertId)}/ack`, {method: "POST"});
    S.alerts.set(a.id, a);
  } catch (err) {
    console.warn("ack failed", err);
    if (button) button.disabled = false;
  }
  S.dirty = true;
  render();
}

// --- the grid ------------------------------------------------------------------------------
function durationOf(c) {
  return c.state === "ended" ? c.duration_s : (Date.now() - c.startedAt) / 1000;
}

function alertItem(a, withCall) {
  const call = S.calls.get(a.call_id);
  const names = call ? Object.values(call.names).join(", ") : "";
  return h("li", {class: "alert", "data-alert-rule": a.rule, "data-alert-id": a.id, "data-call": a.call_id},
    h("span", {class: "alert-icon", "aria-hidden": "true"}, "⚠"),
    h("span", {class: "alert-text"},
      h("b", {class: "rule"}, a.rule),
      withCall ? h("a", {class: "alert-call", href: `#call=${encodeURIComponent(a.call_id)}`}, ` ${a.call_id}${names ? " (" + names + ")" : ""}`) : null,
      h("span", {class: "reason"}, ` ${a.reason}`),
      h("time", {class: "when", datetime: a.time}, ` ${(a.time || "").slice(11, 19)}`)),
    h("button", {type: "button", class: "ack", "data-ack": a.id,
                 onclick: e => { e.stopPropagation(); ack(a.id, e.currentTarget); }}, "Acknowledge"));
}

function trackBox(c, t) {
  const w = c.last[t];
  const u = c.last_utterance[t];
  const attrs = {class: "track", "data-track": t};
  if (w && w.label) { attrs["data-label"] = w.label; attrs["data-uncertain"] = w.uncertain ? "true" : "false"; }
  return h("div", attrs,
    h("div", {class: "who"}, title(t)),
    w ? h("div", {class: "emo", style: `--c:${LABEL_COLOURS[w.label] || "#555"}`},
          h("span", {class: "emoji", "aria-hidden": "true"}, w.emoji || ""),
          h("span", {class: "label"}, w.label),
          w.uncertain ? h("span", {class: "uncertain", title: "below [fusion] min_confidence"}, "? uncertain") : null)
      : h("div", {class: "emo waiting"}, "no speech yet"),
    w ? h("div", {class: "nums"},
          h("span", {}, `conf ${Math.round((w.confidence || 0) * 100)}%`),
          h("span", {}, `arousal ${signed(w.arousal)}`),
          h("span", {}, `valence ${signed(w.valence)}`)) : null,
    h("div", {class: "utt"}, u && u.transcript ? `“${u.transcript}”` : (w && w.transcript ? `“${w.transcript}”` : "")));
}

function card(c) {
  const open = openAlerts(c.call_id);
  const names = Object.entries(c.names);
  return h("article", {class: "card", "data-call-id": c.call_id, "data-state": c.state,
                       "data-open-alerts": open.length, tabindex: 0, role: "button",
                       "aria-label": `call ${c.call_id}, ${c.state}${open.length ? ", " + open.length + " open alert(s)" : ""}`,
                       onclick: () => { location.hash = `call=${encodeURIComponent(c.call_id)}`; },
                       onkeydown: e => { if (e.key === "Enter") location.hash = `call=${encodeURIComponent(c.call_id)}`; }},
    h("header", {class: "card-head"},
      h("span", {class: "cid", title: c.call_id}, c.call_id),
      h("span", {class: `state ${c.state}`}, c.state === "active" ? "live" : c.state),
      h("span", {class: "dur", "data-dur": c.call_id}, clock(durationOf(c)))),
    names.length ? h("div", {class: "names"}, names.map(([k, v]) => h("span", {}, h("span", {class: "k"}, `${k}: `), v))) : null,
    h("div", {class: "tracks"}, (c.tracks.length ? c.tracks : ["customer"]).map(t => trackBox(c, t))),
    open.length ? h("ul", {class: "card-alerts alert-list"}, open.map(a => alertItem(a, false))) : null,
    c.error ? h("p", {class: "error"}, c.error) : null,
    c.state === "ended" ? h("footer", {class: "card-foot"}, "Ended · ",
      h("a", {href: c.report || `/desk/report/${encodeURIComponent(c.call_id)}`, target: "_blank", rel: "noopener",
              onclick: e => e.stopPropagation()}, "report")) : null);
}

function sortedCalls() {
  const arr = [...S.calls.values()];
  const rank = c => (openAlerts(c.call_id).length ? 0 : 1) * 2 + (c.state === "ended" || c.state === "lost" ? 1 : 0);
  arr.sort((a, b) => rank(a) - rank(b) || a.startedAt - b.startedAt || a.call_id.localeCompare(b.call_id));
  return arr;
}

function renderGrid() {
  const grid = document.getElementById("grid");
  const calls = sortedCalls();
  // a card is rebuilt only when what it shows changed, and the grid is reordered only when
  // the order changed, so focus, hover and a button under the pointer survive other calls' events
  const els = calls.map(c => {
    const key = JSON.stringify([c.state, c.error, c.last, c.last_utterance, c.names, c.report, c.tracks,
                                openAlerts(c.call_id).map(a => a.id)]);
    const had = S.cards.get(c.call_id);
    if (had && had.key === key) return had.el;
    const el = card(c);
    if (had && had.el.parentNode === grid) had.el.replaceWith(el);
    S.cards.set(c.call_id, {key, el});
    return el;
  });
  for (const id of [...S.cards.keys()]) if (!S.calls.has(id)) S.cards.delete(id);
  const now = [...grid.children];
  if (now.length !== els.length || now.some((el, i) => el !== els[i])) grid.replaceChildren(...els);
  document.getElementById("empty").hidden = calls.length > 0;
  const active = calls.filter(c => c.state !== "ended" && c.state !== "lost").length;
  document.getElementById("counts").textContent = `${active} live · ${calls.length - active} ended`;
  const open = openAlerts().sort((a, b) => (b.time || "").localeCompare(a.time || ""));
  document.getElementById("alert-list").replaceChildren(...open.map(a => alertItem(a, true)));
  document.getElementById("alert-count").textContent = open.length;
  document.getElementById("no-alerts").hidden = open.length > 0;
  document.getElementById("alerts-panel").dataset.open = open.length;
}

// --- the detail ----------------------------------------------------------------------------
async function loadDetail(id) {
  const d = {id, windows: {}, utterances: [], loaded: false, missing: false};
  S.detail = d;
  try {
    const full = await api(`/api/calls/${encodeURIComponent(id)}`);
    if (S.detail !== d) return;
    for (const w of full.windows || []) addWindow(d, compact(w), w.track);
    for (const u of full.utterances || []) addUtterance(d, {...compact(u), track: u.track});
    const call = S.calls.get(id);
    if (call && (!call.names || !Object.keys(call.names).length)) call.names = namesOf(full.meta);
  } catch (err) {
    d.missing = true;
  }
  d.loaded = true;
  S.dirty = true;
  render();
}

function addWindow(d, w, track) {
  const arr = d.windows[track] || (d.windows[track] = []);
  if (arr.length && arr[arr.length - 1].index >= w.index) {
    if (arr.some(x => x.index === w.index)) return;
  }
  arr.push(w);
  arr.sort((a, b) => a.index - b.index);
  if (arr.length > MAX_POINTS) arr.splice(0, arr.length - MAX_POINTS);
}

function addUtterance(d, u) {
  if (d.utterances.some(x => x.track === u.track && x.index === u.index)) return;
  d.utterances.push(u);
  if (d.utterances.length > MAX_UTTERANCES) d.utterances.splice(0, d.utterances.length - MAX_UTTERANCES);
}

function timeline(track, windows, span) {
  const W = 600, H = 136, top = 16, bottom = 116, pad = 6;
  const end = Math.max(10, span || 0, ...windows.map(w => w.end_s || 0));
  const x = t => pad + (W - 2 * pad) * (t / end);
  const y = v => top + 6 + (bottom - top - 12) * (1 - (v + 1) / 2);
  const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "timeline", role: "img",
                           "aria-label": `${track}: arousal and valence over ${Math.round(end)} s`, "data-timeline": track});
  root.append(svg("rect", {x: 0, y: top, width: W, height: bottom - top, class: "plot-bg"}));
  for (const v of [1, 0, -1]) {
    root.append(svg("line", {x1: pad, x2: W - pad, y1: y(v), y2: y(v), class: v === 0 ? "zero" : "tick"}));
  }
  const step = end > 600 ? 120 : end > 300 ? 60 : end > 60 ? 30 : end > 20 ? 10 : 5;
  for (let t = 0; t <= end + 1e-6; t += step) {
    if (t > 0) root.append(svg("line", {x1: x(t), x2: x(t), y1: top, y2: bottom, class: "tick"}));
    root.append(svg("text", {x: x(t), y: H - 4, class: "axis",
                             "text-anchor": t === 0 ? "start" : x(t) > W - 24 ? "end" : "middle"}, clock(t)));
  }
  for (const w of windows) {
    const r = svg("rect", {x: x(w.start_s || 0), y: 0, width: Math.max(2, x(w.end_s || 0) - x(w.start_s || 0)),
                           height: top - 4, fill: LABEL_COLOURS[w.label] || "#999",
                           "fill-opacity": w.uncertain ? 0.3 : 0.9, "data-label": w.label});
    r.append(svg("title", {}, `${clock(w.start_s)}–${clock(w.end_s)} ${w.label} ${Math.round((w.confidence || 0) * 100)}%${w.uncertain ? " (uncertain)" : ""}`));
    root.append(r);
  }
  for (const key of ["arousal", "valence"]) {
    const pts = windows.filter(w => w[key] !== null && w[key] !== undefined)
                       .map(w => [x(((w.start_s || 0) + (w.end_s || 0)) / 2), y(w[key])]);
    if (pts.length > 1) root.append(svg("polyline", {points: pts.map(p => p.map(v => v.toFixed(1)).join(",")).join(" "), class: key}));
    for (const [px, py] of pts) root.append(svg("circle", {cx: px.toFixed(1), cy: py.toFixed(1), r: 3, class: `dot ${key}`}));
  }
  return root;
}

function renderDetail() {
  const panel = document.getElementById("detail");
  const main = document.getElementById("main");
  const d = S.detail;
  if (!d) {  // closed: nothing of it stays in the page
    panel.hidden = true;
    main.hidden = false;
    for (const id of ["detail-alerts", "timelines", "transcripts"]) document.getElementById(id).replaceChildren();
    return;
  }
  panel.hidden = false;
  main.hidden = true;
  const c = S.calls.get(d.id) || {call_id: d.id, names: {}, tracks: [], state: "unknown", last: {}, last_utterance: {}};
  panel.dataset.callId = d.id;
  document.getElementById("detail-title").textContent = `Call ${d.id}`;
  const st = document.getElementById("detail-state");
  st.textContent = c.state === "active" ? "live" : c.state;
  st.className = `state ${c.state}`;
  document.getElementById("detail-dur").textContent = clock(durationOf(c));
  const rep = document.getElementById("detail-report");
  rep.hidden = c.state !== "ended";
  rep.href = c.report || `/desk/report/${encodeURIComponent(d.id)}`;
  rep.target = "_blank";
  document.getElementById("detail-names").textContent =
    Object.entries(c.names || {}).map(([k, v]) => `${k}: ${v}`).join(" · ");
  const note = document.getElementById("detail-note");
  note.hidden = !d.missing;
  note.textContent = d.missing ? "The server no longer holds this call's history; its report has it all." : "";
  const all = [...S.alerts.values()].filter(a => a.call_id === d.id);
  document.getElementById("detail-alerts").replaceChildren(
    ...(all.length ? all.map(a => a.acked
      ? h("li", {class: "alert acked", "data-acked-rule": a.rule, "data-alert-id": a.id},
          h("b", {class: "rule"}, a.rule), ` ${a.reason} `, h("span", {class: "muted"}, `acknowledged ${(a.acked.time || "").slice(11, 19)}`))
      : alertItem(a, false)) : [h("li", {class: "muted"}, "No alerts on this call.")]));
  const tracks = [...new Set([...(c.tracks || []), ...Object.keys(d.windows)])];
  const span = Math.max(0, ...Object.values(d.windows).flat().map(w => w.end_s || 0));  // one time axis for all tracks
  document.getElementById("timelines").replaceChildren(...tracks.map(t =>
    h("figure", {class: "tl"}, h("figcaption", {}, title(t), c.last[t] ? ` · now ${c.last[t].label}` : ""),
      timeline(t, d.windows[t] || [], span))));
  const tracksU = [...new Set([...tracks, ...d.utterances.map(u => u.track)])];
  document.getElementById("transcripts").replaceChildren(...tracksU.map(t => {
    const lines = d.utterances.filter(u => u.track === t).sort((a, b) => (a.start_s || 0) - (b.start_s || 0));
    return h("div", {class: "speaker", "data-transcript": t},
      h("h4", {}, title(t)),
      h("ol", {class: "lines"}, lines.length ? lines.map(u =>
        h("li", {"data-utterance": u.index, "data-label": u.label},
          h("span", {class: "t"}, clock(u.start_s)),
          h("span", {class: "emoji", "aria-hidden": "true"}, u.emoji || ""),
          h("span", {class: "label", style: `--c:${LABEL_COLOURS[u.label] || "#555"}`}, u.label),
          u.uncertain ? h("span", {class: "uncertain"}, "?") : null,
          h("span", {class: "text"}, u.transcript || "(no words)"))) : [h("li", {class: "muted"}, "Nothing said yet.")]));
  }));
}

function route() {
  const m = /^#call=(.+)$/.exec(location.hash);
  if (m) {
    const id = decodeURIComponent(m[1]);
    if (!S.detail || S.detail.id !== id) loadDetail(id);
  } else {
    S.detail = null;
  }
  S.dirty = true;
  render();
}

function render() {
  if (!S.dirty) return;
  S.dirty = false;
  renderGrid();
  renderDetail();
}

function loop() {
  render();
  requestAnimationFrame(loop);
}

setInterval(() => {  // durations tick; ended calls leave after keep_ended_min
  prune();
  for (const el of document.querySelectorAll("[data-dur]")) {
    const c = S.calls.get(el.dataset.dur);
    if (c) el.textContent = clock(durationOf(c));
  }
  if (S.detail) {
    const c = S.calls.get(S.detail.id);
    if (c) document.getElementById("detail-dur").textContent = clock(durationOf(c));
  }
}, 1000);

document.getElementById("back").addEventListener("click", () => { location.hash = ""; });
window.addEventListener("hashchange", route);
route();
connect();
requestAnimationFrame(loop);

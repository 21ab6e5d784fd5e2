"""Visual reports of session logs: a matplotlib figure and a self-contained HTML page.

Works on any log written by ``ser-live`` or ``ser-analyze``, including one torn by a crash
(unparseable lines are skipped and named) and one written before utterance records, window
``rolling_*`` fields and ``dims`` existed (there a window's ``label`` was its rolling label;
arousal/valence are then mapped from the fused probabilities). Pure over the log's records,
except for drawing.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamer.labels import EMOJI, LABELS
from streamer.live.session_log import LogContents, read_log
from streamer.summary import Summary, fused_dims, segments, summarise_records

COLORS = {"angry": "#d62728", "disgust": "#2ca02c", "fear": "#9467bd", "happy": "#f2c14e", "neutral": "#b0b0b0",
          "sad": "#1f77b4", "surprise": "#17becf"}


@dataclass
class Lane:
    """The windows and utterances of one channel (or of the whole session when not split)."""

    name: str
    windows: list[dict]
    utterances: list[dict] = field(default_factory=list)

    @property
    def t(self) -> np.ndarray:
        return np.array([(w["start_s"] + w["end_s"]) / 2 for w in self.windows])

    def fused(self) -> np.ndarray:
        return np.array([[w["probs"]["fused"][k] for k in LABELS] for w in self.windows]).reshape(-1, len(LABELS))

    def dims(self) -> tuple[np.ndarray, np.ndarray]:
        """Fused arousal and valence per window (logged, or mapped from the fused
        probabilities for logs without ``dims``)."""
        d = [fused_dims(w) or {"arousal": np.nan, "valence": np.nan} for w in self.windows]
        return np.array([x["arousal"] for x in d], float), np.array([x["valence"] for x in d], float)

    def agreement(self) -> list[float | None]:
        """Overlap of the audio and text distributions (sum of minima, 1 = identical), None
        for windows without words."""
        out = []
        for w in self.windows:
            a, t = w["probs"]["audio"], w["probs"].get("text")
            out.append(None if not t else float(sum(min(a[k], t[k]) for k in LABELS)))
        return out


def rolling_label(w: dict) -> str:
    """A window's rolling label (logs before issue 16 logged it as ``label``)."""
    return w.get("rolling_label") or w["label"]


def own_label(w: dict) -> str | None:
    """A window's own fused label; None for logs where ``label`` was the rolling one."""
    return w["label"] if "rolling_label" in w else None


@dataclass
class Stats:
    time_in: dict[str, float] = field(default_factory=dict)
    longest: dict[str, float] = field(default_factory=dict)
    intense: list[dict] = field(default_factory=list)
    summary: Summary | None = None

    @property
    def kind(self) -> str:
        return self.summary.kind if self.summary else "window"


def lanes(contents: LogContents) -> list[Lane]:
    by: dict = defaultdict(lambda: ([], []))
    for w in contents.of_type("window"):
        by[w.get("channel")][0].append(w)
    for u in contents.of_type("utterance"):
        by[u.get("channel")][1].append(u)
    key = lambda r: r["start_s"]  # noqa: E731
    return [Lane(name or "session", sorted(ws, key=key), sorted(us, key=key))
            for name, (ws, us) in sorted(by.items(), key=lambda x: str(x[0]))]


def lane_stats(lane: Lane) -> Stats:
    """Seconds in each emotion, the longest unbroken stretch of each (segments in a row with
    the same label, gaps under 2 s bridged), the three most intense segments (highest fused
    probability of a label other than neutral). Segments are the utterances (their own
    labels) when the log has them, else the windows (``streamer.summary``)."""
    summary = summarise_records(lane.windows, lane.utterances)
    segs = segments(lane.windows, lane.utterances)
    s = Stats(dict(summary.time_in), {k: 0.0 for k in LABELS}, summary=summary)
    run_label, run_start, run_end = None, 0.0, 0.0
    for g in segs:
        if g.label == run_label and g.start_s - run_end < 2.0:
            run_end = g.end_s
        else:
            run_label, run_start, run_end = g.label, g.start_s, g.end_s
        s.longest[run_label] = max(s.longest.get(run_label, 0.0), run_end - run_start)

    def intensity(g):
        p = g.fused
        k = max((x for x in LABELS if x != "neutral"), key=lambda x: p.get(x, 0.0))
        return p.get(k, 0.0), k
    ranked = sorted((g for g in segs if intensity(g)[0] > 0), key=lambda g: -intensity(g)[0])[:3]
    s.intense = [{"start_s": g.start_s, "end_s": g.end_s, "label": intensity(g)[1], "prob": intensity(g)[0],
                  "transcript": g.transcript, "uncertain": bool(g.uncertain)} for g in ranked]
    return s


def draw(contents: LogContents, width_px: int = 1400, dpi: int = 100):
    """The figure: per lane, fused probabilities per window as stacked areas; a band of the
    utterances' own labels (hatched when uncertain; windows' own labels for logs without
    utterances); a band of the rolling label; fused arousal and valence; audio-text agreement
    per window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ls = lanes(contents)
    n = max(1, len(ls))
    rows = 5
    fig, axes = plt.subplots(rows * n, 1, figsize=(width_px / dpi, 5.6 * n + 0.4), dpi=dpi, squeeze=False,
                             gridspec_kw={"height_ratios": [4, 0.5, 0.5, 1.8, 1.2] * n}, sharex=True)
    axes = axes[:, 0]
    for i, lane in enumerate(ls or [Lane("session", [])]):
        ax_p, ax_own, ax_roll, ax_dims, ax_agree = axes[rows * i: rows * i + rows]
        if lane.windows:
            t, p = lane.t, lane.fused()
            ax_p.stackplot(t, p.T, colors=[COLORS[k] for k in LABELS], alpha=0.9, step="mid")
            _band(ax_roll, [(w["start_s"], w["end_s"], rolling_label(w), False) for w in lane.windows])
            arousal, valence = lane.dims()
            ax_dims.plot(t, arousal, "-", color="#d62728", lw=1.4, label="arousal (fused)")
            ax_dims.plot(t, valence, "--", color="#1f77b4", lw=1.4, label="valence (fused)")
            agree = lane.agreement()
            xs = [x for x, a in zip(t, agree) if a is not None]
            ys = [a for a in agree if a is not None]
            widths = [0.8 * (w["end_s"] - w["start_s"]) for w, a in zip(lane.windows, agree) if a is not None]
            ax_agree.bar(xs, ys, width=widths, color="#555555")
            none_x = [x for x, a in zip(t, agree) if a is None]
            ax_agree.plot(none_x, [0.05] * len(none_x), "x", color="#999999", markersize=4)
        if lane.utterances:
            _band(ax_own, [(u["start_s"], u["end_s"], u["label"], bool(u.get("uncertain"))) for u in lane.utterances])
            for u in lane.utterances:
                d = fused_dims(u)
                if d:
                    ax_dims.hlines([d["arousal"], d["valence"]], u["start_s"], u["end_s"], colors=["#d62728", "#1f77b4"],
                                   lw=4, alpha=0.35)
            own_name = "utterance"
        else:
            _band(ax_own, [(w["start_s"], w["end_s"], own_label(w), bool(w.get("uncertain"))) for w in lane.windows
                           if own_label(w)])
            own_name = "window"
        ax_p.set_ylim(0, 1)
        ax_p.set_ylabel("fused p")
        ax_p.set_title(f"{lane.name}: fused emotion probabilities per window", loc="left", fontsize=10)
        for ax, name in ((ax_own, own_name), (ax_roll, "rolling")):
            ax.set_yticks([])
            ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        ax_dims.set_ylim(-1.05, 1.05)
        ax_dims.axhline(0, color="#999999", lw=0.6)
        ax_dims.set_ylabel("arousal\nvalence", fontsize=8)
        ax_agree.set_ylim(0, 1)
        ax_agree.set_ylabel("audio~text", fontsize=8)
    axes[-1].set_xlabel("time (s)")
    handles = [Patch(color=COLORS[k], label=k) for k in LABELS]
    handles += [Patch(facecolor="white", edgecolor="#555555", hatch="///", label="uncertain"),
                Line2D([], [], color="#d62728", label="arousal"), Line2D([], [], color="#1f77b4", ls="--", label="valence")]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def _band(ax, spans: list[tuple[float, float, str, bool]]) -> None:
    """Coloured spans (start, end, label, uncertain) with a label where it changes;
    uncertain spans pale and hatched."""
    if not spans:
        ax.text(0.5, 0.5, "not in this log", transform=ax.transAxes, va="center", ha="center", fontsize=8, color="#888888")
    prev = None
    for start, end, label, uncertain in spans:
        ax.axvspan(start, end, color=COLORS.get(label, "#ffffff"), alpha=0.35 if uncertain else 1.0,
                   hatch="///" if uncertain else None, lw=0)
        if label != prev:
            ax.text(start, 0.5, f" {label}", va="center", ha="left", fontsize=8)
            prev = label


def png_bytes(fig, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _top(p: dict | None) -> str:
    return max(p, key=p.get) if p else "—"


def _dims_cells(rec: dict) -> str:
    d = fused_dims(rec)
    return "<td>—</td><td>—</td>" if not d else f"<td>{d['arousal']:+.2f}</td><td>{d['valence']:+.2f}</td>"


def _emotion_cell(rec: dict) -> str:
    """"😠 angry 62%", or, when uncertain, a grey "? uncertain (angry 31%)"."""
    if rec.get("uncertain"):
        return f"<td class='u'>? uncertain ({rec['label']} {rec['confidence']:.0%})</td>"
    return f"<td>{rec['emoji']} {rec['label']} {rec['confidence']:.0%}</td>"


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def html_report(contents: LogContents, source: str, png: bytes, warnings: list[str]) -> str:
    """One self-contained page: the figure (embedded), summary tables, the transcript by
    utterance (by window for logs without utterances)."""
    start = (contents.of_type("session_start") or [{}])[0]
    end = (contents.of_type("session_end") or [None])[0]
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>ser-live report: {esc(source)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1500px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}.w{color:#c00}"
             ".u{color:#888;font-style:italic}img{max-width:100%}</style></head><body>",
             f"<h1>ser-live report</h1><p>Log <code>{esc(source)}</code>; source {esc(str(start.get('source') or start.get('file', '?')))}; "
             f"started {esc(str(start.get('time', '?')))}; models {esc(', '.join(f'{k}: {v}' for k, v in start.get('models', {}).items()))}.</p>"]
    for w in warnings:
        parts.append(f"<p class='w'>warning: {esc(w)}</p>")
    if end is None:
        parts.append("<p class='w'>warning: the log has no session_end record (the session did not finish cleanly)</p>")
    parts.append(f"<h2>Emotion over time</h2><img alt='emotion over time' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    parts.append("<h2>Summary</h2>")
    for lane in lanes(contents):
        s = lane_stats(lane)
        m = s.summary
        total = sum(s.time_in.values()) or 1.0
        basis = ("each utterance's own emotion, by its duration" if s.kind == "utterance" else
                 "by window (this log has no utterance records" +
                 ("" if any(own_label(w) for w in lane.windows) else "; a window's label is its rolling emotion") + ")")
        parts.append(f"<h3>{esc(lane.name)}</h3><p>Time in each emotion: {basis}.</p>"
                     "<table><tr><th>emotion</th><th>time (s)</th><th>share</th><th>longest stretch (s)</th></tr>")
        for k in LABELS:
            parts.append(f"<tr><td>{EMOJI[k]} {k}</td><td>{s.time_in[k]:.1f}</td><td>{s.time_in[k] / total:.0%}</td>"
                         f"<td>{s.longest[k]:.1f}</td></tr>")
        parts.append("</table>")
        if m is not None and m.count:
            parts.append(f"<table><tr><th>{m.kind}s</th><th>dominant</th><th>mean confidence</th><th>uncertain share</th>"
                         f"<th>mean arousal</th><th>mean valence</th></tr><tr><td>{m.count}</td>"
                         f"<td>{EMOJI.get(m.dominant, '')} {m.dominant}</td><td>{_fmt(m.mean_confidence, '.0%')}</td>"
                         f"<td>{_fmt(m.uncertain_share, '.0%')}</td><td>{_fmt(m.mean_arousal, '+.2f')}</td>"
                         f"<td>{_fmt(m.mean_valence, '+.2f')}</td></tr></table>")
        parts.append(f"<p>Most intense {s.kind}s:</p><table><tr><th>time</th><th>emotion</th><th>p</th><th>words</th></tr>")
        for x in s.intense:
            parts.append(f"<tr><td>{x['start_s']:.1f}-{x['end_s']:.1f} s</td><td>{EMOJI[x['label']]} {x['label']}"
                         f"{' (uncertain)' if x['uncertain'] else ''}</td>"
                         f"<td>{x['prob']:.2f}</td><td>{esc(x['transcript'])}</td></tr>")
        parts.append("</table>")
    utterances = sorted(contents.of_type("utterance"), key=lambda u: u["start_s"])
    if utterances:
        parts.append("<h2>Transcript</h2><p>One row per utterance, with its own emotion (the text model read the whole "
                     "utterance); arousal and valence are fused, in [-1, 1].</p>"
                     "<table><tr><th>channel</th><th>time</th><th>emotion</th><th>arousal</th><th>valence</th>"
                     "<th>audio</th><th>text</th><th>windows</th><th>words</th></tr>")
        for u in utterances:
            ws = u.get("windows") or []
            parts.append(f"<tr><td>{esc(str(u.get('channel') or ''))}</td><td>{u['start_s']:.1f}-{u['end_s']:.1f} s</td>"
                         f"{_emotion_cell(u)}{_dims_cells(u)}<td>{_top(u['probs'].get('audio'))}</td>"
                         f"<td>{_top(u['probs'].get('text'))}</td><td>{', '.join(map(str, ws))}</td>"
                         f"<td>{esc(u.get('transcript') or '')}</td></tr>")
    else:
        parts.append("<h2>Transcript</h2><p>One row per window (this log has no utterance records).</p>"
                     "<table><tr><th>channel</th><th>time</th><th>window</th><th>rolling</th><th>arousal</th>"
                     "<th>valence</th><th>audio</th><th>text</th><th>words</th></tr>")
        for w in sorted(contents.of_type("window"), key=lambda w: w["start_s"]):
            own = _emotion_cell(w) if own_label(w) else "<td>—</td>"
            rolling = (f"{w.get('rolling_emoji') or EMOJI.get(rolling_label(w), '')} {rolling_label(w)} "
                       f"{w.get('rolling_confidence', w['confidence']):.0%}")
            parts.append(f"<tr><td>{esc(str(w.get('channel') or ''))}</td><td>{w['start_s']:.1f}-{w['end_s']:.1f} s</td>"
                         f"{own}<td>{rolling}</td>{_dims_cells(w)}<td>{_top(w['probs'].get('audio'))}</td>"
                         f"<td>{_top(w['probs'].get('text'))}</td><td>{esc(w.get('transcript') or '')}</td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


def report(log_path: Path, html_out: Path | None, png_out: Path | None) -> list[str]:
    """Write the report of one log; returns warnings (skipped lines)."""
    import matplotlib.pyplot as plt

    contents = read_log(log_path)
    warnings = [f"{log_path.name}: skipped unreadable line {n}" for n in contents.skipped]
    fig = draw(contents)
    png = png_bytes(fig)
    plt.close(fig)
    if png_out:
        png_out.parent.mkdir(parents=True, exist_ok=True)
        png_out.write_bytes(png)
    if html_out:
        html_out.parent.mkdir(parents=True, exist_ok=True)
        html_out.write_text(html_report(contents, str(log_path), png, warnings), encoding="utf-8")
    return warnings

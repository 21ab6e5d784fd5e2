"""Visual reports of session logs: a matplotlib figure and a self-contained HTML page.

Works on any log written by ``ser-live`` or ``ser-analyze``, including one torn by a crash
(unparseable lines are skipped and named). Pure over the log's records, except for drawing.
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

COLORS = {"angry": "#d62728", "disgust": "#2ca02c", "fear": "#9467bd", "happy": "#f2c14e", "neutral": "#b0b0b0",
          "sad": "#1f77b4", "surprise": "#17becf"}


@dataclass
class Lane:
    """The windows of one channel (or of the whole session when not split)."""

    name: str
    windows: list[dict]

    @property
    def t(self) -> np.ndarray:
        return np.array([(w["start_s"] + w["end_s"]) / 2 for w in self.windows])

    def fused(self) -> np.ndarray:
        return np.array([[w["probs"]["fused"][k] for k in LABELS] for w in self.windows]).reshape(-1, len(LABELS))

    def agreement(self) -> list[float | None]:
        """Overlap of the audio and text distributions (sum of minima, 1 = identical), None
        for windows without words."""
        out = []
        for w in self.windows:
            a, t = w["probs"]["audio"], w["probs"].get("text")
            out.append(None if not t else float(sum(min(a[k], t[k]) for k in LABELS)))
        return out


@dataclass
class Stats:
    time_in: dict[str, float] = field(default_factory=dict)
    longest: dict[str, float] = field(default_factory=dict)
    intense: list[dict] = field(default_factory=list)


def lanes(contents: LogContents) -> list[Lane]:
    by = defaultdict(list)
    for w in contents.of_type("window"):
        by[w.get("channel")].append(w)
    return [Lane(name or "session", sorted(ws, key=lambda w: w["start_s"])) for name, ws in sorted(by.items(), key=lambda x: str(x[0]))]


def lane_stats(lane: Lane) -> Stats:
    """Seconds in each emotion (rolling label), the longest unbroken stretch of each (windows
    in a row with the same label, gaps under 2 s bridged), the three most intense windows
    (highest fused probability of a label other than neutral)."""
    s = Stats({k: 0.0 for k in LABELS}, {k: 0.0 for k in LABELS})
    run_label, run_start, run_end = None, 0.0, 0.0
    for w in lane.windows:
        dur = w["end_s"] - w["start_s"]
        s.time_in[w["label"]] += dur
        if w["label"] == run_label and w["start_s"] - run_end < 2.0:
            run_end = w["end_s"]
        else:
            run_label, run_start, run_end = w["label"], w["start_s"], w["end_s"]
        s.longest[run_label] = max(s.longest[run_label], run_end - run_start)
    def intensity(w):
        p = w["probs"]["fused"]
        k = max((x for x in LABELS if x != "neutral"), key=lambda x: p[x])
        return p[k], k
    ranked = sorted(lane.windows, key=lambda w: -intensity(w)[0])[:3]
    s.intense = [{"start_s": w["start_s"], "end_s": w["end_s"], "label": intensity(w)[1], "prob": intensity(w)[0],
                  "transcript": w.get("transcript") or ""} for w in ranked]
    return s


def draw(contents: LogContents, width_px: int = 1400, dpi: int = 100):
    """The figure: per lane, fused probabilities as stacked areas, the rolling label as a
    coloured band with label markers, and audio-text agreement per window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    ls = lanes(contents)
    n = max(1, len(ls))
    fig, axes = plt.subplots(3 * n, 1, figsize=(width_px / dpi, 2.6 * n + 1.6 * n), dpi=dpi, squeeze=False,
                             gridspec_kw={"height_ratios": [4, 0.6, 1.4] * n}, sharex=True)
    axes = axes[:, 0]
    for i, lane in enumerate(ls or [Lane("session", [])]):
        ax_p, ax_band, ax_agree = axes[3 * i], axes[3 * i + 1], axes[3 * i + 2]
        if lane.windows:
            t, p = lane.t, lane.fused()
            ax_p.stackplot(t, p.T, colors=[COLORS[k] for k in LABELS], alpha=0.9, step="mid")
            for w in lane.windows:
                ax_band.axvspan(w["start_s"], w["end_s"], color=COLORS[w["label"]])
            prev = None
            for w in lane.windows:
                if w["label"] != prev:
                    ax_band.text(w["start_s"], 0.5, f" {w['label']}", va="center", ha="left", fontsize=8)
                    prev = w["label"]
            agree = lane.agreement()
            xs = [x for x, a in zip(t, agree) if a is not None]
            ys = [a for a in agree if a is not None]
            widths = [0.8 * (w["end_s"] - w["start_s"]) for w, a in zip(lane.windows, agree) if a is not None]
            ax_agree.bar(xs, ys, width=widths, color="#555555")
            none_x = [x for x, a in zip(t, agree) if a is None]
            ax_agree.plot(none_x, [0.05] * len(none_x), "x", color="#999999", markersize=4)
        ax_p.set_ylim(0, 1)
        ax_p.set_ylabel("fused p")
        ax_p.set_title(f"{lane.name}: fused emotion probabilities", loc="left", fontsize=10)
        ax_band.set_yticks([])
        ax_band.set_ylabel("rolling", rotation=0, ha="right", va="center", fontsize=8)
        ax_agree.set_ylim(0, 1)
        ax_agree.set_ylabel("audio~text", fontsize=8)
    axes[-1].set_xlabel("time (s)")
    fig.legend(handles=[Patch(color=COLORS[k], label=k) for k in LABELS], loc="upper center", ncol=len(LABELS),
               frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def png_bytes(fig, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def html_report(contents: LogContents, source: str, png: bytes, warnings: list[str]) -> str:
    """One self-contained page: the figure (embedded), summary tables, the transcript by window."""
    start = (contents.of_type("session_start") or [{}])[0]
    end = (contents.of_type("session_end") or [None])[0]
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>ser-live report: {esc(source)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1500px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}.w{color:#c00}"
             "img{max-width:100%}</style></head><body>",
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
        total = sum(s.time_in.values()) or 1.0
        parts.append(f"<h3>{esc(lane.name)}</h3><table><tr><th>emotion</th><th>time (s)</th><th>share</th><th>longest stretch (s)</th></tr>")
        for k in LABELS:
            parts.append(f"<tr><td>{EMOJI[k]} {k}</td><td>{s.time_in[k]:.1f}</td><td>{s.time_in[k] / total:.0%}</td>"
                         f"<td>{s.longest[k]:.1f}</td></tr>")
        parts.append("</table><p>Most intense windows:</p><table><tr><th>time</th><th>emotion</th><th>p</th><th>words</th></tr>")
        for x in s.intense:
            parts.append(f"<tr><td>{x['start_s']:.1f}-{x['end_s']:.1f} s</td><td>{EMOJI[x['label']]} {x['label']}</td>"
                         f"<td>{x['prob']:.2f}</td><td>{esc(x['transcript'])}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Transcript</h2><table><tr><th>channel</th><th>time</th><th>rolling</th><th>audio</th><th>text</th><th>words</th></tr>")
    for w in sorted(contents.of_type("window"), key=lambda w: w["start_s"]):
        a = max(w["probs"]["audio"], key=w["probs"]["audio"].get)
        t = w["probs"].get("text")
        tt = max(t, key=t.get) if t else "—"
        parts.append(f"<tr><td>{esc(str(w.get('channel') or ''))}</td><td>{w['start_s']:.1f}-{w['end_s']:.1f} s</td>"
                     f"<td>{w['emoji']} {w['label']} {w['confidence']:.0%}</td><td>{a}</td><td>{tt}</td>"
                     f"<td>{esc(w.get('transcript') or '')}</td></tr>")
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

"""Visual reports of session logs: a matplotlib figure, a self-contained HTML page, and an
index page over several logs.

A *session log* is the NDJSON file that ``ser-live --log LOG.ndjson`` writes, or one of the
``LOG.ndjson`` files that ``ser-analyze FILES --out DIR`` writes (one per file): a
``session_start`` record, ``window`` and ``utterance`` records, a ``session_end`` record.
:func:`load_session_log` refuses anything else (audio, text, other JSON lines) with one line
naming how to make one. Works on any such log, including one torn by a crash (unparseable
lines are skipped and counted), one of a failed file (its stored error is shown on the page
and in the figure) and one written before utterance records, window ``rolling_*`` fields and
``dims`` existed (there a window's ``label`` was its rolling label; arousal/valence are then
mapped from the fused probabilities). Pure over the log's records, except for drawing.

>>> clip_title("the kids are talking by the door and the dog barks", limit=24)
'“the kids are talking by…”'
>>> window_steps([(0.0, 4.2), (6.0, 7.0)], np.array([[1.0], [0.5]]))[0].tolist()
[0.0, 4.2, 4.2, 6.0, 7.0]
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamer.errors import SerError
from streamer.labels import EMOJI, LABELS
from streamer.live.session_log import LogContents, read_log
from streamer.summary import Summary, fused_dims, segments, summarise_records

SESSION_TYPES = ("session_start", "window", "utterance", "session_end")
HOW_TO_LOG = ("a session log is the NDJSON file written by `ser-live --log LOG.ndjson` "
              "or by `ser-analyze FILES --out DIR` (one LOG.ndjson per file)")
AUDIO_MAGIC = (b"fLaC", b"RIFF", b"RF64", b"OggS", b"ID3", b"FORM", b".snd", b"caff", b"riff")

COLORS = {"angry": "#d62728", "disgust": "#2ca02c", "fear": "#9467bd", "happy": "#f2c14e", "neutral": "#b0b0b0",
          "sad": "#1f77b4", "surprise": "#17becf"}


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _probs(p) -> bool:
    return isinstance(p, dict) and all(_number(p.get(k)) for k in LABELS)


def is_session_record(rec: dict) -> bool:
    """A record the report can use: a session start or end, or a window or utterance with
    its time span, fused and audio probabilities (text optional) and label.

    >>> is_session_record({"type": "session_end", "windows": 0}), is_session_record({"a": 1})
    (True, False)
    >>> is_session_record({"type": "window", "start_s": 0.0, "end_s": 2.5})  # no probabilities
    False
    """
    kind = rec.get("type")
    if kind in ("session_start", "session_end"):
        return True
    if kind not in ("window", "utterance"):
        return False
    probs = rec.get("probs")
    return (_number(rec.get("start_s")) and _number(rec.get("end_s")) and rec["end_s"] >= rec["start_s"]
            and isinstance(probs, dict) and _probs(probs.get("fused")) and _probs(probs.get("audio"))
            and (probs.get("text") is None or _probs(probs["text"])) and rec.get("label") in LABELS
            and _number(rec.get("confidence", 0.0)))


def _sniff(path: Path) -> str | None:
    """Why ``path`` is plainly not a session log (empty, audio, binary), or None."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head.strip():
        return f"{path} is empty, not a session log: {HOW_TO_LOG}"
    from streamer.batch import AUDIO_SUFFIXES

    mp3 = len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
    named = path.suffix.lower() in AUDIO_SUFFIXES and not head.lstrip().startswith(b"{")
    if head.startswith(AUDIO_MAGIC) or mp3 or named:
        return (f"{path} is audio, not a session log: make its log with `ser-analyze {path} --out DIR` "
                f"(or `ser-live --file {path} --log LOG.ndjson`), then give ser-report that log")
    if b"\0" in head:
        return f"{path} is a binary file, not a session log: {HOW_TO_LOG}"
    return None


def load_session_log(path: Path) -> tuple[LogContents, list[str]]:
    """The log's session records, and warnings for what was skipped (unreadable lines,
    JSON records that are not session records). Raises SerError, in one line naming what a
    session log is, when ``path`` holds no session record at all."""
    why = _sniff(path)
    if why:
        raise SerError(why)
    raw = read_log(path)
    good = [r for r in raw.records if is_session_record(r)]
    other = len(raw.records) - len(good)
    if not good:
        lines = len(raw.records) + len(raw.skipped)
        bad, json_ = len(raw.skipped), other
        kinds = ([f"{bad} not {'a JSON object' if bad == 1 else 'JSON objects'}"] if bad else []) + \
                ([f"{json_} JSON record{'s' * (json_ != 1)} of another kind"] if json_ else [])
        raise SerError(f"{path} is not a session log ({lines} line{'s' * (lines != 1)}: {', '.join(kinds)}; no "
                       f"session_start, window, utterance or session_end record): {HOW_TO_LOG}")
    warnings = []
    if raw.skipped:
        n = len(raw.skipped)
        shown = ", ".join(map(str, raw.skipped[:5])) + (", ..." if n > 5 else "")
        warnings.append(f"{path.name}: skipped {n} unreadable line{'s' * (n != 1)} (line{'s' * (n != 1)} {shown})")
    if other:
        kinds = Counter(str(r.get("type", "no type")) for r in raw.records if not is_session_record(r))
        what = "JSON record that is not a session record" if other == 1 else "JSON records that are not session records"
        types = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items()))
        warnings.append(f"{path.name}: skipped {other} {what} (type {types})")
    return LogContents(good, list(raw.skipped)), warnings


def log_errors(contents: LogContents) -> list[str]:
    """The errors stored in the log's ``session_end`` records: the session's, and each
    channel's (``ser-analyze --channels split``), each once.

    >>> log_errors(LogContents([{"type": "session_end", "error": "cannot read x.wav as audio"}]))
    ['cannot read x.wav as audio']
    >>> end = {"type": "session_end", "error": "bad", "channels": [{"channel": "agent", "error": "bad"},
    ...                                                            {"channel": "customer", "error": None}]}
    >>> log_errors(LogContents([end]))
    ['agent: bad']
    """
    out: list[str] = []
    for end in contents.of_type("session_end"):
        chans = [c for c in end.get("channels") or [] if isinstance(c, dict) and c.get("error")]
        out += [f"{c['channel']}: {c['error']}" if c.get("channel") else str(c["error"]) for c in chans]
        if end.get("error") and str(end["error"]) != "; ".join(str(c["error"]) for c in chans):
            out.append(str(end["error"]))
    return list(dict.fromkeys(out))


def window_steps(spans: list[tuple[float, float]], values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x (seconds) and y (one row per x) that draw each span flat over its own start-end,
    with a NaN row between spans that do not touch, so a gap stays empty (matplotlib's
    ``fill_between`` and ``plot`` break at NaN). ``values`` has one row per span.

    >>> x, y = window_steps([(0.0, 4.2), (4.2, 5.0), (6.0, 7.0)], np.array([1.0, 2.0, 3.0]))
    >>> x.tolist(), y.tolist()
    ([0.0, 4.2, 4.2, 5.0, 5.0, 6.0, 7.0], [1.0, 1.0, 2.0, 2.0, nan, 3.0, 3.0])
    """
    values = np.asarray(values, float)
    xs: list[float] = []
    ys: list = []
    gap = np.full(values.shape[1:], np.nan)
    prev_end = None
    for (start, end), v in zip(spans, values):
        if prev_end is not None and start > prev_end + 1e-9:
            xs.append(prev_end)
            ys.append(gap)
        xs += [start, end]
        ys += [v, v]
        prev_end = end
    return np.array(xs, float), np.array(ys, float).reshape(len(xs), *values.shape[1:])


def clip_title(transcript: str, limit: int = 60) -> str:
    """The ``--clip`` figure's transcript line: quoted, cut at a word under ``limit``
    characters with the ellipsis inside the quotes.

    >>> clip_title("kids are talking by the door"), clip_title("kids are talking by the door", 24)
    ('“kids are talking by the door”', '“kids are talking by the…”')
    >>> clip_title("")
    '(no words)'
    """
    text = " ".join(transcript.split())
    if not text:
        return "(no words)"
    if len(text) > limit:
        cut = text[: limit - 1]
        if " " in cut and not text[limit - 1].isspace():
            cut = cut[: cut.rindex(" ")]
        text = cut.rstrip(" ,.;:!?-") + "…"
    return f"“{text}”"


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


PANELS = (
    ("fused p", "the fused (audio and text) probability of each emotion per window, stacked to 1 and drawn "
                "over the window's own start-end; blank stretches are silence between utterances, where no "
                "window was analysed."),
    ("utterance", "each utterance's own emotion (the text model read the whole utterance), pale and hatched "
                  "when uncertain (its fused top probability below [fusion] min_confidence); for logs without "
                  "utterance records, each window's own emotion."),
    ("rolling", "the rolling emotion the live dashboard shows: a moving average over windows whose weight "
                "halves every [fusion] half_life_s seconds of audio."),
    ("arousal / valence", "fused arousal (solid red) and valence (dashed blue) of each window, in [-1, 1]; "
                          "the thick pale bars are each utterance's own arousal and valence."),
    ("audio~text", "how far the audio and text models agree on each window: the overlap of their two "
                   "probability distributions (the sum over emotions of the smaller of the two; 1 = the same "
                   "opinion, 0 = none in common); × marks a window without words, where the audio model "
                   "alone decided."),
)


def draw(contents: LogContents, width_px: int = 1400, dpi: int = 100):
    """The figure: per lane, fused probabilities per window as stacked areas over each
    window's own span (gaps empty); a band of the utterances' own labels (hatched when
    uncertain; windows' own labels for logs without utterances); a band of the rolling
    label; fused arousal and valence; audio-text agreement per window (× where a window has
    no words). Errors stored in the log are written in red at the top. See ``PANELS``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ls = lanes(contents) or [Lane("session", [])]
    errors = log_errors(contents)
    n = len(ls)
    rows = 5
    head_in = 0.45 + 0.22 * len(errors)
    height_in = 5.6 * n + head_in
    fig, axes = plt.subplots(rows * n, 1, figsize=(width_px / dpi, height_in), dpi=dpi, squeeze=False,
                             gridspec_kw={"height_ratios": [4, 0.5, 0.5, 1.8, 1.2] * n}, sharex=True)
    axes = axes[:, 0]
    for i, lane in enumerate(ls):
        ax_p, ax_own, ax_roll, ax_dims, ax_agree = axes[rows * i: rows * i + rows]
        spans = [(w["start_s"], w["end_s"]) for w in lane.windows]
        if lane.windows:
            x, p = window_steps(spans, lane.fused())
            base = np.zeros(len(x))
            for k, label in enumerate(LABELS):
                ax_p.fill_between(x, base, base + p[:, k], color=COLORS[label], alpha=0.9, lw=0)
                base = base + p[:, k]
            _band(ax_roll, [(w["start_s"], w["end_s"], rolling_label(w), False) for w in lane.windows])
            arousal, valence = lane.dims()
            ax_dims.plot(*window_steps(spans, arousal), "-", color="#d62728", lw=1.4)
            ax_dims.plot(*window_steps(spans, valence), "--", color="#1f77b4", lw=1.4)
            agree = lane.agreement()
            said = [(s, a) for s, a in zip(spans, agree) if a is not None]
            ax_agree.bar([s[0] for s, _ in said], [a for _, a in said], width=[s[1] - s[0] for s, _ in said],
                         align="edge", color="#555555", edgecolor="white", lw=0.5)
            mute = [(s[0] + s[1]) / 2 for s, a in zip(spans, agree) if a is None]
            ax_agree.plot(mute, [0.12] * len(mute), "x", color="#666666", markersize=5)
        else:
            why = "no windows in this log" + (": the analysis failed (error above)" if errors else "")
            ax_p.text(0.5, 0.5, why, transform=ax_p.transAxes, ha="center", va="center",
                      color="#c00000" if errors else "#888888", fontsize=11)
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
        ax_p.set_title(f"{lane.name}: fused emotion probabilities of each window, over its own time span "
                       "(blank: no speech analysed)", loc="left", fontsize=10)
        for ax, name in ((ax_own, own_name), (ax_roll, "rolling")):
            ax.set_yticks([])
            ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        ax_dims.set_ylim(-1.05, 1.05)
        ax_dims.axhline(0, color="#999999", lw=0.6)
        ax_dims.set_ylabel("arousal\nvalence", fontsize=8)
        ax_dims.legend(handles=[Line2D([], [], color="#d62728", label="arousal, per window"),
                                Line2D([], [], color="#1f77b4", ls="--", label="valence, per window"),
                                Line2D([], [], color="#888888", lw=4, alpha=0.5, label="per utterance")],
                       loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
        ax_agree.set_ylim(0, 1)
        ax_agree.set_ylabel("audio~text", fontsize=8)
        ax_agree.legend(handles=[Patch(color="#555555", label="audio-text agreement\n(overlap, 1 = same)"),
                                 Line2D([], [], ls="", marker="x", color="#666666", label="no words: audio only")],
                        loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    ends = [r["end_s"] for lane in ls for r in lane.windows + lane.utterances]
    t_max = max([*ends, duration_of(contents) or 0.0]) or 1.0
    axes[0].set_xlim(0, t_max)
    axes[-1].set_xlabel("time (s)")
    handles = [Patch(color=COLORS[k], label=k) for k in LABELS]
    handles += [Patch(facecolor="white", edgecolor="#555555", hatch="///", label="uncertain")]
    top = 1 - head_in / height_in
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, top + 0.05 / height_in),
               ncol=len(handles), frameon=False, fontsize=9)
    for k, e in enumerate(errors):
        fig.text(0.01, 1 - (0.08 + 0.22 * k) / height_in, f"error: {e}", color="#c00000", fontsize=10, va="top",
                 ha="left", wrap=True)
    fig.tight_layout(rect=(0, 0, 1, top))
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
        return f"<td class='u'>? uncertain ({rec['label']} {rec.get('confidence', 0.0):.0%})</td>"
    return f"<td>{rec.get('emoji') or EMOJI[rec['label']]} {rec['label']} {rec.get('confidence', 0.0):.0%}</td>"


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
             ".e{color:#fff;background:#c00;padding:6px 10px;font-weight:bold}"
             ".u{color:#888;font-style:italic}img{max-width:100%}</style></head><body>",
             f"<h1>ser-live report</h1><p>Log <code>{esc(source)}</code>; source {esc(str(start.get('source') or start.get('file', '?')))}; "
             f"started {esc(str(start.get('time', '?')))}; models {esc(', '.join(f'{k}: {v}' for k, v in start.get('models', {}).items()))}.</p>"]
    for e in log_errors(contents):
        parts.append(f"<p class='e'>error: {esc(e)}</p>")
    for w in warnings:
        parts.append(f"<p class='w'>warning: {esc(w)}</p>")
    if end is None:
        parts.append("<p class='w'>warning: the log has no session_end record (the session did not finish cleanly)</p>")
    elif end.get("interrupted"):
        parts.append("<p class='w'>warning: the session was interrupted (Ctrl-C or a signal) before the end of its input</p>")
    parts.append(f"<h2>Emotion over time</h2><img alt='emotion over time' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    parts.append("<p>Time runs left to right, in seconds from the start of the input; each lane (a channel, "
                 "or the whole session) has five panels, top to bottom:</p><ul>" +
                 "".join(f"<li><b>{esc(name)}</b>: {esc(text)}</li>" for name, text in PANELS) +
                 "<li>The colours are the emotions of the legend above the figure; hatched: uncertain.</li></ul>")
    parts.append("<h2>Summary</h2>")
    if not lanes(contents):
        parts.append("<p>Nothing was analysed: the log has no window or utterance records"
                     f"{' (see the error above)' if log_errors(contents) else ''}.</p>")
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
                       f"{w.get('rolling_confidence', w.get('confidence', 0.0)):.0%}")
            parts.append(f"<tr><td>{esc(str(w.get('channel') or ''))}</td><td>{w['start_s']:.1f}-{w['end_s']:.1f} s</td>"
                         f"{own}<td>{rolling}</td>{_dims_cells(w)}<td>{_top(w['probs'].get('audio'))}</td>"
                         f"<td>{_top(w['probs'].get('text'))}</td><td>{esc(w.get('transcript') or '')}</td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


@dataclass(frozen=True)
class LogReport:
    """What one log's report holds, for the index page: where it was written and a summary."""

    log: Path
    html: Path | None
    png: Path | None
    duration_s: float | None
    windows: int
    utterances: int
    main: str  # e.g. "😢 sad 45%" per lane, "" when nothing was said
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    complete: bool


def duration_of(contents: LogContents) -> float | None:
    """Seconds of input: the file's duration, else the audio the session streamed, else the
    end of its last record; None when the log cannot tell."""
    start = (contents.of_type("session_start") or [{}])[0]
    if _number(start.get("duration_s")):
        return float(start["duration_s"])
    for end in contents.of_type("session_end"):
        streamed = [c.get("stream_s") for c in end.get("channels") or [] if isinstance(c, dict)] + [end.get("stream_s")]
        streamed = [x for x in streamed if _number(x)]
        if streamed:
            return float(max(streamed))
    ends = [r["end_s"] for r in contents.records if r.get("type") in ("window", "utterance")]
    return max(ends) if ends else None


def main_emotion(contents: LogContents) -> str:
    """Each lane's dominant emotion and its share of the speech ("agent: 😠 angry 60%")."""
    out = []
    for lane in lanes(contents):
        m = summarise_records(lane.windows, lane.utterances)
        if m.dominant:
            name = "" if lane.name == "session" else f"{lane.name}: "
            out.append(f"{name}{EMOJI[m.dominant]} {m.dominant} {m.share[m.dominant]:.0%}")
    return "; ".join(out)


def summarise_log(log_path: Path, contents: LogContents, warnings: list[str], html_out: Path | None = None,
                  png_out: Path | None = None) -> LogReport:
    return LogReport(log_path, html_out, png_out, duration_of(contents), len(contents.of_type("window")),
                     len(contents.of_type("utterance")), main_emotion(contents), tuple(log_errors(contents)),
                     tuple(warnings), contents.complete)


def report(log_path: Path, html_out: Path | None, png_out: Path | None) -> LogReport:
    """Write the report of one session log (see :func:`load_session_log`, which raises
    SerError for anything else, before anything is written)."""
    import matplotlib.pyplot as plt

    contents, warnings = load_session_log(log_path)
    fig = draw(contents)
    png = png_bytes(fig)
    plt.close(fig)
    if png_out:
        png_out.parent.mkdir(parents=True, exist_ok=True)
        png_out.write_bytes(png)
    if html_out:
        html_out.parent.mkdir(parents=True, exist_ok=True)
        html_out.write_text(html_report(contents, str(log_path), png, warnings), encoding="utf-8")
    return summarise_log(log_path, contents, warnings, html_out, png_out)


def _link(target: Path | None, index: Path, text: str) -> str:
    if target is None:
        return ""
    try:
        href = target.resolve().relative_to(index.parent.resolve()).as_posix()
    except ValueError:
        href = target.resolve().as_uri()
    return f"<a href='{html.escape(href, quote=True)}'>{html.escape(text)}</a>"


def index_page(reports: list[LogReport], failed: dict[Path, str], index: Path) -> str:
    """The page over several logs: one row per log, linking its page and figure, with its
    duration, windows, utterances, main emotion, errors and warnings; logs that could not be
    reported (``failed``: log -> why) are listed with the reason."""
    esc = html.escape
    rows = []
    for r in reports:
        links = " ".join(x for x in (_link(r.html, index, "page"), _link(r.png, index, "figure")) if x)
        notes = [f"<span class='e'>error: {esc(e)}</span>" for e in r.errors]
        notes += [f"<span class='w'>{esc(w)}</span>" for w in r.warnings]
        if not r.complete:
            notes.append("<span class='w'>no session_end: the session did not finish cleanly</span>")
        rows.append(f"<tr><td>{_link(r.html or r.png, index, r.log.name) or esc(r.log.name)}</td><td>{links}</td>"
                    f"<td>{_fmt(r.duration_s, '.1f')}</td><td>{r.windows}</td><td>{r.utterances}</td>"
                    f"<td>{esc(r.main) or '—'}</td><td>{'<br>'.join(notes)}</td></tr>")
    for log, why in failed.items():
        rows.append(f"<tr><td>{esc(log.name)}</td><td></td><td>—</td><td>—</td><td>—</td><td>—</td>"
                    f"<td><span class='e'>not reported: {esc(why)}</span></td></tr>")
    errors = sum(bool(r.errors) for r in reports) + len(failed)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>ser-live reports</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}"
            ".e{color:#c00;font-weight:bold}.w{color:#a60}</style></head><body>"
            f"<h1>ser-live reports</h1><p>{len(reports) + len(failed)} session logs, {errors} with errors. "
            "Duration: seconds of input. Main emotion: the emotion of the largest share of the speech "
            "(utterances by duration; windows for logs without utterances), per channel when split.</p>"
            "<table><tr><th>log</th><th>report</th><th>duration (s)</th><th>windows</th><th>utterances</th>"
            "<th>main emotion</th><th>errors and warnings</th></tr>\n" + "\n".join(rows) + "\n</table></body></html>")

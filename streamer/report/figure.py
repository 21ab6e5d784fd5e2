"""The report figure: per-window spans (gaps left empty), the utterance and rolling bands,
arousal/valence and audio~text lanes, each panel explained (``PANELS``); the clip title."""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from streamer.core.labels import LABELS
from streamer.live.session_log import LogContents
from streamer.core.summary import Summary, fused_dims, segments, summarise_records

from streamer.report.logs import duration_of, log_errors

COLORS = {"angry": "#d62728", "disgust": "#2ca02c", "fear": "#9467bd", "happy": "#f2c14e", "neutral": "#b0b0b0",
          "sad": "#1f77b4", "surprise": "#17becf"}


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
    labels) when the log has them, else the windows (``streamer.core.summary``)."""
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


AUDIO_PANELS = (
    ("waveform", "the recording itself (its loudest and quietest sample in each sliver of time), on the same time "
                 "axis as the emotion lanes below; drawn when the log names its audio file or --audio gives it."),
    ("log-mel", "the recording's log-mel spectrogram (64 mel bands, dB): speech shows as bands of energy, silence "
                "as dark stretches, where no window was analysed."),
)

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


def draw(contents: LogContents, width_px: int = 1400, dpi: int = 100, audio: dict | None = None):
    """The figure: per lane, the recording's waveform and log-mel spectrogram when ``audio``
    gives them ({lane name: :class:`streamer.report.audio.LaneAudio`}), then fused probabilities per window as stacked areas over each
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
    audio = {k: v for k, v in (audio or {}).items() if k in {lane.name for lane in ls}}
    pictures = 2 if audio else 0  # waveform and log-mel rows above each lane's emotion rows
    rows = 5 + pictures
    head_in = 0.45 + 0.22 * len(errors)
    height_in = (5.6 + 2.2 * bool(pictures)) * n + head_in
    ratios = ([0.9, 1.3] if pictures else []) + [4, 0.5, 0.5, 1.8, 1.2]
    fig, axes = plt.subplots(rows * n, 1, figsize=(width_px / dpi, height_in), dpi=dpi, squeeze=False,
                             gridspec_kw={"height_ratios": ratios * n}, sharex=True)
    axes = axes[:, 0]
    for i, lane in enumerate(ls):
        if pictures:
            _pictures(axes[rows * i], axes[rows * i + 1], audio.get(lane.name), lane.name)
        ax_p, ax_own, ax_roll, ax_dims, ax_agree = axes[rows * i + pictures: rows * i + rows]
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
        if not pictures:
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
    t_max = max([*ends, duration_of(contents) or 0.0, *(a.duration_s for a in audio.values())]) or 1.0
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


def _pictures(ax_wave, ax_mel, a, name: str) -> None:
    """The waveform (min/max envelope) and log-mel spectrogram rows of one lane."""
    ax_wave.set_title(f"{name}: the recording, then the fused emotion probabilities of each window over its own "
                      "time span (blank: no speech analysed)", loc="left", fontsize=10)
    ax_wave.set_ylabel("waveform", fontsize=8)
    ax_mel.set_ylabel("log-mel", fontsize=8)
    for ax in (ax_wave, ax_mel):
        ax.set_yticks([])
    if a is None:
        ax_wave.text(0.5, 0.5, "no recording for this lane", transform=ax_wave.transAxes, ha="center", va="center",
                     color="#888888", fontsize=9)
        return
    ax_wave.fill_between(a.t, a.low, a.high, color="#333333", lw=0)
    peak = float(max(abs(a.low.min()), abs(a.high.max()), 1e-3))
    ax_wave.set_ylim(-peak, peak)
    ax_mel.imshow(a.mel, origin="lower", aspect="auto", cmap="magma", extent=(0, a.duration_s, 0, a.mel.shape[0]),
                  interpolation="nearest")


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

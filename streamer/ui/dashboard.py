"""The rich dashboard: a ``Layout`` tree rendered from a :class:`Snapshot` (pure), and
:class:`Dashboard`, a renderable whose ``__rich__`` takes a fresh snapshot, for ``Live`` to
refresh at its own pace. ``window_line`` is the plain one-line form used when stdout is not
a terminal.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.align import Align
from rich.console import Group
from rich.layout import Layout
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from streamer.labels import EMOJI, LABELS
from streamer.live.messages import WindowResult
from streamer.live.state import Snapshot

COLORS = {"angry": "red", "disgust": "green", "fear": "magenta", "happy": "yellow", "neutral": "white",
          "sad": "blue", "surprise": "cyan"}
BAR = 24


def clock(seconds: float) -> str:
    """Seconds as h:mm:ss.

    >>> clock(3725.4)
    '1:02:05'
    """
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def bar(p: float, width: int = BAR) -> str:
    """A horizontal bar of ``width`` cells for a share ``p``.

    >>> bar(0.5, 8), bar(0.0, 4), bar(1.0, 4)
    ('████    ', '    ', '████')
    """
    p = min(1.0, max(0.0, p))
    full = int(p * width)
    part = " ▏▎▍▌▋▊▉"[int((p * width - full) * 8)] if full < width else ""
    return ("█" * full + part).ljust(width)[:width]


def header(s: Snapshot) -> Panel:
    t = Text.assemble(("ser-live ", "bold"), (s.source, "cyan"), f"   elapsed {clock(s.elapsed_s)}   audio {clock(s.stream_s)}   ",
                      (s.status, "green" if s.status == "running" else "yellow"))
    models = Text("  ".join(f"{k}: {v}" for k, v in s.models.items()), style="dim")
    return Panel(Group(t, models), title="session", title_align="left")


def mood(s: Snapshot) -> Panel:
    if not s.results:
        body = Align.center(Text("waiting for speech…", style="dim"), vertical="middle")
        return Panel(body, title="rolling emotion")
    r = s.results[-1]
    big = Text.assemble((f"{r.emoji}  ", ""), (r.label.upper(), f"bold {COLORS[r.label]}"),
                        (f"   {r.confidence:.0%}", "bold"))
    sub = Text(f"window {r.index}  {r.start / 16000:.1f}-{r.end / 16000:.1f} s  latency {r.latency_ms:.0f} ms", style="dim")
    return Panel(Align.center(Group(Align.center(big), Align.center(sub)), vertical="middle"), title="rolling emotion")


def prob_table(r: WindowResult | None) -> Table:
    t = Table(box=None, expand=True, padding=(0, 1))
    t.add_column("", no_wrap=True, min_width=11)
    for name in ("audio", "text", "fused"):
        t.add_column(name, no_wrap=True, min_width=15)
    for k in LABELS:
        row = [f"{EMOJI[k]} {k}"]
        for probs in ((r.audio if r else None), (r.text if r else None), (r.fused if r else None)):
            if probs is None:
                row.append(Text("—" if r and probs is None else "", style="dim"))
            else:
                p = probs[k]
                row.append(Text(f"{bar(p, 10)} {p:4.0%}", style=COLORS[k]))
        t.add_row(*row)
    return t


def transcript(s: Snapshot) -> Panel:
    lines = [Text(f"{r.start / 16000:7.1f}s {r.emoji} " + (r.transcript or "·"), style="white") for r in list(s.results)[-8:]]
    vad = Text("● speech" if s.in_speech else "○ silence", style="bold green" if s.in_speech else "dim")
    level = max(0.0, min(1.0, (s.level_db + 60) / 60))
    meter = Text.assemble(("level ", "dim"), (bar(level, 20), "green" if level < 0.85 else "red"), f" {s.level_db:5.1f} dBFS  ", vad)
    partial = Text(f"… {s.partial}" if s.partial else "", style="italic yellow")
    return Panel(Group(meter, Text(""), *lines, partial), title="what was said", title_align="left")


def timeline(s: Snapshot) -> Panel:
    t = Text()
    for r in s.results:
        t.append(f"{r.emoji} ", style=COLORS[r.label])
    return Panel(t or Text("—", style="dim"), title="recent windows", title_align="left")


def footer(s: Snapshot) -> Panel:
    c = s.counters
    lat = "—" if s.latency_p50_ms is None else f"{s.latency_p50_ms:.0f} / {s.latency_p95_ms:.0f} ms"
    dropped = c.get("audio_dropped_samples", 0) / 16000
    parts = [f"windows {c.get('windows', 0)}", f"dropped audio {dropped:.1f} s",
             f"queue drops {c.get('asr_queue_dropped', 0) + c.get('windows_dropped', 0)}",
             f"overflows {c.get('portaudio_input_overflow', 0)}", f"latency p50/p95 {lat}"]
    return Panel(Text("   ".join(parts)), title="counters", title_align="left")


def render(s: Snapshot) -> Layout:
    root = Layout(name="root")
    root.split_column(Layout(header(s), name="header", size=4), Layout(name="body"),
                      Layout(timeline(s), name="timeline", size=3), Layout(footer(s), name="footer", size=3))
    root["body"].split_row(Layout(name="left", ratio=3), Layout(transcript(s), name="transcript", ratio=2))
    last = s.results[-1] if s.results else None
    root["left"].split_column(Layout(mood(s), name="mood", size=6),
                              Layout(Panel(prob_table(last), title="probabilities (last window)", title_align="left"), name="probs"))
    return root


class Dashboard:
    """A renderable that renders the latest snapshot each time ``Live`` refreshes."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def __rich__(self) -> Layout:
        return render(self.snapshot())


def window_line(r: WindowResult) -> str:
    """The plain form of a result, for output that is not a terminal."""
    text = "" if r.text is None else f" text {max(r.text, key=r.text.get)}"
    audio = max(r.audio, key=r.audio.get)
    return (f"[{r.start / 16000:7.2f}-{r.end / 16000:7.2f}s] {r.emoji} {r.label:<8} {r.confidence:4.0%}  "
            f"audio {audio}{text}  | {r.transcript}")

"""The rich dashboard: a ``Layout`` tree rendered from a :class:`Snapshot` (pure), and
:class:`Dashboard`, a renderable whose ``__rich__`` takes a fresh snapshot, for ``Live`` to
refresh at its own pace. ``window_line`` and ``utterance_line`` (``plain_line`` picks one) are
the plain one-line forms used when stdout is not a terminal.

Each transcript line and each mark of the "recent windows" strip carries its own window's (or
utterance's) emotion; an uncertain one (fused confidence below ``[fusion] min_confidence``)
shows a dim "?" instead. The big panel is the rolling emotion, and says so.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.align import Align
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.layout import Layout
from rich.panel import Panel
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from streamer.dims import dims as dims_of
from streamer.labels import EMOJI, LABELS
from streamer.live.messages import UtteranceResult, WindowResult
from streamer.live.state import Snapshot

COLORS = {"angry": "red", "disgust": "green", "fear": "magenta", "happy": "yellow", "neutral": "white",
          "sad": "blue", "surprise": "cyan"}
BAR = 24
UNCERTAIN = "dim"
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


def signed_bar(x: float, half: int = 4) -> str:
    """A bar for a value in [-1, 1]: ``half`` cells either side of a centre mark.

    >>> signed_bar(0.5), signed_bar(-1.0), signed_bar(0.0, 2)
    ('    │██  ', '████│    ', '  │  ')
    """
    n = round(min(1.0, abs(x)) * half)
    left = ("█" * n if x < 0 else "").rjust(half)
    right = ("█" * n if x > 0 else "").ljust(half)
    return f"{left}│{right}"


def rolling_of(r: WindowResult) -> tuple[str, str, float]:
    """The rolling label, emoji and confidence of a result (a result made before these were
    kept apart carries the rolling emotion in ``label``)."""
    if r.rolling_label:
        return r.rolling_label, r.rolling_emoji or EMOJI[r.rolling_label], r.rolling_confidence
    return r.label, r.emoji, r.confidence


def mark(r: WindowResult | UtteranceResult) -> Text:
    """The emoji of a window's or utterance's own emotion, or a dim "?" when uncertain (two
    cells wide either way)."""
    if r.uncertain:
        return Text("? ", style=f"bold {UNCERTAIN}")
    return Text(r.emoji, style=COLORS.get(r.label, ""))


def own(r: WindowResult | UtteranceResult) -> Text:
    """"😠 angry 62%", or "? uncertain (angry 31%)"."""
    if r.uncertain:
        return Text(f"? uncertain ({r.label} {r.confidence:.0%})", style=UNCERTAIN)
    return Text.assemble(f"{r.emoji} ", (r.label, f"bold {COLORS.get(r.label, '')}"), f" {r.confidence:.0%}")


def branch_dims(r: WindowResult) -> dict[str, dict | None]:
    """Arousal/valence per branch: the logged ``dims``, or mapped from the probabilities."""
    if r.dims:
        return {k: r.dims.get(k) for k in ("audio", "text", "fused")}
    return {"audio": dims_of(r.audio), "text": dims_of(r.text), "fused": dims_of(r.fused)}


def header(s: Snapshot) -> Panel:
    t = Text.assemble(("ser-live ", "bold"), (s.source, "cyan"), f"   elapsed {clock(s.elapsed_s)}   audio {clock(s.stream_s)}   ",
                      (s.status, "green" if s.status == "running" else "yellow"))
    models = Text("  ".join(f"{k}: {v}" for k, v in s.models.items()), style="dim")
    return Panel(Group(t, models), title="session", title_align="left")


def rolling_title(s: Snapshot) -> str:
    if s.half_life_s:
        return f"rolling emotion ({s.half_life_s:g} s half-life)"
    return "rolling emotion"


def mood(s: Snapshot) -> Panel:
    if not s.results:
        body = Align.center(Text("waiting for speech…", style="dim"), vertical="middle")
        return Panel(body, title=rolling_title(s))
    r = s.results[-1]
    label, emoji, conf = rolling_of(r)
    big = Text.assemble((f"{emoji}  ", ""), (label.upper(), f"bold {COLORS.get(label, '')}"),
                        (f"   {conf:.0%}", "bold"), ("  rolling", "dim"))
    this = Text.assemble(("this window: ", "dim"), own(r)) if r.rolling_label else Text("")
    sub = Text(f"window {r.index}  {r.start / 16000:.1f}-{r.end / 16000:.1f} s  latency {r.latency_ms:.0f} ms", style="dim")
    return Panel(Align.center(Group(Align.center(big), Align.center(this), Align.center(sub)), vertical="middle"),
                 title=rolling_title(s))


def prob_table(r: WindowResult | None, width: int = 80) -> Table:
    """Per label, the audio, text and fused probabilities of ``r``; below them its arousal and
    valence per branch as signed bars. Bars shrink to fit ``width`` cells.

    >>> import io
    >>> c = Console(width=56, record=True, file=io.StringIO())
    >>> c.print(prob_table(None, 56)); max(len(line) for line in c.export_text().splitlines()) <= 56
    True
    """
    cell = max(9, min(15, (width - 11 - 8) // 3))  # label column 11, padding 2 per column
    n, half = cell - 5, max(2, min(4, (cell - 7) // 2))
    t = Table(box=None, expand=True, padding=(0, 1))
    t.add_column("", no_wrap=True, min_width=11)
    for name in ("audio", "text", "fused"):
        t.add_column(name, no_wrap=True, min_width=cell)
    for k in LABELS:
        row = [f"{EMOJI[k]} {k}"]
        for probs in ((r.audio if r else None), (r.text if r else None), (r.fused if r else None)):
            if probs is None:
                row.append(Text("—" if r and probs is None else "", style="dim"))
            else:
                p = probs[k]
                row.append(Text(f"{bar(p, n)} {p:4.0%}", style=COLORS[k]))
        t.add_row(*row)
    if r is not None:
        d = branch_dims(r)
        t.add_row("", "", "", "")
        for axis in ("arousal", "valence"):
            row = [Text(axis, style="bold")]
            for name in ("audio", "text", "fused"):
                v = (d.get(name) or {}).get(axis)
                row.append(Text("—", style="dim") if v is None else
                           Text(f"{signed_bar(v, half)} {v:+.2f}", style="bold" if name == "fused" else ""))
            t.add_row(*row)
    return t


class Probabilities:
    """:func:`prob_table` sized to the width it is given."""

    def __init__(self, r: WindowResult | None) -> None:
        self.r = r

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield prob_table(self.r, options.max_width)


def prob_title(r: WindowResult | None) -> Text:
    if r is None:
        return Text("probabilities (last window)")
    return Text.assemble("probabilities (last window: ", own(r), ")")


def window_text(r: WindowResult, style: str = "white") -> Text:
    return Text.assemble((f"{r.start / 16000:7.1f}s ", "dim"), mark(r), " ", (r.transcript or "·", style))


def utterance_text(u: UtteranceResult) -> Text:
    return Text.assemble((f"{u.start / 16000:7.1f}s ", "dim"), mark(u), " ", (u.transcript or "·", "bold white"),
                         (f"  {u.confidence:.0%}", UNCERTAIN))


def transcript_lines(s: Snapshot) -> list[Text]:
    """Closed utterances (one line each, their own emotion), then the windows of the utterance
    still open; without utterances, the windows."""
    if not s.utterances:
        return [window_text(r) for r in s.results]
    closed = max((max(u.windows) for u in s.utterances if u.windows), default=-1)
    return ([utterance_text(u) for u in s.utterances] +
            [window_text(r, "italic") for r in s.results if r.index > closed])


class Tail:
    """``head`` lines, then as many of the newest ``lines`` as fit the height given (whole
    lines; the oldest go first), then ``foot``."""

    def __init__(self, head: Callable[[int], list[Text]], lines: list[Text], foot: list[Text]) -> None:
        self.head, self.lines, self.foot = head, lines, foot

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        free = options.update(height=None)
        render = lambda x: console.render_lines(x, free, pad=False, new_lines=False)  # noqa: E731
        top = [ln for t in self.head(options.max_width) for ln in render(t)]
        bottom = [ln for t in self.foot for ln in render(t)]
        room = None if options.height is None else max(0, options.height - len(top) - len(bottom))
        body: list[list[Segment]] = []
        for t in reversed(self.lines):
            lines = render(t)
            if room is not None and len(body) + len(lines) > room:
                break
            body = lines + body
        for ln in top + body + bottom:
            yield from ln
            yield Segment.line()


def transcript(s: Snapshot) -> Panel:
    vad = Text("● speech" if s.in_speech else "○ silence", style="bold green" if s.in_speech else "dim")
    level = max(0.0, min(1.0, (s.level_db + 60) / 60))

    def head(width: int) -> list[Text]:
        n = max(4, min(20, width - 27))
        return [Text.assemble(("level ", "dim"), (bar(level, n), "green" if level < 0.85 else "red"),
                              f" {s.level_db:5.1f} dBFS ", vad), Text("")]

    partial = [Text(f"… {s.partial}", style="italic yellow")] if s.partial else []
    return Panel(Tail(head, transcript_lines(s), partial), title="what was said", title_align="left")


def timeline(s: Snapshot) -> Panel:
    t = Text()
    for r in s.results:
        t.append_text(mark(r))
        t.append(" ")
    return Panel(t or Text("—", style="dim"), title="recent windows (each its own; ? uncertain)", title_align="left")


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
                              Layout(Panel(Probabilities(last), title=prob_title(last), title_align="left"), name="probs"))
    return root


class Dashboard:
    """A renderable that renders the latest snapshot each time ``Live`` refreshes."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def __rich__(self) -> Layout:
        return render(self.snapshot())


def _dims_text(d: dict | None) -> str:
    return "" if not d else f"a{d['arousal']:+.2f} v{d['valence']:+.2f}"


def _own_plain(r: WindowResult | UtteranceResult) -> str:
    if r.uncertain:
        return f"?  {r.label:<8} {r.confidence:4.0%} uncertain"
    return f"{r.emoji} {r.label:<8} {r.confidence:4.0%}"


def window_line(r: WindowResult) -> str:
    """The plain form of a window result, for output that is not a terminal: its own label
    (or "uncertain"), the branches' top labels, the rolling emotion, fused arousal/valence.
    An utterance gets :func:`utterance_line` (a sink receives both kinds)."""
    if isinstance(r, UtteranceResult):
        return utterance_line(r)
    text = "" if r.text is None else f" text {max(r.text, key=r.text.get)}"
    audio = max(r.audio, key=r.audio.get)
    rolling = ""
    if r.rolling_label:
        rolling = f"  rolling {r.rolling_emoji or EMOJI[r.rolling_label]} {r.rolling_label} {r.rolling_confidence:.0%}"
    dims = _dims_text(r.dims.get("fused") if r.dims else None)
    return (f"[{r.start / 16000:7.2f}-{r.end / 16000:7.2f}s] {_own_plain(r)}  audio {audio}{text}{rolling}"
            f"{'  ' + dims if dims else ''}  | {r.transcript}")


def utterance_line(u: UtteranceResult) -> str:
    """The plain form of a closed utterance: its span, own label (or "uncertain"), fused
    arousal/valence, window count and whole transcript."""
    dims = _dims_text((u.dims or {}).get("fused"))
    n = len(u.windows)
    return (f"utterance {u.index} [{u.start / 16000:7.2f}-{u.end / 16000:7.2f}s] {_own_plain(u)}"
            f"{'  ' + dims if dims else ''}  ({n} window{'s' if n != 1 else ''})  | {u.transcript}")


def plain_line(r: WindowResult | UtteranceResult) -> str:
    """:func:`utterance_line` or :func:`window_line`, for a sink that gets both kinds."""
    return utterance_line(r) if isinstance(r, UtteranceResult) else window_line(r)

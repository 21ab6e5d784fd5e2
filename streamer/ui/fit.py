"""Fitting the dashboard to the terminal: :func:`fit` chooses, for a width and height, which
pieces of decoration to keep (they go first, in :data:`DROP` order, so the numbers stay), and
the small renderables the panels are built from (titled sections, a thin rule, one-line text).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.panel import Panel
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

from streamer.core.labels import LABELS


LABEL_CELLS = 11  # "😮 surprise": an emoji (2 cells), a space, the longest label (8)
PERCENT_CELLS = 4  # "100%"


@dataclass(frozen=True)
class Fit:
    """What the dashboard draws at one size (:func:`fit` chooses). Each flag is a piece that
    costs rows; the essentials (the seven label rows, the rolling emotion, the level meter, a
    strip of windows, the counters) are always drawn."""

    boxed: bool = True  # bordered panels; else a title rule above each panel and a rule between the columns
    models: bool = True  # the session panel's line of model names
    gap: bool = True  # blank rows above arousal/valence and below the level meter
    sub: bool = True  # the rolling panel's line of window index, time span and latency
    this: bool = True  # the rolling panel's "this window" line: the last window's own emotion
    dims: bool = True  # the arousal and valence rows

    @property
    def frame(self) -> int:
        """Rows a panel's frame takes: a border above and below, or a title rule."""
        return 2 if self.boxed else 1

    def mood_rows(self) -> int:
        return self.frame + 1 + self.this + self.sub

    def probs_rows(self) -> int:
        return self.frame + 1 + len(LABELS) + ((self.gap + 2) if self.dims else 0)

    def rows(self, counter_lines: int = 1) -> int:
        """The rows needed to draw everything this fit keeps."""
        transcript = self.frame + 1 + self.gap + 2  # the level meter and at least two lines
        return (self.frame + 1 + self.models) + max(self.mood_rows() + self.probs_rows(), transcript) + \
            (self.frame + 1) + (self.frame + counter_lines)


DROP = ("gap", "models", "boxed", "sub", "this", "dims")  # the order in which pieces go when rows run short
PROBS_MIN_CELLS = LABEL_CELLS + 3 * (1 + 3 + PERCENT_CELLS)  # a label and three columns, each a 2-cell bar and "100%"


def left_width(width: int) -> int:
    """Cells of the left column (rolling emotion and probabilities); the transcript gets the rest.

    >>> left_width(80), left_width(100), left_width(200)
    (48, 60, 72)
    """
    return max(PROBS_MIN_CELLS, min(72, width * 3 // 5))


def fit(width: int, height: int, counter_lines: tuple[int, int] = (1, 1)) -> Fit:
    """The most the dashboard can draw at ``width`` x ``height``: drop the pieces of :data:`DROP`
    in order until the rest fits, then take back each dropped one that still fits, the most
    needed first. Borders also need the width for the probabilities. ``counter_lines``: lines
    the counters take with borders and without.

    >>> fit(100, 30) == Fit(), fit(80, 24) == Fit(boxed=False)
    (True, True)
    >>> fit(80, 20)
    Fit(boxed=False, models=False, gap=False, sub=False, this=True, dims=True)
    """
    def fits(f: Fit) -> bool:
        if f.boxed and left_width(width) - 4 < PROBS_MIN_CELLS:
            return False
        return f.rows(counter_lines[0] if f.boxed else counter_lines[1]) <= height

    f, dropped = Fit(), []
    for name in DROP:
        if fits(f):
            break
        f = replace(f, **{name: False})
        dropped.append(name)
    for name in reversed(dropped):
        if fits(again := replace(f, **{name: True})):
            f = again
    return f


# --- panels

class Section:
    """A panel without borders: a title rule, then the body below it (one row, no columns)."""

    def __init__(self, body: RenderableType, title: str | Text) -> None:
        self.body, self.title = body, title

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        title = Text.assemble(("─ ", "dim"), self.title if isinstance(self.title, Text) else Text(self.title, "bold"), " ")
        title.truncate(width, overflow="ellipsis")
        title.append("─" * (width - title.cell_len), "dim")
        yield from console.render_lines(title, options.update(height=1), pad=True)[0]
        yield Segment.line()
        height = None if options.height is None else options.height - 1
        if height is not None and height <= 0:
            return
        for line in console.render_lines(self.body, options.update(height=height), pad=True):
            yield from line
            yield Segment.line()


class VRule:
    """A dim vertical rule as high as it is given (between the columns when there are no borders)."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for _ in range(options.height or 1):
            yield Segment("│", Style(dim=True))
            yield Segment.line()


def frame(body: RenderableType, title: str | Text, f: Fit, align: str = "left") -> RenderableType:
    return Panel(body, title=title, title_align=align) if f.boxed else Section(body, title)


class Sized:
    """A renderable made for the width it is given: ``make(width)``."""

    def __init__(self, make: Callable[[int], RenderableType]) -> None:
        self.make = make

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.make(options.max_width)


def one_line(t: Text, width: int | None = None) -> Text:
    """``t`` never wrapped: cut with an ellipsis (at ``width`` now, or wherever it is drawn)."""
    t.no_wrap, t.overflow = True, "ellipsis"
    if width is not None:
        t.truncate(width, overflow="ellipsis")
    return t

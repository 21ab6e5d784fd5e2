"""The dashboard on a small terminal: below :data:`FULL` (60x16) the panels of the full
layout would overlap, so one column of plain lines is drawn instead: the clocks and status,
the rolling emotion, the seven fused percentages of the last window, its words, and the
counters. Below :data:`SMALLEST` (40x12) one line says how large the terminal must be.

>>> from streamer.ui.state import Snapshot
>>> s = Snapshot("mic", {}, 3.0, 2.5, -40.0, False, "", (), {"windows": 0}, None, None)
>>> [t.plain for t in compact_lines(s, 40, 12)][:2]
['0:00:03  audio 0:00:02  running', 'waiting for speech…']
>>> too_small(30, 10).plain
'terminal 30x10: needs 40x12'
"""

from __future__ import annotations

from rich.text import Text

from streamer.core.labels import EMOJI, LABELS
from streamer.ui.fit import one_line
from streamer.ui.parts import COLORS, bar, clock, counter_lines, rolling_of
from streamer.ui.state import Snapshot

FULL = (60, 16)      # the full layout from this size up
SMALLEST = (40, 12)  # the compact one from this size up


def use_compact(width: int, height: int) -> bool:
    return width < FULL[0] or height < FULL[1]


def too_small(width: int, height: int) -> Text:
    return Text(f"terminal {width}x{height}: needs {SMALLEST[0]}x{SMALLEST[1]}", style="yellow")


def compact_lines(s: Snapshot, width: int, height: int) -> list[Text]:
    """At most ``height`` lines of at most ``width`` cells."""
    lines = [Text(f"{clock(s.elapsed_s)}  audio {clock(s.stream_s)}  {s.status}")]
    if not s.results:
        lines.append(Text("waiting for speech…", style="dim"))
    else:
        r = s.results[-1]
        label, emoji, conf = rolling_of(r)
        lines.append(Text.assemble(f"{emoji} ", (label.upper(), f"bold {COLORS.get(label, '')}"), f" {conf:.0%} rolling"))
        cells = max(2, min(10, width - 20))
        for k in LABELS:
            p = float(r.fused.get(k, 0.0))
            lines.append(Text.assemble(f"{EMOJI[k]} {k:<8} ", (bar(p, cells), COLORS[k]), f" {p:4.0%}"))
        said = " ".join(w.word for w in r.words)
        if s.partial:
            said = (said + " … " + s.partial).strip()
        lines.append(Text(said or "(no words)", style="dim"))
    lines += [Text(x) for x in counter_lines(s, width)]
    return [one_line(t, width) for t in lines[:height]]

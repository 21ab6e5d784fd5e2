"""What a :class:`~streamer.core.session.StreamSession` puts in its lane, and how the lane
treats each kind: ``("chunk", Chunk, in_speech)`` (the recogniser's audio), ``("window",
ClosedWindow)`` (a window to finish), ``("end", UtteranceEnd)`` (an utterance closed), and
:data:`END` (the input ended). Chunks and windows are bounded per kind (:func:`kind_of`); the
others are always kept.

>>> kind_of(("end", UtteranceEnd(3, 48000))), kind_of(END)
('end', None)
>>> import numpy as np
>>> where(UtteranceEnd(3, 48000)), where(Chunk(320, np.zeros(320, np.int16)))
('3', 'at sample 320')
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.core.messages import Chunk, Window
from streamer.core.services import TimedFuture


@dataclass(frozen=True)
class ClosedWindow:
    """A closed window, its audio opinion on the way, when it closed."""

    window: Window
    audio: TimedFuture
    at: float


@dataclass(frozen=True)
class UtteranceEnd:
    """The VAD closed utterance ``index`` at sample ``end`` (after its windows)."""

    index: int
    end: int


END = object()  # the input ended


def where(what) -> str:
    """An item's place, for a log line: the window's index, the utterance's, the chunk's
    first sample."""
    if isinstance(what, ClosedWindow):
        return f"{what.window.index}"
    if isinstance(what, UtteranceEnd):
        return f"{what.index}"
    return f"at sample {what.start}" if isinstance(what, Chunk) else ""


def kind_of(item) -> str | None:
    """The kind the lane bounds ``item`` by (None: never dropped)."""
    return item[0] if isinstance(item, tuple) else None


def cancel_dropped(item) -> None:
    """The lane dropped ``item``: a window never analysed gets no result (the lane counts it).
    A function, not a session's method: the session's lane holds it, and a bound method there
    would make the session a reference cycle that only the garbage collector frees."""
    if item[0] == "window":
        item[1].audio.cancel()

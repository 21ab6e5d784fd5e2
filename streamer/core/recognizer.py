"""The streaming interface every speech recogniser offers the pipeline.

- ``push(chunk, in_speech)``: every chunk of the stream, in order (Vosk decodes here;
  Whisper keeps the audio since the last closed window for partial text).
- ``partial()``: the current partial text for the display (cheap; may be empty).
- ``refresh_partial()``: optional extra work for the partial text, called only while the ASR
  thread is idle; returns True when it did something.
- ``words_for(window)``: the final words of a closed window, with start and end as stream
  sample indexes; may compute (Whisper decodes the utterance so far here). Each word is
  given out once, to the window whose audio completes it.
- ``end_utterance(end)``: the current utterance closed at sample ``end``: all of its words
  (Whisper: one decode of the whole utterance; words of a short tail after the last window
  included).
- ``skip(window)``: the window is dropped unanalysed (the stream fell behind); the engine
  keeps its place in the utterance without the work, so the utterance's end still hears
  every word (Vosk has nothing to do: it decodes as the audio comes).
- ``text_skipped()``: why the words last given out (by ``words_for`` or ``end_utterance``)
  should not be read by the text model, by the recogniser's own evidence
  (``streamer.asr.reliability``: ``language``, ``low_confidence``, ...), or None.
- ``flush()`` at end of stream, ``reset()`` to start over.
- ``incremental`` (declared): True when ``push`` does the recognition (Vosk), so the chunks
  go to it as they come; False when it only keeps the audio until a window closes (Whisper),
  so the chunks wait there and the ASR thread is not woken for each one.
"""

from __future__ import annotations

from typing import Protocol

from streamer.core.messages import Chunk, Window, Word


class AsrEngine(Protocol):
    name: str
    incremental: bool

    def push(self, chunk: Chunk, in_speech: bool) -> None: ...
    def partial(self) -> str: ...
    def refresh_partial(self) -> bool: ...
    def words_for(self, window: Window) -> list[Word]: ...
    def end_utterance(self, end: int) -> list[Word]: ...
    def skip(self, window: Window) -> None: ...
    def text_skipped(self) -> str | None: ...
    def flush(self) -> None: ...
    def reset(self) -> None: ...


def inside(words: list[Word], start: int, end: int) -> list[Word]:
    """Words whose midpoint falls in [start, end): each word belongs to exactly one window.

    >>> w = [Word("a", 0, 100, 1.0), Word("b", 90, 200, 1.0), Word("c", 210, 400, 1.0)]
    >>> [x.word for x in inside(w, 0, 160)], [x.word for x in inside(w, 160, 400)]
    (['a', 'b'], ['c'])
    """
    return [w for w in words if start <= (w.start + w.end) // 2 < end]

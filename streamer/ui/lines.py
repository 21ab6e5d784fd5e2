"""The plain one-line forms of results, for output that is not a terminal (``ser-live`` when
stdout is a pipe or a file, ``--no-dashboard``): :func:`window_line`, :func:`utterance_line`,
and :func:`plain_line` for a sink that gets both kinds."""

from __future__ import annotations

from streamer.core.messages import SAMPLE_RATE
from streamer.core.labels import EMOJI
from streamer.core.messages import UtteranceResult, WindowResult


def _dims_text(d: dict | None) -> str:
    return "" if not d else f"a{d['arousal']:+.2f} v{d['valence']:+.2f}"


def skipped_note(r: WindowResult | UtteranceResult) -> str:
    """Why the text branch gave no opinion on the words, for people; "" when it read them.

    >>> class R: text_skipped = "low_confidence"
    >>> skipped_note(R())
    'text skipped: low confidence'
    """
    reason = r.text_skipped
    return f"text skipped: {reason.replace('_', ' ')}" if reason else ""


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
    if skipped_note(r):
        text = f" ({skipped_note(r)})"
    audio = max(r.audio, key=r.audio.get)
    rolling = ""
    if r.rolling_label:
        rolling = f"  rolling {r.rolling_emoji or EMOJI[r.rolling_label]} {r.rolling_label} {r.rolling_confidence:.0%}"
    dims = _dims_text(r.dims.get("fused") if r.dims else None)
    return (f"[{r.start / SAMPLE_RATE:7.2f}-{r.end / SAMPLE_RATE:7.2f}s] {_own_plain(r)}  audio {audio}{text}{rolling}"
            f"{'  ' + dims if dims else ''}  | {r.transcript}")


def utterance_line(u: UtteranceResult) -> str:
    """The plain form of a closed utterance: its span, own label (or "uncertain"), fused
    arousal/valence, window count and whole transcript."""
    dims = _dims_text((u.dims or {}).get("fused"))
    n = len(u.windows)
    return (f"utterance {u.index} [{u.start / SAMPLE_RATE:7.2f}-{u.end / SAMPLE_RATE:7.2f}s] {_own_plain(u)}"
            f"{'  ' + dims if dims else ''}  ({n} window{'s' if n != 1 else ''}"
            f"{'; ' + skipped_note(u) if skipped_note(u) else ''})  | {u.transcript}")


def plain_line(r: WindowResult | UtteranceResult) -> str:
    """:func:`utterance_line` or :func:`window_line`, for a sink that gets both kinds."""
    return utterance_line(r) if isinstance(r, UtteranceResult) else window_line(r)

"""The small pieces every layout of the dashboard draws (the full one in
:mod:`streamer.ui.dashboard`, the small-terminal one in :mod:`streamer.ui.compact`): colours,
clocks, bars, the rolling emotion of a result and the counters' lines."""

from __future__ import annotations

from streamer.core.labels import EMOJI
from streamer.core.messages import SAMPLE_RATE, WindowResult
from streamer.ui.state import Snapshot

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


def rolling_of(r: WindowResult) -> tuple[str, str, float]:
    """The rolling label, emoji and confidence of a result (a result made before these were
    kept apart carries the rolling emotion in ``label``)."""
    if r.rolling_label:
        return r.rolling_label, r.rolling_emoji or EMOJI[r.rolling_label], r.rolling_confidence
    return r.label, r.emoji, r.confidence


def counter_lines(s: Snapshot, width: int) -> list[str]:
    """The counters in the longest words that fit one line of ``width`` cells; else in short
    words, as many lines as they take. Every counter keeps its number.

    >>> snap = Snapshot("mic", {}, 0.0, 0.0, -90.0, False, "", (), {"windows": 12}, 140.0, 310.0)
    >>> counter_lines(snap, 100)
    ['windows 12   dropped audio 0.0 s   queue drops 0   overflows 0   latency p50/p95 140 / 310 ms']
    >>> counter_lines(snap, 40)
    ['windows 12  dropped 0.0 s  q-drops 0', 'overflows 0  p50/p95 140/310 ms']
    """
    c = s.counters
    none = s.latency_p50_ms is None
    dropped = c.get("audio_dropped_samples", 0) / SAMPLE_RATE
    queue = c.get("asr_queue_dropped", 0) + c.get("windows_dropped", 0)
    windows, overflows = f"windows {c.get('windows', 0)}", f"overflows {c.get('portaudio_input_overflow', 0)}"
    long = [windows, f"dropped audio {dropped:.1f} s", f"queue drops {queue}", overflows,
            "latency p50/p95 " + ("—" if none else f"{s.latency_p50_ms:.0f} / {s.latency_p95_ms:.0f} ms")]
    short = [windows, f"dropped {dropped:.1f} s", f"q-drops {queue}", overflows,
             "p50/p95 " + ("—" if none else f"{s.latency_p50_ms:.0f}/{s.latency_p95_ms:.0f} ms")]
    for parts, sep in ((long, "   "), (long, "  "), (short, "  ")):
        if len(line := sep.join(parts)) <= width:
            return [line]
    lines = [short[0]]
    for part in short[1:]:
        if len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += "  " + part
        else:
            lines.append(part)
    return lines

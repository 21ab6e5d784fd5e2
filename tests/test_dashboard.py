"""The dashboard, rendered for real with rich's recording console."""

from rich.console import Console

from streamer.labels import EMOJI, LABELS
from streamer.live.messages import WindowResult, Word
from streamer.live.state import Snapshot
from streamer.ui.dashboard import Dashboard, render, window_line


def dist(top, p=0.7):
    d = {k: (1 - p) / 6 for k in LABELS}
    d[top] = p
    return d


def result(i, label, text=True):
    words = (Word("i", i * 40000, i * 40000 + 3000, 0.9), Word("am", i * 40000 + 3000, i * 40000 + 6000, 0.9),
             Word(label, i * 40000 + 6000, i * 40000 + 12000, 0.8))
    return WindowResult(i, i * 40000, (i + 1) * 40000, words if text else (), dist(label), dist(label, 0.9) if text else None,
                        dist(label), dist(label, 0.6), label, EMOJI[label], 0.6, 123.0)


def snapshot(results):
    return Snapshot("file: call.wav", {"asr": "whisper (embedded:tiny.en)", "audio": "audio-emotion", "text": "text-emotion"},
                    65.0, 62.5, -23.4, True, "and then we", tuple(results),
                    {"windows": len(results), "audio_dropped_samples": 16000, "asr_queue_dropped": 2}, 140.0, 310.0)


def draw(snap, width=130, height=40):
    console = Console(record=True, width=width, height=height, force_terminal=True, color_system="truecolor")
    console.print(render(snap))
    return console.export_text()


def test_dashboard_panels_emoji_and_bars():
    results = [result(0, "angry"), result(1, "sad", text=False), result(2, "happy")]
    out = draw(snapshot(results))
    for panel in ("session", "rolling emotion", "probabilities", "what was said", "recent windows", "counters"):
        assert panel in out, panel
    assert "HAPPY" in out and "60%" in out  # the rolling emotion, large, with its confidence
    assert all(EMOJI[k] in out for k in ("angry", "sad", "happy"))  # the timeline
    assert "█" in out and "i am happy" in out and "and then we" in out  # bars, transcripts, partial text
    assert "dropped audio 1.0 s" in out and "latency p50/p95 140 / 310 ms" in out
    assert "whisper (embedded:tiny.en)" in out and "0:01:05" in out


def test_dashboard_before_any_speech_and_as_renderable():
    out = draw(snapshot([]))
    assert "waiting for speech" in out
    console = Console(record=True, width=100, height=30)
    console.print(Dashboard(lambda: snapshot([result(0, "fear")])))
    assert EMOJI["fear"] in console.export_text()


def test_plain_line():
    line = window_line(result(3, "surprise"))
    assert "surprise" in line and EMOJI["surprise"] in line and "i am surprise" in line and "7.50-" in line

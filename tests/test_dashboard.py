"""The dashboard, rendered for real with rich's recording console."""

from rich.console import Console

from streamer.core.labels import EMOJI, LABELS
from streamer.core.messages import WindowResult, Word
from streamer.ui.state import Snapshot
from streamer.ui.dashboard import Dashboard, render
from streamer.ui.lines import window_line


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


# --- issue 16: each window's own emotion, the rolling one named, uncertain, arousal/valence, utterances

from streamer.core.dims import all_dims  # noqa: E402
from streamer.core.messages import UtteranceResult  # noqa: E402
from streamer.ui.lines import utterance_line  # noqa: E402


def own_result(i, own, rolling, said, uncertain=False, text=True):
    """A window whose own fused label (``own``) differs from the rolling one."""
    words = tuple(Word(w, i * 40000 + j * 4000, i * 40000 + j * 4000 + 3000, 0.9) for j, w in enumerate(said.split()))
    audio, txt, fused = dist(own), dist(own, 0.9) if text else None, dist(own, 0.3 if uncertain else 0.65)
    return WindowResult(i, i * 40000, (i + 1) * 40000, words if text else (), audio, txt, fused, dist(rolling, 0.55),
                        own, EMOJI[own], fused[own], 120.0, rolling_label=rolling, rolling_emoji=EMOJI[rolling],
                        rolling_confidence=0.55, uncertain=uncertain, dims=all_dims(audio, txt, fused), utterance=i)


def own_snapshot(results, utterances=(), partial="and then we"):
    return Snapshot("mic", {"asr": "whisper"}, 30.0, 29.0, -20.0, True, partial, tuple(results), {"windows": len(results)},
                    120.0, 200.0, "running", tuple(utterances), 5.0)


def line_with(out, words):
    """The transcript panel's cell of the row that shows ``words``."""
    cells = [c for row in out.splitlines() for c in row.split("│") if words in c]
    assert len(cells) == 1, (words, cells)
    return cells[0]


WINDOWS = [own_result(0, "angry", "happy", "this is absolutely unacceptable"),
           own_result(1, "sad", "angry", "i lost it", uncertain=True),
           own_result(2, "surprise", "happy", "oh really")]


def test_lines_carry_their_own_emotion_and_the_big_panel_is_rolling():
    for width, height in ((100, 30), (140, 45)):
        out = draw(own_snapshot(WINDOWS), width, height)
        assert "rolling emotion (5 s half-life)" in out and "HAPPY" in out and "55%" in out and "rolling" in out
        angry = line_with(out, "this is absolutely")
        assert EMOJI["angry"] in angry and EMOJI["happy"] not in angry  # own, not the rolling 😄
        surprise = line_with(out, "oh really")
        assert EMOJI["surprise"] in surprise and EMOJI["happy"] not in surprise
        uncertain = line_with(out, "i lost it")
        assert "?" in uncertain and EMOJI["sad"] not in uncertain and EMOJI["angry"] not in uncertain
        strip = next(row for row in out.splitlines() if row.count("?") == 1 and EMOJI["surprise"] in row and "│ " + EMOJI["angry"] in row)
        assert strip.index(EMOJI["angry"]) < strip.index("?") < strip.index(EMOJI["surprise"])  # own emoji, in order
        assert "this window: " + EMOJI["surprise"] + " surprise 65%" in out
        assert "and then we" in out  # the partial text is never pushed out


def test_uncertain_last_window_and_its_arousal_valence():
    last = WINDOWS[1]
    out = draw(own_snapshot(WINDOWS[:2]), 100, 30)
    assert "probabilities (last window: ? uncertain (sad 30%))" in out
    assert "this window: ? uncertain" in out
    rows = {axis: next(row for row in out.splitlines() if axis in row) for axis in ("arousal", "valence")}
    for axis, row in rows.items():
        for branch in ("audio", "text", "fused"):
            assert f"{last.dims[branch][axis]:+.2f}" in row, (axis, branch, row)
    assert all("█" in row for row in rows.values())  # signed bars beside the values


def test_closed_utterances_replace_their_windows():
    u = UtteranceResult(0, 0, 80000, (0, 1), WINDOWS[0].words + WINDOWS[1].words, dist("angry"), dist("angry"),
                        dist("angry", 0.8), "angry", EMOJI["angry"], 0.8, False,
                        all_dims(dist("angry"), dist("angry"), dist("angry", 0.8)))
    for width, height in ((100, 30), (140, 45)):
        out = draw(own_snapshot(WINDOWS, [u]), width, height)
        whole = line_with(out, "this is absolutely")
        assert EMOJI["angry"] in whole and "i lost" in out and "80%" in out  # one line (wrapped when narrow)
        assert "?" not in out.split("what was said")[1].split("recent windows")[0]  # no line of window 1
        assert EMOJI["surprise"] in line_with(out, "oh really")  # the open utterance's window


def test_newest_lines_stay_visible_when_the_transcript_overflows():
    many = [own_result(i, LABELS[i % 7], "neutral", f"window number {i} says quite a lot of words here") for i in range(12)]
    out = draw(own_snapshot(many), 100, 30)
    assert "number 11 says" in out and "and then we" in out and "number 0 says" not in out


def test_plain_lines_own_label_uncertain_rolling_and_dims():
    line = window_line(WINDOWS[0])
    assert line.split("]")[1].strip().startswith(EMOJI["angry"] + " angry")
    assert "rolling " + EMOJI["happy"] + " happy 55%" in line and f"a{WINDOWS[0].dims['fused']['arousal']:+.2f}" in line
    unsure = window_line(WINDOWS[1])
    assert "uncertain" in unsure and EMOJI["sad"] not in unsure and "i lost it" in unsure
    u = UtteranceResult(4, 16000, 56000, (1, 2), WINDOWS[2].words, dist("fear"), None, dist("fear", 0.25), "fear",
                        EMOJI["fear"], 0.25, True, all_dims(dist("fear"), None, dist("fear", 0.25)))
    ul = utterance_line(u)
    assert ul.startswith("utterance 4 [   1.00-   3.50s]") and "uncertain" in ul and "oh really" in ul and "2 windows" in ul


def test_plain_line_picks_the_form():
    from streamer.ui.lines import plain_line

    u = UtteranceResult(0, 0, 40000, (0,), WINDOWS[0].words, dist("angry"), None, dist("angry"), "angry", EMOJI["angry"],
                        0.7, False, {})
    assert plain_line(u).startswith("utterance 0") and plain_line(WINDOWS[0]) == window_line(WINDOWS[0])
    assert window_line(u) == plain_line(u)  # a sink that prints window_line gets utterances too

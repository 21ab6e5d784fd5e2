"""The dashboard's layout at fixed terminal sizes (issue 17, "80x24 terminals"): every panel keeps
its essentials at 80x24 (all seven label rows, the fused column, whole percentages, every
counter with its number), and larger screens show more utterances and more windows."""

import io
import re

import pytest
from rich.cells import cell_len
from rich.console import Console

from streamer.core.messages import SAMPLE_RATE
from streamer.core.dims import all_dims
from streamer.core.labels import EMOJI, LABELS
from streamer.core.messages import UtteranceResult, WindowResult, Word
from streamer.ui.state import LiveState, Snapshot
from streamer.ui.dashboard import ROWS, Dashboard, render
from streamer.ui.fit import Fit, fit

SIZES = ((80, 24), (100, 30), (200, 50))
SHARES = (0.31, 0.22, 0.15, 0.12, 0.09, 0.07, 0.04)  # all different, so each printed percentage is checkable
STEP = SAMPLE_RATE * 5 // 2  # a window every 2.5 s


def probs(shift: int) -> dict[str, float]:
    return {k: SHARES[(i + shift) % 7] for i, k in enumerate(LABELS)}


def words(i: int, said: str) -> tuple[Word, ...]:
    return tuple(Word(w, i * STEP + j * 4000, i * STEP + j * 4000 + 3000, 0.9) for j, w in enumerate(said.split()))


def window(i: int) -> WindowResult:
    audio, text, fused = probs(i), probs(i + 2), probs(i + 4)
    own = max(fused, key=fused.get)
    return WindowResult(i, i * STEP, i * STEP + 2 * SAMPLE_RATE, words(i, f"window-{i} here"), audio, text, fused,
                        probs(i + 1), own, EMOJI[own], fused[own], 120.0 + i, rolling_label="happy",
                        rolling_emoji=EMOJI["happy"], rolling_confidence=0.55, uncertain=i % 5 == 3,
                        dims=all_dims(audio, text, fused), utterance=i)


def utterance(i: int) -> UtteranceResult:
    audio, text, fused = probs(i), probs(i + 3), probs(i + 5)
    own = max(fused, key=fused.get)
    return UtteranceResult(i, i * STEP, i * STEP + 2 * SAMPLE_RATE, (i,), words(i, f"said-{i} ok"), audio, text, fused,
                           own, EMOJI[own], fused[own], i % 5 == 3, all_dims(audio, text, fused))


N = 80
WINDOWS = [window(i) for i in range(N)]
UTTERANCES = [utterance(i) for i in range(N - 2)]  # windows N-2 and N-1 belong to the utterance still open
COUNTERS = {"windows": N, "audio_dropped_samples": SAMPLE_RATE, "asr_queue_dropped": 2, "portaudio_input_overflow": 3}


def snap(results=WINDOWS, utterances=UTTERANCES) -> Snapshot:
    return Snapshot("file: demo/demo.flac", {"asr": "whisper (embedded:tiny.en)", "audio": "audio-emotion", "text": "text-emotion"},
                    65.0, 62.5, -23.4, True, "and then we", tuple(results), dict(COUNTERS), 140.0, 310.0, "running",
                    tuple(utterances), 5.0)


def draw(renderable, width: int, height: int) -> str:
    console = Console(width=width, height=height, record=True, file=io.StringIO(), force_terminal=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def between(out: str, first: str, then: str) -> str:
    return out.split(first, 1)[1].split(then, 1)[0]


def said_shown(out: str) -> list[int]:
    return [int(n) for n in re.findall(r"said-(\d+)", between(out, "what was said", "recent windows"))]


def strip_marks(out: str) -> list[str]:
    """The marks on the row below the "recent windows" title."""
    rows = out.splitlines()
    row = rows[next(i for i, r in enumerate(rows) if "recent windows" in r) + 1]
    return re.findall("|".join(map(re.escape, [*EMOJI.values(), "?"])), row)


@pytest.mark.parametrize("width,height", SIZES)
def test_every_panel_keeps_its_essentials(width, height):
    out = draw(render(snap()), width, height)
    rows = out.splitlines()
    assert len(rows) == height
    assert max(cell_len(r) for r in rows) <= width
    for title in ("session", "rolling emotion", "probabilities", "what was said", "recent windows", "counters"):
        assert title in out, title
    assert "HAPPY" in out and "55%" in out and "this window:" in out  # the rolling emotion and the window's own
    assert "0:01:05" in out and "0:01:02" in out and "running" in out
    assert sum(bool(re.search(r"\baudio +text +fused\b", r)) for r in rows) == 1  # the column headers, fused included
    last = WINDOWS[-1]
    for k in LABELS:  # all seven rows, each with three whole percentages: audio, text, fused
        row = [r for r in rows if re.search(rf"(^|│) *{EMOJI[k]} {k} ", r)]  # a row that starts a cell with the label
        assert len(row) == 1, (k, row)
        cells = row[0].split(f"{EMOJI[k]} {k} ", 1)[1].split("│")[0]
        assert re.findall(r"\d+%", cells) == [f"{p[k]:.0%}" for p in (last.audio, last.text, last.fused)], (k, cells)
        assert cells.rstrip().endswith("%"), cells
    for axis in ("arousal", "valence"):  # numbers, so they stay too
        row = next(r for r in rows if axis in r)
        for branch in ("audio", "text", "fused"):
            assert f"{last.dims[branch][axis]:+.2f}" in row, (axis, branch, row)
    counters = out.rsplit("counters", 1)[1]
    for pattern in (rf"windows {N}\b", r"dropped( audio)? 1\.0 s", r"drops 2\b", r"overflows 3\b", r"p50/p95 140 ?/ ?310 ms"):
        assert re.search(pattern, counters), (pattern, counters)


@pytest.mark.parametrize("width,height", SIZES)
def test_the_newest_utterances_and_windows_that_fit_are_shown(width, height):
    out = draw(render(snap()), width, height)
    shown = said_shown(out)
    assert shown == list(range(shown[0], N - 2)), shown  # the newest closed utterances, in order, none skipped
    assert "window-78" in out and "window-79" in out and "and then we" in out  # the open utterance's windows, the partial
    marks = strip_marks(out)
    assert len(marks) >= (width - 4) // 3, (len(marks), width)  # the strip is full
    assert marks == [("?" if r.uncertain else r.emoji) for r in WINDOWS[-len(marks):]]  # the newest, oldest first


def test_larger_screens_show_more():
    state = LiveState("file: demo/demo.flac", {}, history=ROWS, utterances=ROWS, half_life_s=5.0)  # as ser-live keeps it
    for r in WINDOWS:
        state.add_result(r)
    for u in UTTERANCES:
        state.add_utterance(u)
    small, large = (draw(render(state.snapshot(COUNTERS)), w, h) for w, h in ((80, 24), (200, 50)))
    assert len(said_shown(large)) >= 2 * len(said_shown(small)) and len(said_shown(large)) >= 30
    assert len(strip_marks(large)) >= 2 * len(strip_marks(small)) and len(strip_marks(large)) >= 60


def test_fewer_results_than_fit_are_all_shown():
    out = draw(render(snap(WINDOWS[:5], UTTERANCES[:3])), 200, 50)
    assert said_shown(out) == [0, 1, 2] and "window-3" in out and "window-4" in out
    assert strip_marks(out) == [("?" if r.uncertain else r.emoji) for r in WINDOWS[:5]]


def test_before_any_speech_at_80x24():
    out = draw(render(snap((), ())), 80, 24)
    assert len(out.splitlines()) == 24 and "waiting for speech" in out
    assert all(f"{EMOJI[k]} {k}" in out for k in LABELS) and "fused" in out and "windows 80" in out


def test_the_live_dashboard_takes_the_terminal_size():
    for width, height in ((80, 24), (200, 50)):
        out = draw(Dashboard(snap), width, height)
        assert len(out.splitlines()) == height and all(f"{EMOJI[k]} {k}" in out for k in LABELS)
        assert re.search(r"\baudio +text +fused\b", out)


def test_decoration_goes_first():
    assert fit(200, 50) == fit(100, 30) == Fit()  # everything, borders included, where it fits
    assert fit(80, 24) == Fit(boxed=False)  # at 80x24 the borders go, the numbers stay
    assert fit(80, 20) == Fit(boxed=False, models=False, gap=False, sub=False)  # then the other decoration
    rows = draw(render(snap()), 80, 20).splitlines()
    assert len(rows) == 20
    for k in LABELS:
        (row,) = [r for r in rows if r.startswith(f"{EMOJI[k]} {k} ")]
        assert len(re.findall(r"\d+%", row.split("│")[0])) == 3, row
    out = "\n".join(rows)
    assert "arousal" in out and "valence" in out and "this window:" in out and "p50/p95 140/310 ms" in out


def test_any_size_fills_the_screen_and_no_more():
    for s in (snap(), snap((), ())):
        for width in (30, 61, 79, 81, 133):
            for height in (6, 13, 19, 23, 27, 41):
                rows = draw(render(s), width, height).splitlines()
                assert len(rows) == height and max(map(cell_len, rows)) <= width, (width, height)


GRID = [(w, h) for w in (40, 45, 50, 55, 59, 60, 66, 72, 79) for h in (12, 14, 15, 16, 18, 20, 23)]


@pytest.mark.parametrize("width,height", GRID)
def test_no_size_from_40x12_up_overlaps(width, height):
    """Every size from 40x12 up draws within the terminal, one row per line, with every label's
    fused percentage readable (below 60x16 as one column of lines: the panels would overlap)."""
    out = draw(render(snap()), width, height)
    rows = out.splitlines()
    assert len(rows) == height and max(cell_len(r) for r in rows) <= width, out
    last = WINDOWS[-1]
    for k in LABELS:
        row = [r for r in rows if re.search(rf"(^|│) *{EMOJI[k]} {k} ", r)]  # a row that starts with the label
        assert len(row) == 1, (k, out)
        assert f"{last.fused[k]:.0%}" in row[0].split("│")[0 if row[0].startswith(EMOJI[k]) else 1], (k, row)
    assert "HAPPY" in out and "55%" in out  # the rolling emotion
    if (width, height) < (60, 16) or width < 60 or height < 16:
        assert "┃" not in out and "│" not in out  # no columns side by side to collide


def test_below_40x12_one_line_says_how_large_the_terminal_must_be():
    out = draw(render(snap()), 39, 12)
    assert out.splitlines()[0].strip() == "terminal 39x12: needs 40x12" and len(out.splitlines()) == 12
    assert draw(render(snap()), 80, 11).strip() == "terminal 80x11: needs 40x12"


def panel_titles(text: str) -> list[str]:
    """The panel titles drawn in ``text`` (``╭─ title ─`` or centred ``── title ──``), their
    window-dependent parts (after a colon) left out."""
    titles = re.findall(r"[╭─]─+ ([^─│╮╭]+?) ─", text)
    return [re.sub(r":.*", "", t).strip() for t in titles]


def test_the_readme_sample_has_the_code_s_panel_titles():
    """README's dashboard sample (scripts/capture_dashboard.sh) shows the panels the code draws:
    regenerate it when this fails."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    sample = readme.split("scripts/capture_dashboard.sh 26", 1)[1].split("```", 2)[1]
    drawn = draw(render(snap()), 120, 38)
    assert panel_titles(sample) == panel_titles(drawn), (panel_titles(sample), panel_titles(drawn))
    assert len(sample.strip().splitlines()) == 38 and max(cell_len(r) for r in sample.strip().splitlines()) <= 120

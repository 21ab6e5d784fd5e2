"""The report figure's time axis (each window over its own start-end, gaps empty), its
legends and the page's panel captions, the --clip title, and ser-report --help. Fast: no
models; logs come from the real record writers (see test_report_inputs)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from streamer.cli.report import parser
from streamer.core.labels import LABELS
from streamer.live.session_log import read_log
from streamer.report import PANELS, clip_title, draw, html_report, load_session_log, window_steps
from tests.test_report_inputs import write_session

# windows 0-2.5, 2.5-4.2 (one utterance), a gap, then 6.0-8.5 and a wordless 8.5-9.3 (another)
SPEECH = [("sad", [(0.0, 2.5, "i am so tired"), (2.5, 4.2, "of all this")]),
          ("happy", [(6.0, 8.5, "good news"), (8.5, 9.3, "")])]


def covered(x: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
    """The x ranges where y is drawn (not NaN)."""
    out, start = [], None
    for i in range(len(x)):
        ok = not np.isnan(y[i]).any()
        if ok and start is None:
            start = x[i]
        if start is not None and (not ok or i == len(x) - 1):
            out.append((float(start), float(x[i - 1] if not ok else x[i])))
            start = None
    return out


def test_a_window_covers_exactly_its_span_and_a_gap_stays_empty():
    x, y = window_steps([(0.0, 4.2)], np.array([[0.3, 0.7]]))
    assert x.tolist() == [0.0, 4.2] and y.tolist() == [[0.3, 0.7], [0.3, 0.7]]
    spans = [(0.0, 2.5), (2.5, 4.2), (6.0, 8.5)]
    x, y = window_steps(spans, np.array([[1.0], [2.0], [3.0]]))
    assert covered(x, y) == [(0.0, 4.2), (6.0, 8.5)]
    (brk,) = np.flatnonzero(np.isnan(y[:, 0]))  # one break, between 4.2 s and 6.0 s
    assert x[brk - 1] == 4.2 and x[brk + 1] == 6.0
    assert x[(x > 2.4) & (x < 2.6)].tolist() == [2.5, 2.5] and y[1:3, 0].tolist() == [1.0, 2.0]  # a step at 2.5 s
    x, y = window_steps([], np.zeros((0, 7)))
    assert x.shape == (0,) and y.shape == (0, 7)


def paths_x(collection) -> list[tuple[float, float]]:
    return sorted((round(float(p.vertices[:, 0].min()), 3), round(float(p.vertices[:, 0].max()), 3))
                  for p in collection.get_paths() if len(p.vertices))


@pytest.fixture
def log(tmp_path):
    return write_session(tmp_path / "s.ndjson", SPEECH)


def test_the_figure_draws_each_window_over_its_span(log):
    fig = draw(read_log(log))
    ax_p, ax_own, ax_roll, ax_dims, ax_agree = fig.axes[:5]
    fills = [c for c in ax_p.collections if c.get_paths()]
    assert len(fills) == len(LABELS)
    for c in fills:  # every emotion's band: 0-4.2 s and 6.0-9.3 s, nothing over the gap
        assert paths_x(c) == [(0.0, 4.2), (6.0, 9.3)], paths_x(c)
    # stacked to 1: the last band (surprise, 0.05 here) lies between 0.95 and 1 over each window
    top = fills[-1].get_paths()[0].vertices
    assert sorted(set(np.round(top[:, 1], 6))) == [0.95, 1.0]
    assert ax_p.get_xlim() == (0.0, 12.0)  # from 0 to the end of the input (session_end stream_s)
    # arousal/valence steps break at the gap too
    for line in ax_dims.get_lines()[:2]:
        x, y = line.get_data()
        assert covered(np.asarray(x, float), np.asarray(y, float)) == [(0.0, 4.2), (6.0, 9.3)]
    # agreement bars start at each window's start and are as wide as it; × at the wordless one
    bars = sorted((round(r.get_x(), 3), round(r.get_width(), 3)) for r in ax_agree.patches if r.get_height() > 0)
    assert bars == [(0.0, 2.5), (2.5, 1.7), (6.0, 2.5)]
    (marks,) = [ln for ln in ax_agree.get_lines() if ln.get_marker() == "x"]
    assert list(marks.get_xdata()) == [pytest.approx(8.9)]


def test_every_mark_has_a_legend_and_every_panel_a_caption(log):
    fig = draw(read_log(log))
    ax_p, ax_own, ax_roll, ax_dims, ax_agree = fig.axes[:5]
    agree = [t.get_text() for t in ax_agree.get_legend().get_texts()]
    assert any("agreement" in t for t in agree) and any("no words" in t for t in agree)
    assert ax_agree.get_ylabel() == "audio~text"
    dims = [t.get_text() for t in ax_dims.get_legend().get_texts()]
    assert any("arousal" in t for t in dims) and any("valence" in t for t in dims) and any("utterance" in t for t in dims)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert set(LABELS) <= set(legend) and "uncertain" in legend
    contents, warnings = load_session_log(log)
    page = html_report(contents, "s.ndjson", b"", warnings)
    assert [name for name, _ in PANELS] == ["fused p", "utterance", "rolling", "arousal / valence", "audio~text"]
    for name, text in PANELS:
        assert f"<li><b>{name}</b>: " in page and len(text) > 40
    assert "× marks a window without words" in page and "overlap of their two" in page


@pytest.mark.parametrize("transcript, limit, title", [
    ("kids are talking by the door", 60, "“kids are talking by the door”"),
    ("kids are talking by the door", 24, "“kids are talking by the…”"),
    ("kids are talking by the door", 22, "“kids are talking by…”"),  # a word is not cut in two
    ("well, kids, are talking", 12, "“well, kids…”"),  # no comma before the ellipsis
    ("x" * 80, 20, "“" + "x" * 19 + "…”"),  # one long word: cut inside it
    ("  spaced   out  ", 60, "“spaced out”"),
    ("", 60, "(no words)"),
])
def test_clip_title_keeps_the_ellipsis_inside_the_quotes(transcript, limit, title):
    got = clip_title(transcript, limit)
    assert got == title
    assert len(got) <= limit + 2  # the quotes
    assert "”…" not in got and not got.startswith("“”")


def test_help_says_what_each_option_does_and_its_default(capsys):
    ap = parser()
    for action in ap._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and len(action.help) > 20, action.dest
        assert "default" in action.help or action.dest == "logs", action.dest
    with pytest.raises(SystemExit):
        ap.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "seed notebook" not in text
    for word in ("session log", "ser-live --log", "ser-analyze", "waveform", "log-mel spectrogram", "arousal",
                 "index.html", "(default: no page)", "(default: the shipped config.toml)"):
        assert word in " ".join(text.split()), word


@pytest.fixture
def recording(tmp_path):
    """x.wav beside the log (the file its session_start names): 12 s, speech-like bursts where
    the windows are, silence in the gap."""
    import soundfile as sf

    t = np.arange(12 * 16000) / 16000
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (((t < 4.2) | ((t > 6.0) & (t < 9.3))))
    sf.write(tmp_path / "x.wav", x.astype(np.float32), 16000)
    return tmp_path / "x.wav"


def test_the_recording_is_drawn_above_the_lanes_on_the_same_time_axis(log, recording):
    from streamer.report.audio import lane_audio

    fig = draw(read_log(log), audio=lane_audio(recording, ["session"], None))
    ax_wave, ax_mel, ax_p = fig.axes[:3]
    assert len(fig.axes) == 7 and ax_wave.get_ylabel() == "waveform" and ax_mel.get_ylabel() == "log-mel"
    (image,) = ax_mel.get_images()
    assert image.get_extent() == [0, 12.0, 0, 64]
    assert ax_wave.get_xlim() == ax_p.get_xlim() == (0.0, 12.0)  # one time axis for sound and emotion
    peak = np.asarray(image.get_array()).max(axis=0)  # each frame's loudest band, dB
    n = len(peak)
    loud, quiet = peak[: n * 4 // 12].mean(), peak[n * 46 // 120: n * 56 // 120].mean()
    assert loud > quiet + 40  # the bursts far above the silent gap
    fills = [c for c in ax_p.collections if c.get_paths()]
    assert len(fills) == len(LABELS)  # the emotion rows as before, below the pictures


def test_report_draws_the_pictures_when_the_log_names_its_recording(log, recording, tmp_path):
    from streamer.report import report

    page = tmp_path / "with.html"
    report(log, page, None)
    assert "<li><b>waveform</b>: " in page.read_text() and "<li><b>log-mel</b>: " in page.read_text()
    report(log, tmp_path / "without.html", None, pictures=False)
    assert "<b>waveform</b>" not in (tmp_path / "without.html").read_text()
    recording.unlink()  # the recording gone: the report as before, no pictures
    report(log, tmp_path / "gone.html", None)
    assert "<b>waveform</b>" not in (tmp_path / "gone.html").read_text()

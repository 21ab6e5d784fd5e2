"""ser-analyze's summary and ser-report on constructed logs: one with utterance records,
window ``rolling_*`` and ``dims`` (issue 16), one written before them (window label = rolling
label, no dims, no utterances), one torn, one split by channel. Fast: no models."""

import csv
import json

import pytest

from streamer.core.messages import SAMPLE_RATE
from streamer.batch import SUMMARY_FIELDS, summary_rows, write_summary
from streamer.core.dims import all_dims
from streamer.core.labels import EMOJI, LABELS
from streamer.core.messages import UtteranceResult, WindowResult, Word
from streamer.live.session_log import read_log
from streamer.report import draw, html_report, report
from streamer.core.summary import summarise_records

W = int(2.5 * SAMPLE_RATE)  # 2.5 s windows


def one_hot(k):
    return {x: float(x == k) for x in LABELS}


def window(i, own, rolling, channel=None, words="some words"):
    ws = tuple(Word(w, i * W + j * 8000, i * W + j * 8000 + 6000, 0.9) for j, w in enumerate(words.split()))
    p = one_hot(own)
    return WindowResult(i, i * W, (i + 1) * W, ws, p, p, p, one_hot(rolling), own, EMOJI[own], 0.9, 100.0, channel,
                        rolling_label=rolling, rolling_emoji=EMOJI[rolling], rolling_confidence=0.5,
                        dims=all_dims(p, p, p), utterance=i).to_record()


def utterance(i, first, last, label, conf, uncertain, channel=None, words="whole utterance"):
    p = one_hot(label)
    ws = tuple(Word(w, first * W + j * 8000, first * W + j * 8000 + 6000, 0.9) for j, w in enumerate(words.split()))
    return UtteranceResult(i, first * W, (last + 1) * W, tuple(range(first, last + 1)), ws, p, p, p, label, EMOJI[label],
                           conf, uncertain, all_dims(p, p, p), channel).to_record()


def old_window(i, rolling, fused, channel=None):
    """A window record as logged before issue 16: label = rolling label, no dims, no uncertain."""
    rec = window(i, fused, rolling, channel)
    for k in ("rolling_label", "rolling_emoji", "rolling_confidence", "uncertain", "dims", "utterance"):
        rec.pop(k)
    rec.update(label=rolling, emoji=EMOJI[rolling], confidence=0.5)
    return rec


def write(path, records, end=True):
    start = {"type": "session_start", "file": "x.wav", "time": "2026-12-01T08:00:00+00:00", "duration_s": 16.0,
             "models": {"asr": "whisper (embedded:tiny.en)"}}
    if any(r.get("channel") for r in records):
        start["channels"] = ["agent", "customer"]
    lines = [start, *records] + ([{"type": "session_end", "windows": 6, "error": None}] if end else [])
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


# windows say sad (own) under a fearful rolling emotion; the utterances say angry, neutral (uncertain), happy
NEW = [*(window(i, "sad", "fear", words=f"word{i} more") for i in range(6)),
       utterance(0, 0, 1, "angry", 0.8, False, words="this is unacceptable"),
       utterance(1, 2, 4, "neutral", 0.3, True, words="well i do not know"),
       utterance(2, 5, 5, "happy", 0.7, False, words="thank you")]
OLD = [old_window(i, "fear" if i < 4 else "sad", "angry") for i in range(6)]


@pytest.fixture
def new_log(tmp_path):
    return write(tmp_path / "new.ndjson", NEW)


@pytest.fixture
def old_log(tmp_path):
    return write(tmp_path / "old.ndjson", OLD)


def test_summary_uses_utterances(new_log, tmp_path):
    (row,) = summary_rows(tmp_path / "x.wav", new_log)
    assert row["utterances"] == 3 and row["windows"] == 6 and row["speech_s"] == 15.0
    assert row["dominant_emotion"] == "neutral"  # 7.5 s of 15, though every window's own label is sad
    assert (row["share_angry"], row["share_neutral"], row["share_happy"], row["share_sad"]) == (0.3333, 0.5, 0.1667, 0.0)
    assert row["uncertain_share"] == 0.5
    assert row["mean_confidence"] == pytest.approx((5 * 0.8 + 7.5 * 0.3 + 2.5 * 0.7) / 15, abs=1e-4)
    assert row["mean_arousal"] == pytest.approx((5 * 0.8 - 7.5 * 0.3 + 2.5 * 0.6) / 15, abs=1e-4)  # circumplex points
    assert row["mean_valence"] == pytest.approx((-5 * 0.6 + 2.5 * 0.8) / 15, abs=1e-4)
    out = tmp_path / "summary.csv"
    write_summary([row], out)
    (back,) = list(csv.DictReader(open(out)))
    assert list(back) == SUMMARY_FIELDS and back["utterances"] == "3" and back["uncertain_share"] == "0.5"


def test_summary_of_an_old_log_falls_back_to_windows(old_log, tmp_path):
    (row,) = summary_rows(tmp_path / "x.wav", old_log)
    assert row["utterances"] == 0 and row["windows"] == 6 and row["dominant_emotion"] == "fear"
    assert (row["share_fear"], row["share_sad"]) == (0.6667, 0.3333) and row["mean_confidence"] == 0.5
    assert row["uncertain_share"] == ""  # the log cannot tell
    assert row["mean_arousal"] == 0.8 and row["mean_valence"] == -0.6  # mapped from the fused probabilities (angry)


def test_summary_per_channel_and_empty_channel(tmp_path):
    recs = [window(0, "sad", "sad", "agent"), window(1, "happy", "happy", "customer"),
            utterance(0, 0, 0, "sad", 0.9, False, "agent"), utterance(1, 1, 1, "happy", 0.9, False, "customer")]
    rows = {r["channel"]: r for r in summary_rows(tmp_path / "x.wav", write(tmp_path / "s.ndjson", recs))}
    assert rows["agent"]["dominant_emotion"] == "sad" and rows["customer"]["dominant_emotion"] == "happy"
    assert rows["agent"]["utterances"] == rows["customer"]["utterances"] == 1
    empty = summary_rows(tmp_path / "x.wav", write(tmp_path / "e.ndjson", []))[0]
    assert empty["dominant_emotion"] == "" and empty["mean_confidence"] == "" and empty["mean_arousal"] == ""


def test_report_of_a_log_with_utterances(new_log, tmp_path):
    html, png = tmp_path / "r.html", tmp_path / "r.png"
    assert report(new_log, html, png).warnings == ()
    page = html.read_text()
    assert "One row per utterance" in page and "Most intense utterances" in page
    body = page.split("<h2>Transcript</h2>")[1]
    assert body.count("<tr><td>") == 3  # one row per utterance, not per window
    assert "? uncertain (neutral 30%)" in body and f"{EMOJI['angry']} angry 80%" in body and "+0.80" in body
    assert "this is unacceptable" in body and "word0" not in body
    assert "each utterance's own emotion" in page and "<td>50%</td>" in page  # the uncertain share
    fig = draw(read_log(new_log))
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert {"utterance", "rolling", "arousal\nvalence"} <= set(labels)
    import matplotlib.image as mpimg

    assert mpimg.imread(png).shape[1] == 1400


def test_report_of_an_old_and_a_torn_log(old_log, new_log, tmp_path):
    page = html_report(read_log(old_log), "old.ndjson", b"", [])
    assert "One row per window" in page and "a window's label is its rolling emotion" in page
    assert "Most intense windows" in page and "<td>—</td>" in page  # no own label in an old window
    assert "+0.80" in page  # arousal mapped from the fused probabilities
    text = new_log.read_text()
    torn = tmp_path / "torn.ndjson"
    torn.write_text(text[: text.rindex('{"type": "utterance"') + 40])  # the last utterance torn, no end
    html = tmp_path / "t.html"
    warnings = report(torn, html, None).warnings
    assert warnings == (f"torn.ndjson: skipped 1 unreadable line (line {len(torn.read_text().splitlines())})",)
    page = html.read_text()
    assert "no session_end" in page and page.split("<h2>Transcript</h2>")[1].count("<tr><td>") == 2


def test_summarise_records_kinds():
    assert summarise_records([], []).kind == ""
    assert summarise_records(OLD, []).kind == "window"
    assert summarise_records(OLD, NEW[6:]).kind == "utterance"

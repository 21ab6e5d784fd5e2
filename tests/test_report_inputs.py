"""ser-report's inputs: what is not a session log is refused in one line and nothing is
written; bad lines among good ones are skipped and counted; a failed file's stored error is
shown on its page, in its figure and in the index; several logs get an index page.

Logs are written by the real writers (``SessionLog``, ``WindowResult.to_record``,
``UtteranceResult.to_record``, and ``streamer.batch.analyse_file`` for an unreadable file).
Fast: no models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from streamer.core.messages import SAMPLE_RATE
from streamer.batch import BatchOptions, analyse_file
from streamer.core.paths import CHECKOUT as ROOT
from streamer.core.dims import all_dims
from streamer.core.errors import SerError
from streamer.core.labels import EMOJI, LABELS
from streamer.core.messages import UtteranceResult, WindowResult, Word
from streamer.live.session_log import SessionLog, read_log
from streamer.report import draw, load_session_log, log_errors, report

MODELS = {"asr": "whisper (embedded:tiny.en)", "audio": "audio-emotion (test)", "text": "text-emotion (test)"}


def probs(label: str, top: float = 0.7) -> dict:
    return {k: top if k == label else (1 - top) / (len(LABELS) - 1) for k in LABELS}


def samples(t: float) -> int:
    return round(t * SAMPLE_RATE)


def write_session(path: Path, utterances, error: str | None = None, end: bool = True, channel: str | None = None) -> Path:
    """A log as ser-live writes it: session_start, each utterance's windows then its record,
    session_end. ``utterances``: (label, [(start_s, end_s, words), ...]) each."""
    k = 0
    with SessionLog(path) as log:
        log.write({"type": "session_start", "time": "2026-12-01T08:00:00+00:00", "source": "file x.wav", "file": "x.wav",
                   "fast": True, "models": MODELS})
        for u, (label, wins) in enumerate(utterances):
            p = probs(label)
            first, all_words = k, []
            for start, stop, said in wins:
                words = tuple(Word(w, samples(start) + j * 4000, samples(start) + j * 4000 + 3000, 0.9)
                              for j, w in enumerate(said.split()))
                all_words += words
                text = p if words else None
                log.write(WindowResult(k, samples(start), samples(stop), words, p, text, p, p, label, EMOJI[label],
                                       p[label], 120.0, channel, rolling_label=label, rolling_emoji=EMOJI[label],
                                       rolling_confidence=0.6, dims=all_dims(p, text, p), utterance=u).to_record())
                k += 1
            log.write(UtteranceResult(u, samples(wins[0][0]), samples(wins[-1][1]), tuple(range(first, k)), tuple(all_words),
                                      p, p if all_words else None, p, label, EMOJI[label], p[label], False,
                                      all_dims(p, p, p), channel).to_record())
        if end:
            log.write({"type": "session_end", "time": "2026-12-01T08:01:00+00:00", "interrupted": False, "windows": k,
                       "utterances": len(utterances), "words": 0, "stream_s": 12.0, "counters": {},
                       "latency_ms": {"p50": 120.0, "p95": 120.0, "max": 120.0}, "error": error})
    return path


SPEECH = [("sad", [(0.0, 2.5, "i am so tired"), (2.5, 4.2, "of all this")]), ("happy", [(6.0, 8.5, "good news")])]


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer.cli.report", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def not_logs(d: Path) -> dict[str, tuple[Path, str]]:
    """Files that are not session logs, and a phrase the refusal must hold."""
    (d / "notes.txt").write_text("hello, these are my notes\nsecond line\n")
    (d / "empty.ndjson").write_text("")
    (d / "other.jsonl").write_text('{"name": "x", "value": 1}\n{"type": "metric", "loss": 0.3}\n[1, 2]\n')
    (d / "hollow.ndjson").write_text('{"type": "window", "start_s": 0.0, "end_s": 2.5}\n')  # no probabilities, no label
    (d / "notaudio.wav").write_text("these are notes saved under an audio name\n")
    return {"named": (d / "notaudio.wav", "is named like audio but holds neither audio nor a session log"),
            "text": (d / "notes.txt", "not a session log (2 lines: 2 not JSON objects"),
            "flac": (ROOT / "demo" / "demo.flac", "is audio, not a session log: make its log with `ser-analyze"),
            "empty": (d / "empty.ndjson", "is empty, not a session log"),
            "json": (d / "other.jsonl", "3 lines: 1 not a JSON object, 2 JSON records of another kind"),
            "hollow": (d / "hollow.ndjson", "1 JSON record of another kind")}


@pytest.mark.parametrize("kind", ["text", "flac", "named", "empty", "json", "hollow"])
def test_not_a_session_log_fails_in_one_line_and_writes_nothing(kind, tmp_path):
    path, phrase = not_logs(tmp_path)[kind]
    out = tmp_path / "out"
    res = cli(path, "--html", out / "r.html", "--png", out / "r.png")
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and phrase in lines[0], res.stderr
    assert "ser-live --log" in lines[0] or "ser-live --file" in lines[0], lines[0]  # how to make one
    assert "ser-analyze" in lines[0]
    assert not out.exists() and res.stdout == ""


def test_bad_lines_among_good_ones_are_skipped_and_counted(tmp_path):
    good = write_session(tmp_path / "good.ndjson", SPEECH).read_text().splitlines()
    mixed = tmp_path / "mixed.ndjson"
    # a torn line, a binary scrap and a foreign JSON record among the real records
    mixed.write_text("\n".join([good[0], good[1][:30], *good[2:4], "\x07garbage", '{"type": "metric", "loss": 1}',
                                *good[4:]]) + "\n")
    contents, warnings = load_session_log(mixed)
    assert len(contents.records) == len(good) - 1  # only the torn window is lost
    assert warnings == ["mixed.ndjson: skipped 2 unreadable lines (lines 2, 5)",
                        "mixed.ndjson: skipped 1 JSON record that is not a session record (type metric: 1)"]
    out = tmp_path / "out"
    res = cli(mixed, "--html", out / "m.html", "--png", out / "m.png")
    assert res.returncode == 0, res.stderr
    assert "skipped 2 unreadable lines (lines 2, 5)" in res.stderr and "type metric: 1" in res.stderr
    page = (out / "m.html").read_text()
    assert "warning: mixed.ndjson: skipped 2 unreadable lines" in page and "good news" in page
    assert (out / "m.png").stat().st_size > 10_000


def test_many_unreadable_lines_are_one_warning(tmp_path):
    good = write_session(tmp_path / "good.ndjson", SPEECH).read_text()
    noisy = tmp_path / "noisy.ndjson"
    noisy.write_text(good + "not json\n" * 40)
    _, warnings = load_session_log(noisy)
    n = len(good.splitlines())
    shown = ", ".join(str(n + k) for k in range(1, 6))
    assert warnings == [f"noisy.ndjson: skipped 40 unreadable lines (lines {shown}, ...)"]


@pytest.fixture
def broken_log(tmp_path) -> Path:
    """What ser-analyze writes for a file it cannot read (streamer.batch.analyse_file)."""
    wav = tmp_path / "broken.wav"
    wav.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    log = tmp_path / "broken.wav.ndjson"
    analyse_file(wav, log, None, SimpleNamespace(names=MODELS), BatchOptions())
    return log


def test_a_failed_file_shows_its_error_on_the_page_and_in_the_figure(broken_log, tmp_path):
    contents = read_log(broken_log)
    (error,) = log_errors(contents)
    assert error.startswith("cannot read broken.wav as audio")
    rep = report(broken_log, tmp_path / "b.html", tmp_path / "b.png")
    assert rep.errors == (error,) and rep.windows == 0
    page = (tmp_path / "b.html").read_text()
    assert "<p class='e'>error: cannot read broken.wav as audio" in page and "Nothing was analysed" in page
    fig = draw(contents)
    texts = [t.get_text() for t in fig.texts] + [t.get_text() for ax in fig.axes for t in ax.texts]
    assert f"error: {error}" in texts and any("analysis failed" in t for t in texts), texts


def test_a_live_session_that_failed_midway_shows_its_error(tmp_path):
    log = write_session(tmp_path / "live.ndjson", SPEECH, error="the input device stopped (unplugged?)")
    rep = report(log, tmp_path / "l.html", None)
    page = (tmp_path / "l.html").read_text()
    assert rep.errors == ("the input device stopped (unplugged?)",)
    assert "error: the input device stopped (unplugged?)" in page and "i am so tired" in page  # the windows before it stay
    fig = draw(read_log(log))
    assert "error: the input device stopped (unplugged?)" in [t.get_text() for t in fig.texts]
    ok = draw(read_log(write_session(tmp_path / "ok.ndjson", SPEECH)))
    assert not any(t.get_text().startswith("error") for t in ok.texts)


def test_channel_errors_are_named_once():
    from streamer.live.session_log import LogContents

    end = {"type": "session_end", "error": "no such channel 1; boom",
           "channels": [{"channel": "agent", "error": "no such channel 1"}, {"channel": "customer", "error": "boom"}]}
    assert log_errors(LogContents([end])) == ["agent: no such channel 1", "customer: boom"]
    assert log_errors(LogContents([{"type": "session_end", "error": None, "channels": [{"error": None}]}])) == []


def test_several_logs_get_an_index_page(tmp_path, broken_log):
    logs = tmp_path / "logs"
    logs.mkdir()
    write_session(logs / "call1.wav.ndjson", SPEECH)
    write_session(logs / "call2.wav.ndjson", [("angry", [(1.0, 3.5, "this is unacceptable")])], end=False)
    broken_log.rename(logs / broken_log.name)
    (logs / "summary.csv").write_text("file,error\n")  # beside the logs in a ser-analyze folder: not a log
    out = tmp_path / "report"
    res = cli(logs, "--html", out, "--png", out / "png")
    assert res.returncode == 0, res.stderr
    pages = ["broken.wav.html", "call1.wav.html", "call2.wav.html", "index.html", "png"]
    assert sorted(p.name for p in out.iterdir()) == pages
    assert sorted(p.name for p in (out / "png").iterdir()) == ["broken.wav.png", "call1.wav.png", "call2.wav.png"]
    index = (out / "index.html").read_text()
    rows = {r.split("</td>")[0].split(">")[-2].split("<")[0]: r for r in index.split("<tr><td>")[1:]}
    assert set(rows) == {"broken.wav.ndjson", "call1.wav.ndjson", "call2.wav.ndjson"}
    call1 = rows["call1.wav.ndjson"]
    assert "href='call1.wav.html'" in call1 and "href='png/call1.wav.png'" in call1
    assert "<td>12.0</td><td>3</td><td>2</td>" in call1  # duration (streamed), windows, utterances
    assert f"{EMOJI['sad']} sad 63%" in call1  # 4.2 s of 6.7 s of speech
    assert "error: cannot read broken.wav as audio" in rows["broken.wav.ndjson"]
    assert "no session_end" in rows["call2.wav.ndjson"] and f"{EMOJI['angry']} angry 100%" in rows["call2.wav.ndjson"]
    assert "3 session logs, 1 with errors" in index


def test_a_non_log_among_several_is_listed_and_fails_the_run(tmp_path):
    good = write_session(tmp_path / "a.ndjson", SPEECH)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a log\n")
    out = tmp_path / "out"
    res = cli(good, notes, "--html", out)
    assert res.returncode == 2 and "notes.txt is not a session log" in res.stderr, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last == f"error: 1 of 2 files are not session logs (listed above and in {out / 'index.html'})"
    assert sorted(p.name for p in out.iterdir()) == ["a.html", "index.html"]
    assert "not reported: " in (out / "index.html").read_text()


def test_same_named_logs_do_not_overwrite_each_other(tmp_path):
    for d in ("day1", "day2"):
        (tmp_path / d).mkdir()
        write_session(tmp_path / d / "call.ndjson", SPEECH)
    res = cli(tmp_path / "day1" / "call.ndjson", tmp_path / "day2" / "call.ndjson", "--png", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["call-2.png", "call.png", "index.html"]


def test_one_log_and_no_outputs(tmp_path):
    log = write_session(tmp_path / "a.ndjson", SPEECH)
    with pytest.raises(SerError, match="not a session log"):
        load_session_log(Path(__file__))
    res = cli(log)
    assert res.returncode == 2 and "nothing to write" in res.stderr
    assert json.loads(log.read_text().splitlines()[0])["type"] == "session_start"

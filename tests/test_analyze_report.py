"""ser-analyze over a folder (a stereo call split per channel, a mono file, a broken file),
--jobs 2 equal to --jobs 1, resume; ser-report from normal, split and torn logs."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from streamer.core.messages import SAMPLE_RATE
from streamer.core.paths import CHECKOUT as ROOT
from streamer.live.session_log import read_log

pytestmark = pytest.mark.slow
SR = SAMPLE_RATE


def espeak(text, path, voice="en-us"):
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(SR), "-c", "1", "-b", "16", str(path)], check=True)
    x, _ = sf.read(path, dtype="float32")
    raw.unlink()
    return x


@pytest.fixture(scope="module")
def calls(tmp_path_factory, text_model, audio_model):
    d = tmp_path_factory.mktemp("calls")
    (d / "day1").mkdir()
    agent = espeak("good morning, this is the billing department, how may I help you", d / "a.wav")
    customer = espeak("my parcel never arrived and I want my money back right now", d / "c.wav", "en-us+m3")
    n = len(agent) + len(customer) + 3 * SR
    stereo = np.zeros((n, 2), np.float32)
    stereo[SR: SR + len(agent), 0] = agent  # the agent speaks first, then the customer
    stereo[2 * SR + len(agent): 2 * SR + len(agent) + len(customer), 1] = customer
    sf.write(d / "day1" / "call.wav", stereo, SR, subtype="PCM_16")
    sf.write(d / "mono.flac", np.concatenate([np.zeros(SR // 2, np.float32), customer, np.zeros(SR // 2, np.float32)]), SR)
    (d / "day1" / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    for f in ("a.wav", "c.wav"):
        (d / f).unlink()
    return d


def analyze(calls, out, *extra):
    env = dict(os.environ, HF_HUB_OFFLINE="1", SER_MODELS_DIR=str(out) + "-nomodels")
    env.pop("SER_VOSK_MODEL", None)
    return subprocess.run([sys.executable, "-m", "streamer.cli.analyze", str(calls), "--out", str(out), *extra],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def windows(log):
    keep = ("index", "start_s", "end_s", "transcript", "probs", "label", "channel")
    return [{k: w.get(k) for k in keep} for w in read_log(log).of_type("window")]


@pytest.fixture(scope="module")
def split_run(calls, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis")
    res = analyze(calls, out, "--channels", "split")
    # broken.wav cannot be read: exit status 1 (scripts see it), the other files analysed
    assert res.returncode == 1 and "3 file(s), 1 with errors" in res.stderr, res.stderr
    return out, res


def test_split_call_words_come_from_their_channel(split_run):
    out, _ = split_run
    rows = list(csv.DictReader(open(out / "summary.csv")))
    by = {(r["file"].split("/")[-1], r["channel"]): r for r in rows}
    assert set(by) == {("call.wav", "agent"), ("call.wav", "customer"), ("mono.flac", ""), ("broken.wav", "")}
    assert by[("broken.wav", "")]["error"]  # reported, and the batch finished
    for key in (("call.wav", "agent"), ("call.wav", "customer"), ("mono.flac", "")):
        r = by[key]
        assert int(r["windows"]) >= 1 and not r["error"] and r["dominant_emotion"]
        assert abs(sum(float(r[f"share_{k}"]) for k in ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")) - 1) < 1e-3
        assert "whisper" in r["asr_engine"]
    log = read_log(out / "day1__call.wav.ndjson")
    # the utterance records: each utterance decoded whole (window transcripts are decoded as the windows close)
    said = {ch: " ".join(u["transcript"] for u in log.of_type("utterance") if u["channel"] == ch) for ch in ("agent", "customer")}
    assert "morning" in said["agent"] and "department" in said["agent"] and "parcel" not in said["agent"], said
    assert "money" in said["customer"] and "morning" not in said["customer"], said


def test_jobs_2_equals_jobs_1_and_resume(calls, split_run, tmp_path):
    out1, _ = split_run
    out2 = tmp_path / "j2"
    res = analyze(calls, out2, "--channels", "split", "--jobs", "2")
    assert res.returncode == 1, res.stderr
    for log in ("day1__call.wav.ndjson", "mono.flac.ndjson"):
        assert windows(out1 / log) == windows(out2 / log)
    assert (out1 / "summary.csv").read_text() == (out2 / "summary.csv").read_text()
    mtime = (out2 / "mono.flac.ndjson").stat().st_mtime_ns
    res = analyze(calls, out2, "--channels", "split")
    assert res.returncode == 1 and "3 already analysed, 0 to do" in res.stderr, res.stderr  # the broken file too: its log is complete
    assert (out2 / "mono.flac.ndjson").stat().st_mtime_ns == mtime
    assert (out1 / "summary.csv").read_text() == (out2 / "summary.csv").read_text()


def report(*args):
    return subprocess.run([sys.executable, "-m", "streamer.cli.report", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_reports_from_normal_split_and_torn_logs(split_run, tmp_path):
    out, _ = split_run
    torn = tmp_path / "torn.ndjson"
    lines = (out / "mono.flac.ndjson").read_text().splitlines()
    torn.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # no end, a torn last line
    for log, lanes in ((out / "mono.flac.ndjson", ["session"]), (out / "day1__call.wav.ndjson", ["agent", "customer"]),
                       (torn, ["session"])):
        html, png = tmp_path / f"{log.stem}.html", tmp_path / f"{log.stem}.png"
        res = report(log, "--html", html, "--png", png)
        assert res.returncode == 0, res.stderr
        import matplotlib.image as mpimg

        img = mpimg.imread(png)
        assert img.shape[1] == 1400 and img.shape[0] >= 300
        page = html.read_text()
        for section in ("Emotion over time", "Summary", "Most intense", "Transcript", "data:image/png;base64,", *lanes):
            assert section in page, section
        if read_log(log).of_type("utterance"):  # the pipeline writes utterances: the transcript is by utterance
            assert "One row per utterance" in page and "arousal" in page
        assert "<script" not in page and "http" not in page.replace("http-equiv", "")
        if log == torn:
            assert f"skipped 1 unreadable line (line {len(lines)})" in res.stderr and "no session_end" in page


def test_report_of_an_analysis_folder(split_run, tmp_path):
    """ser-report over ser-analyze's --out folder: a page per log, an index, the broken file's error."""
    out, _ = split_run
    pages = tmp_path / "pages"
    res = report(out, "--html", pages)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in pages.iterdir()) == ["day1__broken.wav.html", "day1__call.wav.html", "index.html",
                                                       "mono.flac.html"]
    index = (pages / "index.html").read_text()
    rows = {r.split("</a>")[0].split(">")[-1]: r for r in index.split("<tr><td>")[1:]}
    assert "error: cannot read broken.wav as audio" in rows["day1__broken.wav.ndjson"]
    assert "agent: " in rows["day1__call.wav.ndjson"] and "customer: " in rows["day1__call.wav.ndjson"]
    assert "error" not in rows["mono.flac.ndjson"]
    assert "<p class='e'>error: cannot read broken.wav as audio" in (pages / "day1__broken.wav.html").read_text()


def test_clip_figure(tmp_path, calls):
    png = tmp_path / "clip.png"
    res = report("--clip", calls / "mono.flac", "--png", png)
    assert res.returncode == 0, res.stderr
    import matplotlib.image as mpimg

    assert mpimg.imread(png).shape[:2] == (700, 1200)
    assert report("--clip", calls / "nope.wav", "--png", png).returncode == 2

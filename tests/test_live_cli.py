"""ser-live end to end on files: windows, words, probabilities, session log, errors, Ctrl-C."""

import json
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from streamer.core.paths import CHECKOUT as ROOT
from streamer.core.labels import EMOJI, LABELS
from streamer.live.session_log import read_log

DEMO = ROOT / "demo" / "demo.flac"
pytestmark = pytest.mark.slow


def env(tmp_path):
    e = dict(os.environ, SER_MODELS_DIR=str(tmp_path / "no-models"), HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    e.pop("SER_VOSK_MODEL", None)
    return e


def ser_live(tmp_path, *args, **kw):
    return subprocess.run([sys.executable, "-m", "streamer.cli.live", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env(tmp_path), timeout=kw.get("timeout", 300))


def one_error_line(res):
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1, res.stderr
    return errors[0]


def expected_windows(path):
    """Windows the VAD alone cuts from the file, with the default settings."""
    from streamer.audio.io import load_audio
    from streamer.core.messages import Chunk
    from streamer.core.vad import VadConfig, VadSegmenter

    x = np.clip(np.round(load_audio(path) * 32768), -32768, 32767).astype(np.int16)
    seg = VadSegmenter(VadConfig(), 40000, 8000)
    seg.push(Chunk(0, x))
    return seg.flush()


def check_distribution(p):
    assert set(p) == set(LABELS) and all(v >= 0 for v in p.values()) and abs(sum(p.values()) - 1) < 1e-3


def test_file_fast_end_to_end(tmp_path, text_model, audio_model):
    log = tmp_path / "out.ndjson"
    res = ser_live(tmp_path, "--file", DEMO, "--fast", "--no-dashboard", "--log", log)
    assert res.returncode == 0, res.stderr
    assert "whisper" in res.stderr  # says which engine runs
    said = res.stderr.splitlines()
    assert said[0].startswith("ser-live: loading models")  # before the seconds of loading
    # --fast reads ahead of the workers: the closing line gives processing time, not a latency
    assert "processing p50/p95" in said[-1] and "latency p50" not in said[-1] and "no latency is measured" in said[-1]
    contents = read_log(log)
    assert not contents.skipped and contents.complete
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    start, windows, end = contents.of_type("session_start"), contents.of_type("window"), contents.of_type("session_end")
    proc = end[0]["processing_ms"]
    assert 0 < proc["p50"] <= proc["p95"] <= proc["max"] < end[0]["latency_ms"]["max"]  # queueing is not work
    assert len(start) == 1 and start[0]["models"]["asr"].startswith("whisper")
    expected = expected_windows(DEMO)
    assert len(windows) == len(expected) == end[0]["windows"]
    speech_s = sum(w.end - w.start for w in expected) / 16000
    assert len(windows) >= int(speech_s / 2.5)  # one window per 2.5 s of speech, plus utterance tails
    assert [w["index"] for w in windows] == list(range(len(windows)))
    for w, e in zip(windows, expected):
        assert (w["start_s"], w["end_s"]) == (round(e.start / 16000, 3), round(e.end / 16000, 3))
        for kind in ("audio", "fused", "rolling"):
            check_distribution(w["probs"][kind])
        if w["words"]:
            check_distribution(w["probs"]["text"])
            # a word ends in its window (one that was still growing at the window's end went on)
            assert all(x["start_s"] <= x["end_s"] and w["start_s"] - 2.5 <= x["start_s"] and x["end_s"] <= w["end_s"] + 0.01
                       for x in w["words"])
        else:
            assert w["probs"]["text"] is None
        assert w["label"] == max(w["probs"]["fused"], key=w["probs"]["fused"].get)  # the window's own
        assert w["confidence"] == pytest.approx(w["probs"]["fused"][w["label"]], abs=1e-4)
        assert w["rolling_label"] == max(w["probs"]["rolling"], key=w["probs"]["rolling"].get)
        assert w["rolling_emoji"] == EMOJI[w["rolling_label"]] and isinstance(w["uncertain"], bool)
        assert w["emoji"] == EMOJI[w["label"]] and 0 < w["confidence"] <= 1 and w["latency_ms"] >= 0
    said = " ".join(w["transcript"] for w in windows)
    for word in ("thank", "calling", "waiting", "refund", "tomorrow", "wonderful"):
        assert word in said, said
    utterances = contents.of_type("utterance")
    assert utterances and sorted(i for u in utterances for i in u["windows"]) == list(range(len(windows)))
    heard = " ".join(u["transcript"] for u in utterances)
    for word in ("thank", "calling", "waiting", "refund", "tomorrow", "wonderful"):
        assert word in heard, heard
    assert res.stdout.count("\n") == len(windows) + len(utterances)  # plain lines when stdout is not a terminal
    # The same windows and labels as the three-thread pipeline before the StreamSession core
    ref = json.loads((ROOT / "tests" / "data" / "demo_reference.json").read_text())
    assert [[w["start_s"], w["end_s"], w["label"]] for w in windows] == ref["windows"]
    assert [[u["start_s"], u["end_s"], u["label"], u["windows"]] for u in utterances] == ref["utterances"]


def test_json_stdout_and_no_transcript_log(tmp_path, speech_wav, text_model, audio_model):
    log = tmp_path / "s.ndjson"
    res = ser_live(tmp_path, "--file", speech_wav, "--fast", "--json", "--no-transcript-log", "--log", log)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert lines and {x["type"] for x in lines} == {"window", "utterance"}
    contents = read_log(log)
    for rec in contents.of_type("window") + contents.of_type("utterance"):
        assert rec["transcript"] is None and rec["words"] is None
    assert "quick" not in log.read_text() and "lazy" not in log.read_text()


def machine_has_input_device(tmp_path) -> bool:
    code = "import sounddevice as sd; print(sum(d['max_input_channels'] > 0 for d in sd.query_devices()))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(tmp_path), timeout=60)
    return res.returncode == 0 and int(res.stdout.strip() or 0) > 0


def test_no_input_device_says_how_to_fix_it(tmp_path):
    if machine_has_input_device(tmp_path):
        pytest.skip("this machine has an input device (tests/test_microphone.py covers that case)")
    for args in (["--list-devices"], []):
        line = one_error_line(ser_live(tmp_path, *args))
        assert "no audio input device found" in line and "audio` group" in line and "--file" in line, line


def test_missing_inputs_and_models_give_one_clear_error(tmp_path, speech_wav):
    missing = "--list-devices" if machine_has_input_device(tmp_path) else "no audio input device found"
    assert missing in one_error_line(ser_live(tmp_path, "--device", "no-such-device-xyz"))
    assert "no such audio file" in one_error_line(ser_live(tmp_path, "--file", tmp_path / "nope.wav"))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    assert "cannot read" in one_error_line(ser_live(tmp_path, "--file", bad))
    assert "does not exist" in one_error_line(ser_live(tmp_path, "--file", speech_wav, "--text-model", "./no-such-model"))
    assert "ser-models download" in one_error_line(ser_live(tmp_path, "--file", speech_wav, "--asr", "vosk"))
    cfg = tmp_path / "c.toml"
    cfg.write_text("[vad]\naggressiveness = 7\n")
    assert "aggressiveness" in one_error_line(ser_live(tmp_path, "--file", speech_wav, "--config", cfg))


def test_sigint_mid_stream_leaves_a_complete_log(tmp_path, text_model, audio_model):
    log = tmp_path / "int.ndjson"
    proc = subprocess.Popen([sys.executable, "-m", "streamer.cli.live", "--file", str(DEMO), "--no-dashboard", "--log", str(log)],
                            cwd=ROOT, env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and '"type":"window"' in log.read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    contents = read_log(log)
    assert not contents.skipped and contents.complete
    end = contents.of_type("session_end")[0]
    assert end["interrupted"] is True and end["windows"] == len(contents.of_type("window")) >= 1
    assert end["stream_s"] < 35  # stopped early, in real time


def test_sigkill_leaves_every_record_parseable(tmp_path, text_model, audio_model):
    log = tmp_path / "kill.ndjson"
    proc = subprocess.Popen([sys.executable, "-m", "streamer.cli.live", "--file", str(DEMO), "--no-dashboard", "--log", str(log)],
                            cwd=ROOT, env=env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and log.read_text().count('"type":"window"') >= 2):
        time.sleep(0.1)
    proc.kill()
    proc.wait(30)
    text = log.read_text()
    contents = read_log(log)
    n_lines = len([x for x in text.splitlines() if x.strip()])
    assert contents.skipped in ([], [n_lines])  # at most a torn last line, which readers skip
    assert len(contents.of_type("window")) >= 2 and not contents.complete

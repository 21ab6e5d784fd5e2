import numpy as np
import pytest

from streamer.audio.io import load_audio
from streamer.train.augment import COPIES, add_noise, gain, reverb, telephone


@pytest.fixture(scope="module")
def clip(speech_wav):
    return load_audio(speech_wav)


@pytest.mark.parametrize("name", sorted(COPIES))
def test_copies_are_finite_speech_length(clip, name):
    y = COPIES[name](clip, np.random.default_rng(0))
    assert y.dtype == np.float32 and np.isfinite(y).all()
    assert 0.8 * clip.size <= y.size <= 1.2 * clip.size


def test_copies_are_deterministic_per_seed(clip):
    a = COPIES["noise_reverb"](clip, np.random.default_rng(7))
    b = COPIES["noise_reverb"](clip, np.random.default_rng(7))
    assert np.array_equal(a, b)


def test_telephone_removes_the_high_band(clip):
    y = telephone(clip)
    spec = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(y.size, 1 / 16000)
    assert spec[freqs > 4200].sum() < 1e-3 * spec.sum()
    assert spec[(freqs > 300) & (freqs < 3400)].sum() > 0.9 * spec.sum()


def test_noise_snr(clip):
    rng = np.random.default_rng(1)
    y = add_noise(clip, rng, snr_db=(20.0, 20.0))
    snr = 10 * np.log10(np.mean(clip**2) / np.mean((y - clip) ** 2))
    assert snr == pytest.approx(20.0, abs=0.1)


def test_gain_and_reverb_keep_level_bounds(clip):
    rng = np.random.default_rng(2)
    g = gain(clip, rng, db=(-6.0, -6.0))
    assert np.sqrt(np.mean(g**2)) == pytest.approx(np.sqrt(np.mean(clip**2)) * 10 ** (-6 / 20), rel=1e-4)
    r = reverb(clip, rng)
    assert np.sqrt(np.mean(r**2)) == pytest.approx(np.sqrt(np.mean(clip**2)), rel=1e-3)

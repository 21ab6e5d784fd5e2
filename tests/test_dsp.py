"""The NumPy signal primitives equal librosa's on speech (the audio model was trained with
librosa's), and the live path does not load librosa (numba and LLVM: ~240 MB)."""

import subprocess
import sys

import numpy as np
import pytest

from streamer.audio import dsp
from streamer.audio.io import load_audio
from tests.conftest import DATA


@pytest.fixture(scope="module")
def speech():
    return load_audio(DATA / "speech16k.mp3")  # 5.6 s of espeak-ng speech the repository ships


def test_rms_and_stft_equal_librosa(speech):
    librosa = pytest.importorskip("librosa")
    for frame, hop in ((512, 320), (320, 160)):
        ref = librosa.feature.rms(y=speech, frame_length=frame, hop_length=hop, center=True)[0]
        np.testing.assert_allclose(dsp.rms(speech, frame, hop), ref, rtol=1e-5, atol=1e-7)
    ref = np.abs(librosa.stft(speech, n_fft=512, hop_length=320, center=True))
    np.testing.assert_allclose(dsp.stft_magnitude(speech, 512, 320), ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(dsp.frames(np.pad(speech, 256), 512, 320),
                                  librosa.util.frame(np.pad(speech, 256), frame_length=512, hop_length=320))


def test_mel_filters_equal_librosa():
    librosa = pytest.importorskip("librosa")
    for n_fft, n_mels in ((512, 40), (400, 80)):
        np.testing.assert_allclose(dsp.mel_filters(16000, n_fft, n_mels), librosa.filters.mel(sr=16000, n_fft=n_fft, n_mels=n_mels),
                                   rtol=1e-5, atol=1e-8)


def test_report_log_mel_equals_librosa(speech):
    """ser-report's spectrogram lane (streamer.audio.features.log_mel) is librosa's, without librosa."""
    librosa = pytest.importorskip("librosa")
    from streamer.audio.features import log_mel

    ref = librosa.power_to_db(librosa.feature.melspectrogram(y=speech, sr=16000, n_fft=400, hop_length=160, n_mels=80),
                              ref=1.0, top_db=80.0)
    got = log_mel(speech)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-3)


def test_yin_equals_librosa(speech):
    librosa = pytest.importorskip("librosa")
    import soxr

    x8k = soxr.resample(speech, 16000, 8000)
    ref = librosa.yin(x8k, fmin=60, fmax=500, sr=8000, frame_length=512, hop_length=160)
    np.testing.assert_allclose(dsp.yin(x8k, 60, 500, 8000, 512, 160), ref, rtol=1e-5)
    noise = np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32)  # no trough under the threshold
    np.testing.assert_allclose(dsp.yin(noise, 60, 500, 8000, 512, 160),
                               librosa.yin(noise, fmin=60, fmax=500, sr=8000, frame_length=512, hop_length=160), rtol=1e-5)


def test_frames_shorter_than_one_frame_is_an_error():
    with pytest.raises(ValueError, match="shorter than one frame"):
        dsp.frames(np.zeros(10), 512, 320)


@pytest.mark.slow
def test_live_path_does_not_import_librosa(whisper):
    code = ("import sys, numpy as np\n"
            "from streamer.runtime.config import Config\n"
            "from streamer.runtime.models import load_models, warm_up\n"
            "m = load_models(Config.load(), with_asr=True); warm_up(m)\n"
            "m.audio.predict(np.random.default_rng(0).normal(0, .1, 40000).astype(np.float32))\n"
            "print(sorted(k for k in ('librosa', 'numba', 'llvmlite') if k in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"

"""The telephony wire formats on their own: G.711 mu-law against sox, and the pure protocol layers."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from streamer.serve import mulaw


def _need_sox():
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed: apt-get install espeak-ng sox")


@pytest.fixture(scope="module")
def phone_speech(tmp_path_factory):
    """espeak-ng speech as 8 kHz 16-bit mono, as a telephone carries it."""
    _need_sox()
    d = tmp_path_factory.mktemp("mulaw")
    raw, out = d / "raw.wav", d / "x.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw),
                    "hello, thank you for calling, how can I help you today"], check=True)
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed", str(out)], check=True)
    x, sr = sf.read(str(out), dtype="int16")
    assert sr == 8000 and len(x) > 8000 and np.abs(x).max() > 3000
    return d, out, x


def _sox_encode(src, dst):
    subprocess.run(["sox", "-D", str(src), "-t", "raw", "-e", "u-law", "-b", "8", str(dst)], check=True,
                   stderr=subprocess.DEVNULL)  # -D: no dither; sox warns that +32767 clips (to 8191 in 14 bits)
    return dst.read_bytes()


def _sox_decode(ul, dst):
    subprocess.run(["sox", "-t", "raw", "-e", "u-law", "-b", "8", "-r", "8000", "-c", "1", str(ul),
                    "-t", "raw", "-e", "signed", "-b", "16", "-L", str(dst)], check=True)
    return np.fromfile(dst, dtype="<i2")


def test_mulaw_encode_matches_sox_on_speech(phone_speech):
    d, wav, x = phone_speech
    ours, theirs = mulaw.encode(x), _sox_encode(wav, d / "x.ul")
    assert len(ours) == len(x) == len(theirs)
    assert ours == theirs


def test_mulaw_encode_matches_sox_on_every_16bit_value(tmp_path):
    _need_sox()
    ramp = np.arange(-32768, 32768, dtype=np.int16)
    sf.write(str(tmp_path / "ramp.wav"), ramp, 8000, subtype="PCM_16")
    assert mulaw.encode(ramp) == _sox_encode(tmp_path / "ramp.wav", tmp_path / "ramp.ul")


def test_mulaw_decode_matches_sox(phone_speech, tmp_path):
    d, wav, x = phone_speech
    every = tmp_path / "every.ul"
    every.write_bytes(bytes(range(256)))
    assert np.array_equal(mulaw.decode(bytes(range(256))), _sox_decode(every, tmp_path / "every.raw"))
    ul = _sox_encode(wav, d / "x2.ul")
    y = mulaw.decode(ul)
    assert y.dtype == np.int16 and np.array_equal(y, _sox_decode(d / "x2.ul", d / "x2.raw"))
    # and it is speech again: the round trip's error is mu-law's, a few per cent of the signal
    err = np.sqrt(np.mean((y.astype(float) - x) ** 2)) / np.sqrt(np.mean(x.astype(float) ** 2))
    assert err < 0.05


def test_mulaw_refuses_float():
    with pytest.raises(TypeError, match="int16"):
        mulaw.encode(np.zeros(4, dtype=np.float32))

"""FileSource on awkward audio: rates, channels, sample formats, silence, clipping, damage."""

import numpy as np
import pytest
import soundfile as sf

from streamer.audio.io import load_audio
from streamer.errors import AudioInputError
from streamer.live.sources import FileSource, parse_device

SR = 16000


def drain(src):
    src.start()
    chunks = []
    while not src.done:
        c = src.read()
        if c is not None:
            chunks.append(c)
    return chunks


def test_parse_device():
    assert parse_device("2") == 2 and parse_device(" pulse ") == "pulse" and parse_device(None) is None


CASES = [(r, c, s) for r in (8000, 16000, 22050, 44100, 48000) for c, s in ((1, "PCM_16"), (2, "PCM_24"), (1, "FLOAT"))]


@pytest.mark.parametrize("rate, channels, subtype", CASES + [(8000, 2, "PCM_U8")])
def test_formats_become_16k_mono_int16(tmp_path, speech_wav, rate, channels, subtype):
    x = load_audio(speech_wav, target_rate=rate)
    data = np.stack([x, 0.5 * x], axis=1) if channels == 2 else x
    path = tmp_path / f"a_{rate}_{channels}_{subtype}.wav"
    sf.write(path, data, rate, subtype=subtype)
    chunks = drain(FileSource(path, fast=True))
    y = np.concatenate([c.samples for c in chunks])
    assert y.dtype == np.int16
    assert [c.start for c in chunks] == list(np.cumsum([0] + [len(c.samples) for c in chunks[:-1]]))
    assert abs(len(y) - round(len(x) * SR / rate)) <= 2
    ref = load_audio(speech_wav) * (0.75 if channels == 2 else 1.0)
    n = min(len(y), len(ref))
    corr = np.corrcoef(y[:n].astype(float), ref[:n])[0, 1]
    assert corr > 0.9


def test_clipping_and_silence_are_fine(tmp_path):
    t = np.arange(3 * SR) / SR
    loud = np.clip(3 * np.sin(2 * np.pi * 200 * t), -1, 1)
    path = tmp_path / "clip.wav"
    sf.write(path, np.concatenate([np.zeros(10 * SR), loud]), SR, subtype="FLOAT")
    y = np.concatenate([c.samples for c in drain(FileSource(path, fast=True))])
    assert len(y) == 13 * SR and y[: 10 * SR].max() == 0 and y.max() == 32767 and y.min() == -32768


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(AudioInputError, match="no such audio file"):
        FileSource(tmp_path / "missing.wav")
    junk = tmp_path / "notes.wav"
    junk.write_text("this is not audio")
    with pytest.raises(AudioInputError, match="cannot read"):
        FileSource(junk)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0), SR)
    with pytest.raises(AudioInputError, match="holds no audio"):
        FileSource(empty)


def test_truncated_file_keeps_what_was_read(tmp_path, speech_wav):
    x = load_audio(speech_wav)
    path = tmp_path / "long.flac"
    sf.write(path, np.concatenate([x] * 4), SR)
    data = path.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])
    src = FileSource(cut, fast=True)
    chunks = drain(src)
    got = sum(len(c.samples) for c in chunks)
    assert got > SR  # the audio before the damage is kept
    assert got < 4 * len(x) and (src.error is None or "damaged" in src.error)

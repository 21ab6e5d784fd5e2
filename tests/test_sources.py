"""FileSource on awkward audio: rates, channels, sample formats, silence, clipping, damage, MP3.

``data/speech16k.mp3`` (17 KB): 5.6 s of espeak-ng speech encoded by sox 14.4.2,
``espeak-ng -v en-us -s 150 -w src.wav "the quick brown fox jumps over the lazy dog. she sells
sea shells by the sea shore." && sox src.wav -r 16000 speech16k.mp3``. Read in 100 ms blocks
through python-soundfile it printed 13 libmpg123 ``part2_3_length too large`` lines and gave
other samples than a whole read.
"""

import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamer.core.messages import SAMPLE_RATE
from streamer.audio.io import _decoder_messages, decode_file, load_audio, to_int16
from streamer.core.errors import AudioInputError
from streamer.live.sources import FileSource, parse_device

SR = SAMPLE_RATE
MP3 = Path(__file__).parent / "data" / "speech16k.mp3"


def drain(src):
    src.start()
    chunks = []
    while not src.done:
        c = src.read()
        if c is not None:
            chunks.append(c)
    return chunks


def samples(src) -> np.ndarray:
    chunks = drain(src)
    assert [c.start for c in chunks] == list(np.cumsum([0] + [len(c.samples) for c in chunks[:-1]]))
    return np.concatenate([c.samples for c in chunks])


def test_parse_device():
    assert parse_device("2") == 2 and parse_device(" pulse ") == "pulse" and parse_device(None) is None


CASES = [(r, c, s) for r in (8000, SR, 22050, 44100, 48000) for c, s in ((1, "PCM_16"), (2, "PCM_24"), (1, "FLOAT"))]


@pytest.mark.parametrize("rate, channels, subtype", CASES + [(8000, 2, "PCM_U8")])
def test_formats_become_16k_mono_int16(tmp_path, speech_wav, rate, channels, subtype):
    x = load_audio(speech_wav, target_rate=rate)
    data = np.stack([x, 0.5 * x], axis=1) if channels == 2 else x
    path = tmp_path / f"a_{rate}_{channels}_{subtype}.wav"
    sf.write(path, data, rate, subtype=subtype)
    y = samples(FileSource(path, fast=True))
    assert y.dtype == np.int16
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
    y = samples(FileSource(path, fast=True))
    assert len(y) == 13 * SR and y[: 10 * SR].max() == 0 and y.max() == 32767 and y.min() == -32768


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(AudioInputError, match="no such audio file"):
        FileSource(tmp_path / "missing.wav")
    junk = tmp_path / "notes.wav"
    junk.write_text("this is not audio")
    for read in (FileSource, load_audio):
        with pytest.raises(AudioInputError, match="cannot read .*notes.wav as audio .*give a WAV, FLAC"):
            read(junk)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0), SR)
    with pytest.raises(AudioInputError, match="holds no audio"):
        FileSource(empty)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.1, np.nan, 0.2] * 1000, np.float32), SR, subtype="FLOAT")
    with pytest.raises(AudioInputError, match="nan.wav contains NaN"):
        FileSource(nan)
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.zeros((SR, 2)), SR)
    with pytest.raises(AudioInputError, match="2 channel\\(s\\), no channel 2"):
        FileSource(stereo, channel=2)


def test_damaged_file_is_a_clear_error_and_keeps_the_audio_before(tmp_path, speech_wav):
    x = load_audio(speech_wav)
    path = tmp_path / "long.flac"
    sf.write(path, np.concatenate([x] * 4), SR)
    data = path.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])
    # load_audio has no use for half a file: it raises, naming the file, the place and the fix
    with pytest.raises(AudioInputError, match=rf"{re.escape(str(cut))} is damaged after \d+\.\d s .*copy it again") as err:
        load_audio(cut)
    # the live source analyses the audio before the damage, then reports the same error
    src = FileSource(cut, fast=True)
    y = samples(src)
    assert SR < len(y) < 4 * len(x)
    np.testing.assert_array_equal(y, to_int16(load_audio(path))[: len(y)])
    assert src.error == str(err.value)


# --- one decode, whatever the block size ------------------------------------------------------


@pytest.fixture(scope="module")
def three_formats(tmp_path_factory, speech_wav) -> dict[str, Path]:
    """The sox-made MP3, a 22.05 kHz FLAC and a 44.1 kHz stereo WAV (both resampled on reading)."""
    d = tmp_path_factory.mktemp("formats")
    x = load_audio(speech_wav, target_rate=44100)
    sf.write(d / "stereo44k.wav", np.stack([x, -0.5 * x], axis=1), 44100, subtype="PCM_16")
    sf.write(d / "speech22k.flac", load_audio(speech_wav, target_rate=22050), 22050)
    return {"mp3": MP3, "flac": d / "speech22k.flac", "wav": d / "stereo44k.wav"}


@pytest.mark.parametrize("fmt", ["mp3", "flac", "wav"])
@pytest.mark.parametrize("chunk", [SR // 100, SR // 10, SR])  # 10 ms, 100 ms, 1 s
def test_blocks_give_exactly_what_load_audio_gives(three_formats, fmt, chunk):
    path = three_formats[fmt]
    chunks = drain(FileSource(path, fast=True, chunk=chunk))
    assert {len(c.samples) for c in chunks[:-1]} == {chunk}
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), to_int16(load_audio(path)))


def test_mp3_is_the_unbroken_decode():
    """The samples are libmpg123's straight decode: the same as reading in whole MPEG frames
    (576 samples at 16 kHz), where soundfile's seek after each read never lands mid-frame."""
    with sf.SoundFile(str(MP3)) as f:
        frames = np.concatenate([b[:, 0] for b in f.blocks(4 * 576, dtype="float32", always_2d=True)])
    assert len(frames) > 5 * SR
    np.testing.assert_array_equal(load_audio(MP3), frames)


def test_mp3_decodes_quietly(capfd):
    load_audio(MP3)
    samples(FileSource(MP3, fast=True, chunk=SR // 10))
    out, err = capfd.readouterr()
    assert err == "" and out == ""


def test_damaged_mp3_notes_go_to_the_log(tmp_path, capfd, caplog):
    data = bytearray(MP3.read_bytes())
    data[8000:8400] = bytes(range(256)) + bytes(range(144))  # a burst of garbage mid-file
    bad = tmp_path / "garbled.mp3"
    bad.write_bytes(bytes(data))
    with caplog.at_level("DEBUG", logger="streamer.audio.io"):
        x = load_audio(bad)
    assert len(x) > 5 * SR
    assert capfd.readouterr().err == ""
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "garbled.mp3: the decoder repaired damaged data" in warnings[0]
    assert any("Illegal Audio-MPEG-Header" in r.getMessage() for r in caplog.records if r.levelname == "DEBUG")


def test_decoder_capture_hands_other_text_on_and_lets_errors_through(capfd):
    with _decoder_messages() as lines:
        os.write(2, b"Note: Trying to resync...\nsomething else\n")
    assert lines == ["Note: Trying to resync..."]
    assert capfd.readouterr().err == "something else\n"
    with pytest.raises(ZeroDivisionError):
        with _decoder_messages():
            1 / 0
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_channel_is_picked_before_resampling(three_formats):
    path = three_formats["wav"]
    left = samples(FileSource(path, fast=True, channel=0)).astype(float)
    right = samples(FileSource(path, fast=True, channel=1)).astype(float)
    np.testing.assert_array_equal(to_int16(decode_file(path, channel=1).samples), right)
    assert np.corrcoef(left, right)[0, 1] < -0.99 and 1.9 < np.abs(left).max() / np.abs(right).max() < 2.1

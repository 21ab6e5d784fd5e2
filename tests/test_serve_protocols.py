"""The telephony wire formats on their own: G.711 mu-law against sox, and the pure protocol layers."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from streamer.serve.protocols import mulaw


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


# --- shared wire helpers --------------------------------------------------------------------

from streamer.serve.protocols import audiofork, audiosocket, wire  # noqa: E402
from streamer.serve.protocols import vosk as vosk_ws  # noqa: E402
from streamer.serve.protocols.wire import ProtocolError  # noqa: E402


def test_close_reason_fits_a_close_frame_and_keeps_whole_characters():
    r = wire.close_reason("é" * 100)  # 200 bytes of UTF-8
    assert len(r) <= 123 and r.decode("utf-8") == "é" * (len(r) // 2)
    assert wire.close_reason("short") == b"short"


# --- vosk -----------------------------------------------------------------------------------

def test_vosk_commands():
    o = vosk_ws.VoskOptions()
    assert o.sample_rate == 8000 and o.words is True  # vosk-server's defaults
    kind, o2 = vosk_ws.parse_command('{"config": {"sample_rate": 16000.0}}', o)
    assert kind == "config" and o2.sample_rate == 16000 and isinstance(o2.sample_rate, int) and o2.words
    assert vosk_ws.parse_command('{"config": {"words": 0, "phrase_list": ["a"]}}', o2)[1] == vosk_ws.VoskOptions(16000, False)
    assert vosk_ws.parse_command('{"eof" : 1}', o2) == ("eof", o2)
    assert vosk_ws.parse_command('{"reset": 1}', o2) == ("reset", o2)


@pytest.mark.parametrize("text, code, words", [
    ("{not json", 1007, "not JSON"),
    ("[1, 2]", 1007, "object"),
    ('{"config": 5}', 1007, "config must be"),
    ('{"config": {"sample_rate": 44}}', 1007, "sample_rate"),
    ('{"config": {"sample_rate": 8000.5}}', 1007, "whole Hz"),
    ('{"config": {"sample_rate": "16000"}}', 1007, "sample_rate"),
    ('{"hello": 1}', 1008, "unknown message"),
    ('{"eof": 0}', 1008, "unknown message"),
])
def test_vosk_bad_text_messages(text, code, words):
    with pytest.raises(ProtocolError) as e:
        vosk_ws.parse_command(text, vosk_ws.VoskOptions())
    assert e.value.code == code and words in e.value.reason


def test_vosk_pcm_and_odd_lengths():
    x = np.array([0, 1, -1, 32767, -32768], np.int16)
    assert np.array_equal(vosk_ws.pcm(x.astype("<i2").tobytes()), x)
    with pytest.raises(ProtocolError, match="even length") as e:
        vosk_ws.pcm(b"\x00\x01\x02")
    assert e.value.code == 1007


def _utt(i, text, label):
    ws = text.split()
    return {"type": "utterance", "track": "speaker", "index": i, "start_s": float(i), "end_s": i + 0.5,
            "transcript": text, "label": label, "emoji": "x", "confidence": 0.7, "uncertain": False,
            "probs": {"audio": {label: 1.0}, "text": None, "fused": {label: 0.7, "neutral": 0.3}},
            "dims": {"audio": {"arousal": 0.1, "valence": -0.2}},
            "words": [{"word": w, "start_s": i + k / 10, "end_s": i + (k + 1) / 10, "conf": 0.9} for k, w in enumerate(ws)]}


def test_vosk_replies_one_per_audio_message_in_order():
    r = vosk_ws.Replies(words=True)
    assert r.next("hel") == {"partial": "hel"}
    r.add(_utt(0, "hello there", "happy"))
    r.add(_utt(1, "go away", "angry"))
    first, second, third = r.next("x"), r.next("y"), r.next("z")
    assert first["text"] == "hello there" and first["emotion"]["label"] == "happy"
    assert first["result"][1] == {"word": "there", "start": 0.1, "end": 0.2, "conf": 0.9}
    assert first["emotion"]["probs"] == {"happy": 0.7, "neutral": 0.3}
    assert set(first["emotion"]) == {"label", "emoji", "confidence", "uncertain", "probs", "dims"}
    assert second["text"] == "go away" and third == {"partial": "z"}


def test_vosk_final_joins_what_is_held_and_words_off_drops_result():
    r = vosk_ws.Replies(words=False)
    r.add(_utt(0, "one two", "sad"))
    r.add(_utt(2, "three", "happy"))
    f = r.final()
    assert "result" not in f and f["text"] == "one two three" and f["emotion"]["label"] == "happy"
    assert [u["text"] for u in f["utterances"]] == ["one two", "three"]
    assert r.final() == {"text": ""}


# --- mod_audio_fork -------------------------------------------------------------------------

def test_audiofork_metadata():
    f = audiofork.parse_metadata('{"callId": "fs-1", "sampleRate": "16k", "mixType": "stereo", "from": "+1"}')
    assert (f.call_id, f.rate, f.channels, f.tracks) == ("fs-1", 16000, 2, ("customer", "agent"))
    assert f.meta["from"] == "+1"
    f = audiofork.parse_metadata('{"callSid": "CA1", "mixType": "mixed"}')
    assert (f.call_id, f.rate, f.channels, f.tracks) == ("CA1", 8000, 1, ("mixed",))
    assert audiofork.parse_metadata('{"channels": "2", "sampleRate": 8000}').channels == 2


@pytest.mark.parametrize("text, words", [
    ("nope", "not JSON"), ('"x"', "object"), ('{"sampleRate": 44100}', "8000 or 16000"),
    ('{"sampleRate": true}', "sampleRate"), ('{"channels": 3}', "channels"), ('{"channels": true}', "channels"),
])
def test_audiofork_bad_metadata(text, words):
    with pytest.raises(ProtocolError, match=words) as e:
        audiofork.parse_metadata(text)
    assert e.value.code == 1007


def test_audiofork_stereo_split_gives_each_speaker_back(phone_speech):
    _, _, x = phone_speech
    other = (x[::-1] // 2).astype(np.int16)  # a second, different signal of the same length
    inter = np.empty(2 * len(x), np.int16)
    inter[0::2], inter[1::2] = x, other
    data = inter.astype("<i2").tobytes()
    frames = [data[i:i + 640] for i in range(0, len(data), 640)]  # 20 ms stereo at 8 kHz
    parts = [audiofork.split(f, 2) for f in frames]
    assert np.array_equal(np.concatenate([p[0] for p in parts]), x)
    assert np.array_equal(np.concatenate([p[1] for p in parts]), other)
    assert np.array_equal(audiofork.split(x.astype("<i2").tobytes(), 1)[0], x)
    with pytest.raises(ProtocolError, match="stereo"):
        audiofork.split(data[:6], 2)


# --- AudioSocket ----------------------------------------------------------------------------

def test_audiosocket_parser_takes_any_split(phone_speech):
    _, _, x = phone_speech
    call = "6f1c2a3b-0000-4000-8000-00000000abcd"
    stream = audiosocket.uuid_message(call) + audiosocket.encode(audiosocket.KIND_DTMF, b"5")
    chunks = [x[i:i + 160] for i in range(0, len(x), 160)]
    stream += b"".join(audiosocket.audio_message(c) for c in chunks) + audiosocket.encode(audiosocket.KIND_HANGUP)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, len(stream)), size=300, replace=False))
    p, frames = audiosocket.FrameParser(), []
    for piece in np.split(np.frombuffer(stream, np.uint8), cuts):
        frames += p.push(piece.tobytes())
    assert p.pending == 0 and len(frames) == 3 + len(chunks)
    s = audiosocket.Session()
    out = [s.handle(f) for f in frames]
    assert out[0] == ("uuid", call) and out[1] == ("dtmf", "5") and out[-1] == ("hangup", None)
    audio = [v for k, v in out if k == "audio"]
    assert {r for r, _ in audio} == {8000} and np.array_equal(np.concatenate([a for _, a in audio]), x)
    # one byte at a time
    p2 = audiosocket.FrameParser()
    assert sum(len(p2.push(stream[i:i + 1])) for i in range(2000)) > 0 and p2.pending < 400


def test_audiosocket_encode_limits():
    assert audiosocket.encode(audiosocket.KIND_HANGUP) == b"\x00\x00\x00"
    assert audiosocket.encode(0x10, b"ab")[:3] == b"\x10\x00\x02"
    assert len(audiosocket.encode(0x10, bytes(65535))) == 65538
    with pytest.raises(ValueError, match="65535"):
        audiosocket.encode(0x10, bytes(65536))


@pytest.mark.parametrize("frames, code, words", [
    ([(0x10, b"\x00\x00")], 1008, "first message must be the UUID"),
    ([(0x01, b"short")], 1007, "16"),
    ([(0x01, bytes(16)), (0x01, bytes(16))], 1008, "second UUID"),
    ([(0x01, bytes(16)), (0x10, b"\x00")], 1007, "even length"),
    ([(0x01, bytes(16)), (0x11, b"\x00\x00")], 1003, "8 kHz"),
    ([(0x01, bytes(16)), (0x12, b"\x00\x00")], 1003, "8 kHz"),
    ([(0x01, bytes(16)), (0x42, b"")], 1008, "unknown"),
])
def test_audiosocket_bad_frames(frames, code, words):
    s = audiosocket.Session()
    with pytest.raises(ProtocolError, match=words) as e:
        for k, p in frames:
            s.handle(audiosocket.Frame(k, p))
    assert e.value.code == code


def test_audiosocket_error_frame_and_chosen_rates():
    s = audiosocket.Session()
    s.handle(audiosocket.Frame(0x01, bytes(16)))
    assert s.handle(audiosocket.Frame(0xFF, b"\x01")) == ("error", "Asterisk reported an error: the caller hung up")
    s = audiosocket.Session(rates={0x10: 8000, 0x12: 16000})
    s.handle(audiosocket.Frame(0x01, bytes(16)))
    assert s.handle(audiosocket.Frame(0x12, b"\x01\x00"))[1][0] == 16000

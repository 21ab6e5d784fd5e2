"""The microphone path for real: a PulseAudio null sink's monitor is the input device,
a known recording is played into it, and ser-live --device records and analyses it."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from streamer.core.paths import CHECKOUT as ROOT
from streamer.live.session_log import read_log

pytestmark = pytest.mark.slow


@pytest.fixture
def virtual_mic(tmp_path):
    """A private PulseAudio daemon with a 16 kHz mono null sink 'vspk': PortAudio's ALSA
    'pulse' device records the sink's monitor, so what paplay plays is what the microphone hears."""
    if shutil.which("pulseaudio") is None or shutil.which("paplay") is None:
        pytest.skip("pulseaudio and paplay are needed: apt-get install pulseaudio pulseaudio-utils")
    root = tmp_path / "pulse"
    (root / "home").mkdir(parents=True)
    (root / "run" / "pulse").mkdir(parents=True)
    os.chmod(root / "run", 0o700)
    env = dict(os.environ, HOME=str(root / "home"), XDG_RUNTIME_DIR=str(root / "run"),
               PULSE_RUNTIME_PATH=str(root / "run" / "pulse"), PULSE_SERVER=f"unix:{root}/run/native")
    subprocess.run(["pulseaudio", "--daemonize=yes", "-n", "--exit-idle-time=-1", "--disallow-exit=yes", "--use-pid-file=yes",
                    "--disable-shm=yes", "--system=no", f"--log-target=file:{root}/pulse.log",
                    f"--load=module-native-protocol-unix auth-anonymous=1 socket={root}/run/native",
                    "--load=module-null-sink sink_name=vspk rate=16000 channels=1 format=s16le norewinds=1"],
                   env=env, check=True, timeout=30)
    for _ in range(50):
        if (root / "run" / "native").exists():
            break
        time.sleep(0.1)
    yield env
    subprocess.run(["pulseaudio", "--kill"], env=env, timeout=30)


def test_microphone_records_what_is_played(tmp_path, virtual_mic, speech_wav, text_model, audio_model):
    import numpy as np
    import soundfile as sf

    from streamer.audio.io import load_audio

    # two utterances with a pause, as one WAV to play
    x = load_audio(speech_wav)
    z = np.zeros(16000, np.float32)
    played = tmp_path / "played.wav"
    sf.write(played, np.concatenate([z, x, z, z, x, z]), 16000, subtype="PCM_16")
    log, rec = tmp_path / "mic.ndjson", tmp_path / "rec.wav"
    env = dict(virtual_mic, PULSE_SOURCE="vspk.monitor", HF_HUB_OFFLINE="1", SER_MODELS_DIR=str(tmp_path / "none"))
    env.pop("SER_VOSK_MODEL", None)
    listed = subprocess.run([sys.executable, "-m", "streamer.cli.live", "--list-devices"], env=env, capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert listed.returncode == 0 and "pulse" in listed.stdout
    proc = subprocess.Popen([sys.executable, "-m", "streamer.cli.live", "--device", "pulse", "--no-dashboard", "--log", str(log),
                             "--record", str(rec)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and "session_start" in log.read_text()):
        time.sleep(0.2)
    time.sleep(1.0)
    subprocess.run(["paplay", "-d", "vspk", str(played)], env=virtual_mic, check=True, timeout=60)
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "microphone: pulse" in err
    contents = read_log(log)
    assert contents.complete and not contents.skipped
    windows = contents.of_type("window")
    assert len(windows) >= 2, err
    said = " ".join(w["transcript"] for w in windows)
    assert said.count("quick") >= 2, said  # the recording was played twice
    end = contents.of_type("session_end")[0]
    assert end["counters"].get("audio_dropped_samples", 0) == 0
    assert sf.info(rec).samplerate == 16000 and sf.info(rec).duration > 8


def test_device_lost_mid_session_ends_cleanly(tmp_path, virtual_mic, speech_wav, text_model, audio_model):
    log = tmp_path / "lost.ndjson"
    env = dict(virtual_mic, PULSE_SOURCE="vspk.monitor", HF_HUB_OFFLINE="1", SER_MODELS_DIR=str(tmp_path / "none"))
    env.pop("SER_VOSK_MODEL", None)
    proc = subprocess.Popen([sys.executable, "-m", "streamer.cli.live", "--device", "pulse", "--no-dashboard", "--log", str(log)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and "session_start" in log.read_text()):
        time.sleep(0.2)
    subprocess.run(["paplay", "-d", "vspk", str(speech_wav)], env=virtual_mic, check=True, timeout=60)
    time.sleep(1.0)
    subprocess.run(["pactl", "unload-module", "module-null-sink"], env=virtual_mic, check=True, timeout=30)
    out, err = proc.communicate(timeout=120)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "input device" in errors[0], err
    contents = read_log(log)
    assert contents.complete and not contents.skipped
    assert contents.of_type("session_end")[0]["error"]


def test_overflow_flags_are_counted_not_fatal():
    sd = pytest.importorskip("sounddevice")
    import numpy as np

    from streamer.core.counters import Counters
    from streamer.live.ringbuffer import RingBuffer
    from streamer.live.sources import MicrophoneSource

    src = object.__new__(MicrophoneSource)  # the callback alone, without a device
    src.counters, src.ring = Counters(), RingBuffer(1600)
    block = np.ones((480, 1), np.int16)
    for _ in range(3):
        src._callback(block, 480, None, sd.CallbackFlags(sd._lib.paInputOverflow))
    src._callback(block, 480, None, sd.CallbackFlags())
    assert src.counters.get("portaudio_input_overflow") == 3
    assert src.ring.pending() == 1600 and src.ring.dropped == 4 * 480 - 1600

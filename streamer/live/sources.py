"""Audio sources with one interface: 16 kHz mono int16 :class:`Chunk` s, stream-indexed.

- :class:`MicrophoneSource`: a sounddevice ``InputStream``. Its callback only copies into a
  :class:`RingBuffer` and counts PortAudio status flags: it never blocks, logs or raises.
  A device that cannot do 16 kHz is opened at its own rate and resampled outside the callback.
- :class:`FileSource`: any soundfile-readable file, downmixed and resampled, paced in real time
  or as fast as the pipeline takes it (``fast``).

``read(timeout)`` returns the next chunk or None; ``done`` is True once no more audio will
come (end of file, device lost: ``error`` then says why).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from streamer.audio import SAMPLE_RATE
from streamer.errors import AudioInputError, MissingDependency
from streamer.live.counters import Counters
from streamer.live.messages import Chunk
from streamer.live.ringbuffer import RingBuffer

log = logging.getLogger(__name__)

CHUNK = SAMPLE_RATE // 10  # 100 ms


def _sounddevice():
    try:
        import sounddevice as sd
    except ImportError as exc:
        raise MissingDependency("sounddevice", "microphone input") from exc
    except OSError as exc:  # the PortAudio library is missing
        raise MissingDependency("sounddevice", f"microphone input (PortAudio: {exc}; apt-get install libportaudio2)") from exc
    return sd


def parse_device(text: str | None) -> int | str | None:
    """``--device``: a number is a device index, anything else part of a device name."""
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else text


NO_INPUT_HELP = ("no audio input device found. On Linux, PortAudio reaches microphones through ALSA and "
                 "PulseAudio/PipeWire: check that the sound server runs (`pactl info`), that your user is in the "
                 "`audio` group (`sudo usermod -aG audio $USER`, then log in again) and that `arecord -l` lists a "
                 "capture device; or analyse a recording with --file")


def input_devices(sd=None) -> list[dict]:
    """The devices that can record."""
    sd = sd or _sounddevice()
    return [d for d in sd.query_devices() if d.get("max_input_channels", 0) > 0]


def list_devices() -> str:
    """The device table, with the default input marked; no input device is an AudioInputError."""
    sd = _sounddevice()
    if not input_devices(sd):
        raise AudioInputError(NO_INPUT_HELP)
    return str(sd.query_devices())


def _default_input_name(sd) -> str:
    try:
        return f"the system default input device ({sd.query_devices(kind='input')['name']})"
    except (ValueError, sd.PortAudioError):
        return "the system default input device"


class _Resampler:
    """Streaming int16 resampler to 16 kHz (soxr), keeping the output sample count."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.out = 0
        self._stream = None
        if rate != SAMPLE_RATE:
            import soxr

            self._stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            y = x
        else:
            y = self._stream.resample_chunk(x.astype(np.float32), last=last)
            y = np.clip(np.round(y), -32768, 32767).astype(np.int16)
        self.out += len(y)
        return y


class MicrophoneSource:
    def __init__(self, device: int | str | None, counters: Counters, buffer_seconds: float = 10.0,
                 blocksize: int = 0) -> None:
        sd = _sounddevice()
        self.counters = counters
        self.error: str | None = None
        self._stopped = False
        if not input_devices(sd):
            raise AudioInputError(NO_INPUT_HELP)
        try:
            info = sd.query_devices(device, "input")
        except (ValueError, sd.PortAudioError) as exc:
            what = _default_input_name(sd) if device is None else f"input device {device!r}"
            raise AudioInputError(f"{what} not found ({exc}); `ser-live --list-devices` lists them") from exc
        self.name = f"microphone: {info['name']}"
        rate = SAMPLE_RATE
        try:
            sd.check_input_settings(device=device, channels=1, dtype="int16", samplerate=SAMPLE_RATE)
        except (ValueError, sd.PortAudioError):
            rate = int(info["default_samplerate"])  # resampled to 16 kHz outside the callback
        self.rate = rate
        self.ring = RingBuffer(int(buffer_seconds * rate))
        self._resample = _Resampler(rate)
        self._finished = threading.Event()
        try:
            self.stream = sd.InputStream(device=device, channels=1, samplerate=rate, dtype="int16", blocksize=blocksize,
                                         callback=self._callback, finished_callback=self._finished.set)
        except (ValueError, sd.PortAudioError) as exc:
            raise AudioInputError(f"cannot open input device {device!r} at {rate} Hz ({exc}); "
                                  "`ser-live --list-devices` lists the devices") from exc

    def _callback(self, indata, frames, time_info, status) -> None:
        # Only copy and count: never block, log or raise here.
        if status:
            if status.input_overflow:
                self.counters.add("portaudio_input_overflow")
            if status.input_underflow:
                self.counters.add("portaudio_input_underflow")
        self.ring.write(indata[:, 0])

    def start(self) -> None:
        self.stream.start()

    @property
    def dropped_samples(self) -> int:
        return self.ring.dropped

    @property
    def done(self) -> bool:
        if self._stopped:
            return self.ring.pending() == 0
        if self._finished.is_set() or not self.stream.active:
            if self.error is None:
                self.error = "the input device stopped delivering audio (disconnected?)"
            return self.ring.pending() == 0
        return False

    def read(self, timeout: float = 0.1) -> Chunk | None:
        deadline = time.monotonic() + timeout
        while True:
            raw = self.ring.read()
            if raw is not None:
                start = self._resample.out if self.rate != SAMPLE_RATE else raw.start
                y = self._resample(raw.samples)
                return Chunk(start, y) if len(y) else None
            if time.monotonic() >= deadline or self.done:
                return None
            time.sleep(0.01)

    def stop(self) -> None:
        self._stopped = True
        try:
            self.stream.stop()
            self.stream.close()
        except Exception:  # the device may already be gone
            pass


class FileSource:
    def __init__(self, path: str | Path, fast: bool = False, chunk: int = CHUNK, channel: int | None = None) -> None:
        """``channel`` None downmixes; a number reads that channel alone (a stereo call's side)."""
        import soundfile as sf

        self.path = Path(path)
        self.fast = fast
        self.error: str | None = None
        if not self.path.is_file():
            raise AudioInputError(f"no such audio file: {self.path}")
        try:
            self._file = sf.SoundFile(str(self.path))
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            raise AudioInputError(f"cannot read {self.path} as audio ({exc}); give a WAV, FLAC, OGG or MP3 file") from exc
        if self._file.frames == 0:
            raise AudioInputError(f"{self.path} holds no audio")
        if channel is not None and not 0 <= channel < self._file.channels:
            raise AudioInputError(f"{self.path} has {self._file.channels} channel(s), no channel {channel}")
        self.channel = channel
        self.channels = self._file.channels
        self.name = f"file: {self.path.name}" + (f" (channel {channel})" if channel is not None else "")
        self.rate = self._file.samplerate
        self.duration_s = self._file.frames / self.rate
        self._block = max(1, int(round(chunk * self.rate / SAMPLE_RATE)))
        self._resample = _Resampler(self.rate)
        self._next = 0
        self._eof = False
        self._t0: float | None = None
        self.dropped_samples = 0

    def start(self) -> None:
        self._t0 = time.monotonic()

    @property
    def done(self) -> bool:
        return self._eof

    def read(self, timeout: float = 0.1) -> Chunk | None:
        if self._eof:
            return None
        try:
            block = self._file.read(self._block, dtype="float32", always_2d=True)
        except Exception as exc:  # a truncated or corrupt file fails mid-read
            self.error = f"{self.path} is damaged after {self._next / SAMPLE_RATE:.1f} s ({exc})"
            self._eof = True
            return None
        last = len(block) < self._block
        if not len(block):
            x = np.zeros(0, np.float32)
        else:
            x = block[:, self.channel] if self.channel is not None else block.mean(axis=1)
        x = np.clip(np.nan_to_num(x) * 32768.0, -32768, 32767)
        start = self._resample.out
        y = self._resample(x, last=last)
        if last:
            self._eof = True
            self._file.close()
        if not self.fast and self._t0 is not None:
            wait = self._t0 + (start + len(y)) / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        return Chunk(start, y.astype(np.int16)) if len(y) else None

    def stop(self) -> None:
        self._eof = True
        if not self._file.closed:
            self._file.close()

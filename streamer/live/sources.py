"""Audio sources with one interface: 16 kHz mono int16 :class:`Chunk` s, stream-indexed.

- :class:`MicrophoneSource`: a sounddevice ``InputStream``. Its callback only copies into a
  :class:`RingBuffer` and counts PortAudio status flags: it never blocks, logs or raises.
  A device that cannot do 16 kHz is opened at its own rate and resampled outside the callback.
- :class:`FileSource`: any soundfile-readable file, decoded whole once (as ``load_audio`` does,
  so the same samples whatever the chunk size), paced in real time or as fast as the pipeline
  takes it (``fast``).

``read(timeout)`` returns the next chunk or None; ``done`` is True once no more audio will
come (end of file, device lost: ``error`` then says why).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from streamer.core.messages import SAMPLE_RATE
from streamer.core.errors import AudioInputError, MissingDependency
from streamer.core.counters import Counters
from streamer.core.messages import Chunk
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


class RingReader:
    """Reads a :class:`RingBuffer` filled at ``rate`` Hz as 16 kHz :class:`Chunk` s, gap aware.

    A chunk's start is the 16 kHz index of its first sample: ``raw start * 16000 // rate``
    where audio was lost to a full ring (the resampler starts afresh there, its few pending
    samples dropped with the lost audio), else where the previous chunk ended. So a drop
    leaves a gap in time and never pulls later audio back; ``gaps`` counts them.

    >>> rb = RingBuffer(4000); reader = RingReader(rb, 8000)
    >>> rb.write(np.zeros(3200, np.int16)); c = reader.read(); c.start
    0
    >>> rb.write(np.zeros(8000, np.int16))  # 4,000 samples overwritten before they were read
    >>> c = reader.read(); tail = reader.flush(); c.start, tail.start + len(tail.samples), reader.gaps
    (14400, 22400, 1)
    """

    def __init__(self, ring: RingBuffer, rate: int) -> None:
        self.ring = ring
        self.rate = int(rate)
        self.gaps = 0
        self._stream = None
        self._next_raw = 0  # the raw index the resampler expects next
        self._pos = 0       # the 16 kHz index of the resampler's next output sample

    def _resampler(self):
        if self._stream is None:
            import soxr

            self._stream = soxr.ResampleStream(self.rate, SAMPLE_RATE, 1, dtype="float32")
        return self._stream

    def _emit(self, x: np.ndarray, last: bool = False) -> Chunk | None:
        y = self._resampler().resample_chunk(x.astype(np.float32), last=last)
        y = np.clip(np.round(y), -32768, 32767).astype(np.int16)
        start = self._pos
        self._pos += len(y)
        return Chunk(start, y) if len(y) else None

    def read(self) -> Chunk | None:
        """The unread audio as one 16 kHz chunk, or None when there is none (yet)."""
        raw = self.ring.read()
        if raw is None or self.rate == SAMPLE_RATE:
            return raw
        if raw.start != self._next_raw:  # audio lost to a full ring: a gap, and a fresh resampler
            self.gaps += 1
            self._stream = None
            self._pos = raw.start * SAMPLE_RATE // self.rate
        self._next_raw = raw.start + len(raw.samples)
        return self._emit(raw.samples)

    def flush(self) -> Chunk | None:
        """The resampler's last samples, once no more audio will come."""
        if self.rate == SAMPLE_RATE or self._stream is None:
            return None
        chunk = self._emit(np.zeros(0, np.int16), last=True)
        self._stream = None
        return chunk


class PushSource:
    """Audio pushed in by someone else (a server's protocol handler, on any thread) at
    ``rate`` Hz, read as 16 kHz chunks like a microphone: a bounded :class:`RingBuffer` in
    between, so when the reader falls behind the oldest audio is dropped and counted
    (``dropped_samples``), and time keeps its place. ``end()`` says no more will come.

    >>> src = PushSource("call", 8000); src.write(np.zeros(800, np.int16)); src.end()
    >>> chunks = [src.read(0.0) for _ in range(3)]
    >>> [(c.start, len(c.samples)) for c in chunks if c], src.done
    ([(0, 1600)], True)

    With ``gather_s`` a read waits until that much audio is there, or ``gather_s`` has passed:

    >>> src = PushSource("call", 16000, gather_s=0.1)
    >>> for _ in range(5): src.write(np.zeros(320, np.int16))  # five 20 ms frames
    >>> len(src.read(1.0).samples)  # one read of 100 ms
    1600
    >>> src.write(np.zeros(320, np.int16)); t0 = time.monotonic(); len(src.read(5.0).samples)
    320
    >>> 0.09 < time.monotonic() - t0 < 4.0  # what came, once gather_s passed (not the read's 5 s)
    True
    """

    def __init__(self, name: str, rate: int = SAMPLE_RATE, buffer_seconds: float = 10.0, gather_s: float = 0.0) -> None:
        self.name = name
        self.rate = int(rate)
        self.error: str | None = None
        self.ring = RingBuffer(int(buffer_seconds * self.rate))
        self.reader = RingReader(self.ring, self.rate)
        # Read at least this much at once (or what came within gather_s): a call's 20 ms frames
        # then wake the reader once per gather_s, not once each. The results do not change (the
        # analysis is independent of chunk size); a window closes up to gather_s later.
        self.gather_s = float(gather_s)
        self.gather = max(1, int(self.gather_s * self.rate))
        self._ended = threading.Event()
        self._flushed = False
        self._more = threading.Event()

    def write(self, samples: np.ndarray) -> None:
        if not self._ended.is_set():
            self.ring.write(np.asarray(samples, np.int16))
            if self.gather == 1 or self.ring.pending() >= self.gather:
                self._more.set()

    def end(self, error: str | None = None) -> None:
        if error and self.error is None:
            self.error = error
        self._ended.set()
        self._more.set()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.end()

    @property
    def dropped_samples(self) -> int:
        return self.ring.dropped

    @property
    def written_samples(self) -> int:
        """Samples pushed in so far, at the source's rate (a stream that stops sending stops this)."""
        return self.ring.written

    @property
    def done(self) -> bool:
        return self._ended.is_set() and self.ring.pending() == 0 and self._flushed

    def read(self, timeout: float = 0.1) -> Chunk | None:
        deadline = time.monotonic() + timeout
        waited = False  # a wait of gather_s passed: read what there is
        while True:
            self._more.clear()
            pending = self.ring.pending()
            if pending and (pending >= self.gather or waited or self._ended.is_set()):
                chunk = self.reader.read()
                if chunk is not None:
                    return chunk
                continue
            if not pending and self._ended.is_set():
                if not self._flushed:  # the resampler's last samples
                    self._flushed = True
                    return self.reader.flush()
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                if not pending:
                    return None
                waited = True
                continue
            if pending:  # fewer than gather: wait for more, at most gather_s
                waited = not self._more.wait(min(left, self.gather_s))
            else:
                self._more.wait(left)


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
        self.reader = RingReader(self.ring, rate)
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
            if self.ring.pending():
                chunk = self.reader.read()
                if chunk is not None:
                    return chunk
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
    """A file decoded once, whole (:func:`streamer.audio.io.decode_file`), served in chunks.

    The chunks are the int16 form of exactly what ``load_audio`` returns, whatever ``chunk``
    is: one decoder call and one resampling per file, so an MP3 read in 100 ms chunks is
    not re-decoded at each chunk (see ``streamer.audio.io`` for why that mattered, and for
    the memory it takes: 115 MB an hour kept, more while decoding). A file damaged part way
    serves the audio before the damage, then ``error`` says where and how to fix it.
    """

    def __init__(self, path: str | Path, fast: bool = False, chunk: int = CHUNK, channel: int | None = None) -> None:
        """``chunk``: samples per chunk at 16 kHz. ``channel`` None downmixes; a number reads
        that channel alone (a stereo call's side)."""
        from streamer.audio.io import decode_file, to_int16

        self.path = Path(path)
        self.fast = fast
        decoded = decode_file(self.path, channel=channel)
        self.error: str | None = decoded.damage
        self.channel = channel
        self.channels = decoded.channels
        self.name = f"file: {self.path.name}" + (f" (channel {channel})" if channel is not None else "")
        self.rate = decoded.source_rate
        self._samples = to_int16(decoded.samples)
        del decoded
        self.duration_s = len(self._samples) / SAMPLE_RATE
        self._chunk = max(1, int(chunk))
        self._next = 0
        self._t0: float | None = None
        self.dropped_samples = 0

    def start(self) -> None:
        self._t0 = time.monotonic()

    @property
    def done(self) -> bool:
        return self._next >= len(self._samples)

    def read(self, timeout: float = 0.1) -> Chunk | None:
        """The next chunk; paced to real time (unless ``fast``) once :meth:`start` was called."""
        if self.done:
            return None
        start = self._next
        y = self._samples[start:start + self._chunk].copy()
        self._next = start + len(y)
        if not self.fast and self._t0 is not None:
            wait = self._t0 + self._next / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        return Chunk(start, y)

    def stop(self) -> None:
        self._next = len(self._samples)

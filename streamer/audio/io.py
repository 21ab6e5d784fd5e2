"""Any audio file or array -> float32 16 kHz mono, with clear errors for bad input.

Every file is decoded one way, by :func:`decode_file`: libsndfile (soundfile) reads the whole
file in **one** call, the channels are downmixed (or one is picked), and soxr resamples the
whole signal at once. :func:`load_audio` and the live :class:`~streamer.live.sources.FileSource`
both use it, so a file gives the same samples whatever size of blocks it is later served in.

Why one call: python-soundfile seeks to the current position after every ``read``, and
libsndfile's MP3 decoder answers a seek by restarting libmpg123 there, without the layer III
bit reservoir. Reading an MP3 in 100 ms blocks therefore printed ``part2_3_length too large``
lines on stderr and changed the samples (relative RMS difference 3e-4 at 100 ms blocks, 1.5e-2
at 10 ms, on a sox-made 16 kHz MP3). WAV, FLAC and OGG decode the same in any blocks, but
they take the same path.

Memory and time: the whole file is held while it is decoded, as float32 at its own rate and
channel count, beside its downmix (1 h of 44.1 kHz stereo: 1.27 GB + 0.64 GB for a moment), then
as float32 mono at 16 kHz (1 h: 230 MB; ``FileSource`` keeps it as int16, 115 MB). A 9.3 min
44.1 kHz stereo MP3 decodes and resamples in 1.4 s with a 324 MB peak RSS. Files here are
recordings of bounded length; split longer ones (``sox long.wav part.wav trim 0 3600 : newfile
: restart``).

What C decoders write to file descriptor 2 while a file is decoded (libmpg123's notes on a
damaged MP3) goes to this module's logger, and one warning says the file was repaired; any
other text written there meanwhile (another thread's, Python's) is passed on to stderr.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from streamer.core.messages import SAMPLE_RATE
from streamer.core.errors import AudioInputError

log = logging.getLogger(__name__)

# Blocks for re-reading a file whose decoder failed part way: 4 MPEG layer III frames.
SALVAGE_FRAMES = 4 * 1152
# What libmpg123 prints: "[src/libmpg123/layer3.c:...] error: ...", "Note: Trying to resync...".
_DECODER_LINE = re.compile(r"^(\[[^\]]*mpg123[^\]]*\]|Note: |Warning: |Error: |Big trouble)")
_FD2_LOCK = threading.Lock()


def resample(x: NDArray[np.float32], sr_in: int, sr_out: int = SAMPLE_RATE) -> NDArray[np.float32]:
    """Resample a mono float signal (soxr, high quality)."""
    if sr_in == sr_out:
        return x
    if sr_in <= 0:
        raise AudioInputError(f"invalid sample rate {sr_in} Hz")
    import soxr

    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def to_mono_float(x: ArrayLike, sample_rate: int, *, target_rate: int = SAMPLE_RATE) -> NDArray[np.float32]:
    """Downmix (channels last or first, whichever is shorter), convert ints to [-1, 1],
    resample to ``target_rate``. Raises AudioInputError on NaN/inf or more than 2 dims.

    >>> to_mono_float(np.array([[0, 32767], [0, 32767]], dtype=np.int16), SAMPLE_RATE).round(3).tolist()
    [0.5, 0.5]
    """
    a = np.asarray(x)
    if a.ndim not in (1, 2):
        raise AudioInputError(f"audio must be 1-D (mono) or 2-D (multichannel), got shape {a.shape}")
    if a.dtype.kind == "i":
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max + 1)
    elif a.dtype.kind == "u":
        half = (np.iinfo(a.dtype).max + 1) / 2
        a = (a.astype(np.float32) - half) / half
    if a.ndim == 2:
        # (frames, channels) as soundfile gives, or (channels, frames) as librosa gives
        a = a.mean(axis=1 if a.shape[1] <= a.shape[0] else 0)
    a = a.astype(np.float32, copy=False)
    if a.size and not np.isfinite(a).all():
        raise AudioInputError("audio contains NaN or infinite samples")
    return resample(a, int(sample_rate), target_rate)


def to_int16(x: NDArray[np.floating]) -> NDArray[np.int16]:
    """Float samples in [-1, 1] -> int16, rounded and clipped (full scale 32768).

    >>> to_int16(np.array([0.0, 0.5, -1.0, 1.0, 2.0], np.float32)).tolist()
    [0, 16384, -32768, 32767, 32767]
    """
    return np.clip(np.round(np.asarray(x, np.float32) * 32768.0), -32768, 32767).astype(np.int16)


@dataclass(frozen=True)
class Decoded:
    """A decoded file: ``samples`` float32 mono (or the chosen channel) at the target rate.

    ``damage`` is None for a sound file; for one whose decoder failed part way it says where
    and how to fix it, and ``samples`` hold the audio before the damage.
    """

    samples: NDArray[np.float32]
    source_rate: int
    channels: int
    damage: str | None = None


@contextmanager
def _decoder_messages() -> Iterator[list[str]]:
    """Collect what C libraries write to file descriptor 2 while the block runs.

    Lines that look like a decoder's (libmpg123's) are put in the yielded list; any other
    text is written back to stderr once the block ends, so Python errors and other threads'
    output are delayed, never lost. Exceptions pass through with fd 2 restored. One capture
    at a time (a lock), as fd 2 is shared by the whole process.
    """
    lines: list[str] = []
    with _FD2_LOCK:
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no usable fd 2 (a daemon): nothing to keep quiet
            yield lines
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield lines
            finally:
                if sys.stderr is not None:
                    try:
                        sys.stderr.flush()
                    except (OSError, ValueError):
                        pass
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                others = []
                for line in sink.read().decode("utf-8", errors="replace").splitlines():
                    (lines if _DECODER_LINE.match(line) else others).append(line)
                if others:
                    os.write(2, ("\n".join(others) + "\n").encode())


def _salvage(path: Path, channels: int) -> NDArray[np.float32]:
    """Re-read a file whose decoder failed, in fixed blocks, keeping the audio before the failure."""
    import soundfile as sf

    blocks = []
    with sf.SoundFile(str(path)) as f:
        while True:
            try:
                block = f.read(SALVAGE_FRAMES, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError):
                break
            if not len(block):
                break
            blocks.append(block)
    return np.concatenate(blocks) if blocks else np.zeros((0, channels), np.float32)


def decode_file(path: str | Path, *, channel: int | None = None, target_rate: int = SAMPLE_RATE) -> Decoded:
    """Decode a whole file (WAV, FLAC, OGG/Opus, MP3, ...) to float32 mono at ``target_rate``.

    ``channel`` None downmixes (mean of the channels); a number keeps that channel alone.
    A missing, unreadable or empty file, a channel the file lacks, or NaN samples are an
    AudioInputError naming the file; a decoder failure part way is ``Decoded.damage``.
    """
    import soundfile as sf

    path = Path(path)
    if path.is_dir():
        raise AudioInputError(f"{path} is a folder, not an audio file: give one file (ser-analyze takes folders)")
    if not path.is_file():
        raise AudioInputError(f"no such audio file: {path}")
    damage, failure = None, None
    with _decoder_messages() as messages:
        try:
            f = sf.SoundFile(str(path))
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            raise AudioInputError(f"cannot read {path} as audio ({exc}); give a WAV, FLAC, OGG or MP3 file") from exc
        with f:
            rate, channels = f.samplerate, f.channels
            if channel is not None and not 0 <= channel < channels:
                raise AudioInputError(f"{path} has {channels} channel(s), no channel {channel}")
            try:
                frames = f.read(dtype="float32", always_2d=True)  # one call: see the module notes
            except (sf.LibsndfileError, RuntimeError) as exc:
                failure = exc
        if failure is not None:
            frames = _salvage(path, channels)
            damage = (f"{path} is damaged after {len(frames) / rate:.1f} s ({failure}); "
                      "copy it again from where it came from, or re-export it")
    if messages:
        log.warning("%s: the decoder repaired damaged data (%d message(s), shown at debug level)", path, len(messages))
        for line in messages:
            log.debug("%s: %s", path, line)
    if frames.shape[0] == 0:
        raise AudioInputError(damage or f"{path} holds no audio")
    if channel is not None or channels == 1:
        x = np.ascontiguousarray(frames[:, channel or 0])
    else:
        x = frames.mean(axis=1, dtype=np.float32)
    del frames
    if not np.isfinite(x).all():
        raise AudioInputError(f"{path} contains NaN or infinite samples; re-export it")
    return Decoded(resample(x, rate, target_rate), rate, channels, damage)


def file_info(path: str | Path):
    """soundfile's header info (duration, channels, rate), read with the decoder's notes kept
    off the terminal like :func:`decode_file`; an unreadable file is an AudioInputError."""
    import soundfile as sf

    with _decoder_messages():
        try:
            return sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            raise AudioInputError(f"cannot read {path} as audio ({exc}); give a WAV, FLAC, OGG or MP3 file") from exc


def load_audio(path: str | Path, *, target_rate: int = SAMPLE_RATE) -> NDArray[np.float32]:
    """Read any soundfile-readable file as float32 mono at ``target_rate`` (:func:`decode_file`).

    A damaged file is an AudioInputError here: callers that can use the audio before the
    damage (the live file source) call :func:`decode_file` themselves.
    """
    decoded = decode_file(path, target_rate=target_rate)
    if decoded.damage:
        raise AudioInputError(decoded.damage)
    return decoded.samples

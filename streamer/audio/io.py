"""Any audio file or array -> float32 16 kHz mono, with clear errors for bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from streamer.audio import SAMPLE_RATE
from streamer.errors import AudioInputError

log = logging.getLogger(__name__)


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

    >>> to_mono_float(np.array([[0, 32767], [0, 32767]], dtype=np.int16), 16000).round(3).tolist()
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


def load_audio(path: str | Path, *, target_rate: int = SAMPLE_RATE) -> NDArray[np.float32]:
    """Read any soundfile-readable file as float32 mono at ``target_rate``."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioInputError(f"{path}: no such file")
    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioInputError(f"{path}: not a readable audio file ({exc}); convert it to WAV or FLAC") from exc
    if x.shape[0] == 0:
        raise AudioInputError(f"{path}: the file holds no audio samples")
    return to_mono_float(x, sr, target_rate=target_rate)

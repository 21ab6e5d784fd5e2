"""Pure feature functions over float32 16 kHz mono speech.

Frame rate is 50 per second (hop 320 samples, 20 ms), the same as the Whisper encoder's
frames, so the two inputs of the audio model line up frame by frame:

>>> x = np.zeros(40_000, np.float32)
>>> n_frames(len(x)), prosody_frames(x).shape
(126, (126, 18))
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from streamer.audio import dsp
from streamer.core.messages import SAMPLE_RATE

HOP = 320  # 20 ms: one Whisper encoder frame
N_FFT = 512
PITCH_FRAME = 1024  # at 16 kHz: two periods of the lowest pitch (60 Hz); YIN runs at 8 kHz on half
FMIN, FMAX = 60.0, 500.0
TARGET_DBFS = -23.0
MAX_GAIN_DB = 40.0
N_MFCC = 13
PROSODY_NAMES: tuple[str, ...] = (
    *(f"mfcc{i}" for i in range(N_MFCC)),
    "log_rms",
    "zcr",
    "centroid",
    "f0_semitones",
    "voiced",
)
N_PROSODY = len(PROSODY_NAMES)
_EPS = 1e-10


def n_frames(n_samples: int) -> int:
    """Frames of 20 ms (centred) that features give for ``n_samples``."""
    return 1 + n_samples // HOP


def frame_rms_db(x: NDArray[np.float32], hop: int = HOP, frame: int = N_FFT) -> NDArray[np.float32]:
    """RMS level per frame in dBFS (centred frames)."""
    rms = dsp.rms(x, frame, hop)
    return (20.0 * np.log10(rms + _EPS)).astype(np.float32)


def trim_silence(x: NDArray[np.float32], top_db: float = 40.0) -> NDArray[np.float32]:
    """Drop leading and trailing audio more than ``top_db`` below the loudest 10 ms frame."""
    if x.size == 0:
        return x
    hop = SAMPLE_RATE // 100
    db = frame_rms_db(x, hop=hop, frame=2 * hop)
    loud = np.flatnonzero(db > db.max() - top_db)
    if loud.size == 0 or db.max() < -90.0:  # digital silence
        return x[:0]
    start = max(0, (loud[0] - 1) * hop)
    end = min(x.size, (loud[-1] + 2) * hop)
    return x[start:end]


def normalize_level(x: NDArray[np.float32], target_dbfs: float = TARGET_DBFS, active_db: float = 30.0) -> NDArray[np.float32]:
    """Scale so the active speech (frames within ``active_db`` of the loudest) sits at
    ``target_dbfs`` RMS. Gain is bounded by MAX_GAIN_DB so silence is not blown up.

    >>> t = np.arange(16000) / 16000
    >>> quiet = (0.01 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    >>> loud = normalize_level(quiet)
    >>> round(float(20 * np.log10(np.sqrt(np.mean(loud ** 2)))))
    -23
    """
    if x.size == 0:
        return x
    db = frame_rms_db(x)
    active = db > db.max() - active_db
    power = np.mean(10.0 ** (db[active] / 10.0))
    level = 10.0 * np.log10(power + _EPS)
    gain_db = float(np.clip(target_dbfs - level, -MAX_GAIN_DB, MAX_GAIN_DB))
    return (x * 10.0 ** (gain_db / 20.0)).astype(np.float32)


def prepare(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Trim silence at both ends, then normalise the level of the speech that is left."""
    return normalize_level(trim_silence(x))


@lru_cache(maxsize=1)
def _spectral_constants() -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    mel = dsp.mel_filters(SAMPLE_RATE, N_FFT, 40)
    freqs = np.linspace(0.0, SAMPLE_RATE / 2, 1 + N_FFT // 2).astype(np.float32)
    return mel, freqs


def prosody_frames(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """(T, 18) frame features: MFCC 0-12, log RMS, ZCR, spectral centroid, pitch, voicing.

    One STFT (32 ms Hann, 20 ms hop) gives MFCC and centroid; RMS and ZCR come from the
    same frames in the time domain. Pitch is YIN in semitones above 100 Hz / 12 on voiced
    frames, 0 elsewhere. Values are raw; the model standardises them with statistics of its
    training set. (The primitives are :mod:`streamer.audio.dsp`, equal to librosa's.)
    """
    import soxr
    from scipy.fft import dct

    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.size < PITCH_FRAME:
        x = np.pad(x, (0, PITCH_FRAME - x.size))
    t = n_frames(x.size)
    mel_basis, freqs = _spectral_constants()
    mag = dsp.stft_magnitude(x, N_FFT, HOP)[:, :t]
    log_mel = 10.0 * np.log10(np.maximum(mel_basis @ (mag**2), _EPS))
    log_mel = np.maximum(log_mel, log_mel.max() - 80.0)
    mfcc = dct(log_mel, type=2, norm="ortho", axis=0)[:N_MFCC]
    centroid = (freqs @ mag) / np.maximum(mag.sum(axis=0), _EPS)
    frames = dsp.frames(np.pad(x, N_FFT // 2), N_FFT, HOP)[:, :t]
    rms_db = 10.0 * np.log10(np.mean(frames**2, axis=0) + _EPS)
    signs = np.signbit(frames)
    zcr = np.mean(signs[1:] != signs[:-1], axis=0)
    # YIN at 8 kHz: the same pitch track (within 0.3%) for half the cost of 16 kHz
    x8k = soxr.resample(x, SAMPLE_RATE, 8000)
    f0 = _fit(dsp.yin(x8k, FMIN, FMAX, 8000, PITCH_FRAME // 2, HOP // 2), t)
    voiced = (rms_db > rms_db.max() - 35.0) & (f0 < FMAX * 0.98) & (f0 > FMIN * 1.02)
    semis = np.where(voiced, np.log2(np.maximum(f0, 1.0) / 100.0), 0.0)
    cols = [mfcc.T / 100.0, (rms_db / 20.0)[:, None], zcr[:, None], (centroid / 4000.0)[:, None],
            semis[:, None], voiced[:, None]]
    return np.concatenate(cols, axis=1).astype(np.float32)


def _fit(a: NDArray, t: int) -> NDArray:
    """Crop or edge-pad the last axis to t frames."""
    n = a.shape[-1]
    if n >= t:
        return a[..., :t]
    pad = [(0, 0)] * (a.ndim - 1) + [(0, t - n)]
    return np.pad(a, pad, mode="edge")


def log_mel(x: NDArray[np.float32], n_mels: int = 80, hop: int = 160) -> NDArray[np.float32]:
    """(n_mels, T) log-mel spectrogram in dB, 25 ms frames, ``hop`` samples apart (10 ms by
    default; for display and reports): librosa's ``power_to_db(melspectrogram(...), ref=1,
    top_db=80)``, with :mod:`streamer.audio.dsp`."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    mel = dsp.mel_filters(SAMPLE_RATE, 400, n_mels) @ (dsp.stft_magnitude(x, 400, hop).astype(np.float64) ** 2)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    return np.maximum(db, db.max() - 80.0).astype(np.float32)


def split_windows(n_samples: int, window: int, min_window: int) -> list[tuple[int, int]]:
    """Cut ``n_samples`` of speech into consecutive windows of ``window`` samples; a tail of
    at least ``min_window`` becomes a shorter last window, a shorter tail joins the last one.
    Speech shorter than ``min_window`` still gives one window (so every clip has a result).

    >>> split_windows(100, 40, 10), split_windows(85, 40, 10), split_windows(5, 40, 10)
    ([(0, 40), (40, 80), (80, 100)], [(0, 40), (40, 85)], [(0, 5)])
    """
    if n_samples <= 0:
        return []
    bounds = [(s, min(s + window, n_samples)) for s in range(0, n_samples, window)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_window:
        last = bounds.pop()
        bounds[-1] = (bounds[-1][0], last[1])
    return bounds

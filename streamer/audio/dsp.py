"""Signal-processing primitives in plain NumPy: framing, RMS, STFT magnitude, a Slaney mel
filterbank and YIN pitch.

They compute what librosa's ``util.frame``, ``feature.rms``, ``stft``, ``filters.mel`` and
``yin`` compute for the arguments this project uses (centred, zero-padded frames; periodic
Hann window), and the tests hold them to librosa's numbers. They exist because importing
librosa loads numba and LLVM: about 240 MB of resident memory in every ``ser-live`` process
for five small functions. librosa is still used for training-time augmentation and reports.

>>> x = np.zeros(1000, np.float32)
>>> frames(np.pad(x, 256), 512, 320).shape, rms(x, 512, 320).shape, stft_magnitude(x, 512, 320).shape
((512, 4), (4,), (257, 4))
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray


def frames(x: NDArray, frame_length: int, hop: int) -> NDArray:
    """(frame_length, n) view of ``x``: column j is ``x[j*hop : j*hop + frame_length]``.

    >>> frames(np.arange(6), 3, 2)
    array([[0, 2],
           [1, 3],
           [2, 4]])
    """
    if len(x) < frame_length:
        raise ValueError(f"input of {len(x)} samples is shorter than one frame ({frame_length})")
    return np.lib.stride_tricks.sliding_window_view(x, frame_length)[::hop].T


def _centred(x: NDArray, frame_length: int) -> NDArray:
    return np.pad(x, frame_length // 2)


def rms(x: NDArray[np.float32], frame_length: int, hop: int) -> NDArray[np.float32]:
    """RMS of centred, zero-padded frames.

    >>> rms(np.ones(2000, np.float32), 512, 320)[2]
    np.float32(1.0)
    """
    f = frames(_centred(np.asarray(x, np.float32), frame_length), frame_length, hop)
    return np.sqrt(np.mean(np.square(f, dtype=np.float32), axis=0)).astype(np.float32)


@lru_cache(maxsize=8)
def hann(n: int) -> NDArray[np.float64]:
    """Periodic Hann window (for spectral analysis), as ``scipy.signal.get_window('hann', n)``."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def stft_magnitude(x: NDArray[np.float32], n_fft: int, hop: int) -> NDArray[np.float32]:
    """(1 + n_fft // 2, frames) magnitude of the STFT of centred, zero-padded, Hann-windowed frames."""
    f = frames(_centred(np.asarray(x, np.float32), n_fft), n_fft, hop)
    spec = np.fft.rfft(hann(n_fft)[:, None] * f, axis=0).astype(np.complex64)
    return np.abs(spec)


def hz_to_mel(f: NDArray | float) -> NDArray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    mel = f / (200.0 / 3)
    log_step = np.log(6.4) / 27.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / log_step, mel)


def mel_to_hz(m: NDArray | float) -> NDArray:
    m = np.asarray(m, np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(log_step * (m - 15.0)), m * (200.0 / 3))


def mel_filters(sr: int, n_fft: int, n_mels: int) -> NDArray[np.float32]:
    """(n_mels, 1 + n_fft // 2) triangular filters from 0 to sr/2 on the Slaney mel scale,
    each normalised to unit area (Slaney's normalisation).

    >>> w = mel_filters(16000, 512, 40)
    >>> w.shape, bool((w >= 0).all())
    ((40, 257), True)
    """
    fft_freqs = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2.0), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def yin(x: NDArray[np.float32], fmin: float, fmax: float, sr: int, frame_length: int, hop: int,
        trough_threshold: float = 0.1) -> NDArray:
    """Fundamental frequency per centred frame by YIN (de Cheveigné and Kawahara, 2002): the
    cumulative-mean-normalised difference function, the first trough under
    ``trough_threshold`` (else the global minimum), refined by parabolic interpolation.

    >>> t = np.arange(8000) / 8000
    >>> f0 = yin(np.sin(2 * np.pi * 200 * t).astype(np.float32), 60, 500, 8000, 512, 160)
    >>> round(float(np.median(f0)))
    200
    """
    y = frames(_centred(np.asarray(x), frame_length), frame_length, hop)
    min_period = int(np.floor(sr / fmax))
    max_period = min(int(np.ceil(sr / fmin)), frame_length - 1)

    # Difference function from the autocorrelation (by FFT) and the running energy.
    from scipy.fft import next_fast_len

    n_pad = next_fast_len(2 * frame_length - 1, real=True)
    acf = np.fft.irfft(_abs2(np.fft.rfft(y, n=n_pad, axis=0)), n=n_pad, axis=0)[: max_period + 1]
    diff = np.cumsum(np.square(y), axis=0)
    diff[0] = 0
    diff[1: max_period + 1] = 2 * (acf[0:1] - acf[1: max_period + 1]) - diff[:max_period]
    lags = np.arange(1, max_period + 1)[:, None]
    cum_mean = np.cumsum(diff[1: max_period + 1], axis=0) / lags
    denom = cum_mean[min_period - 1: max_period]
    d = diff[min_period: max_period + 1] / (denom + np.finfo(denom.dtype).tiny)

    shifts = _parabolic_shifts(d)
    trough = np.zeros_like(d, dtype=bool)
    trough[1:-1] = (d[1:-1] < d[:-2]) & (d[1:-1] <= d[2:])
    trough[-1] = d[-1] < d[-2]
    trough[0] = d[0] < d[1]
    below = trough & (d < trough_threshold)
    period = np.argmax(below, axis=0)
    none_below = ~below.any(axis=0)
    period[none_below] = np.argmin(d, axis=0)[none_below]
    refined = min_period + period + np.take_along_axis(shifts, period[None], axis=0)[0]
    return sr / refined


def _abs2(z: NDArray) -> NDArray:
    return z.real ** 2 + z.imag ** 2


def _parabolic_shifts(d: NDArray) -> NDArray:
    """Offset of the vertex of the parabola through each point and its neighbours (0 where
    the vertex is more than one bin away, and at both ends)."""
    shifts = np.zeros_like(d)
    a = d[2:] + d[:-2] - 2 * d[1:-1]
    b = (d[2:] - d[:-2]) / 2
    ok = np.abs(b) < np.abs(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        shifts[1:-1] = np.where(ok, -b / np.where(ok, a, 1), 0)
    return shifts

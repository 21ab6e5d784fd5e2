"""Waveform augmentation for training (never applied at inference).

Every function takes float32 16 kHz mono and a numpy Generator, and returns float32 mono
at 16 kHz. :data:`COPIES` names the fixed set of augmented copies whose encoder frames
are cached per clip; a copy is made from its clip only, so it stays in its clip's split.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from streamer.core.messages import SAMPLE_RATE
from streamer.audio.io import resample

Signal = NDArray[np.float32]


def add_noise(x: Signal, rng: np.random.Generator, snr_db: tuple[float, float] = (10.0, 30.0)) -> Signal:
    """White or pink-ish noise at a random SNR relative to the signal's mean power."""
    snr = rng.uniform(*snr_db)
    noise = rng.standard_normal(x.size).astype(np.float32)
    if rng.random() < 0.5:  # pink-ish: integrate white noise a little
        noise = np.cumsum(noise) * 0.02
        noise -= np.convolve(noise, np.ones(401) / 401, mode="same")
    p_sig = float(np.mean(x**2)) + 1e-12
    p_noise = float(np.mean(noise**2)) + 1e-12
    return (x + noise * np.sqrt(p_sig / (p_noise * 10 ** (snr / 10)))).astype(np.float32)


def gain(x: Signal, rng: np.random.Generator, db: tuple[float, float] = (-20.0, 6.0)) -> Signal:
    return (x * 10 ** (rng.uniform(*db) / 20)).astype(np.float32)


def pitch_shift(x: Signal, rng: np.random.Generator, semitones: float = 2.0) -> Signal:
    import librosa

    steps = rng.uniform(-semitones, semitones)
    return librosa.effects.pitch_shift(x, sr=SAMPLE_RATE, n_steps=steps).astype(np.float32)


def time_stretch(x: Signal, rng: np.random.Generator, rates: tuple[float, float] = (0.85, 1.15)) -> Signal:
    import librosa

    return librosa.effects.time_stretch(x, rate=rng.uniform(*rates)).astype(np.float32)


def reverb(x: Signal, rng: np.random.Generator) -> Signal:
    """Convolve with a synthetic room impulse response (exponentially decaying noise)."""
    from scipy.signal import fftconvolve

    rt60 = rng.uniform(0.2, 0.7)
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    ir[0] = 1.0 / rng.uniform(0.3, 1.0)  # direct path against the tail
    ir /= np.sqrt(np.sum(ir**2))
    y = fftconvolve(x, ir)[: x.size]
    return (y * (np.sqrt(np.mean(x**2)) / (np.sqrt(np.mean(y**2)) + 1e-12))).astype(np.float32)


def telephone(x: Signal, rng: np.random.Generator | None = None) -> Signal:
    """Narrow-band telephone channel: 8 kHz, 300-3400 Hz band, 8-bit mu-law, back to 16 kHz."""
    from scipy.signal import butter, sosfilt

    y = resample(x, SAMPLE_RATE, 8000)
    sos = butter(6, [300, 3400], btype="bandpass", fs=8000, output="sos")
    y = sosfilt(sos, y).astype(np.float32)
    peak = float(np.max(np.abs(y))) + 1e-9
    scale = min(1.0, 0.99 / peak)  # the codec clips; keep inside its range
    mu = 255.0
    comp = np.sign(y * scale) * np.log1p(mu * np.abs(y * scale)) / np.log1p(mu)
    comp = np.round(comp * 127.5) / 127.5  # 8-bit code words
    y = np.sign(comp) * np.expm1(np.abs(comp) * np.log1p(mu)) / mu / scale
    return resample(y.astype(np.float32), 8000, SAMPLE_RATE)


Augment = Callable[[Signal, np.random.Generator], Signal]


def _chain(*steps: Augment) -> Augment:
    def run(x: Signal, rng: np.random.Generator) -> Signal:
        for step in steps:
            x = step(x, rng)
        return x

    return run


# The fixed augmented copies cached per clip (index 0 is the clean clip itself).
COPIES: dict[str, Augment] = {
    "telephone": _chain(gain, telephone),
    "noise_reverb": _chain(reverb, add_noise),
    "pitch_noise": _chain(pitch_shift, add_noise),
    "stretch_phone": _chain(time_stretch, telephone, add_noise),
}

"""Checking and preparing a stretch of audio for an emotion model: mono 16 kHz, not empty,
not silent, silence trimmed at both ends, the speech's level normalised.

>>> import numpy as np
>>> prepare_input(np.zeros(16000, np.float32), 16000)
Traceback (most recent call last):
...
streamer.audio.prepare.SilentAudio: silent audio window: no sound above -70 dBFS
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from streamer.audio.features import prepare
from streamer.audio.io import to_mono_float
from streamer.core.errors import AudioInputError

SILENCE_PEAK = 10 ** (-70 / 20)  # below -70 dBFS peak a window holds nothing to classify


class SilentAudio(AudioInputError):
    """The window holds no sound above the silence floor."""


def prepare_input(audio: ArrayLike, sample_rate: int) -> NDArray[np.float32]:
    """Mono 16 kHz, checked for emptiness and silence, trimmed and level-normalised."""
    x = to_mono_float(audio, sample_rate)
    if x.size == 0:
        raise AudioInputError("empty audio window: nothing to classify")
    if float(np.max(np.abs(x))) < SILENCE_PEAK:
        raise SilentAudio("silent audio window: no sound above -70 dBFS")
    y = prepare(x)
    if y.size == 0:
        raise SilentAudio("no speech left in the window after trimming silence")
    return y

"""Small measures of a stream: a chunk's level, a percentile of timings."""

from __future__ import annotations

import numpy as np


def level_db(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS (floor -90).

    >>> level_db(np.zeros(160, np.int16)), round(level_db(np.full(160, 16384, np.int16)), 1)
    (-90.0, -6.0)
    """
    if len(samples) == 0:
        return -90.0
    rms = float(np.sqrt(np.mean((samples.astype(np.float64) / 32768.0) ** 2)))
    return max(-90.0, float(20 * np.log10(rms))) if rms > 0 else -90.0


def percentile(values, q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if len(values) else None

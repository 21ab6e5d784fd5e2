"""The recording behind a session log, for the report's waveform and log-mel lanes.

A log made from a file names it (``session_start.file``: ``ser-analyze``, ``ser-live
--file``); ``ser-report --audio FILE`` gives one otherwise (``ser-live --record``'s
recording). A log split by channel (``session_start.channels``) gets each channel on its
own lane. Long recordings are drawn from a thinned form: a min/max envelope of at most
:data:`COLUMNS` points and a spectrogram of at most :data:`COLUMNS` frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamer.core.messages import SAMPLE_RATE

COLUMNS = 4000  # points across the figure's width, at most


@dataclass(frozen=True)
class LaneAudio:
    """One lane's recording, thinned for drawing: ``t`` (s) with ``low``/``high`` the envelope,
    and ``mel`` (n_mels, frames) in dB over [0, ``duration_s``]."""

    t: NDArray[np.float64]
    low: NDArray[np.float32]
    high: NDArray[np.float32]
    mel: NDArray[np.float32]
    duration_s: float


def thin(x: NDArray[np.float32], n_mels: int = 64) -> LaneAudio:
    """The envelope and log-mel spectrogram of 16 kHz samples ``x``.

    >>> a = thin(np.sin(np.arange(48000) / 5).astype(np.float32))
    >>> a.duration_s, len(a.t) <= COLUMNS, a.mel.shape[0], bool(a.high.max() > 0.9 and a.low.min() < -0.9)
    (3.0, True, 64, True)
    """
    from streamer.audio.features import log_mel

    x = np.ascontiguousarray(x, np.float32)
    n = max(1, len(x))
    step = max(1, -(-n // COLUMNS))
    pad = np.pad(x, (0, (-len(x)) % step)).reshape(-1, step)
    t = np.arange(len(pad)) * step / SAMPLE_RATE
    mel = log_mel(x, n_mels, hop=max(160, -(-n // COLUMNS)))
    return LaneAudio(t, pad.min(axis=1), pad.max(axis=1), mel, len(x) / SAMPLE_RATE)


def recording_of(start: dict, log_path: Path | None, given: Path | None = None) -> Path | None:
    """The audio file behind a log: ``given``, else the file its session_start names (as
    given, or beside the log), when it exists."""
    if given is not None:
        return given
    named = start.get("file")
    if not named:
        return None
    for p in (Path(named), (log_path.parent / named) if log_path else None):
        if p is not None and p.is_file():
            return p
    return None


def lane_audio(path: Path, lanes: list[str], channels: list[str] | None) -> dict[str, LaneAudio]:
    """Each lane's thinned recording: channel k for lane ``channels[k]``, else the mix."""
    from streamer.audio.io import decode_file

    out = {}
    for name in lanes:
        channel = channels.index(name) if channels and name in channels else None
        out[name] = thin(decode_file(path, channel=channel).samples)
    return out

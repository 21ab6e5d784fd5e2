"""Voice activity segmentation into fixed-length speech windows.

webrtcvad classifies fixed frames (10, 20 or 30 ms, aligned to the segment start). An
utterance starts when ``start_ratio`` of the last ``padding_ms`` of frames are voiced (those
frames are kept: the onset is not clipped) and ends when ``end_ratio`` of them are unvoiced.
Inside an utterance every ``window_samples`` of audio close a :class:`Window`; at its end the
rest becomes a final, shorter window when it holds at least ``min_window_samples`` (shorter
tails are counted in ``short_tails``). In long speech an utterance is closed at the first
window boundary at least ``max_utterance_samples`` after its start, and the next one starts
there. Every window carries its utterance's index; ``poll_ends()`` gives each closed
utterance as (index, end sample), after its windows.

Results depend only on the audio, never on how it was chunked: samples are re-framed
internally. A gap in sample indexes (audio dropped upstream) ends the current utterance.

Streaming contract: ``push(chunk)``, ``poll()``, ``flush()``, ``reset()``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from streamer.core.errors import ConfigError, MissingDependency
from streamer.core.messages import SAMPLE_RATE, Chunk, Window


@dataclass(frozen=True)
class VadConfig:
    """webrtcvad segmentation settings (``[vad]`` in config.toml)."""

    aggressiveness: int = 2
    frame_ms: int = 30
    padding_ms: int = 300
    start_ratio: float = 0.8
    end_ratio: float = 0.9

    def __post_init__(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ConfigError("config [vad] aggressiveness: must be 0, 1, 2 or 3")
        if self.frame_ms not in (10, 20, 30):
            raise ConfigError("config [vad] frame_ms: must be 10, 20 or 30 (webrtcvad frames)")
        if not self.frame_ms <= self.padding_ms <= 3000:
            raise ConfigError("config [vad] padding_ms: must be between frame_ms and 3000")
        for key in ("start_ratio", "end_ratio"):
            if not 0.0 < getattr(self, key) <= 1.0:
                raise ConfigError(f"config [vad] {key}: must be in (0, 1]")

    @property
    def frame_samples(self) -> int:
        return SAMPLE_RATE * self.frame_ms // 1000

    @property
    def padding_frames(self) -> int:
        return max(1, self.padding_ms // self.frame_ms)


def webrtc_classifier(aggressiveness: int) -> Callable[[NDArray[np.int16]], bool]:
    try:
        import webrtcvad
    except ImportError as exc:
        raise MissingDependency("webrtcvad-wheels", "voice activity detection") from exc
    vad = webrtcvad.Vad(aggressiveness)
    return lambda frame: vad.is_speech(frame.tobytes(), SAMPLE_RATE)


class VadSegmenter:
    def __init__(self, cfg: VadConfig, window_samples: int, min_window_samples: int,
                 is_speech: Callable[[NDArray[np.int16]], bool] | None = None,
                 max_utterance_samples: int | None = None) -> None:
        if not 0 < min_window_samples <= window_samples:
            raise ConfigError("min window must be positive and at most the window")
        self.max_utterance_samples = max_utterance_samples
        self.cfg = cfg
        self.window_samples = window_samples
        self.min_window_samples = min_window_samples
        self._is_speech = is_speech or webrtc_classifier(cfg.aggressiveness)
        self.short_tails = 0
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, np.int16)  # samples not yet framed
        self._pending_start = None  # stream index of _pending[0]
        self._pre: deque[tuple[int, NDArray[np.int16], bool]] = deque(maxlen=self.cfg.padding_frames)
        self._flags: deque[bool] = deque(maxlen=self.cfg.padding_frames)
        self._utt: list[NDArray[np.int16]] = []  # current utterance audio not yet in a window
        self._utt_start = 0
        self._utt_len = 0
        self._out: list[Window] = []
        self._ends: list[tuple[int, int]] = []  # closed utterances: (index, end sample)
        self._next_index = 0
        self._utterance = 0  # index of the open (or next) utterance
        self._utt_first = 0  # stream index where the open utterance started
        self._utt_windows = 0  # windows emitted for the open utterance
        self.in_speech = False

    # --- streaming contract ---------------------------------------------------------------
    def push(self, chunk: Chunk) -> None:
        if self._pending_start is not None and chunk.start != self._pending_start + len(self._pending):
            self._end_utterance()  # a gap: audio was lost upstream
            self._pending = np.zeros(0, np.int16)
            self._pending_start = None
        if self._pending_start is None:
            self._pending_start = chunk.start
        self._pending = np.concatenate([self._pending, np.asarray(chunk.samples, np.int16)])
        f = self.cfg.frame_samples
        n = len(self._pending) // f
        for k in range(n):
            self._frame(self._pending_start + k * f, self._pending[k * f: (k + 1) * f])
        self._pending = self._pending[n * f:].copy()
        self._pending_start += n * f

    def poll(self) -> list[Window]:
        out, self._out = self._out, []
        return out

    def poll_ends(self) -> list[tuple[int, int]]:
        """Utterances closed since the last call, as (utterance index, end sample)."""
        out, self._ends = self._ends, []
        return out

    def flush(self) -> list[Window]:
        """End of stream: close the open utterance; returns every window not yet polled."""
        self._end_utterance()
        return self.poll()

    # --- internals ------------------------------------------------------------------------
    def _frame(self, start: int, frame: NDArray[np.int16]) -> None:
        voiced = bool(self._is_speech(frame))
        pad = self.cfg.padding_frames
        if not self.in_speech:
            self._pre.append((start, frame, voiced))
            if sum(v for _, _, v in self._pre) >= self.cfg.start_ratio * pad:
                self.in_speech = True
                self._utt_start = self._utt_first = self._pre[0][0]
                self._utt_windows = 0
                self._utt = [fr for _, fr, _ in self._pre]
                self._utt_len = sum(len(fr) for fr in self._utt)
                self._flags.clear()
                self._flags.extend(v for _, _, v in self._pre)
                self._pre.clear()
                self._cut()
            return
        self._utt.append(frame)
        self._utt_len += len(frame)
        self._flags.append(voiced)
        self._cut()
        if len(self._flags) == pad and self._flags.count(False) >= self.cfg.end_ratio * pad:
            self._end_utterance()

    def _cut(self) -> None:
        while self._utt_len >= self.window_samples:
            audio = np.concatenate(self._utt)
            end = self._utt_start + self.window_samples
            long = self.max_utterance_samples is not None and end - self._utt_first >= self.max_utterance_samples
            self._emit(audio[: self.window_samples], final=long)
            if long:  # close it here; the speech goes on in a new utterance
                self._close(end)
                self._utt_first = end
            rest = audio[self.window_samples:]
            self._utt = [rest] if len(rest) else []
            self._utt_len = len(rest)

    def _emit(self, audio: NDArray[np.int16], final: bool) -> None:
        start = self._utt_start
        self._out.append(Window(self._next_index, start, start + len(audio), audio, final, self._utterance))
        self._next_index += 1
        self._utt_windows += 1
        self._utt_start = start + len(audio)

    def _close(self, end: int) -> None:
        if self._utt_windows:
            self._ends.append((self._utterance, end))
            self._utterance += 1
        self._utt_windows = 0

    def _end_utterance(self) -> None:
        if self.in_speech:
            end = self._utt_start + self._utt_len
            if self._utt_len:
                audio = np.concatenate(self._utt)
                if len(audio) >= self.min_window_samples:
                    self._emit(audio, final=True)
                else:
                    self.short_tails += 1
            self._close(end)
        self.in_speech = False
        self._utt, self._utt_len = [], 0
        self._pre.clear()
        self._flags.clear()

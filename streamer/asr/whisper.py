"""Whisper through faster-whisper (CTranslate2): the embedded default recogniser.

Whisper is not incremental: each window is transcribed when it closes (int8, greedy, English,
not conditioned on earlier text, word timestamps). Whisper invents words on silence and
noise, so a window is only transcribed when the VAD found speech in it, and segments whose
no-speech probability is high and whose mean log-probability is low are dropped (Whisper's
own rule), as are words inside a window of near-silence. For the display, the audio since
the last closed window is re-decoded at a bounded rate, only while the ASR thread is idle.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from streamer.audio import SAMPLE_RATE
from streamer.audio.encoder import WhisperHandle
from streamer.errors import ConfigError
from streamer.live.messages import Chunk, Window, Word
from streamer.text.normalize import asr_style

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WhisperAsrConfig:
    """``[asr.whisper]`` in config.toml."""

    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    partial_interval_s: float = 1.0
    beam_size: int = 1
    context_s: float = 1.0  # audio before a window given to Whisper too (its words are not the window's)
    hallucination_silence_s: float | None = 1.0  # faster-whisper skips silences this long around likely inventions

    def __post_init__(self) -> None:
        if not 0 < self.no_speech_threshold <= 1:
            raise ConfigError("config [asr] whisper_no_speech_threshold: must be in (0, 1]")
        if not 0.1 <= self.partial_interval_s <= 60:
            raise ConfigError("config [asr] whisper_partial_interval_s: must be between 0.1 and 60")
        if not 1 <= self.beam_size <= 10:
            raise ConfigError("config [asr] whisper_beam_size: must be between 1 and 10")


HISTORY = 8 * SAMPLE_RATE  # recent stream audio kept for context
SILENCE_RMS = 10 ** (-60 / 20)  # a window quieter than -60 dBFS RMS holds no words


class WhisperEngine:
    def __init__(self, handle: WhisperHandle, cfg: WhisperAsrConfig = WhisperAsrConfig(),
                 window_samples: int = int(2.5 * SAMPLE_RATE)) -> None:
        self.handle = handle
        self.cfg = cfg
        self.window_samples = window_samples
        self._decode_s = 0.5  # how long a partial decode takes (measured as it runs)
        self.name = f"whisper ({handle.options.model})"
        self.reset()

    def reset(self) -> None:
        self._recent = np.zeros(HISTORY, np.int16)  # the stream's last HISTORY samples
        self._recent_end = 0  # stream index just after the last sample in _recent
        self._last_word_end = 0
        self._open: list[np.ndarray] = []  # audio since the last closed window
        self._open_start = 0
        self._open_len = 0
        self._in_speech = False
        self._partial = ""
        self._partial_at = 0.0
        self._partial_len = 0

    def push(self, chunk: Chunk, in_speech: bool) -> None:
        self._in_speech = in_speech
        x = chunk.samples[-HISTORY:]
        if chunk.start != self._recent_end:  # a gap: what came before is not adjacent any more
            self._recent[:] = 0
        self._recent = np.concatenate([self._recent[len(x):], x])
        self._recent_end = chunk.end
        if not self._open:
            self._open_start = chunk.start
        self._open.append(chunk.samples)
        self._open_len += len(chunk.samples)
        limit = 5 * SAMPLE_RATE  # bounded: keep at most the last 5 s
        while self._open_len - len(self._open[0]) > limit and len(self._open) > 1:
            dropped = self._open.pop(0)
            self._open_len -= len(dropped)
            self._open_start += len(dropped)
        if not in_speech and self._partial_len and self._open_len - self._partial_len > SAMPLE_RATE:
            self._partial = ""

    def partial(self) -> str:
        return self._partial

    def refresh_partial(self) -> bool:
        now = time.monotonic()
        if not self._in_speech or now - self._partial_at < self.cfg.partial_interval_s or self._open_len < SAMPLE_RATE // 2:
            return False
        # A window that closes while a partial decode runs waits for it: skip the partial text
        # when the open window will be full before a decode would finish.
        if self._open_len + 1.5 * self._decode_s * SAMPLE_RATE >= self.window_samples:
            return False
        self._partial_at = now
        audio = np.concatenate(self._open)[-self.window_samples:]
        t0 = time.monotonic()
        self._partial = " ".join(w.word for w in self._transcribe(audio, 0, timestamps=False))
        self._decode_s = 0.5 * self._decode_s + 0.5 * (time.monotonic() - t0)
        self._partial_len = self._open_len
        return True

    def words_for(self, window: Window) -> list[Word]:
        # The window closed: the open audio now starts after it.
        self._drop_open_until(window.end)
        self._partial = ""
        self._partial_len = 0
        ctx = int(self.cfg.context_s * SAMPLE_RATE)
        first = self._recent_end - HISTORY
        if ctx and first <= window.start - ctx and window.end <= self._recent_end:
            a = window.start - ctx - first
            audio = self._recent[a: a + ctx + len(window.samples)]
            words = self._transcribe(audio, window.start - ctx, timestamps=True)
            # A word belongs here when its middle is inside the window, or when it reaches into
            # the window and the previous window did not already have it (a word cut in two).
            margin = SAMPLE_RATE // 20
            keep = [w for w in words if (w.start + w.end) // 2 >= window.start
                    or (w.end > window.start + margin and w.start >= self._last_word_end - margin)]
            words = [Word(w.word, max(w.start, window.start), max(w.end, window.start + 1), w.conf) for w in keep]
        else:
            words = self._transcribe(window.samples, window.start, timestamps=True)
        if words:
            self._last_word_end = words[-1].end
        return words

    def flush(self) -> None:
        self._partial = ""

    def _drop_open_until(self, end: int) -> None:
        while self._open and self._open_start + len(self._open[0]) <= end:
            self._open_start += len(self._open.pop(0))
        self._open_len = sum(len(c) for c in self._open)

    def _transcribe(self, samples: np.ndarray, offset: int, timestamps: bool) -> list[Word]:
        x = samples.astype(np.float32) / 32768.0
        if x.size < SAMPLE_RATE // 10 or float(np.sqrt(np.mean(x ** 2))) < SILENCE_RMS:
            return []
        segments, _ = self.handle.model.transcribe(
            x, language="en", beam_size=self.cfg.beam_size, condition_on_previous_text=False,
            word_timestamps=timestamps, without_timestamps=not timestamps, vad_filter=False,
            temperature=0.0, no_speech_threshold=self.cfg.no_speech_threshold, log_prob_threshold=self.cfg.logprob_threshold,
            hallucination_silence_threshold=self.cfg.hallucination_silence_s if timestamps else None)
        words: list[Word] = []
        for seg in segments:
            if seg.no_speech_prob > self.cfg.no_speech_threshold and seg.avg_logprob < self.cfg.logprob_threshold:
                continue
            if timestamps and seg.words:
                end = offset + len(samples)
                for w in seg.words:
                    s = offset + int(round(w.start * SAMPLE_RATE))
                    e = max(s + 1, offset + int(round(w.end * SAMPLE_RATE)))
                    for part in asr_style(w.word).split():  # "2nd" -> "second"; "it's" stays one word
                        words.append(Word(part, min(s, end - 1), min(e, end), float(w.probability)))
            else:
                words.extend(Word(t, offset, offset + len(samples), 1.0) for t in asr_style(seg.text).split())
        return words

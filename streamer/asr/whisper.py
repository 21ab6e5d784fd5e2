"""Whisper through CTranslate2 (the faster-whisper model): the embedded default recogniser.

Whisper is not incremental, so it recognises the utterance rather than the window: when a
window closes, the utterance so far (from just before its first window to the end of this
one) is decoded (int8, greedy, English, word times from cross-attention alignment), and the
words not yet given to an earlier window of the utterance are this window's. Decoding the
utterance keeps the left context, so words are not cut, doubled or dropped at window edges;
a word that ends within ``hold_s`` of a window's end may still be growing, so it waits for
the next window (or the utterance's end). An utterance is at most ``[live] utterance_max_s``
long, so the decoded audio stays inside the encoder's input. Whisper's
encoder is built for 30 s of audio; encoding a 3.5 s window padded to 30 s costs ~0.65 s on
one core here, 12 times the rest. So the window is padded with silence to ``encode_s``
(10 s by default, ~0.13 s) instead: the silence after the speech still tells the decoder
where speech ends, and segments whose timestamps start after the audio are cut (with less
padding the decoder tends to loop; measured in bench/README.md).

Whisper invents words on silence and noise, so a window is only decoded when the VAD found
speech in it, a window whose no-speech probability is high and whose mean log-probability is
low is dropped (Whisper's own rule), as are segments whose words look invented (very low
probability, implausible durations) and windows of near-silence. Words that survive may
still be unreadable (speech in another language comes out as English-looking words): each
decode's evidence (language, mean log-probability, no-speech probability, compression ratio,
word probabilities) goes through the text gate (``streamer.asr.reliability``), and
:meth:`WhisperEngine.text_skipped` says why the words just given out should not be read. For the display, the audio
since the last closed window is re-decoded at a bounded rate, only while the ASR thread is
idle.
"""

from __future__ import annotations

import time

import numpy as np

from streamer.asr.decode import WhisperAsrConfig, clamp_first, decode
from streamer.asr.reliability import Evidence, text_skipped
from streamer.core.messages import SAMPLE_RATE
from streamer.audio.encoder import WhisperHandle
from streamer.core.history import SampleHistory
from streamer.core.messages import Chunk, Window, Word
from streamer.text.normalize import asr_style

__all__ = ["WhisperAsrConfig", "WhisperEngine"]

HISTORY = 8 * SAMPLE_RATE  # recent stream audio kept at least (more for long utterances)
SILENCE_RMS = 10 ** (-60 / 20)  # a window quieter than -60 dBFS RMS holds no words


class WhisperEngine:
    incremental = False  # push() only keeps the audio; a window's close decodes

    def __init__(self, handle: WhisperHandle, cfg: WhisperAsrConfig = WhisperAsrConfig(),
                 window_samples: int = int(2.5 * SAMPLE_RATE), max_utterance_samples: int = int(7.5 * SAMPLE_RATE)) -> None:
        self.handle = handle
        self.cfg = cfg
        self.window_samples = window_samples
        # the open utterance, its last window and the pre-roll must all still be here
        self.history = max(HISTORY, max_utterance_samples + 2 * window_samples + SAMPLE_RATE)
        self._decode_s = 0.5  # how long a partial decode takes (measured as it runs)
        self.name = f"whisper ({handle.options.model})"
        self.reset()

    def reset(self) -> None:
        self._recent = SampleHistory(self.history)  # the stream's last samples
        self._recent_end = 0  # stream index just after the last sample in _recent
        self._utt: int | None = None  # the utterance being recognised
        self._utt_from = 0  # stream index where its decoded audio starts (pre-roll included)
        self._utt_start = 0  # start of its first window
        self._utt_last: Word | None = None  # the last word given out in it
        self._utt_done = 0  # words whose middle is before this were given out
        self._utt_until = 0  # end of its last window
        self._utt_whole: list[Word] | None = None  # its words from a decode of all of it
        self._utt_whole_skipped: str | None = None  # the text gate's reason for those words
        self._evidence: Evidence | None = None  # what the last timed decode said of its words
        self._skipped: str | None = None  # the text gate's reason for the words last given out
        self._open: list[np.ndarray] = []  # audio since the last closed window
        self._open_start = 0
        self._open_len = 0
        self._in_speech = False
        self._partial = ""
        self._partial_at = 0.0
        self._partial_len = 0

    def push(self, chunk: Chunk, in_speech: bool) -> None:
        self._in_speech = in_speech
        self._keep(chunk)
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

    def _keep(self, chunk: Chunk) -> None:
        """Remember the stream's recent audio (a gap clears what came before)."""
        x = chunk.samples[-self.history:]
        if chunk.start != self._recent_end:  # a gap: what came before is not adjacent any more
            self._recent.clear()
        self._recent.extend(x)
        self._recent_end = chunk.end

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
        if window.start >= self._recent_end:  # a caller that hands over windows without pushing their audio
            self._keep(Chunk(window.start, window.samples))
        if window.utterance != self._utt or window.start != self._utt_until:  # windows of one utterance are adjacent
            self._start_utterance(window)
        self._utt_until = window.end
        return self._take(window.end, hold=not window.final)

    def skip(self, window: Window) -> None:
        """A window dropped unanalysed (the stream fell behind): keep the utterance's place
        without decoding, so the next window and the utterance's end still hear its words."""
        self._drop_open_until(window.end)
        if window.utterance != self._utt or window.start != self._utt_until:
            self._start_utterance(window)
        self._utt_until = window.end
        self._utt_whole = None

    def end_utterance(self, end: int) -> list[Word]:
        """The utterance closed at ``end``: all its words, from one decode of the whole
        utterance (the last window's, when it reached the end; else one more)."""
        if self._utt is None:
            return []
        if end > self._utt_until or self._utt_whole is None:
            self._take(end, hold=False, urgent=False)  # no window waits for it
        words = self._utt_whole or []
        self._skipped = self._utt_whole_skipped
        self._utt = None
        return words

    def text_skipped(self) -> str | None:
        """Why the words last given out (by ``words_for`` or ``end_utterance``) should not be
        read by the text model (``streamer.asr.reliability.REASONS``), or None."""
        return self._skipped

    def _start_utterance(self, window: Window) -> None:
        self._utt = window.utterance
        self._utt_start = window.start
        self._utt_from = max(window.start - int(self.cfg.preroll_s * SAMPLE_RATE), self._recent_end - self.history, 0)
        self._utt_done = self._utt_from
        self._utt_last = None
        self._utt_whole = None

    def _take(self, end: int, hold: bool, urgent: bool = True) -> list[Word]:
        """Decode the utterance up to ``end``; return its words not given out yet. ``urgent``:
        a window's result waits for them (:class:`~streamer.asr.decode.Batcher` serves it first)."""
        first = self._recent_end - self.history
        start = max(self._utt_from, first, end - 29 * SAMPLE_RATE)
        end = min(end, self._recent_end)
        if end - start <= 0:
            self._skipped = None
            return []
        self._evidence = None
        whole = [Word(w.word, max(w.start, self._utt_start), max(w.end, self._utt_start + 1), w.conf)  # not before the utterance
                 for w in self._transcribe(self._recent.view()[start - first: end - first].copy(), start, timestamps=True, urgent=urgent)]
        self._skipped = text_skipped(self._evidence, self.cfg.text_gate)
        self._utt_whole = None if hold else whole
        self._utt_whole_skipped = self._skipped
        words = [w for w in whole if (w.start + w.end) // 2 >= self._utt_done]
        last = self._utt_last
        if words and last is not None and words[0].word == last.word and words[0].start < last.end:
            words = words[1:]  # the word already given out, aligned a little later this time
        if hold:
            cut = end - int(self.cfg.hold_s * SAMPLE_RATE)
            while words and words[-1].end > cut:
                words.pop()
        if words:
            self._utt_done = words[-1].end
            self._utt_last = words[-1]
        return words

    def flush(self) -> None:
        self._partial = ""

    def _drop_open_until(self, end: int) -> None:
        while self._open and self._open_start + len(self._open[0]) <= end:
            self._open_start += len(self._open.pop(0))
        self._open_len = sum(len(c) for c in self._open)

    def _transcribe(self, samples: np.ndarray, offset: int, timestamps: bool, urgent: bool = True) -> list[Word]:
        x = samples.astype(np.float32) / 32768.0
        if x.size < SAMPLE_RATE // 10 or float(np.sqrt(np.mean(x ** 2))) < SILENCE_RMS:
            return []
        words: list[Word] = []
        end = offset + len(samples)
        decoded = decode(self.handle, x, self.cfg, timestamps, urgent)
        if timestamps:
            self._evidence = decoded.evidence
        for text, s0, s1, p in clamp_first(decoded):
            s = offset + int(round(s0 * SAMPLE_RATE))
            e = max(s + 1, offset + int(round(s1 * SAMPLE_RATE)))
            for part in asr_style(text).split():  # "2nd" -> "second"; "it's" stays one word
                words.append(Word(part, min(s, end - 1), min(e, end), p))
        return words

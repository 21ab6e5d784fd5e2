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
probability, implausible durations) and windows of near-silence. For the display, the audio
since the last closed window is re-decoded at a bounded rate, only while the ASR thread is
idle.
"""

from __future__ import annotations

import logging
import re
import threading
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
    preroll_s: float = 0.2  # audio before an utterance's first window decoded with it
    hold_s: float = 0.2  # a word ending this close to a window's end waits for more audio
    encode_s: float = 10.0  # audio length the encoder sees (speech + silence); Whisper's own is 30
    drop_anomalous: bool = True  # drop segments whose words look invented

    def __post_init__(self) -> None:
        if not 0 < self.no_speech_threshold <= 1:
            raise ConfigError("config [asr] whisper_no_speech_threshold: must be in (0, 1]")
        if not 0.1 <= self.partial_interval_s <= 60:
            raise ConfigError("config [asr] whisper_partial_interval_s: must be between 0.1 and 60")
        if not 1 <= self.beam_size <= 10:
            raise ConfigError("config [asr] whisper_beam_size: must be between 1 and 10")
        if not 4 <= self.encode_s <= 30:
            raise ConfigError("config [asr] whisper_encode_s: must be between 4 and 30")


HISTORY = 8 * SAMPLE_RATE  # recent stream audio kept at least (more for long utterances)
SILENCE_RMS = 10 ** (-60 / 20)  # a window quieter than -60 dBFS RMS holds no words


class WhisperEngine:
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
        self._recent = np.zeros(self.history, np.int16)  # the stream's last samples
        self._recent_end = 0  # stream index just after the last sample in _recent
        self._utt: int | None = None  # the utterance being recognised
        self._utt_from = 0  # stream index where its decoded audio starts (pre-roll included)
        self._utt_start = 0  # start of its first window
        self._utt_last: Word | None = None  # the last word given out in it
        self._utt_done = 0  # words whose middle is before this were given out
        self._utt_until = 0  # end of its last window
        self._utt_whole: list[Word] | None = None  # its words from a decode of all of it
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
            self._recent[:] = 0
        self._recent = np.concatenate([self._recent[len(x):], x])
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

    def end_utterance(self, end: int) -> list[Word]:
        """The utterance closed at ``end``: all its words, from one decode of the whole
        utterance (the last window's, when it reached the end; else one more)."""
        if self._utt is None:
            return []
        if end > self._utt_until or self._utt_whole is None:
            self._take(end, hold=False)
        words = self._utt_whole or []
        self._utt = None
        return words

    def _start_utterance(self, window: Window) -> None:
        self._utt = window.utterance
        self._utt_start = window.start
        self._utt_from = max(window.start - int(self.cfg.preroll_s * SAMPLE_RATE), self._recent_end - self.history, 0)
        self._utt_done = self._utt_from
        self._utt_last = None
        self._utt_whole = None

    def _take(self, end: int, hold: bool) -> list[Word]:
        """Decode the utterance up to ``end``; return its words not given out yet."""
        first = self._recent_end - self.history
        start = max(self._utt_from, first, end - 29 * SAMPLE_RATE)
        end = min(end, self._recent_end)
        if end - start <= 0:
            return []
        whole = [Word(w.word, max(w.start, self._utt_start), max(w.end, self._utt_start + 1), w.conf)  # not before the utterance
                 for w in self._transcribe(self._recent[start - first: end - first], start, timestamps=True)]
        self._utt_whole = None if hold else whole
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

    def _transcribe(self, samples: np.ndarray, offset: int, timestamps: bool) -> list[Word]:
        x = samples.astype(np.float32) / 32768.0
        if x.size < SAMPLE_RATE // 10 or float(np.sqrt(np.mean(x ** 2))) < SILENCE_RMS:
            return []
        words: list[Word] = []
        end = offset + len(samples)
        for text, s0, s1, p in _clamp_first(decode(self.handle, x, self.cfg, timestamps)):
            s = offset + int(round(s0 * SAMPLE_RATE))
            e = max(s + 1, offset + int(round(s1 * SAMPLE_RATE)))
            for part in asr_style(text).split():  # "2nd" -> "second"; "it's" stays one word
                words.append(Word(part, min(s, end - 1), min(e, end), p))
        return words


def _clamp_first(words: list["Decoded"]) -> list["Decoded"]:
    """Cross-attention alignment tends to stretch the first word back to the start of the
    audio (over leading silence). Like faster-whisper, cap it at twice the median word
    duration (at most 0.7 s).

    >>> w = _clamp_first([("hello", 0.0, 1.5, 1.0), ("there", 1.5, 1.8, 1.0), ("you", 1.8, 2.0, 1.0)])
    >>> round(w[0][1], 2), w[1:] == [("there", 1.5, 1.8, 1.0), ("you", 1.8, 2.0, 1.0)]
    (0.9, True)
    """
    if len(words) < 2:
        return words
    median = min(0.7, float(np.median([e - s for _, s, e, _ in words])))
    text, s, e, p = words[0]
    if e - s > 2 * median:
        words = [(text, max(s, e - 2 * median), e, p), *words[1:]]
    return words


def _tokenizer(handle: WhisperHandle):
    tok = getattr(handle, "_asr_tokenizer", None)
    if tok is None:
        from faster_whisper.tokenizer import Tokenizer

        model = handle.model
        tok = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
        handle._asr_tokenizer = tok
    return tok


Decoded = tuple[str, float, float, float]  # a decoded word: text, start s, end s, probability


def decode(handle: WhisperHandle, x: np.ndarray, cfg: WhisperAsrConfig, timestamps: bool = True) -> list[Decoded]:
    """Words of ``x`` (16 kHz float32, at most 30 s) as (text, start s, end s, probability).

    Without ``timestamps`` every word spans the whole input and has probability 1. Calls from
    several threads (streams) that overlap are decoded together (:class:`Batcher`).
    """
    return Batcher.of(handle).decode(x, cfg, timestamps)


def decode_batch(handle: WhisperHandle, items: list[tuple[np.ndarray, bool]], cfg: WhisperAsrConfig) -> list[list[Decoded]]:
    """Several inputs in one encoder call and one decoder call (then one alignment each)."""
    import ctranslate2

    model, tok = handle.model, _tokenizer(handle)
    # Speech plus at least 0.5 s of silence, a whole number of encoder frames (320 samples),
    # the same length for the whole batch.
    n = min(30 * SAMPLE_RATE, max(int(cfg.encode_s * SAMPLE_RATE), *(len(x) + SAMPLE_RATE // 2 for x, _ in items)))
    n -= n % 320
    mels = []
    for x, _ in items:
        padded = np.zeros(n, np.float32)
        padded[: min(len(x), n)] = x[:n]
        mels.append(model.feature_extractor(padded, padding=0)[:, : n // 160])
    enc = model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(mels))))
    prompt = list(tok.sot_sequence)
    max_new = int(max(len(x) for x, _ in items) / SAMPLE_RATE * 8) + 12  # fast speech is ~5 tokens/s; a loop runs on
    results = model.model.generate(enc, [prompt] * len(items), beam_size=cfg.beam_size, max_length=len(prompt) + max_new,
                                   return_scores=True, return_no_speech_prob=True, suppress_blank=True, suppress_tokens=[-1])
    frames = np.asarray(enc) if len(items) > 1 else None
    out = []
    for k, ((x, timestamps), res) in enumerate(zip(items, results)):
        own = enc if frames is None else ctranslate2.StorageView.from_array(np.ascontiguousarray(frames[k: k + 1]))
        out.append(_words(handle, x, res, own, cfg, timestamps))
    return out


def _words(handle: WhisperHandle, x: np.ndarray, res, enc, cfg: WhisperAsrConfig, timestamps: bool) -> list[Decoded]:
    """One input's words from its decoding result and its encoder output (batch of one)."""
    tok = _tokenizer(handle)
    dur = len(x) / SAMPLE_RATE
    ids = res.sequences_ids[0]
    n_tok = len(ids)
    avg_logprob = res.scores[0] * n_tok / (n_tok + 1) if n_tok else 0.0
    if res.no_speech_prob > cfg.no_speech_threshold and avg_logprob < cfg.logprob_threshold:
        return []
    segments = _segments(ids, tok.timestamp_begin, tok.eot, dur)
    if not segments:
        return []
    if not timestamps:
        return [(w, 0.0, dur, 1.0) for seg in segments for w in tok.decode(seg).split()]
    out: list[Decoded] = []
    # One alignment over all text; words go back to their segments by token count.
    aligned = handle.model.find_alignment(tok, [[t for seg in segments for t in seg]], enc, len(x) // 160)[0]
    bounds = np.cumsum([len(seg) for seg in segments])
    by_segment: list[list[Decoded]] = [[] for _ in segments]
    used = 0
    for w in aligned:
        k = min(int(np.searchsorted(bounds, used, side="right")), len(segments) - 1)
        used += len(w["tokens"])
        if w["word"].strip():
            by_segment[k].append((w["word"].strip(), float(w["start"]), float(w["end"]), float(w["probability"])))
    for seg in by_segment:
        if cfg.drop_anomalous and _anomalous(seg):
            log.debug("dropped words that look invented: %s", " ".join(w[0] for w in seg))
            continue
        out.extend(seg)
    return _without_loop(out)


@dataclass
class _Request:
    x: np.ndarray
    cfg: WhisperAsrConfig
    timestamps: bool
    done: bool = False
    result: list[Decoded] | None = None
    error: BaseException | None = None


class Batcher:
    """Dynamic batching of decodes across streams, one per Whisper model.

    A call runs at once when fewer than ``concurrency`` batches are running (the model's
    CTranslate2 workers); otherwise it waits, and the next free caller decodes everything
    that queued up meanwhile (same settings, up to ``max_batch``) in one call. Nothing waits
    for company, so one stream sees no delay. On this CPU a batch of 4 costs ~20% less per
    window than 4 single calls (the decoder gains, the encoder does not; bench/asr_profile.py).
    """

    _lock = threading.Lock()

    def __init__(self, handle: WhisperHandle, concurrency: int, max_batch: int = 8) -> None:
        self.handle = handle
        self.concurrency = max(1, concurrency)
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._running = 0
        self.batches = 0  # statistics: batches run and windows decoded
        self.windows = 0
        self.largest = 0

    @classmethod
    def of(cls, handle: WhisperHandle) -> "Batcher":
        with cls._lock:
            b = getattr(handle, "_batcher", None)
            if b is None:
                b = cls(handle, getattr(handle.options, "num_workers", 1))
                handle._batcher = b
            return b

    def decode(self, x: np.ndarray, cfg: WhisperAsrConfig, timestamps: bool) -> list[Decoded]:
        req = _Request(x, cfg, timestamps)
        with self._cond:
            self._pending.append(req)
            while not req.done:
                if self._running < self.concurrency and self._pending:
                    batch = self._take()
                    self._running += 1
                    self._cond.release()
                    try:
                        self._run(batch)
                    finally:
                        self._cond.acquire()
                        self._running -= 1
                        self._cond.notify_all()
                else:
                    self._cond.wait()
        if req.error is not None:
            raise req.error
        return req.result or []

    def _take(self) -> list[_Request]:
        """The oldest request and those queued with the same settings, up to max_batch."""
        first = self._pending[0]
        batch = [r for r in self._pending if r.cfg == first.cfg][: self.max_batch]
        taken = set(map(id, batch))
        self._pending = [r for r in self._pending if id(r) not in taken]
        return batch

    def _run(self, batch: list[_Request]) -> None:
        try:
            results = decode_batch(self.handle, [(r.x, r.timestamps) for r in batch], batch[0].cfg)
            for r, words in zip(batch, results):
                r.result = words
        except Exception as exc:  # the callers raise it, each in its own thread
            for r in batch:
                r.error = exc
        for r in batch:
            r.done = True
        self.batches += 1
        self.windows += len(batch)
        self.largest = max(self.largest, len(batch))


def _segments(ids: list[int], ts_begin: int, eot: int, dur: float) -> list[list[int]]:
    """Text tokens split at timestamp tokens; a segment that starts after the audio is cut."""
    segments: list[list[int]] = []
    current: list[int] = []
    for t in ids:
        if t >= ts_begin:
            if current:
                segments.append(current)
                current = []
            if (t - ts_begin) * 0.02 > dur + 0.2:  # the decoder runs on into the padding
                break
        elif t < eot:
            current.append(t)
    if current:
        segments.append(current)
    return segments


def _anomalous(words: list[Decoded]) -> bool:
    """Whisper's invented words tend to be improbable and to have implausible durations
    (the idea behind faster-whisper's hallucination check)."""
    score = 0.0
    checked = [w for w in words if any(c.isalnum() for c in w[0])][:8]
    for _, s, e, p in checked:
        d = e - s
        score += (p < 0.15) + (max(0.0, 0.133 - d) * 15) + max(0.0, d - 2.0)
    return bool(checked) and (score >= 3 or score + 0.01 >= len(checked))


def _without_loop(words: list[Decoded]) -> list[Decoded]:
    """Cut a decoder loop: the same run of three or more words repeated back to back, with
    the repeat squeezed into the last moments of the audio, is kept once."""
    keys = [re.sub(r"[^a-z0-9']", "", w[0].lower()) for w in words]
    n = len(keys)
    for size in range(3, n // 2 + 1):
        for i in range(0, n - 2 * size + 1):
            if keys[i:i + size] == keys[i + size:i + 2 * size] and all(keys[i:i + size]):
                rep = words[i + size:i + 2 * size]
                first = words[i:i + size]
                if rep[-1][2] - rep[0][1] < 0.5 * (first[-1][2] - first[0][1]):  # squeezed: not spoken twice
                    return words[:i + size]
    return words

"""Whisper decoding through CTranslate2: one input (``decode``) or several batched across
streams (``decode_batch``, :class:`Batcher`), with the guards against invented words and
decoder loops. The streaming recogniser that uses it is ``streamer.asr.whisper``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from streamer.asr.reliability import Evidence, TextGateConfig, compression_ratio, mean_conf
from streamer.core.messages import SAMPLE_RATE
from streamer.audio.encoder import WhisperHandle
from streamer.core.errors import check

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WhisperAsrConfig:
    """``[asr.whisper]`` in config.toml: the Whisper engine's gates and decoding."""

    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    partial_interval_s: float = 1.0
    beam_size: int = 1
    preroll_s: float = 0.2  # audio before an utterance's first window decoded with it
    hold_s: float = 0.2  # a word ending this close to a window's end waits for more audio
    encode_s: float = 10.0  # audio length the encoder sees (speech + silence); Whisper's own is 30
    drop_anomalous: bool = True  # drop segments whose words look invented
    text_gate: TextGateConfig = TextGateConfig()  # [asr.whisper.text_gate]: when the words are not read

    def __post_init__(self) -> None:
        s = "asr.whisper"
        check(s, "no_speech_threshold", 0 < self.no_speech_threshold <= 1, "in (0, 1]")
        check(s, "logprob_threshold", -20 <= self.logprob_threshold <= 0, "between -20 and 0 (a mean log-probability)")
        check(s, "partial_interval_s", 0.1 <= self.partial_interval_s <= 60, "between 0.1 and 60")
        check(s, "beam_size", 1 <= self.beam_size <= 10, "between 1 and 10")
        check(s, "preroll_s", 0 <= self.preroll_s <= 1, "between 0 and 1")
        check(s, "hold_s", 0 <= self.hold_s <= 1, "between 0 and 1")
        check(s, "encode_s", 4 <= self.encode_s <= 30, "between 4 and 30")


def clamp_first(words: list["Decoded"]) -> list["Decoded"]:
    """Cross-attention alignment tends to stretch the first word back to the start of the
    audio (over leading silence). Like faster-whisper, cap it at twice the median word
    duration (at most 0.7 s).

    >>> w = clamp_first([("hello", 0.0, 1.5, 1.0), ("there", 1.5, 1.8, 1.0), ("you", 1.8, 2.0, 1.0)])
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


_TOKENIZERS: "weakref.WeakKeyDictionary[WhisperHandle, object]" = weakref.WeakKeyDictionary()


def whisper_tokenizer(handle: WhisperHandle):
    """The handle's English transcription tokenizer (made once per handle)."""
    tok = _TOKENIZERS.get(handle)
    if tok is None:
        from faster_whisper.tokenizer import Tokenizer

        model = handle.model
        tok = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
        _TOKENIZERS[handle] = tok
    return tok


Decoded = tuple[str, float, float, float]  # a decoded word: text, start s, end s, probability


class Decoding(list):
    """A decode's words (a list of :data:`Decoded`, as before) and the decoder's own
    :class:`~streamer.asr.reliability.Evidence` about them (``evidence``; None where a
    decoder does not say, such as a remote one that returns plain lists)."""

    def __init__(self, words=(), evidence: Evidence | None = None) -> None:
        super().__init__(words)
        self.evidence = evidence

    def __reduce__(self):  # pickles (Ray) with its evidence
        return (Decoding, (list(self), self.evidence))


def decode(handle: WhisperHandle, x: np.ndarray, cfg: WhisperAsrConfig, timestamps: bool = True,
           urgent: bool = True) -> Decoding:
    """Words of ``x`` (16 kHz float32, at most 30 s) as (text, start s, end s, probability);
    a :class:`Decoding` (with its ``evidence``) from this process's model.

    Without ``timestamps`` every word spans the whole input and has probability 1. Calls from
    several threads (streams) that overlap are decoded together (:class:`Batcher`); one that
    is not ``urgent`` (nobody waits on it now) lets urgent ones that queue go first.
    """
    return Batcher.of(handle).decode(x, cfg, timestamps, urgent)


def padded_samples(n: int, cfg: WhisperAsrConfig) -> int:
    """The encoder's input length for ``n`` samples of speech: the speech plus at least 0.5 s of
    silence, at least ``encode_s``, at most 30 s, a whole number of encoder frames (320 samples).

    >>> cfg = WhisperAsrConfig()
    >>> padded_samples(16000, cfg) == padded_samples(100000, cfg) == int(cfg.encode_s * 16000)
    True
    >>> padded_samples(16000 * 12, cfg) / 16000, padded_samples(16000 * 40, cfg) / 16000
    (12.5, 30.0)
    """
    m = min(30 * SAMPLE_RATE, max(int(cfg.encode_s * SAMPLE_RATE), n + SAMPLE_RATE // 2))
    return m - m % 320


CAP_STEP = SAMPLE_RATE * 5 // 2  # token caps go in steps of 2.5 s of speech


def token_cap(n: int) -> int:
    """The most tokens decoded for ``n`` samples of speech: fast speech is ~5 tokens/s, and a
    decoder caught in a loop runs on. In steps of 2.5 s, so that inputs of about the same length
    share a cap and can share a batch.

    >>> token_cap(1), token_cap(40000), token_cap(40001)
    (32, 32, 52)
    """
    return -(-n // CAP_STEP) * CAP_STEP * 8 // SAMPLE_RATE + 12


def decode_batch(handle: WhisperHandle, items: list[tuple[np.ndarray, bool]], cfg: WhisperAsrConfig) -> list[list[Decoded]]:
    """Several inputs in one encoder call and one decoder call (then one alignment each) per
    encoder length and token cap: inputs go together only with those padded to the same length
    (:func:`padded_samples`) and given the same cap (:func:`token_cap`), so each one's words
    are what it gets alone (batch equals single), whichever other streams' speech shares its batch."""
    groups: dict[tuple[int, int], list[int]] = {}
    for k, (x, _) in enumerate(items):
        groups.setdefault((padded_samples(len(x), cfg), token_cap(len(x))), []).append(k)
    out: list = [None] * len(items)
    for (n, cap), ks in groups.items():
        for k, words in zip(ks, _decode_padded(handle, [items[k] for k in ks], cfg, n, cap)):
            out[k] = words
    return out


def _decode_padded(handle: WhisperHandle, items: list[tuple[np.ndarray, bool]], cfg: WhisperAsrConfig,
                   n: int, max_new: int) -> list[Decoding]:
    """``items``, each padded with silence to ``n`` samples, in one encoder and one decoder call
    of at most ``max_new`` tokens each."""
    import ctranslate2

    model, tok = handle.model, whisper_tokenizer(handle)
    mels = []
    for x, _ in items:
        padded = np.zeros(n, np.float32)
        padded[: min(len(x), n)] = x[:n]
        mels.append(model.feature_extractor(padded, padding=0)[:, : n // 160])
    enc = model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(mels))))
    prompt = list(tok.sot_sequence)
    results = model.model.generate(enc, [prompt] * len(items), beam_size=cfg.beam_size, max_length=len(prompt) + max_new,
                                   return_scores=True, return_no_speech_prob=True, suppress_blank=True, suppress_tokens=[-1])
    gate = cfg.text_gate
    langs = None
    if gate.enabled and gate.detect_language and model.model.is_multilingual:
        langs = model.model.detect_language(enc)  # one decoder step per input
    frames = np.asarray(enc) if len(items) > 1 else None
    out = []
    for k, ((x, timestamps), res) in enumerate(zip(items, results)):
        own = enc if frames is None else ctranslate2.StorageView.from_array(np.ascontiguousarray(frames[k: k + 1]))
        top = tuple((lang.strip("<|>"), float(p)) for lang, p in langs[k][:5]) if langs is not None else ()
        out.append(_words(handle, x, res, own, cfg, timestamps, top))
    return out


def _words(handle: WhisperHandle, x: np.ndarray, res, enc, cfg: WhisperAsrConfig, timestamps: bool,
           languages: tuple[tuple[str, float], ...] = ()) -> Decoding:
    """One input's words from its decoding result and its encoder output (batch of one),
    with the decode's evidence (mean log-probability, no-speech probability, compression
    ratio of all its text, its words' mean probability, the detected languages)."""
    tok = whisper_tokenizer(handle)
    dur = len(x) / SAMPLE_RATE
    ids = res.sequences_ids[0]
    n_tok = len(ids)
    avg_logprob = res.scores[0] * n_tok / (n_tok + 1) if n_tok else 0.0
    segments = _segments(ids, tok.timestamp_begin, tok.eot, dur)
    text = " ".join(tok.decode(seg).strip() for seg in segments)
    evidence = Evidence(len(text.split()), float(avg_logprob), float(res.no_speech_prob), compression_ratio(text),
                        None, languages)
    if res.no_speech_prob > cfg.no_speech_threshold and avg_logprob < cfg.logprob_threshold:
        return Decoding([], evidence)
    if not segments:
        return Decoding([], evidence)
    if not timestamps:
        return Decoding([(w, 0.0, dur, 1.0) for seg in segments for w in tok.decode(seg).split()], evidence)
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
    conf = mean_conf(p for seg in by_segment for _, _, _, p in seg)
    return Decoding(_without_loop(out), replace(evidence, word_conf=conf))


@dataclass
class _Request:
    x: np.ndarray
    cfg: WhisperAsrConfig
    timestamps: bool
    urgent: bool = True
    at: float = 0.0  # when it queued (the batcher's clock)
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

    Urgent calls (a window's words, which its result waits for) go before the others (an
    utterance's closing decode, which only its record waits for) that queued with them, unless
    those have waited ``later_max_s``: under load the windows keep their latency, and an
    utterance's decode is done before the same stream's next window can close.
    ``run(handle, items, cfg)`` decodes a batch (:func:`decode_batch`).
    """

    _lock = threading.Lock()

    def __init__(self, handle: WhisperHandle, concurrency: int, max_batch: int = 8, later_max_s: float = 1.0,
                 run: Callable[[WhisperHandle, list[tuple[np.ndarray, bool]], WhisperAsrConfig], list] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.handle = handle
        self.concurrency = max(1, concurrency)
        self.max_batch = max_batch
        self.later_max_s = later_max_s
        self.run = run or decode_batch
        self.clock = clock
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._running = 0
        self.batches = 0  # statistics: batches run and windows decoded
        self.windows = 0
        self.largest = 0

    @classmethod
    def of(cls, handle: WhisperHandle):
        """The handle's decoder: its ``decoder`` attribute, a Batcher made on first use (a
        remote handle, such as the Ray deployment's, brings its own with a ``decode`` method)."""
        with cls._lock:
            b = handle.decoder
            if b is None:
                b = cls(handle, handle.options.num_workers)
                handle.decoder = b
            return b

    def decode(self, x: np.ndarray, cfg: WhisperAsrConfig, timestamps: bool, urgent: bool = True) -> Decoding:
        req = _Request(x, cfg, timestamps, urgent, self.clock())
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
        return req.result if req.result is not None else Decoding()  # an empty decode keeps its evidence

    @property
    def depth(self) -> int:
        """Calls queued, not yet taken into a batch (as ``BatchService.depth``)."""
        with self._cond:
            return len(self._pending)

    def _take(self) -> list[_Request]:
        """The oldest urgent request (or the oldest, when none is) and those queued with the
        same settings and urgency, up to max_batch."""
        now = self.clock()

        def urgent(r: _Request) -> bool:
            return r.urgent or now - r.at >= self.later_max_s

        first = next((r for r in self._pending if urgent(r)), self._pending[0])
        batch = [r for r in self._pending if r.cfg == first.cfg and urgent(r) == urgent(first)][: self.max_batch]
        taken = set(map(id, batch))
        self._pending = [r for r in self._pending if id(r) not in taken]
        return batch

    def _run(self, batch: list[_Request]) -> None:
        try:
            results = self.run(self.handle, [(r.x, r.timestamps) for r in batch], batch[0].cfg)
            for r, words in zip(batch, results):
                r.result = words
        except Exception as exc:  # one bad input must not fail the other streams' windows
            if len(batch) == 1:
                batch[0].error = exc  # its caller raises it, in its own thread
            else:
                log.warning("a batch of %d decodes failed (%s); decoding each alone", len(batch), exc)
                for r in batch:
                    try:
                        r.result = self.run(self.handle, [(r.x, r.timestamps)], r.cfg)[0]
                    except Exception as one:
                        r.error = one
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
    (the idea behind faster-whisper's hallucination check). Each word counts at most once:
    the alignment sometimes squeezes a real, probable word to no duration ("I am" after a
    pause), and two such words must not sink a whole spoken sentence.

    >>> spoken = [("so", 0.0, 0.2, 0.9), ("I", 0.6, 0.6, 0.7), ("am", 0.6, 0.62, 0.8), ("happy", 0.62, 0.9, 0.99)]
    >>> _anomalous(spoken + [("to", 0.9, 1.1, 0.95), ("hear", 1.1, 1.3, 0.97)])
    False
    """
    score = 0.0
    checked = [w for w in words if any(c.isalnum() for c in w[0])][:8]
    for _, s, e, p in checked:
        d = e - s
        score += min(1.0, (p < 0.15) + (max(0.0, 0.133 - d) * 15) + max(0.0, d - 2.0))
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

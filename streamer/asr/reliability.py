"""When the recogniser's words should not be read: the text branch's gate.

Speech in another language, or speech the recogniser hears badly, still comes out as
English-looking words, and the text model reads them with confidence. Each recogniser says
how sure it was of a decode (:class:`Evidence`): Whisper its detected language (a
multilingual model only), the decode's mean log-probability, the no-speech probability, the
text's compression ratio and its words' probabilities; Vosk its words' confidences. The pure
:func:`text_skipped` turns that evidence and the thresholds of ``[asr.whisper.text_gate]``
(:class:`TextGateConfig`) into a reason not to read the words, or None; the text branch then
gives no opinion and fusion uses the voice alone. The reason goes into the window and
utterance records as ``text_skipped``.

Thresholds were chosen on nEMO speakers EB0, KS0 and RAVDESS actors 01-04 and checked on
other speakers (``bench/text_gate.py``, bench/README.md).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass

from streamer.core.errors import check

log = logging.getLogger(__name__)

# The reasons, in the order they are checked; each is a value of ``text_skipped``.
REASONS = ("no_speech", "language", "repetitive", "low_confidence")


@dataclass(frozen=True)
class Evidence:
    """What a recogniser says about its own words from one decode; None: not known.

    ``languages``: the most probable spoken languages with their probabilities (a multilingual
    Whisper's language detection); ``words``: how many words the decode produced before any
    of the recogniser's own filters.
    """

    words: int = 0
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    word_conf: float | None = None  # the mean of the words' confidences (probabilities)
    languages: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class TextGateConfig:
    """``[asr.whisper.text_gate]`` in config.toml: when the recogniser's words are not read."""

    enabled: bool = True
    languages: tuple[str, ...] = ("en",)  # what the text model reads
    min_language_prob: float = 0.5  # skip when these languages' probability is below this
    detect_language: bool = True  # ask a multilingual Whisper for the language (one decoder step)
    min_avg_logprob: float = -1.0  # skip when the decode's mean log-probability is below this
    max_no_speech_prob: float = 0.6  # skip when Whisper's no-speech probability is above this
    max_compression_ratio: float = 2.4  # skip when the text compresses this well (a loop)
    min_word_conf: float = 0.65  # skip when the words' mean confidence is below this

    def __post_init__(self) -> None:
        s = "asr.whisper.text_gate"
        langs = tuple(self.languages)
        check(s, "languages", len(langs) >= 1 and all(isinstance(x, str) and x.isalpha() and x.islower() for x in langs),
              'a list of language codes such as ["en"]')
        object.__setattr__(self, "languages", langs)
        check(s, "min_language_prob", 0 <= self.min_language_prob <= 1, "between 0 and 1")
        check(s, "min_avg_logprob", -20 <= self.min_avg_logprob <= 0, "between -20 and 0 (a mean log-probability)")
        check(s, "max_no_speech_prob", 0 < self.max_no_speech_prob <= 1, "in (0, 1]")
        check(s, "max_compression_ratio", 1 <= self.max_compression_ratio <= 100, "between 1 and 100")
        check(s, "min_word_conf", 0 <= self.min_word_conf <= 1, "between 0 and 1")


def text_skipped(ev: Evidence | None, cfg: TextGateConfig = TextGateConfig()) -> str | None:
    """Why the words of a decode should not be read (one of :data:`REASONS`), or None.

    No evidence, or a decode with no words, is no reason.

    >>> cfg = TextGateConfig()
    >>> text_skipped(Evidence(words=5, avg_logprob=-0.3, no_speech_prob=0.01, compression_ratio=1.1, word_conf=0.9), cfg)
    >>> text_skipped(Evidence(words=5, avg_logprob=-1.4, word_conf=0.9), cfg)
    'low_confidence'
    >>> text_skipped(Evidence(words=5, avg_logprob=-0.2, languages=(("pl", 0.9), ("en", 0.05))), cfg)
    'language'
    >>> text_skipped(Evidence(words=3, no_speech_prob=0.9, avg_logprob=-0.2), cfg)
    'no_speech'
    >>> text_skipped(Evidence(words=0, avg_logprob=-5.0), cfg) is None
    True
    """
    if ev is None or ev.words <= 0 or not cfg.enabled:
        return None
    if ev.no_speech_prob is not None and ev.no_speech_prob > cfg.max_no_speech_prob:
        return "no_speech"
    if ev.languages and sum(p for lang, p in ev.languages if lang in cfg.languages) < cfg.min_language_prob:
        return "language"
    if ev.compression_ratio is not None and ev.compression_ratio > cfg.max_compression_ratio:
        return "repetitive"
    if ev.avg_logprob is not None and ev.avg_logprob < cfg.min_avg_logprob:
        return "low_confidence"
    if ev.word_conf is not None and ev.word_conf < cfg.min_word_conf:
        return "low_confidence"
    return None


def compression_ratio(text: str) -> float:
    """How well ``text`` compresses (zlib), as faster-whisper measures it: a decoder loop
    repeats itself and compresses well (Whisper's own threshold is 2.4).

    >>> compression_ratio("hello") < 1.5, compression_ratio("la " * 40) > 2.4
    (True, True)
    """
    b = text.encode("utf-8")
    return len(b) / len(zlib.compress(b)) if b else 0.0


def mean_conf(confs) -> float | None:
    """The mean of word confidences, None for no words.

    >>> mean_conf([0.5, 1.0]), mean_conf([])
    (0.75, None)
    """
    confs = list(confs)
    return sum(confs) / len(confs) if confs else None

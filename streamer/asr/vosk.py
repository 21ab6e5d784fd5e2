"""Vosk (Kaldi): the design's incremental recogniser, used whenever a Vosk model is present.

One ``vosk.Model`` per process, shared; one ``KaldiRecognizer`` per stream with
``SetWords(True)`` (and ``SetPartialWords(True)`` so a window can be given its words before
Vosk's own endpoint). Audio is fed as 16-bit little-endian PCM; results are JSON.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from streamer.audio import SAMPLE_RATE
from streamer.errors import MissingDependency, ModelError
from streamer.live.messages import Chunk, Window, Word
from streamer.asr.base import inside

log = logging.getLogger(__name__)

_models: dict[str, object] = {}
_lock = threading.Lock()

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
    def __init__(self, model_path: str | Path) -> None:
        self.model = shared_model(model_path)
        self.name = f"vosk ({Path(model_path).name})"
        self.reset()

    def reset(self) -> None:
        import vosk

        self.rec = vosk.KaldiRecognizer(self.model, SAMPLE_RATE)
        self.rec.SetWords(True)
        self.rec.SetPartialWords(True)
        self._fed = 0  # samples fed: Vosk's times are seconds from the first one
        self._origin = None  # stream index of the first sample fed
        self._final: list[Word] = []
        self._partial_words: list[Word] = []
        self._partial = ""
        self._given_until = 0  # words with their middle before this were given out
        self._utt_words: list[Word] = []  # words given out in the current utterance

    def _words(self, items: list[dict]) -> list[Word]:
        o = self._origin or 0
        return [Word(w["word"], o + int(round(w["start"] * SAMPLE_RATE)), o + int(round(w["end"] * SAMPLE_RATE)),
                     float(w.get("conf", 1.0))) for w in items]

    def push(self, chunk: Chunk, in_speech: bool) -> None:
        if self._origin is None:
            self._origin = chunk.start
        elif chunk.start != self._origin + self._fed:  # a gap: keep times true by feeding silence
            gap = chunk.start - (self._origin + self._fed)
            if 0 < gap < 10 * SAMPLE_RATE:
                self.rec.AcceptWaveform(bytes(2 * gap))
                self._fed += gap
        if self.rec.AcceptWaveform(chunk.samples.astype("<i2").tobytes()):
            res = json.loads(self.rec.Result())
            self._final.extend(self._words(res.get("result", [])))
            self._partial_words, self._partial = [], ""
        else:
            res = json.loads(self.rec.PartialResult())
            self._partial = res.get("partial", "")
            self._partial_words = self._words(res.get("partial_result", []))
        self._fed += len(chunk.samples)

    def partial(self) -> str:
        return self._partial

    def refresh_partial(self) -> bool:
        return False

    def words_for(self, window: Window) -> list[Word]:
        words = inside(self._final, window.start, window.end)
        done = {(w.start, w.word) for w in words}
        words += [w for w in inside(self._partial_words, window.start, window.end) if (w.start, w.word) not in done]
        self._final = [w for w in self._final if (w.start + w.end) // 2 >= window.end]  # bounded
        self._given_until = window.end
        words = sorted(words, key=lambda w: w.start)
        self._utt_words.extend(words)
        return words

    def end_utterance(self, end: int) -> list[Word]:
        """All words of the utterance: its windows' and a short tail's after them."""
        tail = inside(self._final, self._given_until, end)
        done = {(w.start, w.word) for w in tail}
        tail += [w for w in inside(self._partial_words, self._given_until, end) if (w.start, w.word) not in done]
        self._final = [w for w in self._final if (w.start + w.end) // 2 >= end]
        self._given_until = max(self._given_until, end)
        words, self._utt_words = self._utt_words + sorted(tail, key=lambda w: w.start), []
        return words

    def flush(self) -> None:
        res = json.loads(self.rec.FinalResult())
        self._final.extend(self._words(res.get("result", [])))
        self._partial_words, self._partial = [], ""


def find_vosk_model(flag: str | None, configured: str | None) -> Path | None:
    """A Vosk model from the flag, then SER_VOSK_MODEL, then config.toml, then the user's cache."""
    for candidate in (flag, os.environ.get("SER_VOSK_MODEL"), configured):
        if candidate:
            return Path(candidate).expanduser()
    from streamer.models_store import cache_dir

    found = sorted(p for p in cache_dir().glob("vosk-model-*") if p.is_dir()) if cache_dir().is_dir() else []
    return found[-1] if found else None

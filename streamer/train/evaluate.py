"""Speaker-independent evaluation of an audio model on labelled clips (``ser-eval``)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from streamer.audio import SAMPLE_RATE
from streamer.audio.emotion import AudioEmotion, pool_windows
from streamer.audio.io import load_audio
from streamer.errors import AudioInputError
from streamer.labels import INDEX
from streamer.train.corpora import Clip
from streamer.train.metrics import summary

log = logging.getLogger(__name__)

Loader = Callable[[Clip], NDArray[np.float32]]


def load_clip(clip: Clip) -> NDArray[np.float32]:
    return load_audio(clip.path)


@dataclass
class Predictions:
    """Per-clip probabilities, calibrated and at temperature 1, and what was skipped."""

    clips: list[Clip]
    probs: NDArray[np.float32]
    raw_probs: NDArray[np.float32]
    skipped: Counter[str]

    @property
    def y(self) -> list[int]:
        return [INDEX[c.label] for c in self.clips]

    def report(self, calibrated: bool = True) -> dict:
        return summary(self.probs if calibrated else self.raw_probs, self.y, sum(self.skipped.values()))

    def subset(self, keep: Sequence[bool]) -> "Predictions":
        keep = np.asarray(keep, bool)
        return Predictions([c for c, k in zip(self.clips, keep) if k], self.probs[keep], self.raw_probs[keep], Counter())


def predict_clips(model: AudioEmotion, clips: Sequence[Clip], load: Loader = load_clip,
                  progress: Callable[[], None] | None = None) -> Predictions:
    """Run the live windowing and the model over each clip; unreadable clips are skipped."""
    kept, probs, raw = [], [], []
    skipped: Counter[str] = Counter()
    for clip in clips:
        try:
            windows = model.window_inputs(model.prepare_audio(load(clip), SAMPLE_RATE))
        except AudioInputError as exc:
            skipped[f"{type(exc).__name__}"] += 1
            log.warning("skipped %s: %s", clip.path, exc)
        else:
            logits = model.window_logits(windows).numpy()
            owner, frames = [0] * len(windows), [len(w) for w in windows]
            probs.append(pool_windows(logits, owner, frames, 1, model.temperature)[0])
            raw.append(pool_windows(logits, owner, frames, 1, 1.0)[0])
            kept.append(clip)
        if progress:
            progress()
    empty = np.zeros((0, 7), np.float32)
    return Predictions(kept, np.array(probs, np.float32) if probs else empty, np.array(raw, np.float32) if raw else empty, skipped)


KEYS = ("ua", "ua_present", "labels_present", "wa", "macro_f1", "ece", "n", "skipped", "per_class_recall", "dims")


def eval_report(pred: Predictions) -> dict:
    """``ser-eval``'s JSON: overall, per corpus, confusion."""
    overall = pred.report()
    per_corpus = {}
    for corpus in sorted({c.corpus for c in pred.clips}):
        rep = pred.subset([c.corpus == corpus for c in pred.clips]).report()
        per_corpus[corpus] = {k: rep[k] for k in KEYS}
    return {
        "overall": {k: overall[k] for k in KEYS},
        "per_corpus": per_corpus,
        "confusion": overall["confusion"],
        "skipped_reasons": dict(pred.skipped),
    }


def add_arousal(report: dict, pred: Predictions) -> dict:
    """Add ``arousal_bacc`` (:func:`streamer.train.metrics.arousal_bacc`) beside ``ua`` in
    ``overall`` and each ``per_corpus`` entry of an :func:`eval_report`; returns the report."""
    from streamer.train.metrics import arousal_bacc

    report["overall"]["arousal_bacc"] = arousal_bacc(pred.probs, pred.y)
    for corpus, rep in report["per_corpus"].items():
        sub = pred.subset([c.corpus == corpus for c in pred.clips])
        rep["arousal_bacc"] = arousal_bacc(sub.probs, sub.y)
    return report

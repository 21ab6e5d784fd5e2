"""Speaker-independent evaluation of an audio model on labelled clips (``ser-eval``)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from streamer.core.messages import SAMPLE_RATE
from streamer.audio.emotion import AudioEmotion
from streamer.audio.pooling import pool_windows
from streamer.audio.io import load_audio
from streamer.core.errors import AudioInputError
from streamer.core.labels import INDEX
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


ADAPT = ("corpus", "none")


def predict_clips(model: AudioEmotion, clips: Sequence[Clip], load: Loader = load_clip,
                  progress: Callable[[], None] | None = None, adapt: str = "corpus") -> Predictions:
    """Run the live windowing and the model over each clip; unreadable clips are skipped.
    A model that adapts to the statistics of what it hears (``kind = "pooled"``) standardises
    each corpus by its own (``adapt="corpus"``: the windows of all its clips, no labels, as a
    long stream would) or by the training prior alone (``"none"``)."""
    if getattr(model, "kind", None) == "pooled":
        return _predict_pooled(model, clips, load, progress, adapt)
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


def _predict_pooled(model, clips: Sequence[Clip], load: Loader, progress: Callable[[], None] | None,
                    adapt: str) -> Predictions:
    from streamer.audio.adapt import RunningNorm

    if adapt not in ADAPT:
        raise ValueError(f"adapt must be one of {ADAPT}, not {adapt!r}")
    kept, rows, frames = [], [], []
    skipped: Counter[str] = Counter()
    for clip in clips:
        try:
            r, f = model.rows(model.prepare_audio(load(clip), SAMPLE_RATE))
        except AudioInputError as exc:
            skipped[f"{type(exc).__name__}"] += 1
            log.warning("skipped %s: %s", clip.path, exc)
        else:
            kept.append(clip)
            rows.append(r)
            frames.append(f)
        if progress:
            progress()
    probs, raw = [], []
    norms: dict[str, RunningNorm | None] = {}
    for corpus in dict.fromkeys(c.corpus for c in kept):
        norm = None
        if adapt == "corpus":
            norm = RunningNorm(model.head.prior, model.adapt.prior_windows, horizon=1e9)  # every window counts
            norm.update(np.concatenate([r for c, r in zip(kept, rows) if c.corpus == corpus]))
        norms[corpus] = norm
    for clip, r, f in zip(kept, rows, frames):
        logits = model.row_logits(r, norms[clip.corpus])
        probs.append(model.probs(logits, f))
        raw.append(model.probs(logits, f, temperature=1.0))
    empty = np.zeros((0, 7), np.float32)
    return Predictions(kept, np.array(probs, np.float32) if probs else empty, np.array(raw, np.float32) if raw else empty, skipped)


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

"""PooledEmotion: the audio branch as a linear head over pooled encoder statistics.

A window of prepared speech (silence trimmed, level normalised, cut as the live pipeline
cuts it) plus 0.5 s of silence goes through each pretrained encoder the model names
(Whisper tiny.en and Whisper base by default); the window's row is the mean and standard
deviation over time of each encoder's frames and of 18 prosody frames. The row is
standardised (by the training prior, or by a stream's running statistics:
:mod:`streamer.audio.adapt`), a multinomial logistic regression gives logits, one
temperature calibrates them, and the windows of a longer input are averaged by length.

It needs no torch: numpy, CTranslate2 (tiny.en) and onnxruntime (Whisper base's encoder alone,
:mod:`streamer.audio.onnx_encoder`, where its export ships; :func:`streamer.audio.encoder.open_encoder`). The recipe that chose it
(leave-one-corpus-out over three corpora) is in ``models/audio-emotion/MODEL_CARD.md``.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from streamer.core.messages import SAMPLE_RATE
from streamer.audio.adapt import AdaptOptions, Moments, RunningNorm
from streamer.audio.features import prosody_frames, split_windows
from streamer.audio.linear import stats_row
from streamer.audio.pooling import pool_clip
from streamer.audio.prepare import prepare_input
from streamer.core.errors import ModelError
from streamer.core.labels import LABELS

log = logging.getLogger(__name__)

HEAD_FILE = "head.npz"
KIND = "pooled"


def window_rows(encoders: Sequence, x: NDArray[np.float32], window: int, min_window: int,
                tail: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Rows (N, D) of the live windows of prepared speech ``x`` and each window's frame count:
    per encoder the mean and std of its frames, then those of the prosody frames."""
    rows, frames = [], []
    for a, b in split_windows(x.size, window, min_window):
        padded = np.pad(x[a:b], (0, tail))
        p = prosody_frames(padded)
        encoded = [enc.encode(padded) for enc in encoders]
        t = min([len(p), *(len(w) for w in encoded)])
        rows.append(stats_row([w[:t] for w in encoded] + [p[:t]]))
        frames.append(t)
    return np.stack(rows), np.asarray(frames, np.int64)


@dataclass(frozen=True)
class Head:
    """Logits of standardised rows: ``z @ coef.T + intercept``; ``prior`` standardises rows
    before a stream has statistics of its own."""

    coef: NDArray[np.float32]  # (K, D)
    intercept: NDArray[np.float32]  # (K,)
    prior: Moments
    ood_ref: float = 0.0  # the 99th percentile of training rows' mean squared z; 0: no damping

    def logits(self, z: NDArray) -> NDArray[np.float32]:
        """Logits of standardised rows. A row further from the training rows than ``ood_ref``
        (mean squared z: white noise, a broken line) has its logits shrunk by (ood_ref / d)^2,
        so it gets a flatter, uncertain answer instead of a confident one; the argmax stays.

        >>> h = Head(np.eye(2, dtype=np.float32), np.zeros(2, np.float32), Moments(np.zeros((1, 2)), np.ones((1, 2)), 1.0), 2.0)
        >>> h.logits(np.array([[1.0, 0.0], [4.0, 0.0]])).round(2).tolist()
        [[1.0, 0.0], [0.25, 0.0]]
        """
        z = np.asarray(z, np.float32)
        out = z @ self.coef.T + self.intercept
        if self.ood_ref > 0:
            d = (z.astype(np.float64) ** 2).mean(1)
            out = out * np.minimum(1.0, (self.ood_ref / np.maximum(d, 1e-9)) ** 2)[:, None]
        return out.astype(np.float32)

    def save(self, path: Path) -> None:
        np.savez(path, coef=self.coef, intercept=self.intercept, prior_mean=self.prior.mean, prior_var=self.prior.var,
                 prior_weight=np.array(self.prior.weight), ood_ref=np.array(self.ood_ref))

    @classmethod
    def load(cls, path: Path) -> "Head":
        with np.load(path) as z:
            head = cls(z["coef"].astype(np.float32), z["intercept"].astype(np.float32),
                       Moments(z["prior_mean"].astype(np.float64), z["prior_var"].astype(np.float64), float(z["prior_weight"])),
                       float(z["ood_ref"]) if "ood_ref" in z else 0.0)
        if head.coef.shape != (len(head.intercept), head.prior.mean.shape[1]):
            raise ValueError(f"{path}: inconsistent shapes {head.coef.shape}, {head.prior.mean.shape}")
        return head


@dataclass(frozen=True)
class WindowRows:
    """What the audio service computes for one window: the rows of its live windows and
    their frame counts. Stateless, so windows batch across streams and replicas; the stream's
    :class:`PooledStream` turns them into probabilities, in the stream's order."""

    rows: NDArray[np.float32]  # (N, D)
    frames: NDArray[np.int64]  # (N,)


class PooledStream:
    """One stream's side of the model: its running statistics (:class:`RunningNorm`)
    standardise each window's rows, then take them in. Windows must come in the stream's
    order (the session's lane gives them so), which makes a stream's answers the same
    whichever process, replica or batch computed the rows. Small and picklable: a Ray
    gateway fetches the model's head once and keeps one of these per call."""

    def __init__(self, head: Head, temperature: float, adapt: AdaptOptions) -> None:
        self.head, self.temperature, self.adapt = head, float(temperature), adapt
        self.reset()

    def reset(self) -> None:
        self.norm = RunningNorm(self.head.prior, self.adapt.prior_windows, self.adapt.horizon) if self.adapt.enabled else None

    def probs_array(self, scored: WindowRows) -> NDArray[np.float32]:
        logits = self.head.logits((self.norm or self.head.prior).standardise(scored.rows))
        if self.norm is not None:
            self.norm.update(scored.rows)
        return pool_clip(logits, scored.frames, self.temperature)

    def probs(self, scored: WindowRows) -> dict[str, float]:
        """The window's calibrated probabilities; the stream's statistics then take its rows in."""
        return dict(zip(LABELS, map(float, self.probs_array(scored))))


class PooledEmotion:
    """Audio emotion classifier over pooled encoder statistics (see the module's doc)."""

    kind = KIND
    # score_batch scores one window after another (the encoders take one input each): a batch
    # would gain nothing and hold every window's answer until the last is done
    max_batch = 1

    def __init__(self, head: Head, temperature: float, encoders: Sequence,
                 window_samples: int, min_window_samples: int, tail_samples: int,
                 adapt: AdaptOptions = AdaptOptions(), digest: str = "?") -> None:
        if not temperature > 0:
            raise ModelError(f"temperature must be > 0, not {temperature}")
        self.head = head
        self.temperature = float(temperature)
        self.encoders = list(encoders)
        self.whisper = self.encoders[0]
        self.window_samples, self.min_window_samples, self.tail_samples = window_samples, min_window_samples, tail_samples
        self.adapt = adapt
        self.labels = LABELS
        self.digest = digest

    @classmethod
    def load(cls, folder: str | Path, whisper=None, adapt: AdaptOptions | None = None) -> "PooledEmotion":
        """Load a model folder written by ``ser-train`` (``config.json`` with ``kind = pooled``).
        ``whisper``: an already loaded handle of the first encoder (shared with the recogniser)."""
        import hashlib

        from streamer.audio.encoder import WhisperOptions, open_encoder

        folder = Path(folder)
        try:
            meta = json.loads((folder / "config.json").read_text())
            labels = json.loads((folder / "labels.json").read_text())
            head = Head.load(folder / meta.get("head", HEAD_FILE))
            digest = hashlib.sha256((folder / meta.get("head", HEAD_FILE)).read_bytes()).hexdigest()[:12]
        except FileNotFoundError as exc:
            raise ModelError(f"audio model folder {folder} is incomplete ({exc.filename} missing); "
                             "train one with ser-train or point --audio-model at models/audio-emotion") from exc
        except (json.JSONDecodeError, ValueError, KeyError, OSError) as exc:
            raise ModelError(f"audio model folder {folder} is corrupt ({exc}); retrain it with ser-train") from exc
        if tuple(labels) != LABELS:
            raise ModelError(f"{folder}/labels.json lists {labels}, expected {list(LABELS)}")
        names = list(meta["encoders"])
        encoders = []
        for k, name in enumerate(names):
            if k == 0 and whisper is not None and whisper.options.model == name:
                encoders.append(whisper)
            else:
                encoders.append(open_encoder(name, whisper.options if whisper is not None else WhisperOptions()))
        a = meta.get("adapt", {})
        adapt = adapt or AdaptOptions(bool(a.get("enabled", True)), float(a.get("prior_windows", AdaptOptions.prior_windows)),
                                      float(a.get("horizon", AdaptOptions.horizon)))
        width = head.prior.mean.shape[1]
        if width != meta.get("row_width", width):
            raise ModelError(f"audio model folder {folder}: head reads {width} statistics, config.json says {meta['row_width']}")
        return cls(head, float(meta.get("temperature", 1.0)), encoders, int(meta["window_samples"]),
                   int(meta["min_window_samples"]), int(meta.get("tail_samples", 0)), adapt, digest)

    # --- inputs ---------------------------------------------------------------------------
    def prepare_audio(self, audio: ArrayLike, sample_rate: int) -> NDArray[np.float32]:
        """Mono 16 kHz, checked for emptiness and silence, trimmed and level-normalised."""
        return prepare_input(audio, sample_rate)

    def rows(self, x: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Rows and frame counts of the windows of prepared speech ``x``."""
        return window_rows(self.encoders, x, self.window_samples, self.min_window_samples, self.tail_samples)

    # --- prediction -----------------------------------------------------------------------
    def row_logits(self, rows: NDArray, norm: RunningNorm | None = None) -> NDArray[np.float32]:
        """Logits (N, 7) at temperature 1 of rows standardised by ``norm`` (the prior without)."""
        return self.head.logits((norm or self.head.prior).standardise(rows))

    def probs(self, logits: NDArray, frames: NDArray, temperature: float | None = None) -> NDArray[np.float32]:
        """Length-weighted mean of the windows' calibrated probabilities."""
        return pool_clip(logits, frames, self.temperature if temperature is None else temperature)

    def score(self, audio: ArrayLike, sample_rate: int = SAMPLE_RATE) -> WindowRows:
        """The stateless part of one stretch of audio: its windows' rows."""
        return WindowRows(*self.rows(self.prepare_audio(audio, sample_rate)))

    def score_batch(self, audios: Sequence[ArrayLike], sample_rate: int = SAMPLE_RATE) -> list[WindowRows]:
        """The audio service's entry: each input's rows, in order (batch equals single)."""
        return [self.score(a, sample_rate) for a in audios]

    def stream(self) -> PooledStream:
        """A new stream's state (:class:`PooledStream`)."""
        return self.stream_factory()()

    def stream_factory(self):
        """``() -> PooledStream``, picklable and without the encoders (what a gateway needs)."""
        return functools.partial(PooledStream, self.head, self.temperature, self.adapt)

    def predict_proba(self, audio: ArrayLike, sample_rate: int = SAMPLE_RATE,
                      stream: PooledStream | None = None) -> NDArray[np.float32]:
        """(7,) probabilities of one stretch of audio (windows averaged by length): by the
        training prior, or by ``stream``'s statistics (which it then updates)."""
        scored = self.score(audio, sample_rate)
        if stream is None:
            return self.probs(self.row_logits(scored.rows), scored.frames)
        return stream.probs_array(scored)

    def predict(self, audio: ArrayLike, sample_rate: int = SAMPLE_RATE,
                stream: PooledStream | None = None) -> dict[str, float]:
        return dict(zip(LABELS, map(float, self.predict_proba(audio, sample_rate, stream))))

    def predict_batch(self, audios: Sequence[ArrayLike], sample_rate: int = SAMPLE_RATE) -> list[dict[str, float]]:
        """Each input's probabilities by the training prior (no stream), in order."""
        return [self.predict(a, sample_rate) for a in audios]

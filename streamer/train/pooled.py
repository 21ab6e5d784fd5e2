"""Pooled window statistics of every clip, per encoder: the inputs of the transfer recipe.

Each clip is prepared as the live pipeline prepares speech (silence trimmed, level
normalised), cut into the live windows (2.5 s, a shorter last one), and each window plus
0.5 s of silence goes through every encoder named. A window's row is the mean and standard
deviation over time of the encoder's frames, and of the 18 prosody frames. Rows are cached
per corpus and encoder set in one ``.npz`` (a few MB), so recipes are compared in seconds.

A clip's augmented copies are not encoded here: the rows are clean clips, plus the sox
telephone copy of each clip for evaluation (``phone_*`` arrays), made from that clip only.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamer.audio.windows import MIN_WINDOW_SAMPLES, TAIL_SAMPLES, WINDOW_SAMPLES
from streamer.audio.features import prepare
from streamer.audio.pooled import window_rows as pooled_rows
from streamer.audio.io import load_audio
from streamer.train.corpora import Clip

log = logging.getLogger(__name__)

VERSION = 1


def window_rows(encoders: Sequence, x: NDArray[np.float32]) -> tuple[list[NDArray[np.float32]], list[int]]:
    """Rows and frame counts of the live windows of prepared speech ``x``, as the product
    computes them (:func:`streamer.audio.pooled.window_rows`)."""
    rows, frames = pooled_rows(encoders, x, WINDOW_SAMPLES, MIN_WINDOW_SAMPLES, TAIL_SAMPLES)
    return list(rows), frames.tolist()


_encoders: list | None = None


def _init(models: tuple[str, ...]) -> None:
    global _encoders
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from streamer.audio.encoder import WhisperHandle, WhisperOptions

    # The training rows come from the CTranslate2 int8 encoders, as when the shipped head was
    # trained; the product may run Whisper base's 8-bit ONNX export instead (open_encoder), whose
    # effect on unseen actors bench/base_encoder_eval.py measures (models/whisper-base-encoder card).
    _encoders = [WhisperHandle.shared(WhisperOptions(model=m, num_workers=1)) for m in models]


def _clip_rows(args: tuple[Clip, bool, str]) -> tuple[list, list, list, list]:
    from streamer.train.cache import CLEAN, make_copies, sox_telephone

    clip, phone_too, copy = args
    path = clip.path
    assert _encoders is not None
    audio = prepare(load_audio(path)) if copy == CLEAN else make_copies(clip, [copy])[copy]
    clean, cf = window_rows(_encoders, audio)
    if not phone_too:
        return clean, cf, [], []
    try:
        phone, pf = window_rows(_encoders, prepare(sox_telephone(path)))
    except Exception as exc:  # sox missing: no telephone rows for this clip
        log.warning("no telephone copy of %s: %s", path, exc)
        phone, pf = [], []
    return clean, cf, phone, pf


@dataclass
class PooledSet:
    """Window rows of some clips: ``x`` (N, D), the clip each row belongs to, its frames;
    per clip its label, speaker and corpus; the column ranges of each encoder and of prosody."""

    x: NDArray[np.float32]
    owner: NDArray[np.int64]
    frames: NDArray[np.int64]
    phone_x: NDArray[np.float32]
    phone_owner: NDArray[np.int64]
    phone_frames: NDArray[np.int64]
    paths: list[str]
    labels: list[str]
    speakers: list[str]
    corpora: list[str]
    blocks: dict[str, tuple[int, int]]


def _key(clips: Sequence[Clip], models: Sequence[str], phone: Sequence[str]) -> str:
    h = hashlib.sha256(f"{VERSION}|{'|'.join(models)}|{'|'.join(phone)}".encode())
    for c in clips:
        h.update(f"{c.path}|{c.label}|{c.speaker}\n".encode())
    return h.hexdigest()[:12]


def build(clips: Sequence[Clip], models: Sequence[str], dims: Sequence[int], cache: Path, jobs: int = 2,
          name: str = "pooled", phone_corpora: Sequence[str] = ("ravdess",), copy: str = "clean") -> PooledSet:
    """Rows of every clip (cached in ``cache/<name>-<key>.npz``), or of each clip's augmented
    ``copy`` (:data:`streamer.train.augment.COPIES`, made from that clip only); telephone rows
    for the clips of ``phone_corpora``."""
    if copy != "clean":
        name = f"{name}-{copy}"
    cache.mkdir(parents=True, exist_ok=True)
    file = cache / f"{name}-{_key(clips, models, phone_corpora)}.npz"
    blocks, at = {}, 0
    for m, d in zip(models, dims):
        blocks[m] = (at, at + 2 * d)
        at += 2 * d
    from streamer.audio.features import N_PROSODY

    blocks["prosody"] = (at, at + 2 * N_PROSODY)
    meta = dict(paths=[str(c.path) for c in clips], labels=[c.label for c in clips],
                speakers=[c.speaker for c in clips], corpora=[c.corpus for c in clips], blocks=blocks)
    if file.is_file():
        with np.load(file) as z:
            return PooledSet(z["x"], z["owner"], z["frames"], z["phone_x"], z["phone_owner"], z["phone_frames"], **meta)
    out: dict[str, list] = {k: [] for k in ("x", "owner", "frames", "phone_x", "phone_owner", "phone_frames")}
    with ProcessPoolExecutor(jobs, initializer=_init, initargs=(tuple(models),)) as pool:
        for k, (clean, cf, phone, pf) in enumerate(pool.map(_clip_rows, [(c, c.corpus in phone_corpora, copy) for c in clips], chunksize=8)):
            out["x"] += clean
            out["frames"] += cf
            out["owner"] += [k] * len(clean)
            out["phone_x"] += phone
            out["phone_frames"] += pf
            out["phone_owner"] += [k] * len(phone)
            if (k + 1) % 500 == 0:
                log.info("%s: %d / %d clips", name, k + 1, len(clips))
    width = blocks["prosody"][1]
    arrays = {k: (np.asarray(v, np.float32).reshape(-1, width) if k.endswith("x") else np.asarray(v, np.int64))
              for k, v in out.items()}
    np.savez(file, **arrays)
    return PooledSet(**arrays, **meta)

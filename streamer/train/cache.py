"""Cache of model inputs per clip and augmented copy: Whisper encoder frames and prosody
frames of the trimmed, level-normalised audio.

Encoder passes are the costly part of training on a CPU, so each clip's fixed set of
augmented copies (:data:`streamer.train.augment.COPIES`) is encoded once and reused by
every fold and epoch. Copies are made from their own clip only, so they share its split.
A telephone copy made with ``sox`` (a codec chain the training augmentation does not use)
is cached for evaluation only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamer.core.messages import SAMPLE_RATE
from streamer.audio.windows import MIN_WINDOW_SAMPLES, TAIL_SAMPLES, WINDOW_SAMPLES, FrameInputs, encode_window
from streamer.audio.encoder import WhisperHandle, WhisperOptions
from streamer.audio.features import normalize_level, prepare, split_windows, trim_silence
from streamer.audio.io import load_audio
from streamer.train.augment import COPIES
from streamer.train.corpora import Clip

log = logging.getLogger(__name__)

CACHE_VERSION = 2
CLEAN = "clean"
SOX_PHONE = "sox_telephone"

ClipInputs = list[FrameInputs]  # one entry per live window of the clip


def sox_telephone(path: Path) -> NDArray[np.float32]:
    """The acceptance test's telephone channel, made by sox: 8 kHz, 300-3400 Hz, mu-law."""
    if shutil.which("sox") is None:
        raise RuntimeError("sox is needed for the telephone evaluation: apt-get install sox")
    with tempfile.TemporaryDirectory() as tmp:
        narrow, wide = Path(tmp) / "n.wav", Path(tmp) / "w.wav"
        subprocess.run(["sox", str(path), "-r", "8000", "-c", "1", "-e", "mu-law", "-b", "8", str(narrow), "sinc", "300-3400"], check=True, capture_output=True)
        subprocess.run(["sox", str(narrow), "-r", str(SAMPLE_RATE), "-e", "signed", "-b", "16", str(wide)], check=True, capture_output=True)
        return load_audio(wide)


def clip_seed(clip: Clip, copy: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{clip.path.name}|{copy}".encode()).digest()[:8], "little")


def make_copies(clip: Clip, names: Sequence[str]) -> dict[str, NDArray[np.float32]]:
    """The prepared (trimmed, level-normalised) waveform of each named copy of ``clip``."""
    raw = load_audio(clip.path)
    trimmed = trim_silence(raw)
    out: dict[str, NDArray[np.float32]] = {}
    for name in names:
        if name == CLEAN:
            y = normalize_level(trimmed)
        elif name == SOX_PHONE:
            y = prepare(sox_telephone(clip.path))
        else:
            y = prepare(COPIES[name](trimmed, np.random.default_rng(clip_seed(clip, name))))
        out[name] = y
    return out


_worker_handle: WhisperHandle | None = None


def _encode_clip(args: tuple[Clip, tuple[str, ...]]) -> dict[str, ClipInputs]:
    """Every copy of a clip, cut into live windows, each window encoded as live does."""
    global _worker_handle
    if _worker_handle is None:
        _worker_handle = WhisperHandle.shared(WhisperOptions())
    clip, names = args
    out = {}
    for name, y in make_copies(clip, names).items():
        bounds = split_windows(y.size, WINDOW_SAMPLES, MIN_WINDOW_SAMPLES) or [(0, y.size)]
        windows = [encode_window(_worker_handle, y[a:b], TAIL_SAMPLES) for a, b in bounds]
        out[name] = [FrameInputs(w.whisper.astype(np.float16), w.prosody) for w in windows]
    return out


class FeatureCache:
    """Folder of cached inputs: one ``.npz`` per (corpus, copy): frames of every window,
    window offsets and the clip each window belongs to."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _file(self, key: str, copy: str) -> Path:
        return self.root / f"v{CACHE_VERSION}" / f"{key}.{copy}.npz"

    @staticmethod
    def key(clips: Sequence[Clip]) -> str:
        h = hashlib.sha256("\n".join(f"{c.path.name}|{c.label}|{c.speaker}" for c in clips).encode())
        return f"{clips[0].corpus}-{len(clips)}-{h.hexdigest()[:10]}"

    def build(self, clips: Sequence[Clip], copies: Sequence[str], jobs: int = 2,
              progress: Callable[[int], None] | None = None) -> None:
        """Encode every missing copy of these clips (one corpus) into the cache."""
        key = self.key(clips)
        missing = tuple(c for c in copies if not self._file(key, c).exists())
        if not missing:
            if progress:
                progress(len(clips))
            return
        results: list[dict[str, ClipInputs]] = []
        tasks = [(clip, missing) for clip in clips]
        if jobs > 1:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(jobs, initializer=_init_worker) as pool:
                for r in pool.imap(_encode_clip, tasks, chunksize=4):
                    results.append(r)
                    if progress:
                        progress(1)
        else:
            for task in tasks:
                results.append(_encode_clip(task))
                if progress:
                    progress(1)
        self._file(key, missing[0]).parent.mkdir(parents=True, exist_ok=True)
        for name in missing:
            windows = [(k, w) for k, r in enumerate(results) for w in r[name]]
            offsets = np.cumsum([0] + [len(w) for _, w in windows])
            tmp = self._file(key, name).with_suffix(".tmp.npz")
            np.savez(tmp, whisper=np.concatenate([w.whisper for _, w in windows]),
                     prosody=np.concatenate([w.prosody for _, w in windows]), offsets=offsets,
                     clip=np.array([k for k, _ in windows]))
            tmp.replace(self._file(key, name))
        (self.root / f"v{CACHE_VERSION}" / f"{key}.json").write_text(json.dumps(
            [{"path": str(c.path), "label": c.label, "speaker": c.speaker} for c in clips]))

    def load(self, clips: Sequence[Clip], copy: str) -> list[ClipInputs]:
        """Cached windows of each clip, in the order given to :meth:`build`."""
        with np.load(self._file(self.key(clips), copy)) as z:
            w, p, off, owner = z["whisper"], z["prosody"], z["offsets"], z["clip"]
        out: list[ClipInputs] = [[] for _ in clips]
        for k, a, b in zip(owner, off[:-1], off[1:]):
            out[k].append(FrameInputs(w[a:b], p[a:b]))
        return out


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)

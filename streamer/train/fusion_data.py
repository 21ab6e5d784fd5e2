"""Data for fitting and scoring the learned fusion: spoken sentence sets and RAVDESS clips.

- **Spoken sentences** (emotional words in a flat voice): single-label sentences of a text
  corpus split, balanced per label (up to ``per_label`` each), spoken by espeak-ng in a
  rotating set of voices and speeds and converted by sox to 16 kHz mono 16-bit WAV. Each set
  is a folder with the WAV files and ``manifest.tsv`` (``id path label text voice speed
  source``, paths relative to the folder). Made once and reused (``runs/fusion-data``).
- **RAVDESS clips** (an emotional voice with emotionally empty words): the out-of-fold audio
  probabilities the audio model's leave-actors-out folds wrote (``oof_ravdess.json``), and the
  clip's script (two sentences, known from the file name).

>>> speakable("I love it [NAME]!! :)")
'I love it Alex!! :)'
>>> speakable("so cute 😍") is None, speakable("ok") is None
(True, True)
>>> ravdess_script("03-01-05-01-02-01-07.flac")
'Dogs are sitting by the door'
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamer.core.messages import SAMPLE_RATE
from streamer.core.errors import ConfigError, MissingDependency
from streamer.core.labels import INDEX, LABELS, to_label
from streamer.train.textdata import TextRows, read_goemotions, read_tsv

log = logging.getLogger(__name__)

RAVDESS_SCRIPTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
# espeak-ng voices (language + variant) and speeds (words per minute) the sets rotate through.
VOICES = ("en-us", "en-gb", "en-us+f3", "en-us+m3", "en-gb+f2", "en-029", "en-gb-scotland+f4", "en-us+m1")
SPEEDS = (140, 150, 160, 170, 180)
_PLACEHOLDERS = {"NAME": "Alex", "RELIGION": "religion"}
_PLACEHOLDER = re.compile(r"\[([A-Z]+)\]")
MANIFEST_FIELDS = ["id", "path", "label", "text", "voice", "speed", "source"]


def ravdess_script(path: str | Path) -> str:
    """The sentence a RAVDESS clip speaks (field 5 of its name: 01 kids, 02 dogs)."""
    stem = Path(path).stem.split("-")
    if len(stem) != 7 or stem[4] not in RAVDESS_SCRIPTS:
        raise ValueError(f"not a RAVDESS speech file name: {path}")
    return RAVDESS_SCRIPTS[stem[4]]


def ravdess_actor(path: str | Path) -> int:
    return int(Path(path).stem.split("-")[6])


def speakable(text: str, min_words: int = 3, max_words: int = 30) -> str | None:
    """The sentence as espeak-ng should read it (placeholders filled), or None when it is not
    plain ASCII (emoji would be read out by name) or has too few or too many words."""
    text = _PLACEHOLDER.sub(lambda m: _PLACEHOLDERS.get(m.group(1), m.group(1).lower()), text)
    text = " ".join(text.split())
    if not text.isascii() or not min_words <= len(re.findall(r"[A-Za-z']+", text)) <= max_words:
        return None
    return text


@dataclass(frozen=True)
class SpokenItem:
    id: str
    path: Path  # absolute
    label: str
    text: str  # the sentence as written in the corpus (what the text model reads)
    voice: str
    speed: int
    source: str


def corpus_rows(name: str, data_root: Path) -> TextRows:
    """``goemotions-dev``, ``goemotions-test``, ``meld-dev``, ``dailydialog-test`` ... as
    single-label rows."""
    corpus, _, split = name.partition("-")
    if corpus == "goemotions":
        return read_goemotions(data_root / "text" / "goemotions", split).single()
    if corpus in ("meld", "dailydialog"):
        return read_tsv(data_root / "text" / corpus / f"{split}.tsv", name)
    raise ConfigError(f"unknown sentence set {name!r} (goemotions-<split>, meld-<split>, dailydialog-<split>)")


def pick(rows: TextRows, per_label: int, seed: int) -> list[tuple[int, str, str]]:
    """Up to ``per_label`` speakable sentences per label, a fixed random choice:
    (row index, text as written, label)."""
    rng = np.random.default_rng(seed)
    labels = rows.labels()
    out = []
    for k, name in enumerate(LABELS):
        idx = rng.permutation(np.flatnonzero(labels == k))
        seen: set[str] = set()
        chosen = []
        for i in idx:
            t = rows.texts[i]
            key = " ".join(t.lower().split())
            if key in seen or speakable(t) is None:
                continue
            seen.add(key)
            chosen.append((int(i), t, name))
            if len(chosen) >= per_label:
                break
        out += chosen
    return sorted(out)


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise MissingDependency(tool, "spoken sentence sets (apt-get install -y espeak-ng sox)")
    return path


def speak(text: str, out: Path, voice: str, speed: int) -> None:
    """espeak-ng -> sox: 16 kHz mono 16-bit WAV at ``out``."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run([_need("espeak-ng"), "-v", voice, "-s", str(speed), "-w", str(raw), text],
                       check=True, capture_output=True)
        subprocess.run([_need("sox"), str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out)],
                       check=True, capture_output=True)


def build_spoken_set(name: str, folder: Path, data_root: Path, per_label: int, seed: int = 0) -> list[SpokenItem]:
    """Speak a balanced choice of ``name``'s sentences into ``folder`` (kept if complete)."""
    manifest = folder / "manifest.tsv"
    if manifest.is_file():
        items = read_spoken_set(folder)
        if all(i.path.is_file() for i in items):
            return items
    folder.mkdir(parents=True, exist_ok=True)
    rows = corpus_rows(name, data_root)
    chosen = pick(rows, per_label, seed)
    rng = np.random.default_rng(seed + 1)
    items = []
    for i, text, label in chosen:
        voice, speed = VOICES[rng.integers(len(VOICES))], int(SPEEDS[rng.integers(len(SPEEDS))])
        item_id = f"{name}-{i:05d}"
        path = folder / f"{item_id}.wav"
        speak(speakable(text), path, voice, speed)
        items.append(SpokenItem(item_id, path, label, text, voice, speed, name))
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(MANIFEST_FIELDS)
        for it in items:
            w.writerow([it.id, it.path.name, it.label, " ".join(it.text.split()), it.voice, it.speed, it.source])
    counts = {k: sum(1 for it in items if it.label == k) for k in LABELS}
    log.info("spoke %d sentences of %s into %s: %s", len(items), name, folder, counts)
    return items


def read_spoken_set(folder: Path) -> list[SpokenItem]:
    manifest = Path(folder) / "manifest.tsv"
    if not manifest.is_file():
        raise ConfigError(f"{folder}: no manifest.tsv; build the set with ser-train-fusion or bench/fusion_eval.py")
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [SpokenItem(r["id"], Path(folder) / r["path"], r["label"], r["text"], r["voice"], int(r["speed"]), r["source"])
            for r in rows]


@dataclass(frozen=True)
class OofClip:
    """One RAVDESS clip with the probabilities of the fold model that never saw its actor."""

    path: Path
    actor: int
    label: str
    probs: np.ndarray  # (7,)
    fold: int | None = None  # the audio model's fold that held the actor out (1-based), when given


def fold_map(folds_dir: str | Path | None) -> dict[int, int]:
    """Actor -> fold (1-based) from the audio model's fold folders (``fold<k>/test_actors.txt``);
    empty when there are none."""
    out: dict[int, int] = {}
    if folds_dir is None or not Path(folds_dir).is_dir():
        return out
    for f in sorted(Path(folds_dir).glob("fold*/test_actors.txt")):
        k = int(f.parent.name[4:])
        for line in f.read_text().split():
            out[int(line.split(":")[-1])] = k
    return out


def with_folds(clips: list[OofClip], folds: dict[int, int]) -> list[OofClip]:
    """The clips with their fold set from ``folds`` (actor -> fold) where it knows the actor."""
    return [OofClip(c.path, c.actor, c.label, c.probs, folds.get(c.actor, c.fold)) for c in clips]


def fold_of(clip: OofClip) -> int:
    """The clip's leave-actors-out fold, 1-based: as the out-of-fold file says, else the
    fixed folds of 4 consecutive actors (01-04 -> 1, ...)."""
    return clip.fold if clip.fold is not None else (clip.actor - 1) // 4 + 1


def read_oof(path: str | Path) -> list[OofClip]:
    """``oof_ravdess.json`` of the audio model: a list of clips (or ``{"predictions": [...]}``), each
    with ``path``, ``actor``, ``label`` and ``probs`` (a dict over the labels or a list in
    label order; also accepted under ``oof`` or ``p``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no out-of-fold audio predictions at {path}; the audio model's fold training writes it")
    raw = json.loads(path.read_text())
    rows = raw
    if isinstance(raw, dict):
        rows = next((raw[k] for k in ("predictions", "clips", "items") if k in raw), raw)
    if isinstance(rows, dict):  # {path: {...}}
        rows = [{"path": k, **v} for k, v in rows.items()]
    out = []
    for r in rows:
        p = r.get("probs", r.get("oof", r.get("p")))
        if isinstance(p, dict) and "audio" in p and isinstance(p["audio"], (dict, list)):
            p = p["audio"]
        v = np.array([float(p[k]) for k in LABELS]) if isinstance(p, dict) else np.asarray(p, float)
        label = to_label(str(r["label"])) if not isinstance(r["label"], int) else LABELS[r["label"]]
        if v.shape != (len(LABELS),) or label is None:
            raise ConfigError(f"{path}: bad row {str(r)[:200]}")
        actor = r.get("actor", r.get("speaker"))
        actor = int(str(actor).split(":")[-1]) if actor is not None else ravdess_actor(r["path"])
        fold = r.get("fold")
        out.append(OofClip(Path(r["path"]), actor, label, v / v.sum(), None if fold is None else int(fold)))
    return out


def label_index(names) -> np.ndarray:
    return np.array([INDEX[n] for n in names], dtype=np.int64)

"""Readers for acted emotional speech corpora, by their file-naming conventions.

Each reader maps one file name onto a :class:`Clip` with a label from the one label set,
or onto a reason to skip it (a label outside the set, such as EmoDB boredom).
:func:`scan` walks a folder, detects the layout of every file from its name and counts
what it skipped, so any folder of any supported corpus can be read.

>>> parse("03-01-02-01-01-02-07.wav").label, parse("03-01-02-01-01-02-07.wav").speaker
('neutral', 'ravdess:07')
>>> parse("OAF_back_ps.wav").label
'surprise'
>>> parse("03a01Lb.wav")
Skip(corpus='emodb', reason='label outside the set: boredom')
>>> c = parse("samples/WR0_surprised_64.ogg"); c.label, c.speaker, c.corpus
('surprise', 'nemo:WR0', 'nemo')
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from streamer.core.labels import to_label

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif"})


@dataclass(frozen=True)
class Clip:
    """One labelled recording: where it is, what it shows, who speaks."""

    path: Path
    label: str
    speaker: str  # corpus-qualified ("ravdess:07"), so speakers never collide across corpora
    corpus: str


@dataclass(frozen=True)
class Skip:
    """A file that names a known corpus but carries no usable label."""

    corpus: str
    reason: str


# --- one reader per corpus: a pattern over the file stem and a code table ------------------

_RAVDESS = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
_RAVDESS_CODES = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised",
}

_CREMA = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
_CREMA_CODES = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}

_TESS = re.compile(r"^(OAF|YAF|OA)_([A-Za-z]+)_(angry|disgust|fear|happy|neutral|ps|sad)$", re.IGNORECASE)

# SAVEE: "DC_a01" (flattened releases) or "a01" inside a speaker folder "DC/".
_SAVEE = re.compile(r"^(?:(DC|JE|JK|KL)_)?(a|d|f|h|n|sa|su)(\d\d)$")
_SAVEE_SPEAKERS = frozenset({"DC", "JE", "JK", "KL"})
_SAVEE_CODES = {"a": "anger", "d": "disgust", "f": "fear", "h": "happiness", "n": "neutral", "sa": "sadness", "su": "surprise"}

# EmoDB: speaker (2 digits), text code (letter + 2 digits), emotion letter (German), version.
_EMODB = re.compile(r"^(\d\d)([a-z]\d\d)([WLEAFTN])([a-z])$")
_EMODB_CODES = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness", "N": "neutral"}

# EMOVO: emotion-speaker-sentence, Italian emotion codes.
_EMOVO = re.compile(r"^(dis|gio|neu|pau|rab|sor|tri)-([fm]\d)-([a-z]+\d*)$")
_EMOVO_CODES = {"dis": "disgust", "gio": "joy", "neu": "neutral", "pau": "fear", "rab": "anger", "sor": "surprise", "tri": "sadness"}

# nEMO (Christop 2024, Polish): "<speaker>_<emotion>_<n>", speakers two letters and a digit.
_NEMO = re.compile(r"^([A-Z]{2}\d)_(anger|fear|happiness|neutral|sadness|surprised)_(\d+)$")

# URDU (Latif et al. 2018): "SM1_F10_A010": speaker S+gender+number, file, emotion letter + index.
_URDU = re.compile(r"^(S[MF]\d+)_F\d+_([AHNS])\d+$")
_URDU_CODES = {"A": "angry", "H": "happy", "N": "neutral", "S": "sad"}


def _make(path: Path, corpus: str, speaker: str, name: str) -> Clip | Skip:
    label = to_label(name)
    if label is None:
        return Skip(corpus, f"label outside the set: {name}")
    return Clip(path, label, f"{corpus}:{speaker}", corpus)


def parse(path: str | Path) -> Clip | Skip | None:
    """The clip a file name describes, a Skip for a known layout with no usable label,
    or None when the name follows no supported corpus."""
    path = Path(path)
    stem = path.stem
    if m := _RAVDESS.match(stem):
        code = m.group(3)
        if code not in _RAVDESS_CODES:
            return Skip("ravdess", f"unknown emotion code {code}")
        return _make(path, "ravdess", m.group(7), _RAVDESS_CODES[code])
    if m := _CREMA.match(stem):
        code = m.group(3)
        return _make(path, "crema-d", m.group(1), _CREMA_CODES.get(code, code.lower()))
    if m := _TESS.match(stem):
        speaker = m.group(1).upper()
        return _make(path, "tess", "OAF" if speaker == "OA" else speaker, m.group(3).lower())
    if m := _SAVEE.match(stem):
        speaker = m.group(1) or path.parent.name
        if speaker in _SAVEE_SPEAKERS:
            return _make(path, "savee", speaker, _SAVEE_CODES[m.group(2)])
    if m := _EMODB.match(stem):
        return _make(path, "emodb", m.group(1), _EMODB_CODES[m.group(3)])
    if m := _EMOVO.match(stem):
        return _make(path, "emovo", m.group(2), _EMOVO_CODES[m.group(1)])
    if m := _NEMO.match(stem):
        return _make(path, "nemo", m.group(1), m.group(2))
    if m := _URDU.match(stem):
        return _make(path, "urdu", m.group(1), _URDU_CODES[m.group(2)])
    return None


@dataclass
class ScanResult:
    """Clips found under some folders, and what was skipped, counted by reason."""

    clips: list[Clip] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def by_corpus(self) -> dict[str, list[Clip]]:
        out: dict[str, list[Clip]] = {}
        for clip in self.clips:
            out.setdefault(clip.corpus, []).append(clip)
        return out


def iter_audio_files(root: Path) -> Iterator[Path]:
    """Audio files under root (or root itself), in a stable order."""
    if root.is_file():
        yield root
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES:
            yield path


def scan(roots: Iterable[str | Path]) -> ScanResult:
    """Read every supported file under the given folders; unknown names count as skipped."""
    result = ScanResult()
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"no such file or folder: {root}")
        for path in iter_audio_files(root):
            item = parse(path)
            if isinstance(item, Clip):
                result.clips.append(item)
            elif isinstance(item, Skip):
                result.skipped[f"{item.corpus}: {item.reason}"] += 1
            else:
                result.skipped["unrecognised file name"] += 1
    return result

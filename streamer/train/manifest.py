"""Labelled clips listed in a manifest (TSV or CSV), whatever the audio files are called.

A manifest is a table with a header row naming the columns ``path`` and ``label`` (and
optionally ``speaker``), one clip per row, columns separated by tab, comma, semicolon or
bar (the one that splits the header into those names; .tsv and .csv say which to try
first). Blank lines and lines starting with ``#`` are ignored. Paths are relative to the
manifest's folder (absolute paths are kept). Labels are mapped onto the label set through
:func:`streamer.core.labels.to_label` ("anger" -> angry, "calm" -> neutral); rows with a label
outside it, or whose audio file is missing, are skipped and counted. The clips' corpus is
the manifest's file stem, so they get their own ``per_corpus`` entry in ``ser-eval``.

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> _ = (d / "a.wav").write_bytes(b""); _ = (d / "b.wav").write_bytes(b"")
>>> _ = (d / "mine.csv").write_text("path,label,speaker\\na.wav,anger,s1\\nb.wav,boredom,s1\\nc.wav,sad,s2\\n")
>>> m = read_manifest(d / "mine.csv")
>>> [(c.path.name, c.label, c.speaker, c.corpus) for c in m.clips]
[('a.wav', 'angry', 'mine:s1', 'mine')]
>>> dict(m.unknown_labels), m.missing, m.rows
({'boredom': 1}, 1, 3)
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from streamer.core.errors import SerError
from streamer.core.labels import LABELS, to_label
from streamer.train.corpora import Clip

log = logging.getLogger(__name__)

REQUIRED = ("path", "label")
FORMAT_HINT = "the first row must be a header naming the columns path and label (optional: speaker), e.g. 'path,label,speaker'"


class ManifestError(SerError):
    """A manifest that cannot be read as a table of labelled clips."""


@dataclass
class Manifest:
    """What a manifest listed: the usable clips and what was skipped, counted."""

    file: Path
    clips: list[Clip] = field(default_factory=list)
    rows: int = 0
    unknown_labels: Counter[str] = field(default_factory=Counter)
    missing: int = 0
    malformed: int = 0

    @property
    def skipped(self) -> Counter[str]:
        """Skip reasons in the form of ``ser-eval``'s ``skipped_reasons``."""
        out: Counter[str] = Counter()
        for name, n in self.unknown_labels.items():
            out[f"manifest: unknown label: {name}"] += n
        if self.missing:
            out["manifest: missing audio file"] += self.missing
        if self.malformed:
            out["manifest: row without path or label"] += self.malformed
        return out

    def summary(self) -> dict:
        """The ``manifest`` block of ``ser-eval``'s JSON."""
        return {"file": str(self.file), "rows": self.rows, "clips": len(self.clips),
                "unknown_labels": dict(self.unknown_labels), "missing_files": self.missing,
                "malformed_rows": self.malformed}


def _delimiter(path: Path, header: str) -> str:
    """The separator whose split of the header names both required columns, trying the
    extension's first (tab for .tsv/.tab, comma for .csv); else the extension's, else sniffed."""
    suffix = path.suffix.lower()
    preferred = "\t" if suffix in (".tsv", ".tab") else "," if suffix == ".csv" else ""
    for sep in dict.fromkeys([preferred, "\t", ",", ";", "|"]):
        if sep and all(c in [h.strip().lower() for h in next(csv.reader([header], delimiter=sep))] for c in REQUIRED):
            return sep
    if preferred:
        return preferred
    try:
        return csv.Sniffer().sniff(header, delimiters="\t,;|").delimiter
    except csv.Error:
        return ","


def read_manifest(path: str | Path) -> Manifest:
    """Read a manifest; raise :class:`ManifestError` naming the fix when it is not a usable table."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"no such manifest: {path}; give a TSV or CSV file with columns path, label")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest {path} is not UTF-8 text ({exc.reason}); save it as UTF-8 CSV or TSV") from exc
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ManifestError(f"manifest {path} is empty: {FORMAT_HINT}, then one row per clip")
    reader = csv.reader(lines, delimiter=_delimiter(path, lines[0]))
    header = [h.strip().lower() for h in next(reader)]
    missing_cols = [c for c in REQUIRED if c not in header]
    if missing_cols:
        raise ManifestError(f"manifest {path} has no {' or '.join(repr(c) for c in missing_cols)} column "
                            f"(header found: {', '.join(repr(h) for h in header)}): {FORMAT_HINT}")
    col = {name: header.index(name) for name in ("path", "label", "speaker") if name in header}
    corpus = path.stem
    out = Manifest(path)
    for row in reader:
        out.rows += 1
        cell = {name: (row[i].strip() if i < len(row) else "") for name, i in col.items()}
        if not cell["path"] or not cell["label"]:
            out.malformed += 1
            continue
        label = to_label(cell["label"])
        if label is None:
            out.unknown_labels[cell["label"]] += 1
            continue
        audio = Path(cell["path"]).expanduser()
        audio = audio if audio.is_absolute() else path.parent / audio
        if not audio.is_file():
            out.missing += 1
            if out.missing <= 3:
                log.warning("manifest %s: no audio file %s (row %d); skipped", path, audio, out.rows)
            continue
        out.clips.append(Clip(audio, label, f"{corpus}:{cell.get('speaker') or 'unknown'}", corpus))
    if out.rows == 0:
        raise ManifestError(f"manifest {path} has a header but no rows: add one row per clip below it (its path, its label)")
    if out.missing > 3:
        log.warning("manifest %s: %d listed audio files are missing; skipped", path, out.missing)
    if out.unknown_labels:
        log.warning("manifest %s: skipped labels outside the set %s: %s", path, ", ".join(LABELS),
                    ", ".join(f"{k} ({n})" for k, n in out.unknown_labels.most_common()))
    return out

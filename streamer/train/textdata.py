"""Readers for emotion-labelled text: GoEmotions folders and ``text<TAB>label`` files.

A row carries a target distribution over the 7 labels: one-hot for single-label rows, and
for a GoEmotions row with several labels, equal mass on each of its distinct labels (the
training rule). Evaluation keeps single-label rows only (``single``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamer.core.errors import ConfigError
from streamer.core.labels import INDEX, LABELS, to_label


@dataclass(frozen=True)
class TextRows:
    """Texts with their target distributions (N, 7); ``source`` names the set."""

    source: str
    texts: tuple[str, ...]
    targets: NDArray[np.float32]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.texts)

    def single(self) -> "TextRows":
        """Only the rows with one label (what evaluation scores)."""
        keep = np.flatnonzero(self.targets.max(axis=1) > 0.999)
        return TextRows(self.source, tuple(self.texts[i] for i in keep), self.targets[keep], self.skipped)

    def labels(self) -> NDArray[np.int64]:
        return self.targets.argmax(axis=1)

    def head(self, n: int | None) -> "TextRows":
        """The first ``n`` rows after a fixed shuffle (small runs keep every class)."""
        if n is None or n >= len(self):
            return self
        keep = np.sort(np.random.default_rng(0).permutation(len(self))[:n])
        return TextRows(self.source, tuple(self.texts[i] for i in keep), self.targets[keep], self.skipped)

    def counts(self) -> dict[str, int]:
        c = Counter(self.labels().tolist())
        return {LABELS[k]: c.get(k, 0) for k in range(len(LABELS))}


def concat(parts: list[TextRows], source: str) -> TextRows:
    return TextRows(source, tuple(t for p in parts for t in p.texts),
                    np.concatenate([p.targets for p in parts]), sum(p.skipped for p in parts))


def _split_last_tab(line: str) -> tuple[str, str] | None:
    if "\t" not in line:
        return None
    text, _, label = line.rstrip("\n").rpartition("\t")
    return text, label


def read_tsv(path: str | Path, source: str | None = None) -> TextRows:
    """``text<TAB>label`` rows (split on the last tab; no quoting); labels among the 7 or a
    synonym (anger, joy, sadness...). Unknown labels are an error naming them."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such file: {path} (expected text<TAB>label rows)")
    texts, labels, unknown = [], [], Counter()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = _split_last_tab(line)
        if parts is None:
            raise ConfigError(f"{path}:{n}: no tab; each row must be text<TAB>label")
        label = to_label(parts[1])
        if label is None:
            unknown[parts[1]] += 1
            continue
        texts.append(parts[0])
        labels.append(INDEX[label])
    if unknown:
        raise ConfigError(f"{path}: labels outside {', '.join(LABELS)}: {', '.join(sorted(unknown))}")
    if not texts:
        raise ConfigError(f"{path}: no rows")
    return TextRows(source or path.stem, tuple(texts), np.eye(len(LABELS), dtype=np.float32)[labels])


def read_xed(folder: str | Path, split: str) -> TextRows:
    """A split of the XED English subtitles as the project lays them out (``{split}.tsv``:
    ``text<TAB>label`` in the 7 labels, single-label lines only)."""
    path = Path(folder) / f"{split}.tsv"
    if not path.is_file():
        raise ConfigError(f"{folder}: not an XED folder (expected {split}.tsv of text<TAB>label rows)")
    return read_tsv(path, f"xed-{split}")


@dataclass(frozen=True)
class DimRows:
    """Texts with arousal and valence in [-1, 1] (EmoBank's 1-5 ratings mapped by ``(x - 3) / 2``)."""

    source: str
    texts: tuple[str, ...]
    arousal: NDArray[np.float32]
    valence: NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.texts)


def read_emobank(folder: str | Path, split: str) -> DimRows:
    """A split of EmoBank (``emobank.csv``: ``id,split,V,A,D,text``, the authors' split),
    valence and arousal mapped from 1-5 onto [-1, 1]."""
    import csv

    path = Path(folder) / "emobank.csv"
    if not path.is_file():
        raise ConfigError(f"{folder}: not an EmoBank folder (expected emobank.csv)")
    texts, a, v = [], [], []
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] != split or not (row["text"] or "").strip():
                continue
            texts.append(row["text"])
            a.append((float(row["A"]) - 3.0) / 2.0)
            v.append((float(row["V"]) - 3.0) / 2.0)
    if not texts:
        raise ConfigError(f"{path}: no rows in split {split!r}")
    return DimRows(f"emobank-{split}", tuple(texts), np.array(a, np.float32), np.array(v, np.float32))


def read_goemotions(folder: str | Path, split: str) -> TextRows:
    """A split of the GoEmotions Ekman layout (``ekman/{split}.tsv`` + ``labels.txt``): rows
    ``text<TAB>ids<TAB>comment id``. Accepts the dataset folder or its ``ekman`` folder."""
    folder = Path(folder)
    ekman = folder / "ekman" if (folder / "ekman").is_dir() else folder
    tsv, names = ekman / f"{split}.tsv", ekman / "labels.txt"
    if not tsv.is_file() or not names.is_file():
        raise ConfigError(f"{folder}: not a GoEmotions folder (expected ekman/{split}.tsv and ekman/labels.txt)")
    mapped = [to_label(n) for n in names.read_text().split()]
    if None in mapped:
        raise ConfigError(f"{names}: label names outside the label set")
    texts, rows, skipped = [], [], 0
    for line in tsv.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            skipped += 1
            continue
        ids = {INDEX[mapped[int(i)]] for i in parts[1].split(",") if i.strip()}
        if not ids:
            skipped += 1
            continue
        target = np.zeros(len(LABELS), np.float32)
        target[list(ids)] = 1.0 / len(ids)
        texts.append(parts[0])
        rows.append(target)
    return TextRows(f"goemotions-{split}", tuple(texts), np.stack(rows), skipped)

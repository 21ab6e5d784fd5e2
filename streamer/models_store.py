"""Downloadable Vosk models: a catalogue, the user's model cache, a safe download.

A download streams into a temporary file with a progress callback, checks the size the server
declared (Content-Length) and the zip's own CRCs, extracts into a temporary folder beside the
target and renames it into place atomically, so a half-finished download never looks like a
model. Offline, it fails with one clear error.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamer.core.errors import SerError

BASE_URL = "https://alphacephei.com/vosk/models"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    size: str
    about: str

    def url(self, base: str = BASE_URL) -> str:
        return f"{base.rstrip('/')}/{self.name}.zip"


CATALOGUE = {m.name: m for m in (
    ModelInfo("vosk-model-small-en-us-0.15", "40 MB", "US English, small: real time on a Raspberry Pi, the usual choice"),
    ModelInfo("vosk-model-en-us-0.22-lgraph", "128 MB", "US English, larger and more accurate, dynamic graph"),
    ModelInfo("vosk-model-en-us-0.22", "1.8 GB", "US English, big server model (needs about 6 GB of memory)"),
    ModelInfo("vosk-model-small-en-in-0.4", "36 MB", "Indian English, small"),
)}


class DownloadError(SerError):
    pass


def cache_dir() -> Path:
    """Where downloaded models live: $SER_MODELS_DIR, else the user's cache folder."""
    env = os.environ.get("SER_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("ser-live")) / "models"


def installed() -> list[Path]:
    d = cache_dir()
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) if d.is_dir() else []


def download(name: str, base_url: str = BASE_URL, dest: Path | None = None,
             progress: Callable[[int, int | None], None] | None = None, timeout: float = 30.0) -> Path:
    """Fetch ``name`` (a catalogue name) into ``dest`` (default: the cache); returns the folder."""
    if name not in CATALOGUE:
        raise DownloadError(f"unknown model '{name}'; `ser-models list` shows the known ones")
    dest = dest or cache_dir()
    target = dest / name
    if target.is_dir():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    url = CATALOGUE[name].url(base_url)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        archive = Path(tmp) / f"{name}.zip"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(archive, "wb") as out:
                declared = resp.headers.get("Content-Length")
                total = int(declared) if declared else None
                got = 0
                while block := resp.read(1 << 16):
                    out.write(block)
                    got += len(block)
                    if progress:
                        progress(got, total)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise DownloadError(f"cannot download {url} ({getattr(exc, 'reason', exc)}); check the network, "
                                f"or download it elsewhere, unzip it and pass --vosk-model PATH") from exc
        if total is not None and got != total:
            raise DownloadError(f"{url}: got {got} bytes of the {total} declared; the download was cut short, try again")
        try:
            with zipfile.ZipFile(archive) as z:
                bad = z.testzip()
                if bad is not None:
                    raise DownloadError(f"{url}: archive member {bad} is corrupt; try again")
                staging = Path(tmp) / "extract"
                z.extractall(staging)
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"{url} is not a valid zip archive; try again") from exc
        entries = [p for p in staging.iterdir()]
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
        os.replace(root, target)  # atomic on one filesystem: the folder appears complete or not at all
    return target


def remove(name: str) -> None:
    target = cache_dir() / name
    if not target.is_dir():
        raise DownloadError(f"{name} is not installed in {cache_dir()}")
    shutil.rmtree(target)

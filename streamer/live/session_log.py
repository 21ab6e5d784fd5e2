"""Session logs: NDJSON, one JSON object per line, written so a crash loses nothing shown.

The writer creates the file with mode 0600 (transcripts are private), writes each record as
one line and flushes it to the operating system at once. The reader tolerates a torn last
line (a process killed mid-write) and reports which lines it skipped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


def now_iso() -> str:
    """The wall-clock time of a record, UTC, to the second."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def session_start(models: dict, **fields) -> dict:
    """The first record of every session log (ser-live, ser-analyze, a ser-serve call): its
    time, the models that ran, and what the front end knows (source, file, device, call_id,
    tracks, config, ...).

    >>> r = session_start({"asr": "whisper"}, source="x"); r["type"], r["models"], r["source"]
    ('session_start', {'asr': 'whisper'}, 'x')
    """
    return {"type": "session_start", "time": now_iso(), "models": dict(models), **fields}


def session_end(windows: int, error: str | None = None, **fields) -> dict:
    """The last record: how many windows, the error if the session failed, and the front
    end's summary (counts, drops, latency; per channel or track when there are several)."""
    return {"type": "session_end", "time": now_iso(), "windows": int(windows), "error": error, **fields}


class SessionLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.chmod(self.path, 0o600)  # an existing file keeps its mode on open: make it private
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self.records = 0

    def write(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        with self._lock:
            if self._file.closed:
                return
            self._file.write(line + "\n")
            self._file.flush()
            self.records += 1

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()

    def __enter__(self) -> "SessionLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class LogContents:
    records: list[dict] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # 1-based numbers of unparseable lines

    def of_type(self, kind: str) -> list[dict]:
        return [r for r in self.records if r.get("type") == kind]

    @property
    def complete(self) -> bool:
        return bool(self.of_type("session_end"))


def read_log(path: str | Path) -> LogContents:
    """Every parseable record; torn or malformed lines are skipped and listed."""
    out = LogContents()
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                out.skipped.append(n)
                continue
            if isinstance(rec, dict):
                out.records.append(rec)
            else:
                out.skipped.append(n)
    return out

"""Session logs: NDJSON, one JSON object per line, written so a crash loses nothing shown.

The writer creates the file with mode 0600 (transcripts are private) and hands each record to
the operating system at once, as one line, whole or not at all: when a write fails part-way
(a full disk) the file is cut back to its last whole record. The reader tolerates a torn last
line (a process killed mid-write) and reports which lines it skipped.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from collections.abc import Callable
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


ErrorHandler = Callable[[str, bool], None]  # (what failed, whether it is the log's first failure)
WriteFd = Callable[[int, bytes], int]  # os.write's signature: a test passes a disk that fills


class SessionLog:
    """One session's NDJSON log.

    A write that fails (``OSError``: no space left, a quota, an I/O error) leaves the file as it
    was before that record, never half a line. Without ``on_error`` the error is raised (ser-live
    and ser-analyze stop as they always have). With it (a ser-serve call) the session goes on:
    the record is counted in ``lost``, ``error`` keeps the first failure, ``on_error(message,
    first)`` is told of each lost record, and later records are tried again, so once space
    returns the log resumes (the window indices show the gap; the caller's ``session_end`` says
    how many were lost). ``write_fd`` is ``os.write`` unless a test injects a failing disk.

    >>> import tempfile, pathlib
    >>> def full(fd, data): raise OSError(errno.ENOSPC, "No space left on device")
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.ndjson"
    >>> seen = []
    >>> log = SessionLog(path, on_error=lambda msg, first: seen.append(first), write_fd=full)
    >>> log.write({"type": "window"}), log.lost, log.error, seen, path.read_bytes()
    (False, 1, 'No space left on device', [True], b'')
    """

    def __init__(self, path: str | Path, on_error: ErrorHandler | None = None, write_fd: WriteFd = os.write) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.chmod(self.path, 0o600)  # an existing file keeps its mode on open: make it private
        self._fd: int | None = fd
        self._size = os.fstat(fd).st_size  # the end of the last whole record
        self._write_fd = write_fd
        self._on_error = on_error
        self._lock = threading.Lock()
        self.records = 0
        self.lost = 0  # records not written (only with on_error: without it the error is raised)
        self.error: str | None = None  # the first write error

    @property
    def closed(self) -> bool:
        return self._fd is None

    def write(self, record: dict) -> bool:
        """Append ``record`` as one line; True when it was written (False: closed, or lost)."""
        data = (json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                return False
            try:
                self._append(self._fd, data)
            except OSError as exc:
                self._failed(exc)
                if self._on_error is None:
                    raise
                message, first = exc.strerror or str(exc), self.lost == 1
            else:
                self._size += len(data)
                self.records += 1
                return True
        self._on_error(message, first)  # outside the lock: the handler may log, publish, count
        return False

    def _append(self, fd: int, data: bytes) -> None:
        """All of ``data`` at the end of the file; a short write goes on where it stopped
        (each round writes at least a byte, so at most len(data) rounds)."""
        view, done = memoryview(data), 0
        for _ in range(len(data)):
            n = self._write_fd(fd, view[done:])
            if n <= 0:
                raise OSError(errno.EIO, f"the log took {n} bytes of {len(data) - done}")
            done += n
            if done >= len(data):
                return

    def _failed(self, exc: OSError) -> None:
        """Under the lock: cut the file back to its last whole record, count the record lost."""
        self.lost += 1
        if self.error is None:
            self.error = exc.strerror or str(exc)
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as cut:  # the part written stays: stop here, so it stays the last line
            log.error("session log %s: cannot cut a failed record back (%s); nothing more is written to it",
                      self.path, cut)
            self._close_fd()

    def close(self) -> None:
        """Flush to disk (fsync) and close. With ``on_error`` a failing fsync is reported, not raised."""
        with self._lock:
            if self._fd is None:
                return
            try:
                os.fsync(self._fd)
            except OSError as exc:
                if self._on_error is None:
                    self._close_fd()
                    raise
                failure = exc
            else:
                failure = None
            self._close_fd()
        if failure is not None:
            first = self.error is None
            self.error = self.error or failure.strerror or str(failure)
            self._on_error(f"syncing the log to disk: {failure.strerror or failure}", first)

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

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

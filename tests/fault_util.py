"""Faults for the tests: a disk that fills (injected into a session log's writes) and, where
the test may mount one, a real tmpfs of a few kilobytes."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import threading
from pathlib import Path


class FillingDisk:
    """``os.write`` on a disk with ``free`` bytes left: a write that does not fit writes what
    fits (a short write, as the kernel does on a full tmpfs) and the next one fails with
    ENOSPC. ``free`` may be raised again (space returns). Bytes cut back are not given back.

    >>> import tempfile; fd, _ = tempfile.mkstemp(); disk = FillingDisk(3)
    >>> disk.write(fd, b"abcd"), disk.free
    (3, 0)
    >>> disk.write(fd, b"d")
    Traceback (most recent call last):
    ...
    OSError: [Errno 28] No space left on device
    """

    def __init__(self, free: int) -> None:
        self.free = int(free)
        self.failures = 0
        self._lock = threading.Lock()

    def write(self, fd: int, data) -> int:
        with self._lock:
            if self.free <= 0:
                self.failures += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n = os.write(fd, bytes(data[: self.free]))
            self.free -= n
            return n

    def give_back(self, n: int) -> None:
        with self._lock:
            self.free += int(n)


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str = "64k"):
    """A tmpfs of ``size`` mounted on ``folder``: yields True, or False where this process may
    not mount one (not root, no mount(8), a container without CAP_SYS_ADMIN)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
                           capture_output=True, timeout=10)
        mounted = p.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        mounted = False
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=10)


def fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` with one ballast file until a write fails; the
    ballast's path (delete it and the space returns)."""
    ballast = folder / "ballast.bin"
    st = os.statvfs(folder)
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(st.f_blocks * st.f_frsize // 4096 + 2):  # a page at a time, at most the disk's size
            try:
                if os.write(fd, b"\0" * 4096) < 4096:
                    break
            except OSError:
                break
    finally:
        os.close(fd)
    return ballast

"""A real redis-server for tests: on 127.0.0.1 and a free port, nothing saved to disk,
stopped by its PID. ``redis_server`` is a pytest fixture (one server per test module);
:func:`start_redis` gives one the test may kill itself."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class RedisServer:
    proc: subprocess.Popen
    port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM by PID, then SIGKILL if it lingers."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL by PID: Redis gone at once, as a crashed server would be."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5.0)

    def cli(self, *args: str) -> str:
        """One redis-cli command against this server (its output, stripped)."""
        out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args], capture_output=True,
                             text=True, timeout=5.0, check=True)
        return out.stdout.strip()


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(folder: Path, wait_s: float = 10.0) -> RedisServer:
    """Start ``redis-server --bind 127.0.0.1 --port <free> --save "" --appendonly no`` and wait
    until it answers PING (skips the test when redis-server is not installed)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is needed: apt-get install -y redis-server")
    pytest.importorskip("redis", reason="redis-py is needed: pip install redis")
    folder.mkdir(parents=True, exist_ok=True)
    last = None
    for _ in range(3):  # a port taken between free_port() and the bind: try another
        port = free_port()
        log = open(folder / f"redis-{port}.log", "wb")
        proc = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                                 "--dir", str(folder), "--daemonize", "no", "--protected-mode", "yes"],
                                stdout=log, stderr=subprocess.STDOUT)
        log.close()
        server = RedisServer(proc, port, folder)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return server
            except OSError as exc:
                last = exc
            time.sleep(0.05)
        server.stop()
        last = last or RuntimeError((folder / f"redis-{port}.log").read_text(errors="replace")[-500:])
    raise RuntimeError(f"redis-server did not start: {last}")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()

"""Freed heap memory goes back to the system (streamer.runtime.heap)."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.runtime.heap import HeapTrimmer

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_trim_gives_back_the_free_pages_glibc_kept():
    """192 MB in 64 KB blocks (below glibc's mmap threshold, so from its heap), nine in ten
    freed: the blocks still held pin the heap, so glibc keeps the freed pages resident until
    it is asked to trim."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, n = 64 * 1024, 3000
    blocks = []
    for _ in range(n):
        p = libc.malloc(size)
        assert p
        ctypes.memset(p, 1, size)  # touched: resident
        blocks.append(p)
    for i, p in enumerate(blocks):
        if i % 10:
            libc.free(p)
    kept = [p for i, p in enumerate(blocks) if i % 10 == 0]
    try:
        before = rss_mb()
        trimmer = HeapTrimmer()
        assert trimmer.available and trimmer.due() and not trimmer.due()  # once per every_s
        assert trimmer.trim()
        after = rss_mb()
    finally:
        for p in kept:
            libc.free(p)
    assert trimmer.trims == 1
    assert before - after > 100, (before, after)  # of the ~170 MB freed


def test_tune_allocator_sets_the_arenas_unless_the_user_did():
    """Run in children: the setting is the process's."""
    code = "from streamer.runtime.heap import tune_allocator; print(tune_allocator())"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "{'MALLOC_ARENA_MAX': 2}"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "MALLOC_ARENA_MAX": "4"}, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "{}"  # glibc read the user's value at start-up; it stays


def test_heap_stats_count_what_is_allocated_and_metrics_show_them():
    """mallinfo2's in-use bytes follow the blocks held; /metrics shows them (ser_serve_heap_bytes)."""
    from streamer.runtime.heap import heap_stats
    from streamer.serve.http.metrics import Metrics

    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = heap_stats()
    blocks = [libc.malloc(64 * 1024) for _ in range(800)]  # 50 MB below the mmap threshold: from the arenas
    try:
        held = heap_stats()
        text = Metrics().render().decode()
    finally:
        for p in blocks:
            libc.free(p)
    after = heap_stats()
    assert held["in_use"] - before["in_use"] >= 50 * 2**20 - 2**20
    assert held["in_use"] - after["in_use"] >= 50 * 2**20 - 2**20
    line = next(ln for ln in text.splitlines() if ln.startswith('ser_serve_heap_bytes{part="in_use"}'))
    assert float(line.split()[-1]) >= 50 * 2**20


JEMALLOC = next(iter(sorted(Path("/usr/lib").glob("*/libjemalloc.so.2"))), None)  # Debian's, on any architecture


@pytest.mark.skipif(JEMALLOC is None, reason="libjemalloc2 is not installed (scripts/setup.sh --dev installs it)")
def test_heap_stats_are_absent_not_zero_under_another_allocator():
    """With jemalloc preloaded glibc's arenas hold nothing: no heap figures (and no
    ser_serve_heap_bytes in /metrics) rather than zeros that read as a process allocating nothing."""
    code = ("from streamer.runtime.heap import heap_stats; from streamer.serve.http.metrics import Metrics; "
            "print(heap_stats(), 'ser_serve_heap_bytes' in Metrics().render().decode())")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "LD_PRELOAD": str(JEMALLOC)},
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "{} False"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().endswith("True") and "'in_use'" in out.stdout

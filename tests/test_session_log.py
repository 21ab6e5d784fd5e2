"""Session logs on a disk that fills: a record is written whole or not at all, the file stays
parseable, a ser-serve call's log reports the loss and resumes when space returns, and
ser-live's writer (no error handler) still raises as it did."""

from __future__ import annotations

import errno
import json

import pytest

from streamer.live.session_log import SessionLog, read_log
from tests.fault_util import FillingDisk, fill, small_tmpfs


def record(i: int) -> dict:
    return {"type": "window", "index": i, "transcript": "héllo wörld " * 5}


def whole_lines(path) -> list[dict]:
    """Every line of the file parsed (none torn), and the file ends with a newline."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), data[-40:]
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def test_a_full_disk_loses_whole_records_reports_once_and_resumes_when_space_returns(tmp_path):
    size = len(json.dumps(record(0), ensure_ascii=False, separators=(",", ":")).encode()) + 1
    disk = FillingDisk(free=3 * size + size // 2)  # three records and half of a fourth
    errors = []
    log = SessionLog(tmp_path / "call.ndjson", on_error=lambda msg, first: errors.append((msg, first)),
                     write_fd=disk.write)
    written = [log.write(record(i)) for i in range(6)]
    assert written == [True, True, True, False, False, False]
    assert [r["index"] for r in whole_lines(log.path)] == [0, 1, 2]  # the half record was cut back
    assert log.lost == 3 and log.records == 3 and log.error == "No space left on device"
    assert errors == [("No space left on device", True), ("No space left on device", False),
                      ("No space left on device", False)]
    disk.give_back(10 * size)  # space returns: later records are written again
    assert log.write(record(6)) and log.write({"type": "session_end", "windows": 4})
    log.close()
    got = read_log(log.path)
    assert got.skipped == [] and got.complete
    assert [r.get("index") for r in got.records] == [0, 1, 2, 6, None]
    assert log.write(record(7)) is False  # closed: nothing more, no error


def test_a_short_write_goes_on_where_it_stopped(tmp_path):
    calls = []

    def dribble(fd, data):  # the kernel may take part of a write and return the count
        import os

        calls.append(len(data))
        return os.write(fd, bytes(data[:7]))

    log = SessionLog(tmp_path / "s.ndjson", write_fd=dribble)
    assert log.write(record(0))
    log.close()
    assert whole_lines(log.path) == [record(0)] and len(calls) > 3


def test_without_an_error_handler_the_error_is_raised_and_the_file_keeps_whole_lines(tmp_path):
    """ser-live and ser-analyze: as before, a failed write is an error; now it leaves no torn line."""
    disk = FillingDisk(free=100)
    log = SessionLog(tmp_path / "live.ndjson", write_fd=disk.write)
    assert log.write({"type": "session_start"})
    with pytest.raises(OSError) as exc:
        log.write(record(0))
    assert exc.value.errno == errno.ENOSPC
    assert whole_lines(log.path) == [{"type": "session_start"}] and log.lost == 1
    log.close()


def test_a_failure_to_cut_back_stops_the_log_at_its_last_line(tmp_path, monkeypatch):
    import os

    import streamer.live.session_log as sl

    disk = FillingDisk(free=30)
    errors = []
    log = SessionLog(tmp_path / "s.ndjson", on_error=lambda msg, first: errors.append(first), write_fd=disk.write)

    def no_truncate(fd, size):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(sl.os, "ftruncate", no_truncate)
    assert not log.write(record(0))
    assert log.closed and errors == [True]
    assert not log.write(record(1)) and errors == [True]  # closed: nothing tried, nothing reported
    assert read_log(log.path).skipped == [1]  # the torn line is the last: the reader skips it


def test_a_real_tmpfs_that_fills_keeps_every_line_whole(tmp_path):
    folder = tmp_path / "small"
    with small_tmpfs(folder, "64k") as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here (not root): the injected disk above covers it")
        errors = []
        log = SessionLog(folder / "call.ndjson", on_error=lambda msg, first: errors.append(msg))
        assert log.write(record(0))
        ballast = fill(folder)
        results = [log.write(record(i)) for i in range(1, 200)]  # a page of room at most: some fit
        assert not all(results) and errors[0] == "No space left on device"
        ballast.unlink()
        assert log.write(record(200))
        log.close()
        lines = whole_lines(log.path)
        assert lines[0]["index"] == 0 and lines[-1]["index"] == 200
        assert log.lost == results.count(False) and len(lines) == 2 + results.count(True)

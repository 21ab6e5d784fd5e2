"""What the batch command writes when its output is not a terminal (a log file, a pipe, CI)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streamer.core.paths import CHECKOUT as ROOT

pytestmark = pytest.mark.slow


def test_ser_analyze_off_a_terminal_prints_one_line_per_file_and_no_blank_line(tmp_path, speech_wav):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt this is not audio")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-m", "streamer.cli.analyze", str(speech_wav), str(bad), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert run.returncode == 1, run.stderr  # one file failed: scripts see it in the exit status
    assert run.stdout == ""  # nothing on stdout: the results are files
    lines = run.stderr.splitlines()
    assert lines and all(line.strip() for line in lines), lines  # no blank line
    assert lines[0].startswith("2 file(s), 0 already analysed, 2 to do")
    done = [line for line in lines if line.startswith("[")]
    assert [line.split("] ", 1)[0] for line in done] == ["[1/2", "[2/2"]
    assert {line.split("] ", 1)[1] for line in done} == {f"{speech_wav}: done", f"{bad}: error"}
    assert "\x1b[" not in run.stderr  # no terminal control codes in a log
    assert lines[-2].startswith("ser-analyze: 2 file(s), 1 with errors") and lines[-1].startswith(f"  {bad}: ")

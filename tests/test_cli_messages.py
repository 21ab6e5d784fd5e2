"""What the command-line tools say when the user gets something wrong (issue 27): one line
naming the real cause and the fix, a non-zero exit, and nothing loaded or made first."""

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(module: str, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env=ENV, timeout=timeout, stdin=subprocess.DEVNULL)


def one_error_line(res: subprocess.CompletedProcess) -> str:
    lines = [x for x in res.stderr.strip().splitlines() if x.startswith("error: ")]
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_live_log_into_a_missing_folder_is_one_error_before_the_models_load(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    res = run("streamer.cli.live", "--file", ROOT / "demo" / "demo.flac", "--fast", "--no-dashboard",
              "--log", missing / "x.ndjson")
    assert res.returncode == 2
    line = one_error_line(res)
    assert f"the folder {missing} does not exist" in line and "--log" in line
    assert "loading models" not in res.stderr  # said at once
    assert not (tmp_path / "no").exists()  # no folder made up


def test_live_malformed_config_is_the_only_line(tmp_path):
    bad = tmp_path / "config.toml"
    bad.write_text("[live\nx =")
    res = run("streamer.cli.live", "--file", ROOT / "demo" / "demo.flac", "--fast", "--no-dashboard", "--config", bad)
    assert res.returncode == 2
    assert one_error_line(res).startswith(f"error: config file {bad} is not valid TOML")
    assert "loading models" not in res.stderr  # nothing said about a load that never starts


def test_live_file_that_is_a_folder_says_so(tmp_path):
    res = run("streamer.cli.live", "--file", tmp_path, "--fast", "--no-dashboard", "--log", tmp_path / "x.ndjson")
    assert res.returncode == 2
    line = one_error_line(res)
    assert "is a folder, not an audio file" in line and "ser-analyze takes folders" in line


def test_serve_port_out_of_range_names_the_flag():
    res = run("streamer.cli.serve", "--port", "99999")
    assert res.returncode == 2
    line = one_error_line(res)
    assert line.startswith("error: --port 99999: must be between 0 and 65535") and "config" not in line


def test_call_to_a_closed_port_says_connection_refused():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run("streamer.cli.call", "twilio", f"ws://127.0.0.1:{port}/twilio", "--customer", ROOT / "demo" / "demo.flac",
              "--no-results")
    assert res.returncode == 1
    assert f"nothing listens at ws://127.0.0.1:{port}/twilio (connection refused)" in res.stderr
    assert "ssl:default" not in res.stderr


def test_call_help_is_plain_words_and_every_argument_is_explained():
    for args in ([], ["twilio"], ["vosk"], ["audio-fork"], ["audiosocket"]):
        res = run("streamer.cli.call", *args, "--help")
        assert res.returncode == 0 and "``" not in res.stdout, res.stdout
        positional = res.stdout.split("positional arguments:")[1].split("options:")[0]
        for line in positional.strip().splitlines():
            if line.startswith("  ") and not line.startswith("    ") and not line.strip().startswith("{"):
                assert len(line.split()) > 1, f"{args}: {line!r} has no help"


def test_analyze_help_says_what_the_exit_status_means():
    res = run("streamer.cli.analyze", "--help")
    assert res.returncode == 0 and "Exit status: 0 when every file was analysed; 1 when some could not be" in \
        " ".join(res.stdout.split())


def test_serve_busy_port_is_said_before_the_models_load():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        res = run("streamer.cli.serve", "--port", port)
    assert res.returncode == 2
    line = one_error_line(res)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "pass another --port" in line
    assert "loading models" not in res.stderr


def test_serve_unreachable_redis_is_said_before_the_models_load():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run("streamer.cli.serve", "--port", "0", "--redis", f"redis://127.0.0.1:{port}/0")
    assert res.returncode == 2
    line = one_error_line(res)
    assert f"--redis redis://127.0.0.1:{port}/0: cannot reach Redis" in line
    assert "loading models" not in res.stderr


def test_every_config_flag_names_its_default_the_same_way():
    for module in ("streamer.cli.live", "streamer.cli.analyze", "streamer.cli.serve", "streamer.cli.report"):
        text = " ".join(run(module, "--help").stdout.split())
        assert "(default: the shipped config.toml" in text, module
        assert "repository's config.toml" not in text and "project's config.toml" not in text, module

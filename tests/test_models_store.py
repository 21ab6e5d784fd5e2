"""ser-models download against a local HTTP server on 127.0.0.1 serving archives made here."""

import http.server
import io
import os
import subprocess
import sys
import threading
import zipfile

import pytest

from streamer.core.paths import CHECKOUT as ROOT
from streamer.models_store import DownloadError, download

NAME = "vosk-model-small-en-us-0.15"


def make_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{NAME}/am/final.mdl", os.urandom(50_000))  # incompressible: 1000 bytes are a fraction
        z.writestr(f"{NAME}/conf/model.conf", "--sample-frequency=16000\n")
        z.writestr(f"{NAME}/README", "a test archive\n")
    return buf.getvalue()


@pytest.fixture
def server():
    """Serves /NAME.zip (good), /bad/NAME.zip (corrupt), /short/NAME.zip (cut short)."""
    good = make_zip()
    corrupt = bytearray(good)
    corrupt[60:80] = b"\xff" * 20  # inside the first member's data: the CRC check fails

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body, declared = {f"/{NAME}.zip": (good, len(good)), f"/bad/{NAME}.zip": (bytes(corrupt), len(corrupt)),
                              f"/short/{NAME}.zip": (good[:1000], len(good))}.get(self.path, (None, 0))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(declared))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_extracts_atomically(tmp_path, server):
    seen = []
    path = download(NAME, server, dest=tmp_path, progress=lambda got, total: seen.append((got, total)))
    assert path == tmp_path / NAME and (path / "am" / "final.mdl").is_file() and (path / "conf" / "model.conf").is_file()
    assert seen and seen[-1][0] == seen[-1][1]
    assert [p.name for p in tmp_path.iterdir()] == [NAME]  # no temporary folders left


@pytest.mark.parametrize("prefix, message", [("/bad", "corrupt"), ("/short", "cut short")])
def test_damaged_downloads_leave_nothing(tmp_path, server, prefix, message):
    with pytest.raises(DownloadError, match=message):
        download(NAME, server + prefix, dest=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_offline_and_unknown(tmp_path):
    with pytest.raises(DownloadError, match="cannot download .* check the network"):
        download(NAME, "http://127.0.0.1:9", dest=tmp_path, timeout=2)
    with pytest.raises(DownloadError, match="ser-models list"):
        download("vosk-model-nope", "http://127.0.0.1:9", dest=tmp_path)


def test_cli_list_and_download(tmp_path, server):
    env = {"SER_MODELS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "streamer.cli.models", *a], capture_output=True, text=True,
                                    cwd=ROOT, env=env)
    res = run("download", NAME, "--base-url", server)
    assert res.returncode == 0, res.stderr
    res = run("list")
    assert res.returncode == 0 and f"* {NAME}" in res.stdout and "vosk-model-en-us-0.22-lgraph" in res.stdout
    res = run("download", "vosk-model-small-en-us-0.15", "--base-url", "http://127.0.0.1:9")
    assert res.returncode == 0  # already installed: nothing to fetch
    res = run("download", "vosk-model-en-us-0.22-lgraph", "--base-url", "http://127.0.0.1:9")
    assert res.returncode == 2 and res.stderr.startswith("error: cannot download")


def test_cli_unknown_model_draws_no_progress_bar(tmp_path):
    env = dict(os.environ, SER_MODELS_DIR=str(tmp_path))
    res = subprocess.run([sys.executable, "-m", "streamer.cli.models", "download", "nonexistent-model"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 2 and "unknown model" in res.stderr
    assert "bytes" not in res.stderr + res.stdout and res.stderr.count("\n") == 1

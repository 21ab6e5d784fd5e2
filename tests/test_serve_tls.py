"""TLS without a proxy (issue 28, item 6): ``ser-serve --tls-cert FILE --tls-key FILE`` serves
https:// and wss:// with a self-signed certificate made here by ``openssl``; ``ser-call
--cafile`` trusts it, and without it says to pass it. A wrong or missing file is one error line
(exit 2) before the models load."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from streamer.core.errors import SerError
from streamer.serve.server import tls_context

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TOKEN = "t0ken"


def make_cert(folder: Path, name: str, san: str = "IP:127.0.0.1,DNS:localhost") -> tuple[Path, Path]:
    """A self-signed certificate and its key (PEM, no passphrase), valid for a day."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed: apt-get install openssl")
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", f"subjectAltName={san}"],
                   check=True, capture_output=True)
    return cert, key


def env() -> dict:
    return {**os.environ, "SER_SERVE_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_each_problem_with_the_files_is_named(tmp_path):
    cert, key = make_cert(tmp_path, "a")
    _, other_key = make_cert(tmp_path, "b")
    encrypted = tmp_path / "enc.key"
    subprocess.run(["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted)],
                   check=True, capture_output=True)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert isinstance(tls_context(cert, key), ssl.SSLContext)
    for (c, k), words in {(tmp_path / "none.crt", key): "--tls-cert .*none.crt: no such file",
                          (cert, tmp_path / "none.key"): "--tls-key .*none.key: no such file",
                          (tmp_path, key): "--tls-cert .*: cannot read it",
                          (garbage, key): "--tls-cert .*garbage.pem: not the server's certificate",
                          (key, key): "--tls-cert .*a.key: not the server's certificate",
                          (cert, cert): "--tls-key .*a.crt: not the certificate's private key",
                          (cert, other_key): "--tls-key .*b.key is not the private key of --tls-cert",
                          (cert, encrypted): "--tls-key .*enc.key: the key is encrypted with a passphrase"}.items():
        with pytest.raises(SerError, match=words):
            tls_context(c, k)


def test_a_wrong_or_missing_file_is_one_error_before_the_models_load(tmp_path):
    cert, key = make_cert(tmp_path, "a")
    _, other_key = make_cert(tmp_path, "b")
    cases = {"missing cert": (["--tls-cert", str(tmp_path / "none.crt"), "--tls-key", str(key)], "no such file"),
             "cert alone": (["--tls-cert", str(cert)], "--tls-cert needs --tls-key"),
             "key alone": (["--tls-key", str(key)], "--tls-key needs --tls-cert"),
             "wrong key": (["--tls-cert", str(cert), "--tls-key", str(other_key)], "is not the private key"),
             "with ray": (["--tls-cert", str(cert), "--tls-key", str(key), "--engine", "ray"], "reverse proxy")}
    for name, (flags, words) in cases.items():
        p = subprocess.run([sys.executable, "-m", "streamer.cli.serve", "--port", "0", *flags], capture_output=True,
                           text=True, env=env(), timeout=120)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2, (name, p.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], (name, p.stderr)
        assert "loading models" not in p.stderr, name
    p = subprocess.run([sys.executable, "-m", "streamer.cli.call", "twilio", "wss://127.0.0.1:9/twilio", "--customer",
                        str(cert), "--cafile", str(tmp_path / "none.pem")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [p.stderr.strip()] and "--cafile" in p.stderr, p.stderr


def _ser_call(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer.cli.call", *args], capture_output=True, text=True,
                          env=env(), timeout=180)


def test_https_and_wss_with_a_self_signed_certificate(tmp_path):
    from tests.serve_util import espeak_mulaw, listening_port

    espeak_mulaw(tmp_path, "speech", "I am so happy today, this is wonderful news for everyone.")  # skips without espeak
    wav = tmp_path / "speech.wav"  # espeak-ng's own 22 kHz file, kept by espeak_mulaw
    cert, key = make_cert(tmp_path, "server")
    logs = tmp_path / "logs"
    proc = subprocess.Popen([sys.executable, "-m", "streamer.cli.serve", "--port", "0", "--log-dir", str(logs),
                             "--tls-cert", str(cert), "--tls-key", str(key)], stderr=subprocess.PIPE, text=True, env=env())
    try:
        port, lines = listening_port(proc, 120, scheme="https")
        assert "wss:// for the WebSockets" in lines[-1]
        assert proc.stderr.readline().startswith(f"ser-serve: call desk at https://127.0.0.1:{port}/")
        base = f"https://127.0.0.1:{port}"

        async def http_checks():
            trusted = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=str(cert)))
            out = {}
            async with aiohttp.ClientSession(connector=trusted) as s:
                async with s.get(f"{base}/healthz") as r:
                    out["healthz"] = (r.status, (await r.json())["status"])
                async with s.get(f"{base}/?token={TOKEN}", allow_redirects=False) as r:
                    out["sign in"] = (r.status, r.headers.get("Set-Cookie", ""))
                ws = await s.ws_connect(f"wss://127.0.0.1:{port}/events?token={TOKEN}")
                out["events"] = not ws.closed
                await ws.close()
            async with aiohttp.ClientSession() as s:  # the system's CAs: not this certificate
                try:
                    await s.get(f"{base}/healthz")
                    out["untrusted"] = "answered"
                except aiohttp.ClientConnectorCertificateError as exc:
                    out["untrusted"] = str(exc.certificate_error)
                try:  # plain HTTP to the TLS port: no answer
                    await s.get(f"http://127.0.0.1:{port}/healthz", timeout=aiohttp.ClientTimeout(total=10))
                    out["plain"] = "answered"
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    out["plain"] = type(exc).__name__
            return out

        out = asyncio.run(http_checks())
        assert out["healthz"] == (200, "ok") and out["events"]
        assert out["sign in"][0] == 303 and "Secure" in out["sign in"][1] and "HttpOnly" in out["sign in"][1]
        assert "certificate verify failed" in out["untrusted"]
        assert out["plain"] != "answered"

        url = f"wss://127.0.0.1:{port}/twilio"
        good = _ser_call("twilio", url, "--customer", str(wav), "--speed", "0", "--cafile", str(cert), "--call-sid", "CAtls")
        assert good.returncode == 0, good.stdout + good.stderr
        assert "call CAtls: closed 1000" in good.stdout and "happy" in good.stdout.lower(), good.stdout
        untrusted = _ser_call("twilio", url, "--customer", str(wav), "--speed", "0", "--no-results")
        assert untrusted.returncode == 1, untrusted.stdout + untrusted.stderr
        assert "certificate is not trusted" in untrusted.stderr and "--cafile" in untrusted.stderr, untrusted.stderr
        plain = _ser_call("twilio", f"ws://127.0.0.1:{port}/twilio", "--customer", str(wav), "--speed", "0", "--no-results")
        assert plain.returncode == 1 and "call failed" in plain.stderr, plain.stderr
        vosk = _ser_call("vosk", f"wss://127.0.0.1:{port}/vosk", str(wav), "--speed", "0")
        assert vosk.returncode == 1 and "certificate is not trusted" in vosk.stderr, vosk.stderr  # no traceback
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert len(list(logs.glob("*CAtls*.ndjson"))) == 1

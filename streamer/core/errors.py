"""Errors that reach the user as one line naming the fix."""


class SerError(Exception):
    """Base of every error ser-live reports as one clear line (and a non-zero exit)."""


class AudioInputError(SerError):
    """Audio that cannot be read or used: empty, corrupt, not audio, NaN."""


class ModelError(SerError):
    """A model folder that is missing or does not hold what it should."""


class ConfigError(SerError):
    """A configuration file or value that is malformed or out of range."""


class MissingDependency(SerError):
    """An optional package is needed for this feature."""

    def __init__(self, package: str, feature: str, install: str | None = None) -> None:
        super().__init__(f"{feature} needs the package '{package}': pip install {install or package}")


def check(section: str, key: str, ok: bool, expected: str) -> None:
    """The one range-check error of every settings class: ``config [section] key: must be ...``."""
    if not ok:
        raise ConfigError(f"config [{section}] {key}: must be {expected}")

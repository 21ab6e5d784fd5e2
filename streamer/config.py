"""Settings: one frozen dataclass per concern, loaded from ``config.toml``, validated.

Every key in ``config.toml`` maps onto a field here; unknown keys, wrong types and
out-of-range values raise :class:`ConfigError` naming the key. CLI flags override fields
with :func:`dataclasses.replace`.

>>> cfg = Config.from_dict({"audio": {"window_seconds": 2.0}})
>>> cfg.audio.window_samples, cfg.whisper.model
(32000, 'embedded:tiny.en')
>>> Config.from_dict({"audio": {"window_secs": 2.0}})
Traceback (most recent call last):
...
streamer.errors.ConfigError: config [audio]: unknown key 'window_secs' (known: model_dir, window_seconds, min_window_seconds, threads)
"""

from __future__ import annotations

import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from streamer.audio import SAMPLE_RATE
from streamer.errors import ConfigError
from streamer.paths import data_path, data_root
from streamer.live.fusion import FusionConfig
from streamer.live.vad import VadConfig

DEFAULT_CONFIG = data_root() / "config.toml"


@dataclass(frozen=True)
class AudioConfig:
    """The audio emotion model and how speech is cut into windows."""

    model_dir: str = "models/audio-emotion"  # relative to the shipped data (streamer.paths), or absolute
    window_seconds: float = 2.5
    min_window_seconds: float = 0.5
    threads: int = 1

    def __post_init__(self) -> None:
        _check("audio", "window_seconds", 0.5 <= self.window_seconds <= 30.0, "between 0.5 and 30")
        _check("audio", "min_window_seconds", 0.1 <= self.min_window_seconds <= self.window_seconds,
               "between 0.1 and window_seconds")
        _check("audio", "threads", 1 <= self.threads <= 64, "between 1 and 64")

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * SAMPLE_RATE))

    @property
    def min_window_samples(self) -> int:
        return int(round(self.min_window_seconds * SAMPLE_RATE))

    @property
    def model_path(self) -> Path:
        return data_path(self.model_dir)


@dataclass(frozen=True)
class WhisperConfig:
    """The Whisper model shared by speech recognition and the audio model's encoder."""

    model: str = "embedded:tiny.en"
    compute_type: str = "int8"
    cpu_threads: int = 1

    def __post_init__(self) -> None:
        _check("whisper", "compute_type", self.compute_type in ("int8", "int8_float32", "float32", "float16", "int16"),
               "one of int8, int8_float32, int16, float16, float32")
        _check("whisper", "cpu_threads", 1 <= self.cpu_threads <= 64, "between 1 and 64")


@dataclass(frozen=True)
class TextConfig:
    """The text branch: "embedded" (the shipped model), one of our model folders, or any
    Hugging Face sequence-classification model name or folder."""

    model: str = "embedded"


@dataclass(frozen=True)
class AsrConfig:
    """Speech recognition: which engine, and the Whisper engine's gates."""

    engine: str = "auto"  # auto | vosk | whisper
    vosk_model: str = ""  # a Vosk model folder; empty: $SER_VOSK_MODEL, then the user's cache
    whisper_no_speech_threshold: float = 0.6
    whisper_logprob_threshold: float = -1.0
    whisper_partial_interval_s: float = 1.0
    whisper_encode_s: float = 10.0

    def __post_init__(self) -> None:
        _check("asr", "engine", self.engine in ("auto", "vosk", "whisper"), "one of auto, vosk, whisper")
        _check("asr", "whisper_no_speech_threshold", 0 < self.whisper_no_speech_threshold <= 1, "in (0, 1]")
        _check("asr", "whisper_partial_interval_s", 0.1 <= self.whisper_partial_interval_s <= 60, "between 0.1 and 60")
        _check("asr", "whisper_encode_s", 4 <= self.whisper_encode_s <= 30, "between 4 and 30")


@dataclass(frozen=True)
class LiveConfig:
    """The threaded pipeline, the dashboard and the session log."""

    ring_seconds: float = 10.0
    queue_windows: int = 16
    queue_chunks: int = 300
    words_timeout_s: float = 30.0
    join_timeout_s: float = 30.0
    refresh_per_second: float = 4.0
    log_dir: str = ""  # empty: the user's data folder (ser-live/sessions)
    log_transcript: bool = True
    utterance_max_s: float = 7.5  # long speech is closed into an utterance at least this often

    @property
    def utterance_max_samples(self) -> int:
        return int(round(self.utterance_max_s * SAMPLE_RATE))

    def __post_init__(self) -> None:
        _check("live", "ring_seconds", 1 <= self.ring_seconds <= 600, "between 1 and 600")
        _check("live", "queue_windows", 1 <= self.queue_windows <= 10_000, "between 1 and 10000")
        _check("live", "queue_chunks", 1 <= self.queue_chunks <= 100_000, "between 1 and 100000")
        _check("live", "words_timeout_s", 0.1 <= self.words_timeout_s <= 600, "between 0.1 and 600")
        _check("live", "join_timeout_s", 0.1 <= self.join_timeout_s <= 600, "between 0.1 and 600")
        _check("live", "refresh_per_second", 0.5 <= self.refresh_per_second <= 30, "between 0.5 and 30")
        _check("live", "utterance_max_s", 2.5 <= self.utterance_max_s <= 25, "between 2.5 and 25")


@dataclass(frozen=True)
class BatchConfig:
    """ser-analyze: speaker names of the channels of a split stereo call, in channel order."""

    channel_names: tuple[str, ...] = ("agent", "customer")

    def __post_init__(self) -> None:
        names = tuple(self.channel_names)
        _check("batch", "channel_names", len(names) >= 1 and all(isinstance(n, str) and n for n in names)
               and len(set(names)) == len(names), "a list of distinct, non-empty names")
        object.__setattr__(self, "channel_names", names)


@dataclass(frozen=True)
class Config:
    audio: AudioConfig = field(default_factory=AudioConfig)
    whisper: WhisperConfig = field(default_factory=WhisperConfig)
    text: TextConfig = field(default_factory=TextConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)

    @classmethod
    def from_dict(cls, raw: dict) -> "Config":
        sections = {f.name: f for f in fields(cls)}
        unknown = set(raw) - set(sections)
        if unknown:
            raise ConfigError(f"config: unknown section(s) {', '.join(sorted(map(repr, unknown)))} (known: {', '.join(sections)})")
        built = {}
        for name, f in sections.items():
            section = raw.get(name, {})
            if not isinstance(section, dict):
                raise ConfigError(f"config: [{name}] must be a table")
            built[name] = _build(name, typing.get_type_hints(cls)[name], section)
        return cls(**built)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Config":
        return cls.from_dict(read_toml(Path(path) if path else DEFAULT_CONFIG, "config file"))


def read_toml(path: Path, what: str) -> dict:
    """Parse a TOML file; a missing or malformed file is a ConfigError naming it."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} not found; pass --config with an existing file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from exc


def _check(section: str, key: str, ok: bool, expected: str) -> None:
    if not ok:
        raise ConfigError(f"config [{section}] {key}: must be {expected}")


def _build(section: str, cls: type, raw: dict):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key, value in raw.items():
        if key not in hints:
            raise ConfigError(f"config [{section}]: unknown key '{key}' (known: {', '.join(names)})")
        want = hints[key]
        ok_types = typing.get_args(want) if isinstance(want, types.UnionType) else (want,)
        ok_types = tuple(typing.get_origin(t) or t for t in ok_types)  # tuple[str, ...] -> tuple
        if tuple in ok_types:
            ok_types = (*ok_types, list)  # TOML arrays
        if float in ok_types:
            ok_types = (*ok_types, int)
        if isinstance(value, bool) and bool not in ok_types or not isinstance(value, ok_types):
            raise ConfigError(f"config [{section}] {key}: expected {want.__name__ if isinstance(want, type) else want}, "
                              f"got {type(value).__name__} {value!r}")
    values = {k: (float(v) if hints[k] is float else v) for k, v in raw.items()}
    return cls(**values)

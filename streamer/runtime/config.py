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
streamer.core.errors.ConfigError: config [audio]: unknown key 'window_secs' (known: model_dir, window_seconds, min_window_seconds, threads)
"""

from __future__ import annotations

import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

from streamer.core.messages import SAMPLE_RATE
from streamer.core.alerts import DEFAULT_RULES, AlertRule
from streamer.asr.decode import WhisperAsrConfig
from streamer.core.errors import ConfigError, check
from streamer.core.fusion import FusionConfig
from streamer.core.vad import VadConfig
from streamer.core.paths import data_path, data_root

DEFAULT_CONFIG = data_root() / "config.toml"


@dataclass(frozen=True)
class AudioConfig:
    """The audio emotion model and how speech is cut into windows."""

    model_dir: str = "models/audio-emotion"  # relative to the shipped data (streamer.core.paths), or absolute
    window_seconds: float = 2.5
    min_window_seconds: float = 0.5
    threads: int = 1

    def __post_init__(self) -> None:
        check("audio", "window_seconds", 0.5 <= self.window_seconds <= 30.0, "between 0.5 and 30")
        check("audio", "min_window_seconds", 0.1 <= self.min_window_seconds <= self.window_seconds,
               "between 0.1 and window_seconds")
        check("audio", "threads", 1 <= self.threads <= 64, "between 1 and 64")

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
    device: str = "cpu"  # "cuda" on a GPU node (a CUDA build of CTranslate2), or "auto"

    def __post_init__(self) -> None:
        check("whisper", "device", self.device in ("cpu", "cuda", "auto"), '"cpu", "cuda" or "auto"')
        check("whisper", "compute_type", self.compute_type in ("int8", "int8_float32", "float32", "float16", "int16"),
               "one of int8, int8_float32, int16, float16, float32")
        check("whisper", "cpu_threads", 1 <= self.cpu_threads <= 64, "between 1 and 64")


@dataclass(frozen=True)
class TextConfig:
    """The text branch: "embedded" (the shipped model), one of our model folders, or any
    Hugging Face sequence-classification model name or folder."""

    model: str = "embedded"


@dataclass(frozen=True)
class AsrConfig:
    """Speech recognition: which engine; the Whisper engine's settings are ``[asr.whisper]``."""

    engine: str = "auto"  # auto | vosk | whisper
    vosk_model: str = ""  # a Vosk model folder; empty: $SER_VOSK_MODEL, then the user's cache
    whisper: WhisperAsrConfig = field(default_factory=WhisperAsrConfig)

    def __post_init__(self) -> None:
        check("asr", "engine", self.engine in ("auto", "vosk", "whisper"), "one of auto, vosk, whisper")


@dataclass(frozen=True)
class LiveConfig:
    """The threaded pipeline, the dashboard and the session log."""

    ring_seconds: float = 10.0
    queue_windows: int = 16
    queue_chunks: int = 300
    words_timeout_s: float = 30.0
    max_lag_s: float = 5.0  # a window not analysed this long after it closed is dropped (counted); not --fast
    join_timeout_s: float = 30.0
    refresh_per_second: float = 4.0
    log_dir: str = ""  # empty: the user's data folder (ser-live/sessions)
    log_transcript: bool = True
    utterance_max_s: float = 7.5  # long speech is closed into an utterance at least this often

    @property
    def utterance_max_samples(self) -> int:
        return int(round(self.utterance_max_s * SAMPLE_RATE))

    def __post_init__(self) -> None:
        check("live", "ring_seconds", 1 <= self.ring_seconds <= 600, "between 1 and 600")
        check("live", "queue_windows", 1 <= self.queue_windows <= 10_000, "between 1 and 10000")
        check("live", "queue_chunks", 1 <= self.queue_chunks <= 100_000, "between 1 and 100000")
        check("live", "words_timeout_s", 0.1 <= self.words_timeout_s <= 600, "between 0.1 and 600")
        check("live", "max_lag_s", 0.5 <= self.max_lag_s <= 600, "between 0.5 and 600")
        check("live", "join_timeout_s", 0.1 <= self.join_timeout_s <= 600, "between 0.1 and 600")
        check("live", "refresh_per_second", 0.5 <= self.refresh_per_second <= 30, "between 0.5 and 30")
        check("live", "utterance_max_s", 2.5 <= self.utterance_max_s <= 25, "between 2.5 and 25")


@dataclass(frozen=True)
class BatchConfig:
    """ser-analyze: speaker names of the channels of a split stereo call, in channel order."""

    channel_names: tuple[str, ...] = ("agent", "customer")

    def __post_init__(self) -> None:
        names = tuple(self.channel_names)
        check("batch", "channel_names", len(names) >= 1 and all(isinstance(n, str) and n for n in names)
               and len(set(names)) == len(names), "a list of distinct, non-empty names")
        object.__setattr__(self, "channel_names", names)


@dataclass(frozen=True)
class ServerConfig:
    """ser-serve: where it listens, how many calls it takes, what it keeps."""

    host: str = "127.0.0.1"
    port: int = 8765
    audiosocket_port: int = 0  # Asterisk AudioSocket over TCP; 0: off
    max_calls: int = 16  # calls beyond this are refused (WebSocket close 1013)
    log_dir: str = ""  # empty: the user's data folder (ser-live/calls)
    keep_ended_min: float = 30.0  # /api/calls lists calls that ended this recently
    twilio_auth_token: str = ""  # set: X-Twilio-Signature is checked too
    max_message_bytes: int = 1_048_576  # a larger message closes the call (1009)
    idle_timeout_s: float = 20.0  # a client that sends nothing this long is closed
    shutdown_s: float = 10.0  # SIGTERM: calls are finished and logged within this
    feed_max_s: float = 0.0  # an /events socket is closed (1001, reconnect with ?since=) after this; 0: never
    audio_model_dir: str = "models/audio-emotion-fast"  # the calls' audio model; empty: [audio] model_dir
    max_speed: float = 1.5  # a track's audio may average this many times real time (the rest is dropped); 0: no limit
    burst_s: float = 20.0  # ... after this many seconds of audio sent ahead at once
    gather_ms: int = 100  # a track's audio is read this much at a time (fewer thread wake-ups); 0: as it comes

    def __post_init__(self) -> None:
        check("server", "max_speed", self.max_speed == 0 or 1 <= self.max_speed <= 100, "0 (no limit) or between 1 and 100")
        check("server", "burst_s", 1 <= self.burst_s <= 3600, "between 1 and 3600")
        check("server", "gather_ms", 0 <= self.gather_ms <= 500, "between 0 and 500")
        check("server", "audio_model_dir", isinstance(self.audio_model_dir, str), "a model folder (or empty: [audio] model_dir)")
        check("server", "host", isinstance(self.host, str) and bool(self.host.strip()), "an address to listen on")
        check("server", "port", 0 <= self.port <= 65535, "between 0 and 65535")
        check("server", "audiosocket_port", 0 <= self.audiosocket_port <= 65535, "between 0 (off) and 65535")
        check("server", "max_calls", 1 <= self.max_calls <= 10_000, "between 1 and 10000")
        check("server", "keep_ended_min", 0 <= self.keep_ended_min <= 10_080, "between 0 and 10080 (a week)")
        check("server", "max_message_bytes", 1024 <= self.max_message_bytes <= 64 * 1_048_576, "between 1 KiB and 64 MiB")
        check("server", "idle_timeout_s", 1 <= self.idle_timeout_s <= 3600, "between 1 and 3600")
        check("server", "shutdown_s", 1 <= self.shutdown_s <= 600, "between 1 and 600")
        check("server", "feed_max_s", self.feed_max_s == 0 or 5 <= self.feed_max_s <= 86_400,
              "0 (never) or between 5 and 86400")


@dataclass(frozen=True)
class DeskConfig:
    """The supervisor's web page on ser-serve (``GET /``)."""

    keep_ended_min: float = 30.0  # ended calls stay listed this long, with a link to their report

    def __post_init__(self) -> None:
        check("desk", "keep_ended_min", 0 <= self.keep_ended_min <= 10_080, "between 0 and 10080 (a week)")


@dataclass(frozen=True)
class RayConfig:
    """``ser-serve --engine ray``: the CallGateway deployment (the sockets) and the model
    deployments (audio, text and Whisper), each with its own replicas and CPU share."""

    gateways: int = 1  # gateway replicas at start (autoscaling between min and max)
    min_gateways: int = 1
    max_gateways: int = 1  # above gateways: autoscale on the calls each replica holds
    target_calls: float = 12.0  # the ongoing requests (open sockets) per replica autoscaling aims at
    upscale_delay_s: float = 15.0  # autoscaling adds a replica after the calls stay above target this long
    downscale_delay_s: float = 300.0  # ... and removes one after they stay below this long
    gateway_cpus: float = 0.25  # Ray CPUs a gateway replica asks for (a fraction; a reservation, not a limit)
    drain_s: float = 900.0  # graceful_shutdown_timeout_s: a scale-down lets calls end this long
    feed_max_s: float = 300.0  # a gateway's /events sockets are rotated this often, so a draining replica
    # is held by its calls only (the desk reconnects with ?since= and misses nothing)
    models: str = "deployments"  # "deployments": the models as their own deployments; "local": in each gateway
    model_replicas: int = 1  # per model deployment
    model_cpus: float = 0.25  # Ray CPUs per model replica (3 model deployments + 2 gateways: 1.25 of 2)
    whisper: bool = True  # Whisper as a deployment too (else each gateway decodes its calls itself)
    whisper_replicas: int = 1  # Whisper costs about 2.5x the audio model per window: it may need more
    whisper_gpus: float = 0.0  # per Whisper replica: 1 puts each on a GPU node (a CUDA build of CTranslate2)
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.005
    app_name: str = "ser-gateway"  # the gateway's Ray Serve application (its replicas: ServeReplica:<app>:CallGateway)
    proxy: str = "auto"  # "haproxy": RAY_SERVE_ENABLE_HA_PROXY=1 (local clusters; needs a token); "default":
    # Ray Serve's proxy actor; "auto": haproxy when a token is set (cheaper: bench/README.md), else default
    num_cpus: int = 0  # a local cluster's CPUs (0: this machine's)
    replicas_wait_s: float = 120.0  # ser-serve waits this long for every replica that fits to run

    def __post_init__(self) -> None:
        check("ray", "gateways", 1 <= self.gateways <= 1000, "between 1 and 1000")
        check("ray", "min_gateways", 1 <= self.min_gateways <= self.gateways, "between 1 and gateways")
        check("ray", "max_gateways", self.gateways <= self.max_gateways <= 1000, "between gateways and 1000")
        check("ray", "target_calls", 0 < self.target_calls <= 10_000, "above 0 (calls per replica)")
        check("ray", "upscale_delay_s", 0 <= self.upscale_delay_s <= 3600, "between 0 and 3600")
        check("ray", "downscale_delay_s", 0 <= self.downscale_delay_s <= 86_400, "between 0 and 86400")
        check("ray", "gateway_cpus", 0 < self.gateway_cpus <= 64, "above 0 (a fraction is fine)")
        check("ray", "drain_s", 0 <= self.drain_s <= 86_400, "between 0 and 86400")
        check("ray", "feed_max_s", 5 <= self.feed_max_s <= 86_400, "between 5 and 86400")
        check("ray", "models", self.models in ("deployments", "local"), '"deployments" or "local"')
        check("ray", "model_replicas", 1 <= self.model_replicas <= 1000, "between 1 and 1000")
        check("ray", "model_cpus", 0 < self.model_cpus <= 64, "above 0 (a fraction is fine)")
        check("ray", "whisper_replicas", 1 <= self.whisper_replicas <= 1000, "between 1 and 1000")
        check("ray", "whisper_gpus", 0 <= self.whisper_gpus <= 8, "between 0 and 8")
        check("ray", "max_batch_size", 1 <= self.max_batch_size <= 256, "between 1 and 256")
        check("ray", "batch_wait_timeout_s", 0 <= self.batch_wait_timeout_s <= 1, "between 0 and 1")
        check("ray", "app_name", isinstance(self.app_name, str) and self.app_name.replace("-", "").isalnum(),
              "letters, digits and dashes")
        check("ray", "proxy", self.proxy in ("auto", "default", "haproxy"), '"auto", "default" or "haproxy"')
        check("ray", "num_cpus", 0 <= self.num_cpus <= 4096, "0 (this machine's) or a count")
        check("ray", "replicas_wait_s", 0 <= self.replicas_wait_s <= 3600, "between 0 and 3600")


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
    server: ServerConfig = field(default_factory=ServerConfig)
    desk: DeskConfig = field(default_factory=DeskConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    alerts: tuple[AlertRule, ...] = DEFAULT_RULES  # [[alerts]]: an array of tables

    @classmethod
    def from_dict(cls, raw: dict) -> "Config":
        sections = {f.name: f for f in fields(cls)}
        unknown = set(raw) - set(sections)
        if unknown:
            raise ConfigError(f"config: unknown section(s) {', '.join(sorted(map(repr, unknown)))} (known: {', '.join(sections)})")
        built = {}
        if "alerts" in raw:
            rules = raw["alerts"]
            if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
                raise ConfigError("config: alerts must be an array of tables ([[alerts]])")
            built["alerts"] = tuple(build(AlertRule, r, "[alerts]") for r in rules)
            names = [r.name for r in built["alerts"]]
            if len(set(names)) != len(names):
                raise ConfigError("config [[alerts]]: rule names must be distinct")
        for name, f in sections.items():
            if name == "alerts":
                continue
            section = raw.get(name, {})
            if not isinstance(section, dict):
                raise ConfigError(f"config: [{name}] must be a table")
            built[name] = build(typing.get_type_hints(cls)[name], section, name)
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


# Keys that moved, so an old config.toml is told where they went.
MOVED = {f"asr.whisper_{k}": f"[asr.whisper] {k}" for k in ("no_speech_threshold", "logprob_threshold",
                                                           "partial_interval_s", "encode_s")}


def build(cls: type, raw: dict, path: str = "", what: str = "config"):
    """One frozen dataclass from one TOML table, the only way settings are built.

    Unknown keys and wrong types raise :class:`ConfigError` naming the key; a field whose type
    is itself a dataclass is built from the subtable of that name (``[asr.whisper]``); ranges
    are the class's own ``__post_init__`` (it runs once, here). ``what`` names the file kind
    ("config", "training config"), ``path`` the table.

    >>> build(WhisperAsrConfig, {"encode_s": 12}, "asr.whisper").encode_s
    12.0
    >>> build(WhisperAsrConfig, {"beam": 2}, "asr.whisper")
    Traceback (most recent call last):
    ...
    streamer.core.errors.ConfigError: config [asr.whisper]: unknown key 'beam' (known: no_speech_threshold, logprob_threshold, partial_interval_s, beam_size, preroll_s, hold_s, encode_s, drop_anomalous, text_gate)
    """
    where = f"{what} [{path}]" if path else what
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    values = {}
    for key, value in raw.items():
        if key not in hints:
            moved = MOVED.get(f"{path}.{key}")
            hint = f"; it is now {moved}" if moved else ""
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(names)}){hint}")
        want = hints[key]
        if is_dataclass(want):
            if not isinstance(value, dict):
                raise ConfigError(f"{where} {key}: must be a table ([{path + '.' if path else ''}{key}])")
            values[key] = build(want, value, f"{path}.{key}" if path else key, what)
            continue
        ok_types = typing.get_args(want) if isinstance(want, types.UnionType) else (want,)
        ok_types = tuple(typing.get_origin(t) or t for t in ok_types)  # tuple[str, ...] -> tuple
        if tuple in ok_types:
            ok_types = (*ok_types, list)  # TOML arrays
        if float in ok_types:
            ok_types = (*ok_types, int)
        if isinstance(value, bool) and bool not in ok_types or not isinstance(value, ok_types):
            raise ConfigError(f"{where} {key}: expected {want.__name__ if isinstance(want, type) else want}, "
                              f"got {type(value).__name__} {value!r}")
        values[key] = float(value) if want is float else value
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # a nested class that checks with ValueError (NetConfig)
        raise ConfigError(f"{where}: {exc}") from exc


def for_server(cfg: "Config") -> "Config":
    """The settings ser-serve runs its calls with: ``[server] audio_model_dir`` (a cheaper audio
    model, so that many calls fit on few cores) in place of ``[audio] model_dir`` when set."""
    from dataclasses import replace

    if not cfg.server.audio_model_dir.strip():
        return cfg
    return replace(cfg, audio=replace(cfg.audio, model_dir=cfg.server.audio_model_dir))

"""Batch analysis of recorded files: the live pipeline run ``--fast`` over each file (or each
channel of a stereo call), one session log per file, and a summary row per file and channel.

Summaries are computed from the logs, so a resumed batch (files whose log is complete are
skipped) reports exactly what a fresh one would.
"""

from __future__ import annotations

import csv
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streamer.runtime.config import Config
from streamer.core.errors import SerError
from streamer.core.labels import LABELS
from streamer.live.session_log import SessionLog, read_log, session_end, session_start
from streamer.core.summary import summarise_records

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf", ".opus"}
SUMMARY_FIELDS = ["file", "channel", "duration_s", "speech_s", "windows", "dominant_emotion",
                  *[f"share_{k}" for k in LABELS], "mean_confidence", "asr_engine", "error",
                  "utterances", "uncertain_share", "mean_arousal", "mean_valence"]


@dataclass(frozen=True)
class BatchOptions:
    channels: str = "mix"  # mix | split
    channel_names: tuple[str, ...] = ("agent", "customer")
    force: bool = False


def find_audio(paths: list[Path]) -> list[Path]:
    """Files given, and audio files (by suffix) under folders given, recursively, sorted."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
        elif p.exists():
            out.append(p)
        else:
            raise SerError(f"no such file or folder: {p}")
    return sorted(dict.fromkeys(out))


def log_name(path: Path, roots: list[Path]) -> str:
    """A log file name unique within the batch: the path under its root, '/' -> '__'."""
    for root in roots:
        if root.is_dir():
            try:
                rel = path.resolve().relative_to(root.resolve())
                return "__".join(rel.parts) + ".ndjson"
            except ValueError:
                continue
    return path.name + ".ndjson"


def channel_plan(path: Path, opts: BatchOptions) -> list[tuple[int | None, str | None]]:
    from streamer.audio.io import file_info

    channels = file_info(path).channels
    if opts.channels == "split" and channels >= 2:
        names = list(opts.channel_names) + [f"channel{k}" for k in range(len(opts.channel_names), channels)]
        return [(k, names[k]) for k in range(channels)]
    return [(None, None)]


def analyse_file(path: Path, log_path: Path, cfg: Config, models, opts: BatchOptions,
                 log_factory=SessionLog) -> str | None:
    """Run the pipeline over ``path`` (each channel in turn when split) into ``log_path``;
    returns the error stored in the log's ``session_end`` (None when it went well).
    ``log_factory``: what writes the log (a ``SessionLog``, or a test's subclass of it)."""
    from streamer.audio.io import file_info
    from streamer.core.counters import Counters
    from streamer.live.sources import FileSource
    from streamer.runtime.streams import open_stream

    tmp = log_path.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    with log_factory(tmp) as session:
        try:
            info = file_info(path)
            plan = channel_plan(path, opts)
        except Exception as exc:
            session.write(session_start(models.names, file=str(path)))
            cause = exc.__cause__ if isinstance(exc, SerError) and exc.__cause__ else exc
            error = f"cannot read {path.name} as audio ({cause}); give a WAV, FLAC, OGG or MP3 file"
            session.write(session_end(0, error))
            tmp.replace(log_path)
            return error
        session.write(session_start(models.names, file=str(path), duration_s=round(info.duration, 3),
                                    channels=[name for _, name in plan if name]))
        ends = []
        for channel, name in plan:
            counters = Counters()
            try:
                source = FileSource(path, fast=True, channel=channel)
            except SerError as exc:
                ends.append({"channel": name, "error": str(exc), "windows": 0})
                continue
            pipe = open_stream(cfg, models, source, [lambda r: session.write(r.to_record())], channel=name,
                               block_when_full=True, counters=counters)
            summary = pipe.run(threading.Event())
            ends.append({"channel": name, **summary})
        errors = [e["error"] for e in ends if e.get("error")]
        error = "; ".join(errors) if errors else None
        session.write(session_end(sum(e["windows"] for e in ends), error, channels=ends))
    tmp.replace(log_path)
    return error


def summary_rows(path: Path, log_path: Path) -> list[dict]:
    """Rows of summary.csv for one analysed file, from its log (one per channel).

    Shares, dominant emotion, mean confidence, uncertain share and mean arousal/valence come
    from the log's utterances (weighted by duration), or from its windows for logs without
    utterance records (``streamer.core.summary``). ``speech_s`` is the time they cover; columns a
    log cannot tell (``uncertain_share`` of a log without the flag) are left empty.
    """
    contents = read_log(log_path)
    start = (contents.of_type("session_start") or [{}])[0]
    end = (contents.of_type("session_end") or [{}])[0]
    windows = contents.of_type("window")
    utterances = contents.of_type("utterance")
    asr = start.get("models", {}).get("asr", "")
    channels = start.get("channels") or [None]
    rows = []
    for ch in channels:
        mine = [w for w in windows if w.get("channel") == ch]
        s = summarise_records(mine, [u for u in utterances if u.get("channel") == ch])
        row = {"file": str(path), "channel": ch or "", "duration_s": start.get("duration_s", ""),
               "speech_s": round(s.speech_s, 2), "windows": len(mine), "dominant_emotion": s.dominant,
               **{f"share_{k}": round(s.share[k], 4) for k in LABELS},
               "mean_confidence": _r(s.mean_confidence), "asr_engine": asr, "error": end.get("error") or "",
               "utterances": s.count if s.kind == "utterance" else 0, "uncertain_share": _r(s.uncertain_share),
               "mean_arousal": _r(s.mean_arousal), "mean_valence": _r(s.mean_valence)}
        rows.append(row)
    return rows


def _r(x: float | None) -> float | str:
    return "" if x is None else round(x, 4)


def write_summary(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        w.writeheader()
        w.writerows(rows)


def is_complete(log_path: Path) -> bool:
    return log_path.is_file() and read_log(log_path).complete


# --- worker processes (--jobs N): each loads the models once -----------------------------
_worker: dict = {}


def init_worker(config_path: str | None, overrides: dict) -> None:
    """Load this worker process's models once (``--jobs N``'s pool and ``--engine ray``'s tasks)."""
    from dataclasses import replace
    from streamer.runtime.models import limit_threads, load_models, warm_up

    cfg = Config.load(config_path)
    cfg = replace(cfg, **{k: replace(getattr(cfg, k), **v) for k, v in overrides.items()})
    _worker["cfg"] = cfg
    _worker["models"] = load_models(cfg)
    limit_threads(1)
    warm_up(_worker["models"])


def worker_models() -> tuple[Config, object]:
    """This worker process's configuration and models (after :func:`init_worker`)."""
    return _worker["cfg"], _worker["models"]


def _work(task: tuple[str, str, BatchOptions]) -> tuple[str, str | None]:
    path, log_path, opts = task
    try:
        return path, analyse_file(Path(path), Path(log_path), _worker["cfg"], _worker["models"], opts)
    except Exception as exc:  # one bad file never ends the batch
        log.exception("analysis of %s failed", path)
        return path, str(exc)


def run_batch(tasks: list[tuple[str, str, BatchOptions]], jobs: int, config_path: str | None,
              overrides: dict) -> Iterator[tuple[str, str | None]]:
    """Analyse ``tasks`` in ``jobs`` processes (1: in this process); yields (path, error) as
    each file finishes."""
    if jobs <= 1:
        init_worker(config_path, overrides)
        for t in tasks:
            yield _work(t)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(jobs, initializer=init_worker, initargs=(config_path, overrides)) as pool:
        yield from pool.imap_unordered(_work, tasks)

"""Reading session logs for reports: what is a session record, refusing what is not a log
(one line naming how to make one), skipped lines counted, the errors a log stores."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path


from streamer.core.errors import SerError
from streamer.core.labels import LABELS
from streamer.live.session_log import LogContents, read_log

SESSION_TYPES = ("session_start", "window", "utterance", "session_end")
HOW_TO_LOG = ("a session log is the NDJSON file written by `ser-live --log LOG.ndjson` "
              "or by `ser-analyze FILES --out DIR` (one LOG.ndjson per file)")
AUDIO_MAGIC = (b"fLaC", b"RIFF", b"RF64", b"OggS", b"ID3", b"FORM", b".snd", b"caff", b"riff")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _probs(p) -> bool:
    return isinstance(p, dict) and all(_number(p.get(k)) for k in LABELS)


def is_session_record(rec: dict) -> bool:
    """A record the report can use: a session start or end, or a window or utterance with
    its time span, fused and audio probabilities (text optional) and label.

    >>> is_session_record({"type": "session_end", "windows": 0}), is_session_record({"a": 1})
    (True, False)
    >>> is_session_record({"type": "window", "start_s": 0.0, "end_s": 2.5})  # no probabilities
    False
    """
    kind = rec.get("type")
    if kind in ("session_start", "session_end"):
        return True
    if kind not in ("window", "utterance"):
        return False
    probs = rec.get("probs")
    return (_number(rec.get("start_s")) and _number(rec.get("end_s")) and rec["end_s"] >= rec["start_s"]
            and isinstance(probs, dict) and _probs(probs.get("fused")) and _probs(probs.get("audio"))
            and (probs.get("text") is None or _probs(probs["text"])) and rec.get("label") in LABELS
            and _number(rec.get("confidence", 0.0)))


def _sniff(path: Path) -> str | None:
    """Why ``path`` is plainly not a session log (empty, audio, binary), or None."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head.strip():
        return f"{path} is empty, not a session log: {HOW_TO_LOG}"
    from streamer.batch import AUDIO_SUFFIXES

    mp3 = len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
    if head.startswith(AUDIO_MAGIC) or mp3:  # judged by what it holds, not by its name
        return (f"{path} is audio, not a session log: make its log with `ser-analyze {path} --out DIR` "
                f"(or `ser-live --file {path} --log LOG.ndjson`), then give ser-report that log")
    if path.suffix.lower() in AUDIO_SUFFIXES and not head.lstrip().startswith(b"{"):
        return (f"{path} is named like audio but holds neither audio nor a session log (it begins "
                f"{head[:12]!r}): {HOW_TO_LOG}")
    if b"\0" in head:
        return f"{path} is a binary file, not a session log: {HOW_TO_LOG}"
    return None


def load_session_log(path: Path) -> tuple[LogContents, list[str]]:
    """The log's session records, and warnings for what was skipped (unreadable lines,
    JSON records that are not session records). Raises SerError, in one line naming what a
    session log is, when ``path`` holds no session record at all."""
    why = _sniff(path)
    if why:
        raise SerError(why)
    raw = read_log(path)
    good = [r for r in raw.records if is_session_record(r)]
    other = len(raw.records) - len(good)
    if not good:
        lines = len(raw.records) + len(raw.skipped)
        bad, json_ = len(raw.skipped), other
        kinds = ([f"{bad} not {'a JSON object' if bad == 1 else 'JSON objects'}"] if bad else []) + \
                ([f"{json_} JSON record{'s' * (json_ != 1)} of another kind"] if json_ else [])
        raise SerError(f"{path} is not a session log ({lines} line{'s' * (lines != 1)}: {', '.join(kinds)}; no "
                       f"session_start, window, utterance or session_end record): {HOW_TO_LOG}")
    warnings = []
    if raw.skipped:
        n = len(raw.skipped)
        shown = ", ".join(map(str, raw.skipped[:5])) + (", ..." if n > 5 else "")
        warnings.append(f"{path.name}: skipped {n} unreadable line{'s' * (n != 1)} (line{'s' * (n != 1)} {shown})")
    if other:
        kinds = Counter(str(r.get("type", "no type")) for r in raw.records if not is_session_record(r))
        what = "JSON record that is not a session record" if other == 1 else "JSON records that are not session records"
        types = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items()))
        warnings.append(f"{path.name}: skipped {other} {what} (type {types})")
    return LogContents(good, list(raw.skipped)), warnings


def log_errors(contents: LogContents) -> list[str]:
    """The errors stored in the log's ``session_end`` records: the session's, and each
    channel's (``ser-analyze --channels split``), each once.

    >>> log_errors(LogContents([{"type": "session_end", "error": "cannot read x.wav as audio"}]))
    ['cannot read x.wav as audio']
    >>> end = {"type": "session_end", "error": "bad", "channels": [{"channel": "agent", "error": "bad"},
    ...                                                            {"channel": "customer", "error": None}]}
    >>> log_errors(LogContents([end]))
    ['agent: bad']
    """
    out: list[str] = []
    for end in contents.of_type("session_end"):
        chans = [c for c in end.get("channels") or [] if isinstance(c, dict) and c.get("error")]
        out += [f"{c['channel']}: {c['error']}" if c.get("channel") else str(c["error"]) for c in chans]
        if end.get("error") and str(end["error"]) != "; ".join(str(c["error"]) for c in chans):
            out.append(str(end["error"]))
    return list(dict.fromkeys(out))


def duration_of(contents: LogContents) -> float | None:
    """Seconds of input: the file's duration, else the audio the session streamed, else the
    end of its last record; None when the log cannot tell."""
    start = (contents.of_type("session_start") or [{}])[0]
    if _number(start.get("duration_s")):
        return float(start["duration_s"])
    for end in contents.of_type("session_end"):
        streamed = [c.get("stream_s") for c in end.get("channels") or [] if isinstance(c, dict)] + [end.get("stream_s")]
        streamed = [x for x in streamed if _number(x)]
        if streamed:
            return float(max(streamed))
    ends = [r["end_s"] for r in contents.records if r.get("type") in ("window", "utterance")]
    return max(ends) if ends else None

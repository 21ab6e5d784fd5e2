"""Visual reports of session logs: a matplotlib figure, a self-contained HTML page, and an
index page over several logs.

A *session log* is the NDJSON file that ``ser-live --log LOG.ndjson`` writes, or one of the
``LOG.ndjson`` files that ``ser-analyze FILES --out DIR`` writes (one per file): a
``session_start`` record, ``window`` and ``utterance`` records, a ``session_end`` record.
:func:`load_session_log` refuses anything else (audio, text, other JSON lines) with one line
naming how to make one. Works on any such log, including one torn by a crash (unparseable
lines are skipped and counted), one of a failed file (its stored error is shown on the page
and in the figure) and one written before utterance records, window ``rolling_*`` fields and
``dims`` existed (there a window's ``label`` was its rolling label; arousal/valence are then
mapped from the fused probabilities). Pure over the log's records, except for drawing.

>>> clip_title("the kids are talking by the door and the dog barks", limit=24)
'“the kids are talking by…”'
>>> window_steps([(0.0, 4.2), (6.0, 7.0)], np.array([[1.0], [0.5]]))[0].tolist()
[0.0, 4.2, 4.2, 6.0, 7.0]
"""

from __future__ import annotations

import numpy as np  # noqa: F401  (the doctest above)

from streamer.report.figure import COLORS, PANELS, Lane, Stats, clip_title, draw, lane_stats, lanes, own_label, png_bytes, rolling_label, window_steps
from streamer.report.logs import HOW_TO_LOG, duration_of, SESSION_TYPES, is_session_record, load_session_log, log_errors
from streamer.report.page import LogReport, html_report, index_page, main_emotion, report, summarise_log

__all__ = ["COLORS", "HOW_TO_LOG", "PANELS", "SESSION_TYPES", "Lane", "LogReport", "Stats", "clip_title", "draw",
           "duration_of", "html_report", "index_page", "is_session_record", "lane_stats", "lanes", "load_session_log",
           "log_errors", "main_emotion", "own_label", "png_bytes", "report", "rolling_label", "summarise_log", "window_steps"]

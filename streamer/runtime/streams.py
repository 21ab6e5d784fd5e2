"""The one way a front end opens a stream's analysis: ``ser-live``'s microphone or file,
``ser-analyze``'s files (each channel), each call track of ``ser-serve``, ``ser-report
--clip`` and the benchmarks all call :func:`open_stream`, so the wiring (the settings from
the configuration, a recogniser per stream, the process's shared model services) is written
once. The caller owns its log's ``session_start``/``session_end`` records: a log may hold
several streams (a file's channels, a call's tracks)."""

from __future__ import annotations

from collections.abc import Callable

from streamer.core.counters import Counters
from streamer.core.recognizer import AsrEngine
from streamer.runtime.config import Config
from streamer.runtime.models import Models, pipeline_settings
from streamer.runtime.pipeline import Observer, Pipeline, Sink


def open_stream(cfg: Config, models: Models, source, sinks: list[Sink], *, observer: Observer | None = None,
                channel: str | None = None, block_when_full: bool = False, counters: Counters | None = None,
                recorder=None, partials: bool = True,
                asr: Callable[[], AsrEngine | None] | None = None) -> Pipeline:
    """A :class:`Pipeline` over ``source`` handing every result to ``sinks`` (and, with the
    partial text, to ``observer``, such as the dashboard's state). ``block_when_full``: a file
    read as fast as it can be (the reader waits for the analysis instead of dropping);
    ``asr``: a factory of recognisers other than the models' own (None: the models')."""
    recogniser = (asr or models.asr_factory)()
    return Pipeline(pipeline_settings(cfg, block_when_full=block_when_full, channel=channel), source, recogniser,
                    models.shared_services(), sinks, observer, counters, recorder, partials)

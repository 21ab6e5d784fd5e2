"""ser-live: real-time speech emotion from a microphone or a file, with a terminal dashboard
and a session log (NDJSON)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path

from streamer.core.messages import SAMPLE_RATE
from streamer.cli import run_main
from streamer.core.errors import SerError

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ser-live", description=__doc__)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("-d", "--device", help="input device: a number or part of a name (see --list-devices; default: the system's default input)")
    src.add_argument("--file", type=Path, help="analyse an audio file (WAV, FLAC, OGG, MP3) in real time unless --fast (default: the microphone)")
    ap.add_argument("-l", "--list-devices", action="store_true", help="list audio devices and exit")
    ap.add_argument("--fast", action="store_true", help="with --file: as fast as the models go, not in real time (off by default)")
    ap.add_argument("--config", type=Path, default=None, help="settings file (default: the shipped config.toml; flags override it)")
    ap.add_argument("--log", type=Path, default=None, help="session log, NDJSON (default: a timestamped file in [live] log_dir, else ~/.local/share/ser-live/sessions)")
    ap.add_argument("--no-dashboard", action="store_true", help="plain lines instead of the dashboard (the default when stdout is not a terminal)")
    ap.add_argument("--json", action="store_true", help="window and utterance records as NDJSON on stdout (off by default)")
    ap.add_argument("--asr", choices=("auto", "vosk", "whisper"), default=None, help="speech recogniser (default: [asr] engine, auto: Vosk when a Vosk model is found, else the embedded Whisper)")
    ap.add_argument("--vosk-model", default=None, help="Vosk model folder (default: $SER_VOSK_MODEL, then [asr] vosk_model, then the newest from ser-models download)")
    ap.add_argument("--whisper-model", default=None, help="faster-whisper model name or CTranslate2 folder (default: embedded:tiny.en, installed, needs no network)")
    ap.add_argument("--text-model", default=None, help="text emotion model: embedded (the default, shipped), a folder of ours, or a Hugging Face name or folder")
    ap.add_argument("--record", type=Path, default=None, help="also write the session's audio to this WAV file, 16 kHz mono (default: not kept)")
    ap.add_argument("--no-transcript-log", action="store_true", help="keep transcripts and words out of the log (default: [live] log_transcript, on)")
    return ap


def default_log_path(cfg) -> Path:
    if cfg.live.log_dir:
        folder = Path(cfg.live.log_dir).expanduser()
    else:
        from platformdirs import user_data_dir

        folder = Path(user_data_dir("ser-live")) / "sessions"
    return folder / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}.ndjson"


def main() -> int:
    args = build_parser().parse_args()
    if args.list_devices:
        from streamer.live.sources import list_devices

        print(list_devices())
        return 0
    if args.fast and not args.file:
        raise SerError("--fast only applies to --file")
    if args.log is not None and not args.log.parent.is_dir():  # said before the models load, and never made up
        raise SerError(f"--log {args.log}: the folder {args.log.parent} does not exist; create it, or give a log "
                       "path in an existing folder")
    from streamer.runtime.config import Config

    cfg = Config.load(args.config)
    cfg = replace(cfg, text=replace(cfg.text, model=args.text_model or cfg.text.model),
                  asr=replace(cfg.asr, engine=args.asr or cfg.asr.engine,
                              vosk_model=args.vosk_model or cfg.asr.vosk_model),
                  whisper=replace(cfg.whisper, model=args.whisper_model or cfg.whisper.model),
                  live=replace(cfg.live, log_transcript=cfg.live.log_transcript and not args.no_transcript_log))
    from streamer.core.counters import Counters
    from streamer.runtime.models import limit_threads, load_models, warm_up
    from streamer.runtime.streams import open_stream
    from streamer.live.session_log import SessionLog, session_end, session_start
    from streamer.live.sources import FileSource, MicrophoneSource, parse_device
    from streamer.ui.state import LiveState
    from streamer.ui.dashboard import ROWS, Dashboard
    from streamer.ui.lines import plain_line

    counters = Counters()
    # Open the input first: a missing device or unreadable file fails before models load.
    if args.file:
        source = FileSource(args.file, fast=args.fast)
    else:
        source = MicrophoneSource(parse_device(args.device), counters, cfg.live.ring_seconds)

    # Said once the config and the input are good (a bad one is then the only line): loading takes seconds.
    print("ser-live: loading models...", file=sys.stderr, flush=True)
    loaded = load_models(cfg)
    limit_threads(cfg.audio.threads)
    warm_up(loaded)
    models = loaded.names
    print(f"ser-live: {source.name}; speech recognition: {models['asr']}", file=sys.stderr)

    log_path = args.log or default_log_path(cfg)
    session = SessionLog(log_path)
    session.write(session_start(models, source=source.name, device=args.device, file=str(args.file) if args.file else None,
                                fast=args.fast, config=asdict(cfg)))
    recorder = None
    if args.record:
        import soundfile as sf

        args.record.parent.mkdir(parents=True, exist_ok=True)
        recorder = sf.SoundFile(str(args.record), "w", samplerate=SAMPLE_RATE, channels=1, subtype="PCM_16")

    state = LiveState(source.name, models, history=ROWS, utterances=ROWS, half_life_s=cfg.fusion.half_life_s)  # as many as a big screen shows
    sinks = [lambda r: session.write(r.to_record(transcript=cfg.live.log_transcript))]
    use_dashboard = not (args.no_dashboard or args.json) and sys.stdout.isatty()
    if args.json:
        sinks.append(lambda r: print(json.dumps(r.to_record(transcript=cfg.live.log_transcript)), flush=True))
    elif not use_dashboard:
        sinks.append(lambda r: print(plain_line(r), flush=True))
    pipeline = open_stream(cfg, loaded, source, sinks, observer=state, block_when_full=bool(args.file and args.fast),
                           counters=counters, recorder=recorder)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Ctrl-C stops cleanly even when started from a shell that ignores SIGINT for background jobs
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupted = False
    summary = None
    try:
        if use_dashboard:
            from rich.live import Live

            with Live(Dashboard(lambda: state.snapshot(counters.snapshot())), refresh_per_second=cfg.live.refresh_per_second,
                      screen=False, redirect_stderr=False):
                summary = pipeline.run(stop)
        else:
            summary = pipeline.run(stop)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        summary = summary or pipeline.summary()
        rest = {k: v for k, v in summary.items() if k not in ("windows", "error")}
        session.write(session_end(summary["windows"], summary["error"], interrupted=interrupted, **rest))
        session.close()
        if recorder is not None:
            recorder.close()
    print(f"ser-live: {summary['windows']} windows, {summary.get('utterances', 0)} utterances, {summary['words']} words, "
          f"{summary['stream_s']:.1f} s of audio, {timing_text(summary, fast=args.fast)}, "
          f"dropped audio {summary['counters'].get('audio_dropped_samples', 0) / SAMPLE_RATE:.1f} s; log: {log_path}", file=sys.stderr)
    if summary["error"]:
        raise SerError(f"{summary['error']}; the {summary['windows']} windows before it are in {log_path}")
    return 130 if interrupted else 0


def timing_text(summary: dict, fast: bool) -> str:
    """The closing line's timings, each named. Latency (a window's end to its result) means
    something only in real time. A --fast run reads ahead of the workers, so its latency is
    queueing; there the figure is the processing time of a window: the audio model, its ASR
    decode, the text model and fusion, summed (some of them run side by side).

    >>> s = {"latency_ms": {"p50": 2400.0, "p95": 3900.0}, "processing_ms": {"p50": 210.0, "p95": 380.0}}
    >>> timing_text(s, fast=True)
    'processing p50/p95 210/380 ms per window (--fast: windows queue, so no latency is measured)'
    >>> timing_text(s, fast=False)
    'latency p50/p95 2400/3900 ms'
    """
    def pair(d: dict | None) -> str:
        return "-" if not d or d.get("p50") is None else f"{d['p50']:.0f}/{d['p95']:.0f}"

    if fast:
        return f"processing p50/p95 {pair(summary.get('processing_ms'))} ms per window (--fast: windows queue, so no latency is measured)"
    return f"latency p50/p95 {pair(summary['latency_ms'])} ms"


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()

"""ser-report: a figure and a self-contained HTML page per session log, and an index page
over several.

A session log is the NDJSON file written by `ser-live --log LOG.ndjson`, or one of the
LOG.ndjson files written by `ser-analyze FILES --out DIR`. The page holds the figure
(per channel: the fused emotion probabilities of each window over its own time span, each
utterance's own emotion, the rolling emotion, fused arousal and valence, and how far the
audio and text models agree), the time spent in each emotion, the most intense utterances,
the transcript by utterance, and any error stored in the log; above them, when the recording
is at hand (the file the log names, or --audio), its waveform and log-mel spectrogram on the
same time axis. With --clip, instead, the
figure of one recording: its waveform, its log-mel spectrogram, and bars of the audio,
text and fused emotion probabilities of the whole clip, titled with its transcript, the
fused emotion and the fused arousal and valence. Give --html, --png or both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from streamer.cli import run_main
from streamer.core.errors import SerError

LOG_SUFFIXES = (".ndjson", ".jsonl")


def clip_figure(path: Path, png: Path, config: Path | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from streamer.core.messages import SAMPLE_RATE
    from streamer.audio.features import log_mel
    from streamer.audio.io import load_audio
    from streamer.runtime.config import Config
    from streamer.core.dims import dims
    from streamer.core.labels import LABELS
    from streamer.runtime.models import limit_threads, load_models
    from streamer.report import COLORS, clip_title

    cfg = Config.load(config)
    models = load_models(cfg)
    limit_threads(1)
    x = load_audio(path)
    audio, text, fused, transcript, uncertain = clip_emotion(cfg, models, path)
    fig = plt.figure(figsize=(12, 7), dpi=100)
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.3])
    ax_w = fig.add_subplot(grid[0, 0])
    ax_w.plot(np.arange(len(x)) / SAMPLE_RATE, x, lw=0.5, color="#333333")
    ax_w.set_title("waveform", loc="left")
    ax_w.set_xlabel("s")
    ax_m = fig.add_subplot(grid[1, 0])
    mel = log_mel(x)
    ax_m.imshow(mel, origin="lower", aspect="auto", cmap="magma",
                extent=(0, len(x) / SAMPLE_RATE, 0, mel.shape[0]))
    ax_m.set_title("log-mel spectrogram", loc="left")
    ax_m.set_xlabel("s")
    ax_m.set_ylabel("mel band")
    ax_p = fig.add_subplot(grid[:, 1])
    y = np.arange(len(LABELS))
    for k, (name, probs) in enumerate((("audio", audio), ("text", text), ("fused", fused))):
        if probs is None:
            continue
        ax_p.barh(y + (1 - k) * 0.27, [probs[lab] for lab in LABELS], height=0.26, label=name,
                  color=[COLORS[lab] for lab in LABELS], alpha=(0.45, 0.7, 1.0)[k], edgecolor="black", linewidth=0.3)
    ax_p.set_yticks(y, LABELS)
    ax_p.set_xlim(0, 1)
    ax_p.set_xlabel("probability")
    ax_p.legend(title="bars: audio / text / fused (light to dark)" + ("" if text else "\nno words: no text bar"))
    ax_p.set_title(clip_title(transcript), loc="left", fontsize=9)
    label = max(fused, key=fused.get)
    d = dims(fused)
    fig.suptitle(f"{path.name}: {label} {fused[label]:.0%}{' (uncertain)' if uncertain else ''}   "
                 f"fused arousal {d['arousal']:+.2f}, valence {d['valence']:+.2f}")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


def clip_emotion(cfg, models, path: Path):
    """A whole recording's emotion, through the same stream session as ``ser-live --file``:
    the voice's opinion is its windows' (each weighted by its span), the words are its
    utterances' (those the text gate lets through), read once as one text, and the two are
    fused. Returns (audio, text or None, fused, transcript, uncertain)."""
    import threading

    from streamer.core.fusion import Fuser
    from streamer.core.messages import UtteranceResult, WindowResult
    from streamer.core.session import span_weighted_audio
    from streamer.live.sources import FileSource
    from streamer.runtime.streams import open_stream

    results: list = []
    pipe = open_stream(cfg, models, FileSource(path, fast=True), [results.append], block_when_full=True)
    summary = pipe.run(threading.Event())
    if summary["error"]:
        raise SerError(f"{path.name}: {summary['error']}")
    windows = [r for r in results if isinstance(r, WindowResult)]
    heard = [u for u in results if isinstance(u, UtteranceResult) and u.text_skipped is None]
    if windows:
        audio = span_weighted_audio(windows)
    else:  # no speech found: the voice model's opinion of the whole recording
        from streamer.audio.io import load_audio

        audio = models.audio.predict(load_audio(path))
    transcript = " ".join(w.word for u in heard for w in u.words)
    text = models.text.predict(transcript) if transcript else None
    fuser = Fuser.load(cfg.fusion)
    fused = fuser.fuse(audio, text)
    return audio, text, fused, transcript, fuser.is_uncertain(fused)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ser-report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="*", type=Path, metavar="LOG",
                    help="session logs (LOG.ndjson), or folders of them such as a ser-analyze --out folder "
                         "(their *.ndjson and *.jsonl files, recursively)")
    ap.add_argument("--html", type=Path, default=None,
                    help="write the HTML page here; with several logs or a folder, a folder: one page per log "
                         "and index.html linking them (default: no page)")
    ap.add_argument("--png", type=Path, default=None,
                    help="write the figure here as PNG; with several logs or a folder, a folder: one figure per "
                         "log, and index.html there when --html is not given (default: no figure)")
    ap.add_argument("--clip", type=Path, default=None, metavar="AUDIO",
                    help="instead of logs: analyse this recording whole and draw its waveform, log-mel "
                         "spectrogram and audio/text/fused probabilities into --png (default: off)")
    ap.add_argument("--config", type=Path, default=None,
                    help="settings file for --clip's models (default: the shipped config.toml)")
    ap.add_argument("--audio", type=Path, default=None, metavar="FILE",
                    help="the recording of a single log, for its waveform and log-mel lanes (default: the audio "
                         "file the log names, when it is at hand; ser-live --record makes one for a microphone)")
    ap.add_argument("--no-audio", action="store_true",
                    help="leave out the waveform and log-mel lanes (default: drawn when the recording is at hand)")
    return ap


def find_logs(paths: list[Path]) -> list[Path]:
    """Files given, and session-log files (by suffix) under folders given, recursively."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in LOG_SUFFIXES)
            if not found:
                raise SerError(f"no session logs (*.ndjson, *.jsonl) in {p}: make them with `ser-analyze FILES --out {p}`")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise SerError(f"no such log: {p}")
    return list(dict.fromkeys(out))


def out_names(logs: list[Path]) -> list[str]:
    """A report name per log, unique within the run ("a", "a-2", ...)."""
    seen: dict[str, int] = {}
    names = []
    for log in logs:
        stem = log.stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def main() -> int:
    args = parser().parse_args()
    if args.clip:
        if not args.png:
            raise SerError("--clip needs --png OUT.png")
        if args.clip.is_dir():
            raise SerError(f"--clip {args.clip} is a folder: give one audio file")
        if not args.clip.is_file():
            raise SerError(f"no such audio file: {args.clip}")
        clip_figure(args.clip, args.png, args.config)
        print(f"wrote {args.png}")
        return 0
    if not args.logs:
        raise SerError("give session logs (LOG.ndjson, or a ser-analyze --out folder), or --clip FILE --png OUT.png")
    if not (args.html or args.png):
        raise SerError("nothing to write: give --html OUT.html and/or --png OUT.png")
    from streamer.report import index_page, report

    logs = find_logs(args.logs)
    many = len(logs) > 1 or any(p.is_dir() for p in args.logs)
    if args.audio is not None and (many or not args.audio.is_file()):
        raise SerError(f"--audio {args.audio}: " + ("goes with one log, not several" if many else "no such audio file"))
    if not many:
        rep = report(logs[0], args.html, args.png, args.audio, pictures=not args.no_audio)
        for w in rep.warnings:
            print(f"warning: {w}", file=sys.stderr)
        print(f"{logs[0]}: " + ", ".join(str(p) for p in (args.html, args.png) if p))
        return 0
    for folder in (args.html, args.png):
        if folder and folder.suffix.lower() in (".html", ".png"):
            raise SerError(f"with several logs, --html and --png are folders (one file per log), not {folder}")
    reports, failed = [], {}
    for log, name in zip(logs, out_names(logs)):
        html = args.html / f"{name}.html" if args.html else None
        png = args.png / f"{name}.png" if args.png else None
        try:
            rep = report(log, html, png, pictures=not args.no_audio)
        except SerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed[log] = str(exc)
            continue
        reports.append(rep)
        for w in rep.warnings:
            print(f"warning: {w}", file=sys.stderr)
        print(f"{log}: " + ", ".join(str(p) for p in (html, png) if p))
    index = (args.html or args.png) / "index.html"
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(index_page(reports, failed, index), encoding="utf-8")
    print(f"index: {index}")
    if failed:
        raise SerError(f"{len(failed)} of {len(logs)} files are not session logs (listed above and in {index})")
    return 0


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()

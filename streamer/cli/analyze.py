"""ser-analyze: the ser-live pipeline over recorded files and folders, one session log per
file and a summary.csv; stereo calls can be split into one speaker per channel.

Exit status: 0 when every file was analysed; 1 when some could not be (each one's error is
in summary.csv, its log and the closing lines; the others are analysed all the same); 2 for
a bad argument (nothing is analysed)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from streamer.cli import run_main


def main() -> int:
    ap = argparse.ArgumentParser(prog="ser-analyze", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="audio files or folders (searched recursively)")
    ap.add_argument("--out", type=Path, default=Path("ser-analysis"),
                    help="folder for the logs and summary.csv (default: ser-analysis/)")
    ap.add_argument("--channels", choices=("mix", "split"), default="mix",
                    help="split: each channel of a stereo file is its own speaker, named by [batch] channel_names; mix: one stream (default: mix)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="files analysed in parallel, each process loading the models once (default: 1)")
    ap.add_argument("--engine", choices=("local", "ray"), default="local",
                    help="local: --jobs processes on this machine; ray: one file per CPU of a Ray cluster, --jobs unused (default: local)")
    ap.add_argument("--address", default=None,
                    help="--engine ray: the cluster to join (default: $RAY_ADDRESS, else a local cluster of this machine's CPUs)")
    ap.add_argument("--force", action="store_true", help="analyse again files whose log is already complete")
    ap.add_argument("--config", type=Path, default=None, help="settings file (default: the shipped config.toml; flags override it)")
    ap.add_argument("--asr", choices=("auto", "vosk", "whisper"), default=None,
                    help="speech recogniser (default: [asr] engine, auto: Vosk when a model is found, else Whisper)")
    ap.add_argument("--vosk-model", default=None, help="a Vosk model folder (default: $SER_VOSK_MODEL, config, cache)")
    ap.add_argument("--whisper-model", default=None,
                    help="faster-whisper model name or folder (default: [whisper] model, the embedded tiny.en)")
    ap.add_argument("--text-model", default=None,
                    help="text emotion model: embedded, a folder or a Hugging Face name (default: [text] model)")
    args = ap.parse_args()
    if args.jobs < 1:
        from streamer.core.errors import SerError

        raise SerError("--jobs must be at least 1")

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from streamer.audio.io import file_info
    from streamer.batch import BatchOptions, find_audio, is_complete, log_name, run_batch, summary_rows, write_summary
    from streamer.runtime.config import Config

    cfg = Config.load(args.config)  # validate the settings before any work
    overrides = {"asr": {k: v for k, v in (("engine", args.asr), ("vosk_model", args.vosk_model)) if v},
                 "whisper": {"model": args.whisper_model} if args.whisper_model else {},
                 "text": {"model": args.text_model} if args.text_model else {}}
    overrides = {k: v for k, v in overrides.items() if v}
    opts = BatchOptions(args.channels, tuple(cfg.batch.channel_names), args.force)
    files = find_audio(args.paths)
    args.out.mkdir(parents=True, exist_ok=True)
    logs = {f: args.out / log_name(f, args.paths) for f in files}
    todo = [f for f in files if args.force or not is_complete(logs[f])]
    seconds = {}
    for f in todo:
        try:
            seconds[f] = file_info(f).duration
        except Exception:
            seconds[f] = 0.0
    console = Console(stderr=True, soft_wrap=True)  # a long path is never cut into two lines
    console.print(f"{len(files)} file(s), {len(files) - len(todo)} already analysed, {len(todo)} to do "
                  f"({sum(seconds.values()) / 60:.1f} min of audio), "
                  + ("on Ray" if args.engine == "ray" else f"{args.jobs} job(s)"))
    failures = {}
    if todo:
        tasks = [(str(f), str(logs[f]), opts) for f in todo]
        if args.engine == "ray":
            from streamer.batch_ray import RayOptions, run_batch_ray

            results = run_batch_ray(tasks, str(args.config) if args.config else None, overrides, RayOptions(args.address))
        else:
            results = run_batch(tasks, args.jobs, str(args.config) if args.config else None, overrides)
        if console.is_terminal:  # bars on a terminal; one line per file elsewhere (a log, a pipe)
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                          TimeElapsedColumn(), console=console) as progress:
                t_files = progress.add_task("files", total=len(todo), info="")
                t_audio = progress.add_task("audio (s)", total=round(sum(seconds.values())), info="")
                for path, error in results:
                    if error:
                        failures[path] = error
                    progress.update(t_files, advance=1, info=Path(path).name)
                    progress.update(t_audio, advance=round(seconds[Path(path)]))
        else:
            for n, (path, error) in enumerate(results, 1):
                if error:
                    failures[path] = error
                print(f"[{n}/{len(todo)}] {path}: {'error' if error else 'done'}", file=sys.stderr, flush=True)
    rows = []
    for f in files:
        if logs[f].is_file():
            rows += summary_rows(f, logs[f])
        else:
            rows.append({"file": str(f), "error": failures.get(str(f), "not analysed")})
    write_summary(rows, args.out / "summary.csv")
    bad = [r for r in rows if r.get("error")]
    failed = sorted({r["file"] for r in bad})
    print(f"ser-analyze: {len(files)} file(s), {len(failed)} with errors; logs and summary.csv in {args.out}", file=sys.stderr)
    for r in bad:
        print(f"  {r['file']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


def entry() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_main(main)


if __name__ == "__main__":
    entry()

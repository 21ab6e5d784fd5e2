"""ser-models: list and download Vosk speech recognition models into the user's cache."""

from __future__ import annotations

import argparse

from streamer.cli import run_main


def main() -> int:
    ap = argparse.ArgumentParser(prog="ser-models", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="known models and what is installed")
    dl = sub.add_parser("download", help="download and unpack a model")
    dl.add_argument("name")
    dl.add_argument("--base-url", default=None, help="mirror serving NAME.zip (default: the Vosk project's site)")
    rm = sub.add_parser("remove", help="delete an installed model")
    rm.add_argument("name")
    args = ap.parse_args()

    from streamer.models_store import BASE_URL, CATALOGUE, cache_dir, download, installed, remove

    if args.command == "list":
        have = {p.name for p in installed()}
        print(f"models folder: {cache_dir()}")
        for m in CATALOGUE.values():
            print(f"  {'*' if m.name in have else ' '} {m.name:<32} {m.size:>7}  {m.about}")
        for name in sorted(have - set(CATALOGUE)):
            print(f"  * {name:<32} {'':>7}  (installed by hand)")
        print("* installed. ser-live uses an installed Vosk model automatically (--asr auto).")
        return 0
    if args.command == "remove":
        remove(args.name)
        print(f"removed {args.name}")
        return 0
    if args.name not in CATALOGUE:  # before any progress bar is drawn
        from streamer.models_store import DownloadError

        raise DownloadError(f"unknown model '{args.name}'; `ser-models list` shows the known ones")
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(TextColumn(args.name), BarColumn(), DownloadColumn(), TransferSpeedColumn()) as progress:
        task = progress.add_task("download", total=None)
        path = download(args.name, args.base_url or BASE_URL,
                        progress=lambda got, total: progress.update(task, completed=got, total=total))
    print(f"installed {path}")
    return 0


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()

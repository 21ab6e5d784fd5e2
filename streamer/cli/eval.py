"""ser-eval: evaluate an audio emotion model on labelled corpus folders of any supported layout."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from streamer.cli import run_main


def main() -> int:
    from streamer.audio.emotion import DEFAULT_MODEL_DIR

    ap = argparse.ArgumentParser(prog="ser-eval", description=__doc__)
    ap.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="corpus folders or files (RAVDESS, TESS, EmoDB, CREMA-D, SAVEE, EMOVO, URDU names)")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="audio model folder (default: the shipped one)")
    ap.add_argument("--json", type=Path, required=True, help="write the report here")
    ap.add_argument("--png", type=Path, default=None, help="also draw the confusion matrix here")
    args = ap.parse_args()

    import torch
    from rich.console import Console
    from rich.progress import Progress

    from streamer.audio.emotion import AudioEmotion
    from streamer.errors import SerError
    from streamer.train.corpora import scan
    from streamer.train.evaluate import eval_report, predict_clips
    from streamer.train.metrics import confusion_png, confusion_text

    torch.set_num_threads(1)
    try:
        found = scan(args.paths)
    except FileNotFoundError as exc:
        raise SerError(f"{exc}; give existing corpus folders") from exc
    if not found.clips:
        raise SerError(f"no labelled clips found under {', '.join(map(str, args.paths))}: file names must follow a supported corpus layout")
    model = AudioEmotion.load(args.model)
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("evaluating", total=len(found.clips))
        pred = predict_clips(model, found.clips, progress=lambda: progress.advance(task))
    pred.skipped.update(found.skipped)
    report = eval_report(pred)
    report["model"] = str(args.model)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.png:
        import numpy as np

        confusion_png(np.array(report["confusion"]["matrix"]), str(args.png))
    o = report["overall"]
    print(f"n {o['n']}  skipped {o['skipped']}  UA {o['ua']:.3f}  WA {o['wa']:.3f}  macro-F1 {o['macro_f1']:.3f}  ECE {o['ece']:.3f}")
    for name, rep in report["per_corpus"].items():
        print(f"  {name}: n {rep['n']}  UA {rep['ua']:.3f}  WA {rep['wa']:.3f}")
    import numpy as np

    print(confusion_text(np.array(report["confusion"]["matrix"])))
    return 0


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()

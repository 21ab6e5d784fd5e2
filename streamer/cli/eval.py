"""ser-eval: evaluate an audio emotion model on labelled corpus folders of any supported layout,
or on the clips a manifest lists (TSV or CSV with columns path, label, optional speaker)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from streamer.cli import run_main


def main() -> int:
    ap = argparse.ArgumentParser(prog="ser-eval", description=__doc__)
    ap.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="corpus folders or files (RAVDESS, TESS, EmoDB, CREMA-D, SAVEE, EMOVO, URDU names)")
    ap.add_argument("--manifest", type=Path, action="append", default=[], metavar="FILE",
                    help="a TSV or CSV listing clips under any names: header path,label[,speaker]; paths relative to the file (repeatable)")
    ap.add_argument("--model", type=Path, default=None, help="audio model folder (default: the shipped one, models/audio-emotion)")
    ap.add_argument("--json", type=Path, required=True, help="write the report here")
    ap.add_argument("--png", type=Path, default=None, help="also draw the confusion matrix here")
    ap.add_argument("--adapt", choices=("corpus", "none"), default="corpus",
                    help="for a model that adapts to what it hears (the shipped one): standardise each corpus by the "
                         "statistics of its own clips (corpus, the default: no labels used, as a long live stream does) "
                         "or by the training statistics alone (none)")
    args = ap.parse_args()
    if not args.paths and not args.manifest:
        ap.error("give corpus folders (PATH...) or --manifest FILE, or both")

    from streamer.core.errors import SerError
    from streamer.train.corpora import ScanResult, scan
    from streamer.train.manifest import read_manifest

    try:
        found = scan(args.paths) if args.paths else ScanResult()
    except FileNotFoundError as exc:
        raise SerError(f"{exc}; give existing corpus folders") from exc
    manifests = [read_manifest(m) for m in args.manifest]
    for m in manifests:
        found.clips.extend(m.clips)
        found.skipped.update(m.skipped)
    if not found.clips:
        where = ", ".join(map(str, [*args.paths, *args.manifest]))
        if manifests:
            raise SerError(f"no usable clips in {where}: check that the listed audio files exist (paths are relative to the manifest's folder) "
                           f"and that the labels are among angry, disgust, fear, happy, neutral, sad, surprise (or synonyms such as anger, calm)")
        raise SerError(f"no labelled clips found under {where}: file names must follow a supported corpus layout, or list the clips in a --manifest")

    from streamer.runtime.models import limit_threads
    from rich.console import Console
    from rich.progress import Progress

    from streamer.audio.load import DEFAULT_MODEL_DIR, load_audio_model
    from streamer.train.evaluate import add_arousal, eval_report, predict_clips
    from streamer.train.metrics import confusion_png, confusion_text

    args.model = args.model or DEFAULT_MODEL_DIR
    model = load_audio_model(args.model)
    limit_threads(1)
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("evaluating", total=len(found.clips))
        pred = predict_clips(model, found.clips, progress=lambda: progress.advance(task), adapt=args.adapt)
    pred.skipped.update(found.skipped)
    report = add_arousal(eval_report(pred), pred)
    report["model"] = str(args.model)
    report["adapt"] = args.adapt if getattr(model, "kind", None) == "pooled" else "none (the model does not adapt)"
    if manifests:
        report["manifests"] = [m.summary() for m in manifests]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.png:
        import numpy as np

        confusion_png(np.array(report["confusion"]["matrix"]), str(args.png))
    o = report["overall"]
    print(f"n {o['n']}  skipped {o['skipped']}  UA {o['ua']:.3f}  UA over present labels {o['ua_present']:.3f}  WA {o['wa']:.3f}  macro-F1 {o['macro_f1']:.3f}  ECE {o['ece']:.3f}"
          f"  arousal bAcc {_num(o['arousal_bacc'])}")
    for name, rep in report["per_corpus"].items():
        d = rep["dims"]
        print(f"  {name}: n {rep['n']}  UA {rep['ua']:.3f}  UA over its {len(rep['labels_present'])} labels {rep['ua_present']:.3f}"
              f"  WA {rep['wa']:.3f}  ECE {rep['ece']:.3f}  arousal bAcc {_num(rep['arousal_bacc'])}"
              f"  r(arousal) {_num(d['arousal'])}  r(valence) {_num(d['valence'])}")
    for m in manifests:
        if m.unknown_labels or m.missing or m.malformed:
            unknown = ", ".join(f"{k} {n}" for k, n in m.unknown_labels.most_common()) or "none"
            print(f"  {m.file}: skipped unknown labels ({unknown}), missing files {m.missing}, rows without path or label {m.malformed}")
    import numpy as np

    print(confusion_text(np.array(report["confusion"]["matrix"])))
    return 0


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()

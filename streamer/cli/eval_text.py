"""ser-eval-text: score a text emotion model on GoEmotions test or any text<TAB>label file,
as written (raw) and as a speech recogniser writes it (asr); or its arousal and valence on
EmoBank test (Pearson r of the model's dims head and of the circumplex mapping)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from streamer.cli import run_main


def main() -> int:
    ap = argparse.ArgumentParser(prog="ser-eval-text", description=__doc__)
    ap.add_argument("--model", default=None,
                    help="the shipped model (default), one of our model folders, or a Hugging Face model name or folder")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--goemotions", type=Path, help="a GoEmotions folder (its ekman test split is scored)")
    src.add_argument("--tsv", type=Path, help="a file of text<TAB>label rows, labels among the 7 (or anger/joy/sadness...)")
    src.add_argument("--emobank", type=Path, help="an EmoBank folder: arousal/valence Pearson r on its split (--split)")
    ap.add_argument("--split", default="test", help="EmoBank split (default test)")
    ap.add_argument("--json", type=Path, required=True, help="write the report here")
    ap.add_argument("--limit", type=int, default=0, help="score only this many rows (a fixed sample)")
    args = ap.parse_args()

    from streamer.runtime.models import limit_threads

    from streamer.text.load import load_text_emotion
    from streamer.train.texteval import evaluate_rows
    from streamer.train.textdata import read_goemotions, read_tsv

    if args.emobank:
        from streamer.train.textdata import read_emobank
        from streamer.train.texteval import evaluate_dims

        model = load_text_emotion(args.model)
        limit_threads(1)
        report = evaluate_dims(model, read_emobank(args.emobank, args.split))
        report["model"] = model.name
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        for kind in ("head", "circumplex"):
            if kind in report:
                r = report[kind]
                print(f"{kind}: n {report['n']}  arousal r {r['arousal_r']:.3f}  valence r {r['valence_r']:.3f}")
        return 0
    rows = read_goemotions(args.goemotions, "test") if args.goemotions else read_tsv(args.tsv)
    model = load_text_emotion(args.model)
    limit_threads(1)
    report = evaluate_rows(model, rows.head(args.limit or None))
    report["model"] = model.name
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    for kind in ("raw", "asr"):
        r = report[kind]
        print(f"{kind}: n {r['n']}  accuracy {r['accuracy']:.3f}  macro-F1 {r['macro_f1']:.3f}  no opinion {r['no_opinion']}")
    return 0


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()

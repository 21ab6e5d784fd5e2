"""ser-train-text: fine-tune the text emotion model (MiniLM + head) and write its card."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

from streamer.cli import run_main
from streamer.core.paths import model_dir
from streamer.cli.train import RichReporter

DEFAULT_CONFIG = model_dir("text-emotion") / "train.toml"
COMMAND = ".venv/bin/ser-train-text"
DAILYDIALOG = "dailydialog-test"


def main() -> int:
    ap = argparse.ArgumentParser(prog="ser-train-text", description=__doc__)
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training recipe (TOML)")
    ap.add_argument("--out", type=Path, default=None, help="model folder to write (default: beside the config)")
    ap.add_argument("--encoder", choices=("lora", "full", "head"), default=None, help="override what is trained")
    ap.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    ap.add_argument("--max-rows", type=int, default=None, help="train on this many rows only (quick runs)")
    ap.add_argument("--compare", type=Path, default=None,
                    help="metrics.json of another run to compare with in the model card (kept in this metrics.json)")
    ap.add_argument("--compare-name", default=None, help="its name in the card (default: its encoder)")
    ap.add_argument("--compare-note", default="", help="a line about it in the card")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: up to 2)")
    ap.add_argument("--card-only", action="store_true", help="rewrite MODEL_CARD.md from the folder's metrics.json only")
    ap.add_argument("--from-run", type=Path, default=None,
                    help="do not train: take the model a probe run wrote (python -m streamer.train.textprobe CONFIG RUN), "
                         "with its training record RUN/probe.json, then fit the dims head, evaluate and write the card as after training")
    ap.add_argument("--recipes", type=Path, default=None,
                    help="JSON list of recipes compared on the three-domain criterion, for the card (kept in metrics.json)")
    args = ap.parse_args()

    import torch

    from streamer.train.text import TextTrainConfig, evaluate_saved, train
    from streamer.train.textcard import summarize, write_card

    torch.set_num_threads(args.threads if args.threads > 0 else max(1, min(2, os.cpu_count() or 1)))
    cfg = TextTrainConfig.load(args.config)
    overrides = {k: v for k, v in (("encoder", args.encoder), ("epochs", args.epochs), ("max_rows", args.max_rows)) if v is not None}
    cfg = replace(cfg, **overrides)
    out = args.out or args.config.parent
    if args.compare and not args.compare.is_file():
        raise SystemExit(f"error: --compare {args.compare}: no such file")
    compare = json.loads(args.compare.read_text()) if args.compare else None
    metrics = out / "metrics.json"
    command = " ".join([COMMAND] + ([f"--config {args.config}"] if args.config.resolve() != DEFAULT_CONFIG else [])
                       + ([f"--threads {args.threads}"] if args.threads > 0 else []))
    previous = json.loads(metrics.read_text()).get("compare", []) if metrics.is_file() else []
    if args.card_only:
        record = json.loads(metrics.read_text())
        _add_compare(record, compare, args, summarize)
        metrics.write_text(json.dumps(record, indent=2) + "\n")
        print(f"model card: {write_card(out, record, None, command)}")
        return 0
    recipes = json.loads(args.recipes.read_text()) if args.recipes else None
    if args.from_run:
        command = " ".join([".venv/bin/python -m streamer.train.textprobe", str(args.config), str(args.from_run), "&&", COMMAND,
                            f"--config {args.config}", f"--from-run {args.from_run}"] + ([f"--out {args.out}"] if args.out else [])
                           + ([f"--threads {args.threads}"] if args.threads > 0 else [])
                           + ([f"--recipes {args.recipes}"] if args.recipes else [])
                           + ([f"--compare {args.compare}"] if args.compare else []))
    with RichReporter() as reporter:
        if args.from_run:
            record = _take_run(args.from_run, out)
            cfg = replace(TextTrainConfig.load(args.config), **{k: v for k, v in record["config"].items()
                                                               if k in TextTrainConfig.__dataclass_fields__})
        else:
            record = train(cfg, out, reporter)
        if cfg.emobank:
            from streamer.train.textlinear import fit_dims_for_folder

            reporter.message("fitting the arousal/valence head on EmoBank train")
            record["dims"] = fit_dims_for_folder(out, Path(cfg.emobank))
        reporter.message("evaluating the saved model")
        dd = Path(cfg.goemotions).parent / "dailydialog" / "test.tsv"
        record["eval"] = evaluate_saved(out, cfg, {DAILYDIALOG: dd}, max_rows=cfg.max_rows)
    record["compare"] = previous
    if recipes is not None:
        record["recipes"] = recipes
    elif metrics.is_file() and "recipes" in json.loads(metrics.read_text()):
        record["recipes"] = json.loads(metrics.read_text())["recipes"]
    _add_compare(record, compare, args, summarize)
    metrics.write_text(json.dumps(record, indent=2) + "\n")
    for name, rep in record["eval"].items():
        if "asr" not in rep:
            continue
        a = rep["asr"]
        print(f"{name}: ASR-style accuracy {a['accuracy']:.3f}  macro-F1 {a['macro_f1']:.3f}  (n {a['n']})")
    print(f"model card: {write_card(out, record, None, command)}")
    print(f"wrote {out} in {record['seconds']:.0f} s of training")
    return 0


def _take_run(run: Path, out: Path) -> dict:
    """Copy a probe run's model files into ``out`` (a dims head it may hold is refitted) and
    return its training record (``probe.json`` without the probe's own evaluation)."""
    import shutil

    if not (run / "probe.json").is_file() or not (run / "config.json").is_file():
        raise SystemExit(f"error: --from-run {run}: no probe.json / config.json (a textprobe run's folder)")
    out.mkdir(parents=True, exist_ok=True)
    if run.resolve() != out.resolve():
        for name in ("config.json", "labels.json", "head.pt", "encoder.safetensors", "adapter"):
            src, dst = run / name, out / name
            if src.is_dir():
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(src, dst)
            elif src.is_file():
                shutil.copy2(src, dst)
    (out / "dims.pt").unlink(missing_ok=True)
    record = json.loads((run / "probe.json").read_text())
    record.pop("eval", None)
    return record


def _add_compare(record: dict, compare: dict | None, args: argparse.Namespace, summarize) -> None:
    """Keep ``compare`` (summarised) in the record's comparison list, replacing one of the same name."""
    if compare is None:
        return
    entry = summarize(compare, args.compare_name or f"{compare['config']['encoder']} run", args.compare_note)
    record["compare"] = [c for c in record.get("compare", []) if c["name"] != entry["name"]] + [entry]


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()

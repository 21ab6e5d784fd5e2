"""ser-train: cache features, cross-validate on unseen speakers, train the shipped audio model."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from streamer.cli import run_main
from streamer.core.paths import model_dir

DEFAULT_CONFIG = model_dir("audio-emotion") / "train.toml"
COMMAND = ".venv/bin/ser-train"
ABLATION_COMMAND = ".venv/bin/ser-train --ablation"


class RichReporter:
    """Progress bars for feature caching, epochs and test passes."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console)
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> "RichReporter":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def task(self, name: str, total: int) -> Callable[[int], None]:
        tid = self.progress.add_task(name, total=total, info="")
        return lambda n=1: self.progress.advance(tid, n)

    def epoch(self, name: str, epoch: int, total: int, record: dict) -> None:
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total, info="")
        self.progress.update(self.tasks[name], completed=epoch,
                             info=f"loss {record['loss']:.3f} val UA {record['val_ua']:.3f}")

    def message(self, text: str) -> None:
        self.progress.console.print(text)


def main() -> int:
    ap = argparse.ArgumentParser(prog="ser-train", description=__doc__)
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training recipe (TOML)")
    ap.add_argument("--out", type=Path, default=None, help="model folder to write (default: beside the config)")
    ap.add_argument("--data", nargs="+", default=None, help="corpus folders (override the config)")
    ap.add_argument("--cache-dir", default=None, help="feature cache folder (override the config)")
    ap.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    ap.add_argument("--folds", type=int, default=None, help="override the number of cross-validation folds")
    ap.add_argument("--no-cv", action="store_true", help="skip cross-validation, train the final model only")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="folder of networks trained earlier for the same splits (<folder>/<split>/model.pt, info.json): "
                         "reused instead of retrained; linear heads, blend, temperature and figures are recomputed")
    ap.add_argument("--final-from-fold", action="store_true",
                    help="no final run: ship the LOAO fold model with the best validation UA (when time is short)")
    ap.add_argument("--adapt-sweep", action="store_true",
                    help="pooled recipe: score the shipped recipe as live streams for several prior weights of the "
                         "training statistics and keep the best (updates config.json, metrics.json and the card)")
    ap.add_argument("--fold-models", type=Path, default=None, metavar="DIR",
                    help="pooled recipe: write each RAVDESS leave-speakers-out fold's model into DIR/fold<k> "
                         "(for ser-train-fusion --cross-fit and bench/fusion_eval.py)")
    ap.add_argument("--write-candidate", nargs=2, metavar=("RECIPE", "DIR"), default=None,
                    help="pooled recipe: train another scored candidate (its name as in metrics.json) on every corpus "
                         "into DIR, e.g. a cheaper model for a busy server")
    ap.add_argument("--ablation", action="store_true",
                    help="cross-validate each input variant instead (writes ablation.json; keeps the model)")
    args = ap.parse_args()

    import tomllib

    if tomllib.loads(args.config.read_text()).get("kind") == "pooled":
        return _pooled(args)

    import torch

    from streamer.train.ablation import run_ablation
    from streamer.train.card import load_json, write_card
    from streamer.train.recipe import load_config, run

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    cfg = load_config(args.config)
    overrides = {k: v for k, v in (("data", tuple(args.data) if args.data else None), ("cache_dir", args.cache_dir),
                                   ("epochs", args.epochs), ("folds", args.folds)) if v is not None}
    cfg = replace(cfg, **overrides)
    out = args.out or args.config.parent
    with RichReporter() as reporter:
        if args.ablation:
            results = run_ablation(cfg, out, reporter)
            for r in results["ablation"]:
                print(f"{r['variant']}: UA {r['mean']['ua']:.3f}  telephone UA {r['mean']['telephone_ua']:.3f}")
        else:
            results = run(cfg, out, reporter, cv=not args.no_cv, reuse=args.reuse, final_from="best-val" if args.final_from_fold else None)
            if results["cv"]:
                m = results["cv"]["mean"]
                print(f"cross-validation: UA {m['ua']:.3f}  telephone UA {m['telephone_ua']:.3f}  "
                      f"ECE {m['ece_before']:.3f} -> {m['ece_after']:.3f}")
                for name, r in results.get("loco", {}).items():
                    print(f"{name} (train {r['train_corpus']}): UA {r['ua']:.3f}  ECE {r['ece_after']:.3f}")
                cal = results["calibration"].get("loco_cross_fitted")
                if cal:
                    print(f"blend weight {results['blend']['weight']}, T {results['calibration']['temperature']:.3f}, "
                          f"ECE pooled over LOCO (cross-fitted) {cal['pooled_ece']:.3f}")
    metrics = load_json(out / "metrics.json")
    if metrics:
        card = write_card(out, metrics, load_json(out / "ablation.json"), COMMAND, ABLATION_COMMAND)
        print(f"model card: {card}")
    print(f"wrote {out} in {results['seconds']:.0f} s")
    return 0


def _pooled(args: argparse.Namespace) -> int:
    """The pooled-statistics recipe (``kind = "pooled"``): candidates scored by leave-one-corpus-out
    and leave-speakers-out, the best one trained on every corpus and written with its card."""
    import logging
    from dataclasses import replace as _replace

    from streamer.train.pooled_card import write_pooled_card
    from streamer.train.pooled_recipe import load_pooled_config, run

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_pooled_config(args.config)
    overrides = {k: v for k, v in (("data", tuple(args.data) if args.data else None), ("cache_dir", args.cache_dir)) if v is not None}
    cfg = _replace(cfg, **overrides)
    out = args.out or args.config.parent
    command = f"{COMMAND} --config {args.config}" if args.config != DEFAULT_CONFIG else COMMAND
    if args.write_candidate:
        from streamer.train.pooled_recipe import write_candidate

        write_candidate(cfg, out, args.write_candidate[0], Path(args.write_candidate[1]))
        return 0
    if args.fold_models:
        from streamer.train.pooled_recipe import write_fold_models

        write_fold_models(cfg, out, args.fold_models)
        return 0
    if args.adapt_sweep:
        from streamer.train.pooled_recipe import adapt_sweep

        metrics = adapt_sweep(cfg, out)
        card = write_pooled_card(out, metrics, command)
        print(f"prior weight {metrics['adapt_sweep']['chosen_prior_windows']} windows; model card: {card}")
        return 0
    metrics = run(cfg, out)
    card = write_pooled_card(out, metrics, command)
    print(f"chosen: {metrics['chosen']}; model card: {card}; wrote {out} in {metrics['seconds']:.0f} s")
    return 0


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()

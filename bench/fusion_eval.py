"""Fusion through the whole pipeline: fused / audio-only / text-only UA per clip, from
``ser-analyze`` session logs, in two regimes.

(a) ``ravdess``: unseen RAVDESS actors. For each leave-actors-out fold k, ``ser-analyze`` runs
    on fold k's test actors with fold k's audio model (``[audio] model_dir =
    runs/audio-folds/fold{k}``) and a fusion fitted without fold k's actors (``[fusion]
    model_dir = runs/fusion-folds/fold{k}``, from ``ser-train-fusion --cross-fit``).
(b) ``spoken``: emotional sentences of held-out splits (GoEmotions test; DailyDialog test,
    evaluation only) spoken by espeak-ng, up to 30 per label, through the shipped models.

Per clip, the three opinions are the ``utterance`` records' probabilities (``probs.audio``,
``probs.text``, ``probs.fused``) when the log has them, else the window records', each
averaged over the records weighted by their duration. Text is "no opinion" (``null``) for a
record without words: text-only averages the records that have words, and a clip without
any words has no text-only answer and counts as wrong. A clip with no record at all (no
speech found) counts as wrong for all three.

    .venv/bin/python bench/fusion_eval.py                 # both regimes, all folds
    .venv/bin/python bench/fusion_eval.py --regimes spoken --score-only

Writes bench/results/fusion_eval.json (logs and the manifest of each run's clips under
runs/fusion-eval/) and rewrites models/fusion/MODEL_CARD.md with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamer.core.labels import INDEX, LABELS  # noqa: E402

N = len(LABELS)
RULES = ("fused", "audio", "text")
SEED_RULES = ("weighted", "confidence")  # recomputed from the logged branch probabilities


# --- configuration files with other model folders --------------------------------------------
def with_model_dirs(config_text: str, dirs: dict[str, str]) -> str:
    """config.toml text with ``model_dir`` of the given sections replaced.

    >>> t = '[audio]\\nmodel_dir = "models/audio-emotion"\\n[fusion]\\nmode = "learned"\\nmodel_dir = "models/fusion"\\n'
    >>> print(with_model_dirs(t, {"audio": "runs/a", "fusion": "runs/f"}))
    [audio]
    model_dir = "runs/a"
    [fusion]
    mode = "learned"
    model_dir = "runs/f"
    <BLANKLINE>
    """
    out, section, done = [], None, set()
    for line in config_text.splitlines(keepends=True):
        m = re.match(r"\s*\[([A-Za-z_]+)\]\s*$", line)
        if m:
            if section in dirs and section not in done:
                out.append(f'model_dir = "{dirs[section]}"\n')
                done.add(section)
            section = m.group(1)
        elif section in dirs and re.match(r"\s*model_dir\s*=", line):
            line = f'model_dir = "{dirs[section]}"\n'
            done.add(section)
        out.append(line)
    if section in dirs and section not in done:
        out.append(f'model_dir = "{dirs[section]}"\n')
    return "".join(out)


# --- scoring the logs ----------------------------------------------------------------------
def clip_opinions(log_path: Path) -> dict:
    """Per-clip probabilities of the three opinions (None where there is none)."""
    from streamer.live.session_log import read_log

    contents = read_log(log_path)
    records = contents.of_type("utterance") or contents.of_type("window")
    kind = "utterance" if contents.of_type("utterance") else "window"
    out: dict = {"records": len(records), "kind": kind, "uncertain": None}
    for rule in RULES:
        acc, total = np.zeros(N), 0.0
        for r in records:
            p = (r.get("probs") or {}).get(rule)
            if p is None:
                continue
            d = max(1e-3, float(r.get("end_s", 0)) - float(r.get("start_s", 0)))
            acc += d * np.array([float(p.get(k, 0.0)) for k in LABELS])
            total += d
        out[rule] = (acc / total).tolist() if total > 0 else None
    # the seed's rules on the same records' branch probabilities, for comparison
    from streamer.core.fusion import FusionConfig, fuse

    for rule in SEED_RULES:
        acc, total = np.zeros(N), 0.0
        for r in records:
            probs = r.get("probs") or {}
            if probs.get("audio") is None:
                continue
            d = max(1e-3, float(r.get("end_s", 0)) - float(r.get("start_s", 0)))
            f = fuse(probs["audio"], probs.get("text"), FusionConfig(mode=rule))
            acc += d * np.array([f[k] for k in LABELS])
            total += d
        out[rule] = (acc / total).tolist() if total > 0 else None
    if records:
        out["uncertain"] = float(np.mean([bool(r.get("uncertain")) for r in records]))
    out["transcript"] = " ".join((r.get("transcript") or "") for r in contents.of_type("window")).strip()
    return out


def score(rows: list[dict]) -> dict:
    """UA, WA, per-class recall of each opinion over clips; None opinions count as wrong."""
    from streamer.train.metrics import arousal_bacc, expected_calibration_error

    y = np.array([INDEX[r["label"]] for r in rows])
    out = {"clips": len(rows), "labels": {k: int((y == INDEX[k]).sum()) for k in LABELS if (y == INDEX[k]).any()},
           "no_records": sum(1 for r in rows if not r["records"]),
           "no_words": sum(1 for r in rows if r["text"] is None)}
    for rule in (*RULES, *[r for r in SEED_RULES if all(r in row for row in rows)]):
        pred = np.array([int(np.argmax(r[rule])) if r[rule] is not None else -1 for r in rows])
        recall = {LABELS[k]: round(float((pred[y == k] == k).mean()), 4) for k in range(N) if (y == k).any()}
        out[rule] = {"ua": round(float(np.mean(list(recall.values()))), 4), "wa": round(float((pred == y).mean()), 4),
                     "recall": recall}
        have = [i for i, r in enumerate(rows) if r[rule] is not None]
        if have:
            out[rule]["ece"] = round(expected_calibration_error(np.array([rows[i][rule] for i in have]), y[have]), 4)
            bacc = arousal_bacc(np.array([rows[i][rule] for i in have]), y[have])
            out[rule]["arousal_bacc"] = None if bacc is None else round(bacc, 4)
    flags = [r["uncertain"] for r in rows if r["uncertain"] is not None]
    out["uncertain_share"] = round(float(np.mean(flags)), 4) if flags else None
    best = max(out["audio"]["ua"], out["text"]["ua"])
    out["target_fused_ge_best_minus_0.01"] = bool(out["fused"]["ua"] >= best - 0.01)
    return out


def write_manifest(path: Path, clips: list[tuple[Path, str]]) -> None:
    """The clips a run scored (``path<TAB>label``, as ``ser-eval --manifest`` reads them)."""
    path.write_text("path\tlabel\n" + "".join(f"{p}\t{label}\n" for p, label in clips))


def params_digest(folder: Path) -> str:
    import hashlib

    f = folder / "params.json"
    return hashlib.sha256(f.read_bytes()).hexdigest()[:12] if f.is_file() else "?"


# --- running the pipeline --------------------------------------------------------------------
def analyze(files: list[Path], out: Path, config: Path | None, jobs: int, force: bool) -> float:
    cmd = [str(ROOT / ".venv" / "bin" / "ser-analyze"), *map(str, files), "--out", str(out), "--jobs", str(jobs)]
    if config:
        cmd += ["--config", str(config)]
    if force:
        cmd.append("--force")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    return time.time() - t0


def ravdess_folds(data: Path, audio_folds: Path) -> dict[int, list[tuple[Path, str]]]:
    """Fold (1-based) -> its test clips with labels: the actors ``fold<k>/test_actors.txt`` of
    the audio folds lists, else the fixed folds of 4 consecutive actors."""
    from streamer.train.corpora import scan
    from streamer.train.fusion_data import OofClip, fold_map, fold_of

    folds = fold_map(audio_folds)
    out: dict[int, list] = {}
    for c in scan([data / "speech" / "RAVDESS"]).clips:
        actor = int(c.speaker.split(":")[1])
        k = folds.get(actor) or fold_of(OofClip(c.path, actor, c.label, np.ones(N)))
        out.setdefault(k, []).append((c.path, c.label))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regimes", nargs="+", default=["ravdess", "spoken"], choices=("ravdess", "spoken"))
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--folds", default="", help="only these folds of (a), e.g. 1,2")
    ap.add_argument("--audio-folds", type=Path, default=ROOT / "runs" / "audio-folds")
    ap.add_argument("--fusion-folds", type=Path, default=ROOT / "runs" / "fusion-folds")
    ap.add_argument("--sets", nargs="+", default=["goemotions-test:30", "dailydialog-test:30"])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "fusion-eval")
    ap.add_argument("--config", type=Path, default=ROOT / "config.toml", help="base configuration")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="smoke runs: only the first N clips of each fold / set")
    ap.add_argument("--force", action="store_true", help="analyse again files whose log is complete")
    ap.add_argument("--score-only", action="store_true", help="score the logs already there")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fusion_eval.json")
    ap.add_argument("--no-card", dest="card", action="store_false", help="leave models/fusion/MODEL_CARD.md alone")
    args = ap.parse_args()
    from streamer.train.fusion_data import build_spoken_set

    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(["bench/fusion_eval.py", *sys.argv[1:]])}
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.score_only and previous:  # the logs are the earlier run's: keep its date and command
        result = {"date": previous.get("date"), "command": previous.get("command"),
                  "rescored": f"{time.strftime('%Y-%m-%d %H:%M')} ({' '.join(sys.argv[1:])})"}
    base = args.config.read_text()
    if "ravdess" in args.regimes:
        folds = ravdess_folds(args.data, args.audio_folds)
        wanted = {int(k) for k in args.folds.split(",") if k.strip()} or set(folds)
        rows_all, per_fold = [], {}
        for k in sorted(wanted):
            clips = folds[k][: args.limit or None]
            out = args.work / "ravdess" / f"fold{k}"
            out.mkdir(parents=True, exist_ok=True)
            cfg = args.work / f"ravdess-fold{k}.toml"
            audio_dir, fusion_dir = args.audio_folds / f"fold{k}", args.fusion_folds / f"fold{k}"
            for d in (audio_dir, fusion_dir):
                if not d.is_dir():
                    raise SystemExit(f"{d} missing: train the audio folds / run ser-train-fusion --cross-fit {args.fusion_folds}")
            cfg.write_text(with_model_dirs(base, {"audio": str(audio_dir), "fusion": str(fusion_dir)}))
            if not args.score_only:
                s = analyze([p for p, _ in clips], out, cfg, args.jobs, args.force)
                print(f"fold {k}: {len(clips)} clips in {s:.0f} s", file=sys.stderr)
            write_manifest(out / "manifest.tsv", [(p, label) for p, label in clips])
            rows = [{"file": p.name, "label": label, **clip_opinions(out / f"{p.name}.ndjson")} for p, label in clips]
            per_fold[k] = score(rows)
            rows_all += rows
            print(f"fold {k}: " + ", ".join(f"{r} {per_fold[k][r]['ua']:.3f}" for r in RULES), file=sys.stderr)
        pooled = score(rows_all)
        pooled["target_fused_ge_0.74"] = bool(pooled["fused"]["ua"] >= 0.74)
        result["ravdess"] = {"pooled": pooled, "folds": {str(k): v for k, v in per_fold.items()},
                             "folds_run": sorted(wanted)}
    if "spoken" in args.regimes:
        result["spoken"] = {}
        rows_all = []
        for s in args.sets:
            name, _, n = s.partition(":")
            items = build_spoken_set(name, ROOT / "runs" / "fusion-data" / name, args.data, int(n or 30))
            items = items[:: max(1, len(items) // args.limit)][: args.limit] if args.limit else items
            out = args.work / "spoken" / name
            out.mkdir(parents=True, exist_ok=True)
            if not args.score_only:
                sec = analyze([it.path for it in items], out, args.config, args.jobs, args.force)
                print(f"{name}: {len(items)} clips in {sec:.0f} s", file=sys.stderr)
            write_manifest(out / "manifest.tsv", [(it.path, it.label) for it in items])
            rows = [{"file": it.path.name, "label": it.label, "sentence": it.text,
                     **clip_opinions(out / f"{it.path.name}.ndjson")} for it in items]
            result["spoken"][name] = score(rows)
            rows_all += rows
            print(f"{name}: " + ", ".join(f"{r} {result['spoken'][name][r]['ua']:.3f}" for r in RULES), file=sys.stderr)
        if len(args.sets) > 1:
            result["spoken"]["pooled"] = score(rows_all)
    for key in ("ravdess", "spoken"):
        if key not in result and key in previous:
            result[key] = previous[key]
    result["fusion_params"] = params_digest(ROOT / "models" / "fusion")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    if args.card and (ROOT / "models" / "fusion" / "metrics.json").is_file():
        from streamer.train.fusion_card import write_card

        print(f"wrote {write_card(ROOT / 'models' / 'fusion', args.out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

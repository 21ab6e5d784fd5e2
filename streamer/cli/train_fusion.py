"""ser-train-fusion: fit the learned fusion on out-of-fold predictions of both branches.

Reads the audio model's out-of-fold RAVDESS predictions (``oof_ravdess.json``), speaks the
text corpora's dev-split sentences with espeak-ng (once, cached under ``--work``), runs the
audio model on that speech and the text model on every sentence, fits the fusion
(:mod:`streamer.train.fusion`) and writes ``params.json`` and ``metrics.json`` into ``--out``.

``--cross-fit DIR`` also writes, for each leave-actors-out fold k, a fusion fitted without
fold k's actors into ``DIR/fold{k}`` (what bench/fusion_eval.py scores fold k with); the
spoken sentences then go through fold k's audio model when ``--fold-models`` holds one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from streamer.cli import run_main

log = logging.getLogger("ser-train-fusion")

DEFAULT_SETS = ("goemotions-dev:80", "meld-dev:50")
NEUTRAL_POOL = 600  # neutral dev sentences paired with emotional RAVDESS voices
FLATTEN_T = 10.0  # temperature of the flattened copies of the spoken sentences' audio


def _digest_folder(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(folder).rglob("*")):
        if f.is_file() and f.suffix in (".pt", ".json", ".safetensors", ".bin", ".npz"):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _text_digest(spec: str) -> str:
    from streamer.text.emotion import DEFAULT_MODEL_DIR

    folder = DEFAULT_MODEL_DIR if spec == "embedded" else Path(spec)
    return _digest_folder(folder) if folder.is_dir() else hashlib.sha256(spec.encode()).hexdigest()[:12]


class Branches:
    """The two models, loaded on first use, with per-model caches of their outputs."""

    def __init__(self, audio_dir: Path, text_spec: str, cache: Path) -> None:
        self.audio_dir, self.text_spec, self.cache = Path(audio_dir), text_spec, cache
        self._audio = self._text = None
        cache.mkdir(parents=True, exist_ok=True)

    def _cached(self, name: str, keys: list[str], compute) -> np.ndarray:
        path = self.cache / f"{name}.json"
        have = json.loads(path.read_text()) if path.is_file() else {}
        todo = [k for k in dict.fromkeys(keys) if k not in have]
        if todo:
            for k, row in zip(todo, compute(todo)):
                have[k] = [float(x) for x in row]
            path.write_text(json.dumps(have))
        return np.array([have[k] for k in keys], float)

    def audio_probs(self, items) -> np.ndarray:
        import soundfile as sf

        from streamer.audio.load import load_audio_model

        by_id = {it.id: it for it in items}

        def compute(ids):
            if self._audio is None:
                self._audio = load_audio_model(self.audio_dir)
            out = []
            for i in ids:
                x, sr = sf.read(str(by_id[i].path), dtype="float32")
                out.append(self._audio.predict_proba(x, sr))
            return out

        return self._cached(f"audio-{_digest_folder(self.audio_dir)}", [it.id for it in items], compute)

    def text_probs(self, texts: list[str]) -> np.ndarray:
        from streamer.text.load import load_text_emotion

        tag = _text_digest(self.text_spec)

        def compute(ts):
            if self._text is None:
                self._text = load_text_emotion(self.text_spec)
            probs, has = self._text.predict_proba(ts)
            return [p if h else np.full(len(p), np.nan) for p, h in zip(probs, has)]

        return self._cached(f"text-{tag}", texts, compute)


def script_spans(text: str, min_words: int = 3) -> list[str]:
    """Every contiguous run of at least ``min_words`` words (how a window may cut a script)."""
    w = text.split()
    return [" ".join(w[i:j]) for i in range(len(w)) for j in range(i + min_words, len(w) + 1)]


def sentence_fold(key: str) -> int:
    from streamer.train.fusion import FOLDS

    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % FOLDS


def build_examples(oof, spoken, branches: Branches, neutral_pool: list[str], seed: int):
    """The four parts of :mod:`streamer.train.fusion` from their sources."""
    from streamer.core.labels import INDEX
    from streamer.train.fusion import Examples
    from streamer.train.fusion_data import fold_of, ravdess_script

    rng = np.random.default_rng(seed)
    parts = []
    # voice+script: the full script, and a random cut of it
    scripts = [ravdess_script(c.path) for c in oof]
    cuts = [spans[rng.integers(len(spans))] for spans in (script_spans(s) for s in scripts)]
    audio = np.array([c.probs for c in oof])
    y = np.array([INDEX[c.label] for c in oof])
    groups = np.array([fold_of(c) - 1 for c in oof])
    keys = [f"ravdess:{c.path.name}" for c in oof]
    for texts in (scripts, cuts):
        parts.append(Examples.make(audio, branches.text_probs(texts), y, groups, "voice+script", keys))
    # voice+neutral-words: a neutral dev sentence of the clip's own group
    pool_groups = np.array([sentence_fold(t) for t in neutral_pool])
    pool_probs = branches.text_probs(neutral_pool)
    pick = [rng.choice(np.flatnonzero(pool_groups == g)) for g in groups]
    parts.append(Examples.make(audio, pool_probs[pick], y, groups, "voice+neutral-words", keys))
    # flat-voice+words: the spoken sentences
    s_audio = branches.audio_probs(spoken)
    s_text = branches.text_probs([it.text for it in spoken])
    s_y = np.array([INDEX[it.label] for it in spoken])
    s_groups = np.array([sentence_fold(it.text) for it in spoken])
    parts.append(Examples.make(s_audio, s_text, s_y, s_groups, "flat-voice+words", [it.id for it in spoken]))
    # ... and a voice that says even less: the same audio flattened toward uniform
    flat = np.exp(np.log(np.clip(s_audio, 1e-6, None)) / FLATTEN_T)
    parts.append(Examples.make(flat / flat.sum(axis=1, keepdims=True), s_text, s_y, s_groups, "flat-voice+words",
                               [it.id for it in spoken]))
    # neutral-voice+words: neutral RAVDESS voices with emotional sentences of their group
    emo = np.flatnonzero(s_y != INDEX["neutral"])
    neutral = [i for i, c in enumerate(oof) if c.label == "neutral"]
    rows = []
    for i in neutral:
        mine = emo[s_groups[emo] == groups[i]]
        for j in rng.choice(mine, size=min(3, len(mine)), replace=False):
            rows.append((i, j))
    if rows:
        ii, jj = map(np.array, zip(*rows))
        parts.append(Examples.make(audio[ii], s_text[jj], s_y[jj], groups[ii], "neutral-voice+words",
                                   [f"{keys[i]}+{spoken[j].id}" for i, j in rows]))
    ex = Examples.concat(parts)
    bad = np.isnan(ex.text).any(axis=1) | np.isnan(ex.audio).any(axis=1)
    return ex.take(~bad)


def neutral_sentences(data_root: Path, n: int, seed: int) -> list[str]:
    from streamer.core.labels import INDEX
    from streamer.train.fusion_data import corpus_rows

    texts = []
    for name in ("goemotions-dev", "meld-dev"):
        rows = corpus_rows(name, data_root)
        texts += [t for t, k in zip(rows.texts, rows.labels()) if k == INDEX["neutral"] and len(t.split()) >= 3]
    texts = sorted(set(texts))
    rng = np.random.default_rng(seed)
    return [texts[i] for i in sorted(rng.permutation(len(texts))[:n])]


def fit_one(oof, spoken, branches, pool, seed, out: Path, meta: dict, penalties=None, sharpness=None) -> dict:
    from streamer.train.fusion import PENALTIES, SHARPNESS, fit_and_report

    t0 = time.time()
    ex = build_examples(oof, spoken, branches, pool, seed)
    model, report = fit_and_report(ex, penalties or PENALTIES, sharpness=sharpness or SHARPNESS)
    flat = branches.audio_probs(spoken).mean(axis=0)
    out.mkdir(parents=True, exist_ok=True)
    params = model.to_json(penalty=report["penalty"], sharpness=report["sharpness"], **meta)
    (out / "params.json").write_text(json.dumps(params, indent=1) + "\n")
    report = {**meta, **report, "mean_audio_on_spoken": [round(float(x), 4) for x in flat],
              "fit_seconds": round(time.time() - t0, 1)}
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> int:
    ap = argparse.ArgumentParser(prog="ser-train-fusion", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--oof", type=Path, default=Path("models/audio-emotion/oof_ravdess.json"),
                    help="out-of-fold audio predictions on RAVDESS (from the audio model's folds)")
    ap.add_argument("--audio-model", type=Path, default=Path("models/audio-emotion"),
                    help="audio model run on the spoken sentences")
    ap.add_argument("--text-model", default="embedded", help="text model ([text] model syntax)")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS),
                    help="spoken sentence sets NAME:PER_LABEL (dev splits only)")
    ap.add_argument("--work", type=Path, default=Path("runs/fusion-data"), help="spoken sets and branch caches")
    ap.add_argument("--out", type=Path, default=Path("models/fusion"))
    ap.add_argument("--exclude-actors", default="", help="RAVDESS actors left out of the fit, e.g. 1,2,3,4")
    ap.add_argument("--cross-fit", type=Path, default=None,
                    help="also write fold{k} fusions fitted without fold k's actors here")
    ap.add_argument("--fold-models", type=Path, default=None,
                    help="fold{k} audio models to run on the spoken sentences of each cross-fitted fusion "
                         "(default: --audio-model for all; the RAVDESS part is out-of-fold either way)")
    ap.add_argument("--audio-folds", type=Path, default=Path("runs/audio-folds"),
                    help="the audio model's fold folders: fold<k>/test_actors.txt says which actors fold k held out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.INFO)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    from streamer.train.fusion_data import build_spoken_set, fold_map, fold_of, read_oof, with_folds

    for s in args.sets:
        if "test" in s.split(":")[0]:
            from streamer.core.errors import SerError

            raise SerError(f"--sets {s}: test splits are for evaluation only; fit on dev splits")
    oof_all = with_folds(read_oof(args.oof), fold_map(args.audio_folds))
    excluded = {int(a) for a in args.exclude_actors.split(",") if a.strip()}
    spoken = []
    for s in args.sets:
        name, _, n = s.partition(":")
        spoken += build_spoken_set(name, args.work / name, args.data, int(n or 50))
    pool = neutral_sentences(args.data, NEUTRAL_POOL, args.seed)
    cache = args.work / "cache"
    main_branches = Branches(args.audio_model, args.text_model, cache)
    oof = [c for c in oof_all if c.actor not in excluded]
    meta = {"oof": str(args.oof), "audio_model": str(args.audio_model), "text_model": args.text_model,
            "sets": args.sets, "excluded_actors": sorted(excluded), "ravdess_clips": len(oof), "spoken": len(spoken),
            "models": {"audio": f"{args.audio_model.name} {_digest_folder(args.audio_model)}",
                       "text": f"{args.text_model} {_text_digest(args.text_model)}"}}
    report = fit_one(oof, spoken, main_branches, pool, args.seed, args.out, meta)
    print(json.dumps({k: report[k] for k in ("penalty", "sharpness", "cross_validated", "uncertain")}, indent=1))
    if args.cross_fit:
        for k in sorted({fold_of(c) - 1 for c in oof_all}):
            test_actors = sorted({c.actor for c in oof_all if fold_of(c) == k + 1})
            fold_audio = args.fold_models / f"fold{k + 1}" if args.fold_models else None
            audio_dir = fold_audio if fold_audio and (fold_audio / "config.json").is_file() else args.audio_model
            b = Branches(audio_dir, args.text_model, cache)
            keep = [c for c in oof_all if fold_of(c) != k + 1 and c.actor not in excluded]
            fmeta = {**meta, "audio_model": str(audio_dir), "excluded_actors": test_actors,
                     "fold": k + 1, "ravdess_clips": len(keep)}
            r = fit_one(keep, spoken, b, pool, args.seed, args.cross_fit / f"fold{k + 1}", fmeta, [report["penalty"]],
                        [report["sharpness"]])
            print(f"fold {k + 1} (without actors {test_actors}): penalty {r['penalty']}, sharpness {r['sharpness']}, "
                  f"min_confidence {r['uncertain']['min_confidence']}", file=sys.stderr)
    from streamer.train.fusion_card import write_card

    write_card(args.out, None)
    print(f"ser-train-fusion: wrote {args.out}/params.json (min_confidence {report['uncertain']['min_confidence']}: "
          f"set [fusion] min_confidence in config.toml to match)", file=sys.stderr)
    return 0


def entry() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_main(main)


if __name__ == "__main__":
    entry()

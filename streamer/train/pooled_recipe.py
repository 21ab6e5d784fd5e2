"""``ser-train`` for a pooled-statistics audio model (``kind = "pooled"`` in train.toml).

1. Rows: every clip of every corpus (and the augmented copies the candidates name) through
   the encoders (:mod:`streamer.train.pooled`, cached).
2. Every candidate recipe is scored on the same splits (:mod:`streamer.train.transfer`):
   three leave-one-corpus-out runs and leave-speakers-out folds; the one with the best
   criterion (mean LOCO ``ua_present`` and mean leave-speakers-out UA, averaged) is chosen.
3. One temperature, fitted on the chosen recipe's pooled LOCO predictions.
4. The shipped head: fitted on every clip of every corpus (not one fold's), standardised as
   the recipe says; its prior is the training statistics (:class:`streamer.audio.adapt.Moments`).
5. The folder: ``config.json``, ``head.npz``, ``labels.json``, ``metrics.json`` (every
   candidate's every figure), ``oof_ravdess.json`` (each RAVDESS clip predicted by the fold
   that never saw its actor, for the fusion's training) and the model card.
"""

from __future__ import annotations

import json
import logging
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamer.audio.adapt import AdaptOptions, Moments
from streamer.audio.windows import MIN_WINDOW_SAMPLES, TAIL_SAMPLES, WINDOW_SAMPLES
from streamer.audio.pooled import HEAD_FILE, KIND, Head
from streamer.core.labels import LABELS
from streamer.train.corpora import scan
from streamer.train.pooled import build
from streamer.audio.pooling import softmax_t
from streamer.train.transfer import Recipe, Rows, evaluate, fit, fit_and_predict, prior_moments, splits

log = logging.getLogger(__name__)

DIMS = {"embedded:tiny.en": 384, "embedded:base": 512}


@dataclass(frozen=True)
class PooledConfig:
    """A pooled recipe's train.toml."""

    data: tuple[str, ...]
    encoders: tuple[str, ...] = ("embedded:tiny.en", "embedded:base")
    candidates: tuple[Recipe, ...] = (Recipe(),)
    speaker_folds: dict[str, int] = field(default_factory=lambda: {"ravdess": 5, "nemo": 3})
    loco: tuple[str, ...] = ("ravdess", "tess", "nemo")
    cache_dir: str = "cache"
    jobs: int = 2
    adapt: AdaptOptions = AdaptOptions()
    adapt_checks: tuple[str, ...] = ("prior", "running", "running_single")

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("train.toml: data names no corpus folder")
        for e in self.encoders:
            if e not in DIMS:
                raise ValueError(f"train.toml: unknown encoder {e!r}; one of {', '.join(DIMS)}")
        for r in self.candidates:
            unknown = [b for b in r.blocks if b not in (*self.encoders, "prosody")]
            if unknown:
                raise ValueError(f"train.toml: candidate {r.name} uses {unknown}, not among encoders {list(self.encoders)} or prosody")


def load_pooled_config(path: Path) -> PooledConfig:
    raw = tomllib.loads(Path(path).read_text())
    cands = []
    for c in raw.get("candidates", []):
        cands.append(Recipe(tuple(c.get("blocks", Recipe.blocks)), c.get("norm", Recipe.norm), float(c.get("l2", Recipe.l2)),
                            c.get("balance", Recipe.balance), tuple(c.get("copies", ()))))
    a = raw.get("adapt", {})
    return PooledConfig(tuple(raw["data"]), tuple(raw.get("encoders", PooledConfig.encoders)), tuple(cands) or (Recipe(),),
                        dict(raw.get("speaker_folds", {"ravdess": 5, "nemo": 3})), tuple(raw.get("loco", PooledConfig.loco)),
                        raw.get("cache_dir", "cache"), int(raw.get("jobs", 2)),
                        AdaptOptions(bool(a.get("enabled", True)), float(a.get("prior_windows", AdaptOptions.prior_windows)),
                                     float(a.get("horizon", AdaptOptions.horizon))))


def load_rows(cfg: PooledConfig) -> Rows:
    """Clean rows of every corpus, with the augmented copies any candidate names."""
    found = scan(cfg.data)
    by = found.by_corpus()
    dims = [DIMS[e] for e in cfg.encoders]
    cache = Path(cfg.cache_dir) / "pooled"
    order = sorted(by)
    sets = [build(by[c], cfg.encoders, dims, cache, cfg.jobs, name=c) for c in order]
    rows = Rows.join(sets)
    copies = sorted({c for r in cfg.candidates for c in r.copies})
    if copies:
        rows = rows.with_copies({c: [build(by[k], cfg.encoders, dims, cache, cfg.jobs, name=k, phone_corpora=(), copy=c)
                                     for k in order] for c in copies})
    return rows


def shipped_encoders(cfg: PooledConfig, recipe: Recipe) -> list[str]:
    """The encoders the product runs for ``recipe`` (prosody is always computed)."""
    return [e for e in cfg.encoders if e in recipe.blocks]


def final_head(rows: Rows, recipe: Recipe, encoders: list[str], train: np.ndarray | None = None) -> Head:
    """The shipped head (``train``: the clips that train it; every clip by default): its input
    is the product's row (``encoders`` in order, then prosody); the prior is the mean of the
    training corpora's statistics."""
    everything = np.ones(len(rows.y), bool) if train is None else np.asarray(train, bool)
    lin, _, _ = fit(rows, recipe, everything)
    product = rows.cols([*encoders, "prosody"])
    used = rows.cols(recipe.blocks)
    where = {c: i for i, c in enumerate(product)}
    keep = everything[rows.clip]
    groups = rows.corpus[rows.clip][keep] if recipe.norm != "global" else np.zeros(int(keep.sum()), int)
    prior = prior_moments(rows.x[keep][:, product], groups)
    if recipe.norm == "global":
        # the head's own standardisation is the prior: (x - mean) / (std + EPS), EPS as RunningNorm's
        mean, var = prior.mean.copy(), prior.var.copy()
        for j, c in enumerate(used):
            mean[0, where[c]] = lin.mean[j]
            var[0, where[c]] = (lin.scale[j] - 1e-3) ** 2
        prior = Moments(mean, var, prior.weight)
        coef, intercept = lin.coef.astype(np.float64), lin.intercept.astype(np.float64)
    else:
        # fit_linear standardised its (already per-corpus standardised) input once more: fold that in
        coef = lin.coef / lin.scale
        intercept = lin.intercept - coef @ lin.mean
    full = np.zeros((len(LABELS), len(product)), np.float64)
    for j, c in enumerate(used):
        full[:, where[c]] = coef[:, j]
    # how far training rows sit from the prior: rows much further are damped at inference
    z = prior.standardise(rows.x[keep][:, product]).astype(np.float64)
    ood_ref = float(np.percentile((z ** 2).mean(1), 99))
    return Head(full.astype(np.float32), intercept.astype(np.float32), prior, ood_ref)


def oof_ravdess(rows: Rows, recipe: Recipe, the_splits, temperature: float) -> list[dict]:
    """Each RAVDESS clip predicted by the leave-speakers-out fold that never saw its actor."""
    out = []
    for sp in the_splits:
        if sp.kind != "speakers" or sp.test_corpus != "ravdess":
            continue
        clips, logits, _ = fit_and_predict(rows, recipe, sp.train, sp.test, test_group=sp.name)
        probs = softmax_t(logits, temperature)
        for k, p in zip(clips, probs):
            out.append({"path": rows.paths[k], "actor": str(rows.speaker[k]).split(":")[-1], "speaker": str(rows.speaker[k]),
                        "corpus": "ravdess", "label": LABELS[rows.y[k]], "fold": int(sp.name.rsplit("fold", 1)[1]),
                        "probs": [round(float(v), 6) for v in p]})
    return out


def run(cfg: PooledConfig, out: Path, say=print) -> dict:
    t0 = time.time()
    rows = load_rows(cfg)
    the_splits = splits(rows, cfg.loco, cfg.speaker_folds)
    results = []
    for r in cfg.candidates:
        res = evaluate(rows, r, the_splits)
        results.append(res)
        say(f"{r.name}: LOCO ua_present {res['loco_mean_ua_present']:.3f}, speakers UA {res['speakers_mean_ua']:.3f}, "
            f"criterion {res['criterion']:.3f}")
    best = max(range(len(results)), key=lambda i: results[i]["criterion"])
    recipe = cfg.candidates[best]
    chosen = results[best]
    checks = {}
    if recipe.norm in ("corpus", "mixed"):
        for mode in cfg.adapt_checks:
            checks[mode] = evaluate(rows, recipe, the_splits, adapt=mode, prior_windows=cfg.adapt.prior_windows,
                                    horizon=cfg.adapt.horizon)
            say(f"  adaptation {mode}: LOCO ua_present {checks[mode]['loco_mean_ua_present']:.3f}, "
                f"speakers UA {checks[mode]['speakers_mean_ua']:.3f}")
    t = chosen["temperature"]
    encoders = shipped_encoders(cfg, recipe)
    head = final_head(rows, recipe, encoders)
    out.mkdir(parents=True, exist_ok=True)
    head.save(out / HEAD_FILE)
    meta = {"kind": KIND, "encoders": encoders, "blocks": list(recipe.blocks), "head": HEAD_FILE,
            "row_width": int(head.prior.mean.shape[1]), "temperature": t, "window_samples": WINDOW_SAMPLES,
            "min_window_samples": MIN_WINDOW_SAMPLES, "tail_samples": TAIL_SAMPLES,
            "adapt": {"enabled": cfg.adapt.enabled, "prior_windows": cfg.adapt.prior_windows, "horizon": cfg.adapt.horizon},
            "recipe": recipe.name}
    (out / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "labels.json").write_text(json.dumps(list(LABELS)) + "\n")
    oof = oof_ravdess(rows, recipe, the_splits, t)
    (out / "oof_ravdess.json").write_text(json.dumps(oof) + "\n")
    metrics = {"chosen": recipe.name, "candidates": results, "adaptation": checks, "temperature": t,
               "adaptation_prior_windows": cfg.adapt.prior_windows,
               "clips": {c: int((rows.corpus == c).sum()) for c in sorted(set(rows.corpus))}, "seconds": time.time() - t0}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics


DEFAULT_SWEEP = (20, 60, 150, 400, 1000)  # prior weights (windows) ser-train --adapt-sweep scores


def adapt_sweep(cfg: PooledConfig, out: Path, prior_windows: tuple[float, ...] = DEFAULT_SWEEP, say=print) -> dict:
    """How much weight the training statistics keep in a stream: the shipped recipe scored as
    live streams with mixed emotions (``running``) and as streams that hold one emotion
    (``running_single``), for each prior weight; the weight with the best mean of the two
    criteria goes into ``config.json`` (``adapt.prior_windows``) and ``metrics.json``."""
    import json as _json

    meta = _json.loads((out / "config.json").read_text())
    metrics = _json.loads((out / "metrics.json").read_text())
    recipe = next(c for c in cfg.candidates if c.name == metrics["chosen"])
    rows = load_rows(cfg)
    the_splits = splits(rows, cfg.loco, cfg.speaker_folds)
    table = []
    for pw in prior_windows:
        row = {"prior_windows": pw}
        for mode in ("running", "running_single"):
            e = evaluate(rows, recipe, the_splits, adapt=mode, prior_windows=pw, horizon=cfg.adapt.horizon)
            row[mode] = {k: e.get(k) for k in ("loco_mean_ua_present", "loco_mean_ua", "speakers_mean_ua", "speakers_ravdess_ua",
                                               "speakers_nemo_ua", "speakers_telephone_ua", "criterion")}
        row["score"] = (row["running"]["criterion"] + row["running_single"]["criterion"]) / 2
        say(f"prior {pw:g} windows: mixed-emotion streams {row['running']['criterion']:.3f}, "
            f"one-emotion streams {row['running_single']['criterion']:.3f}")
        table.append(row)
    if not metrics.get("adaptation") and recipe.norm in ("corpus", "mixed"):  # a run from before the checks covered mixed
        metrics["adaptation_prior_windows"] = cfg.adapt.prior_windows
        metrics["adaptation"] = {mode: evaluate(rows, recipe, the_splits, adapt=mode, prior_windows=cfg.adapt.prior_windows,
                                                horizon=cfg.adapt.horizon) for mode in cfg.adapt_checks}
    best = max(table, key=lambda r: r["score"])
    meta["adapt"]["prior_windows"] = float(best["prior_windows"])
    if not Head.load(out / meta.get("head", HEAD_FILE)).ood_ref:  # a head written before the damping existed
        final_head(rows, recipe, meta["encoders"]).save(out / meta.get("head", HEAD_FILE))
    (out / "config.json").write_text(_json.dumps(meta, indent=2) + "\n")
    metrics["adapt_sweep"] = {"rows": table, "chosen_prior_windows": best["prior_windows"], "horizon": cfg.adapt.horizon,
                              "recipe": recipe.name}
    (out / "metrics.json").write_text(_json.dumps(metrics, indent=1) + "\n")
    return metrics


def write_fold_models(cfg: PooledConfig, out: Path, folds_dir: Path, say=print) -> list[Path]:
    """Each RAVDESS leave-speakers-out fold's model as a complete folder (``fold<k>/``, with
    ``test_actors.txt``), trained without its actors: what the fusion's cross-fitting and
    ``bench/fusion_eval.py`` score a fold's actors with."""
    import json as _json
    import shutil

    meta = _json.loads((out / "config.json").read_text())
    metrics = _json.loads((out / "metrics.json").read_text())
    recipe = next(c for c in cfg.candidates if c.name == metrics["chosen"])
    rows = load_rows(cfg)
    written = []
    for sp in splits(rows, cfg.loco, cfg.speaker_folds):
        if sp.kind != "speakers" or sp.test_corpus != "ravdess":
            continue
        d = folds_dir / f"fold{sp.name.rsplit('fold', 1)[1]}"
        d.mkdir(parents=True, exist_ok=True)
        final_head(rows, recipe, meta["encoders"], sp.train).save(d / HEAD_FILE)
        (d / "config.json").write_text(_json.dumps(meta, indent=2) + "\n")
        shutil.copy2(out / "labels.json", d / "labels.json")
        actors = sorted({str(a) for a in rows.speaker[sp.test]})
        (d / "test_actors.txt").write_text("\n".join(actors) + "\n")
        say(f"{d}: without {', '.join(actors)}")
        written.append(d)
    return written


def write_candidate(cfg: PooledConfig, out: Path, name: str, dest: Path, say=print) -> Path:
    """Another candidate of the same run, trained on every clip as the chosen one was, with its
    own LOCO temperature and the chosen model's adaptation settings, into ``dest`` (a cheaper
    model for a busy server, say). Its figures are its row in ``out/metrics.json``."""
    import json as _json
    import shutil

    metrics = _json.loads((out / "metrics.json").read_text())
    chosen_meta = _json.loads((out / "config.json").read_text())
    recipe = next((c for c in cfg.candidates if c.name == name), None)
    result = next((r for r in metrics["candidates"] if r["recipe"] == name), None)
    if recipe is None or result is None:
        raise ValueError(f"no candidate {name!r} in {out}/metrics.json; candidates: "
                         + "; ".join(r["recipe"] for r in metrics["candidates"]))
    rows = load_rows(cfg)
    encoders = shipped_encoders(cfg, recipe)
    head = final_head(rows, recipe, encoders)
    dest.mkdir(parents=True, exist_ok=True)
    head.save(dest / HEAD_FILE)
    meta = {**chosen_meta, "encoders": encoders, "blocks": list(recipe.blocks), "row_width": int(head.prior.mean.shape[1]),
            "temperature": result["temperature"], "recipe": recipe.name}
    (dest / "config.json").write_text(_json.dumps(meta, indent=2) + "\n")
    shutil.copy2(out / "labels.json", dest / "labels.json")
    (dest / "metrics.json").write_text(_json.dumps({"recipe": recipe.name, "figures": result,
                                                    "from": str(out / "metrics.json")}, indent=1) + "\n")
    say(f"{dest}: {recipe.name} (criterion {result['criterion']:.3f}, T {result['temperature']:.3f})")
    return dest
